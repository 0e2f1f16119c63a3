"""Run directory I/O: metrics.jsonl under namespaced keys, a live progress bar, and PNG plots at the end.

TRL logs its own keys (``reward``, ``entropy``, ``completions/…``); they are written under ``train/`` and
``reward/`` here, beside ``antisd/…``, ``eval/…`` and ``perf/…``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback

_REWARD_KEYS = ("reward", "reward_std", "frac_reward_zero_std")


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def namespaced(logs: dict) -> dict:
    out = {}
    for key, value in logs.items():
        if "/" in key and key.split("/", 1)[0] in ("antisd", "eval", "perf", "train", "reward"):
            out[key] = value
        elif key in _REWARD_KEYS or key.startswith("rewards/"):
            out[f"reward/{key.removeprefix('rewards/')}"] = value
        elif key in ("step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second"):
            out[f"perf/{key}"] = value
        else:
            out[f"train/{key}"] = value
    return out


class JsonlMetrics(TrainerCallback):
    """Appends one JSON line per TRL log event to ``path`` (resumed runs keep appending)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def write(self, step: int, metrics: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.write(state.global_step, namespaced(logs))


class ProgressBar(TrainerCallback):
    """A rich progress bar with the live reward and gate state."""

    def __init__(self, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"))
        self.task = self.progress.add_task("", total=total)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.progress.start()
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and "reward" in logs:
            value = lambda key, default=float("nan"): _number(logs.get(key, default))  # noqa: E731 — None (no rewards, NaN λ) shows as nan
            gate = "on" if value("antisd/gate_on", 0) == 1 else "off"
            desc = f"reward {value('reward'):.3f}  u<0 {value('antisd/frac_u_neg'):.2f}  λ {value('antisd/lambda_mean', 0):.3f}  gate {gate}"
            self.progress.update(self.task, completed=state.global_step, description=desc)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()


class PeriodicEval(TrainerCallback):
    """Calls ``run(step)`` every ``every`` optimizer steps (held-out evaluation during training)."""

    def __init__(self, every: int, run):
        self.every, self.run = every, run

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:  # every process: the evaluation is sharded over them
            self.run(state.global_step)


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


PLOT_KEYS = (
    "reward/reward",
    "antisd/frac_u_neg",
    "antisd/u_mean",
    "antisd/lambda_mean",
    "antisd/gate_on",
    "antisd/teacher_entropy_mean",
    "train/entropy",
    "train/completions/mean_length",
)


def plot_metrics(metrics_path: Path, out_png: Path) -> Path | None:
    """One panel per key of PLOT_KEYS present in metrics.jsonl; returns the PNG path (None if nothing to plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(metrics_path)
    keys = [k for k in PLOT_KEYS if any(k in r for r in rows)]
    if not keys:
        return None
    cols = 4
    fig, axes = plt.subplots((len(keys) + cols - 1) // cols, cols, figsize=(4 * cols, 3 * ((len(keys) + cols - 1) // cols)), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return Path(out_png)
