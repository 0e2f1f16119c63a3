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


def gate_text(settings, gate) -> str:
    """The AntiSD gate's state in words, the same in the progress bar, the summary and the model card."""
    if settings.lambda_max == 0:
        return "no AntiSD term (λ_max = 0)"
    if not settings.needs_warmup:
        return "no gate: the term is always on"
    if not gate.calibrated:
        return f"warming up ({len(gate.warm_values)}/{gate.warmup_steps} steps, λ = 0)"
    if not settings.gate:
        return "no gate: the term is on after the warm-up"
    return f"{'open' if gate.active else 'shut'} (warm value {gate.warm:.4g}, closes below {gate.tau_down:.4g}, reopens at {gate.tau_up:.4g})"


def _bar_gate(settings, logs: dict) -> str:
    """The gate's state at this step from the step's logged metrics (short, for the bar)."""
    if settings.lambda_max == 0:
        return "no term"
    if not settings.needs_warmup:
        return "no gate"
    if _number(logs.get("antisd/gate_calibrated", 1)) != 1:
        return "warm-up"
    if not settings.gate:
        return "no gate"
    return "open" if _number(logs.get("antisd/gate_on", 0)) == 1 else "shut"


class ProgressBar(TrainerCallback):
    """A rich progress bar with the live reward and gate state."""

    def __init__(self, total: int, settings):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.settings = settings
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"))
        self.task = self.progress.add_task("", total=total)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.progress.start()
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and "reward" in logs:
            value = lambda key, default=float("nan"): _number(logs.get(key, default))  # noqa: E731 — None (no rewards, NaN λ) shows as nan
            desc = f"reward {value('reward'):.3f}  u<0 {value('antisd/frac_u_neg'):.2f}  λ {value('antisd/lambda_mean', 0):.3f}  dose {100 * value('antisd/term_ratio', 0):.2f}%  gate {_bar_gate(self.settings, logs)}"
            self.progress.update(self.task, completed=state.global_step, description=desc)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()


class AtTrainBegin(TrainerCallback):
    """Calls ``run()`` once training has prepared the model (DeepSpeed engine, FSDP wrapping), before the first step:
    the held-out evaluation at step 0, which under ZeRO-3 or FSDP needs the prepared model."""

    def __init__(self, run):
        self.run = run

    def on_train_begin(self, args, state, control, **kwargs):
        self.run()


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
    "antisd/term_ratio",
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


PAPER = "Shen et al., *Anti-Self-Distillation for Reasoning RL via Pointwise Mutual Information*, arXiv 2605.11609 (2026)"
CITATION = """@article{shen2026antisd,
  title   = {Anti-Self-Distillation for Reasoning RL via Pointwise Mutual Information},
  author  = {Guobin Shen and Xiang Cheng and Chenxiao Zhao and Lei Huang and Jindong Li and Dongcheng Zhao and Xing Yu},
  journal = {arXiv preprint arXiv:2605.11609},
  year    = {2026}
}"""


def model_card(cfg, summary: dict, run: dict) -> str:
    """The trained model's README.md: what it was trained from, how, with what result, and how to reproduce it."""
    k = cfg.eval_k
    rows = []
    for key in (f"eval/avg@{k}", f"eval/pass@{k}", "eval/pass@1", "eval/mean_length"):
        before, after = (summary.get("before") or {}).get(key), (summary.get("after") or {}).get(key)
        if before is not None or after is not None:
            fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
            rows.append(f"| {key} | {fmt(before)} | {fmt(after)} |")
    segments = run.get("segments") or []
    changed = "".join(f"\n- from step {seg['from_step']}: " + ", ".join(f"{name} {a!r} → {b!r}" for name, (a, b) in seg["changes"].items()) for seg in segments)
    return "\n".join([
        "---",
        "library_name: transformers",
        f"tags: [antisd, grpo, {cfg.preset}]",
        "---",
        "",
        f"# {cfg.model} trained with antisd ({cfg.preset})",
        "",
        f"Trained from `{cfg.model}` on the task `{cfg.task}` for {summary['steps']} steps of GRPO with the `{cfg.preset}` preset of "
        f"antisd, an implementation of Anti-Self-Distillation (AntiSD): {PAPER}, https://arxiv.org/abs/2605.11609.",
        f"{cfg.prompts_per_step} prompts × {cfg.num_generations} rollouts a step, learning rate {cfg.learning_rate}, "
        f"at most {cfg.max_completion_length} response tokens, seed {cfg.seed}; run {run['run_id']}.",
        f"AntiSD gate at the end: {summary['gate_state']}.",
        "",
        f"Held-out ({cfg.eval_problems} problems, {k} samples each, T = {cfg.eval_temperature}):" if rows else "No held-out evaluation (eval_k 0).",
        "",
        *(["| metric | before | after |", "|---|---|---|", *rows, ""] if rows else []),
        "Every setting, the AntiSD ones expanded, is in the run directory's `config.yaml`; reproduce with "
        "`antisd train --config config.yaml --output_dir <new directory>`." + (f" Settings changed on resume:{changed}" if segments else ""),
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ])
