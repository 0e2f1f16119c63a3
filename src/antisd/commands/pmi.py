"""`antisd pmi`: the paper's PMI diagnostic (§3, Fig. 2) on any model, before or during training.

1. Sample G rollouts per problem from the student prompt (or load them from a JSONL file).
2. Grade them; build each rollout's teacher input with the training teacher pass itself (the first other correct
   sibling + feedback on this rollout, under ``--preset``'s settings), or from the problem's reference solution
   (``--context reference``); token for token what training scores.
3. Score every sampled token under the student prompt, the teacher prompt, and a *control* teacher whose
   demonstration is another problem's correct rollout with the same feedback line (training's control teacher).
4. Write ``pmi.html`` (tokens coloured by u, density plot, token and category tables), ``density.png``,
   ``pmi.json`` (statistics) and ``tokens.jsonl`` (every token's values).

Example:
    antisd pmi --model testbed --problems 50 --G 4 --output_dir runs/pmi-testbed
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from antisd.infra import configio
from antisd.method import context as ctx
from antisd.method.settings import PRESETS, AntiSDSettings, preset

if TYPE_CHECKING:
    from antisd.method.teacher_pass import Rollouts
@dataclass(frozen=True)
class PMIConfig:
    """Config of `antisd pmi`."""

    model: str = "testbed"
    """'testbed', a local model directory or a cached Hugging Face id."""
    task: str = "countdown"
    """'countdown' or a .jsonl file of problems with prompt and answer fields."""
    problems: int = 50
    """Problems (taken from the held-out split)."""
    G: int = 4
    """Rollouts per problem (the group that supplies demonstrations)."""
    rollouts: str = ""
    """Optional JSONL of pre-generated rollouts, one per line: {"problem": index, "completion_ids": [token ids]} (scored exactly as sampled) or {"problem": index, "completion": text, "truncated": bool} (re-tokenized; EOS appended only when not truncated)."""
    preset: str = "antisd"
    """The training preset whose teacher input is reproduced (templates, feedback, demonstration budget and cut)."""
    settings_from: str = ""
    """A training run directory: the AntiSD settings it recorded (run.json) replace --preset, so the teacher input is exactly that run's."""
    context: str = ""
    """Demonstrations: '' (the settings' own: a correct sibling for every preset), 'group' (a correct sibling), 'reference' (the problem's reference solution) or 'group_then_reference'."""
    temperature: float = 1.0
    """Sampling and scoring temperature (the training temperature)."""
    max_new_tokens: int = 96
    """Maximum response tokens of generated rollouts."""
    skip_first: int = 8
    """Category means are also reported with the first this-many response tokens excluded (position confound)."""
    deliberation: list[str] | None = None
    """Deliberation words (default: the built-in list, see antisd.evaluation.pmi_report.DELIBERATION)."""
    structural: list[str] | None = None
    """Structural / shortcut words (default: antisd.evaluation.pmi_report.STRUCTURAL)."""
    output_dir: str = "runs/pmi"
    """Where the HTML, PNG and JSON are written."""
    batch_size: int = 16
    """Rows per scoring forward."""
    seed: int = 0
    """Seed of problem choice and sampling."""
    threads: int = 2
    """torch CPU threads."""

    def __post_init__(self):
        configio.check_at_least(self, {"problems": 1, "G": 2, "max_new_tokens": 1, "skip_first": 0, "batch_size": 1, "threads": 1})
        configio.check_positive(self, ("temperature",))
        configio.check_seed(self)
        configio.check_choice(self, {"context": ("", *CONTEXTS), "preset": tuple(PRESETS)})
        if self.settings_from and not (Path(self.settings_from) / "run.json").is_file():
            raise ValueError(f"--settings_from {self.settings_from}: not a training run directory (no run.json)")
        if self.rollouts and not Path(self.rollouts).is_file():
            raise ValueError(f"--rollouts {self.rollouts}: no such file")
        for name in ("deliberation", "structural"):
            if getattr(self, name) is not None and not getattr(self, name):
                raise ValueError(f"--{name} is empty; leave it out for the built-in list")
        configio.check_nonempty(self, ("model", "task", "output_dir"))


CONTEXTS = ("group", "reference", "group_then_reference")


CONTEXT_SOURCES = {"group": "group_only", "reference": "reference_only", "group_then_reference": "group_then_reference"}


def main(cfg: PMIConfig) -> dict:
    import torch

    from antisd.infra.models import load_model
    from antisd.method.teacher_pass import TeacherPass
    from antisd.tasks import load_task

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.output_dir)
    configio.check_output_dir(out, "--output_dir")
    model, tok = load_model(cfg.model)
    task = load_task(cfg.task, seed=cfg.seed, n_heldout=cfg.problems)
    items = _problems(task, cfg.problems)

    # 1. Rollouts, grouped by problem (G consecutive rows per problem), graded by the task
    if cfg.rollouts:
        rollouts = read_rollouts(Path(cfg.rollouts), len(items), tok)
    else:
        from antisd.evaluation.scoring import sample

        print(f"sampling {cfg.G} rollouts for {len(items)} problems")
        student = [tok.apply_chat_template(it.messages, add_generation_prompt=True, tokenize=False) for it in items]
        rollouts = sample(model, tok, student, cfg.G, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    batch = graded_rollouts(task, items, rollouts, tok)

    # 2. Teacher and control inputs: the training teacher pass's own (antisd.method.teacher_pass)
    settings = settings_of(cfg)
    teacher_pass = TeacherPass(settings, tok, cut_demonstration=task.cut_demonstration)
    teacher, control = teacher_pass.inputs(batch), teacher_pass.inputs(batch, control=True)

    # 3. Score under student, teacher and control teacher; 4. statistics and report
    student_ids = [ctx.prompt_ids(tok, items[p].messages) for p, _ in rollouts]
    scored = _score_all(cfg, model, tok, [ids for _, ids in rollouts], {"student": student_ids, "teacher": teacher.prompt_ids, "control": control.prompt_ids})
    return _report(cfg, out, task, items, rollouts, batch, teacher, scored, tok, settings)


def settings_of(cfg: PMIConfig) -> AntiSDSettings:
    """The training settings whose teacher this report reproduces: a run's recorded ones or the preset, with the
    demonstrations ``--context`` asks for."""
    if cfg.settings_from:
        from antisd.infra import rundir

        base = AntiSDSettings().replace(**rundir.read_run(Path(cfg.settings_from))["antisd"])
    else:
        base = preset(cfg.preset)
    return base.replace(demonstration_source=CONTEXT_SOURCES[cfg.context]) if cfg.context else base


def graded_rollouts(task, items: list, rollouts: list[tuple[int, list[int]]], tok) -> Rollouts:
    """The rollouts as the teacher pass takes them: one group per problem, rewards from the task's grader (NaN where
    the gold answer is unparseable: never a demonstration), decoded as the trainers decode responses."""
    from antisd.method.teacher_pass import Rollouts

    texts = [tok.decode(ids, skip_special_tokens=True) for _, ids in rollouts]
    rewards = []
    for (p, _), text in zip(rollouts, texts):
        reward = task.grade(text, items[p].row)[0]
        rewards.append(float("nan") if reward is None else float(reward))
    return Rollouts(
        texts=texts, rewards=rewards, group_ids=[p for p, _ in rollouts], rows=range(len(rollouts)),
        prompts=[items[p].messages for p, _ in rollouts], references=[items[p].row.get("reference") for p, _ in rollouts],
    )  # fmt: skip


def _score_all(cfg: PMIConfig, model, tok, completions: list[list[int]], prompts: dict) -> dict:
    from rich.progress import track

    from antisd.evaluation.scoring import score

    return {
        name: score(model, ids, completions, tok.pad_token_id, temperature=cfg.temperature, batch_size=cfg.batch_size)
        for name, ids in track(list(prompts.items()), description="scoring")
    }


def _report(cfg: PMIConfig, out: Path, task, items, rollouts, batch: Rollouts, teacher, scored: dict, tok, settings: AntiSDSettings) -> dict:
    from antisd.evaluation import pmi_report as pmi

    (s, hs, mask), (t, ht, _), (c, _, _) = scored["student"], scored["teacher"], scored["control"]
    tokens = [[tok.decode([i]) for i in ids] for _, ids in rollouts]
    records = pmi.token_records(tokens, s, t, c, hs, ht, mask)
    categories = {"deliberation": tuple(cfg.deliberation or pmi.DELIBERATION), "structural": tuple(cfg.structural or pmi.STRUCTURAL)}
    stats = pmi.statistics_of(records, categories, skip_first=cfg.skip_first)
    scored_rewards = [r for r in batch.rewards if r == r]
    stats |= {"model": cfg.model, "task": task.name, "problems": len(items), "G": cfg.G, "settings": cfg.settings_from or cfg.preset,
              "demonstration_source": settings.demonstration_source,
              "accuracy": sum(scored_rewards) / max(len(scored_rewards), 1),
              "demonstration_fraction": sum(k in ("demonstration", "reference") for k in teacher.kinds) / len(teacher.kinds)}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    pmi.density_png(records, out / "density.png")
    headers = {k: f"problem {p} · reward {batch.rewards[k]:.0f} · context: {CONTEXT_LABELS[teacher.kinds[k]]}" for k, (p, _) in enumerate(rollouts)}
    (out / "pmi.html").write_text(pmi.render_html(f"PMI diagnostic: {cfg.model} on {task.name}", records, stats, out / "density.png", headers))
    (out / "pmi.json").write_text(json.dumps(stats, indent=2, default=float))
    with (out / "tokens.jsonl").open("w") as f:
        for r in pmi.records_as_json(records):
            f.write(json.dumps(r) + "\n")
    _print(stats)
    print(f"open {out / 'pmi.html'} (tokens coloured by u, density, category tables); statistics in {out / 'pmi.json'}, every token in {out / 'tokens.jsonl'}")
    return stats


CONTEXT_LABELS = {"demonstration": "demonstration (a correct sibling)", "reference": "reference solution", "feedback": "feedback only", "none": "none"}


def _problems(task, n: int) -> list:
    """The first ``n`` problems: the held-out split, topped up with training rows in order where it is shorter
    (a file task holds out only a fraction of the file), so ``--problems`` and problem indices cover the file."""
    from antisd.tasks import EvalItem

    items = list(task.heldout[:n])
    return items + [EvalItem(r["prompt"], r) for r in task.train_rows[: n - len(items)]]


def read_rollouts(path: Path, n_problems: int, tok) -> list[tuple[int, list[int]]]:
    """Rollouts from JSONL, sorted by problem; token ids are used as given, text is re-tokenized with an EOS only
    when the rollout was not truncated. A bad line is named with its 1-based number."""
    rollouts = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
        p = r.get("problem")
        if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p < n_problems:
            raise ValueError(f"{where}: 'problem' must be an index in 0..{n_problems - 1} (there are {n_problems} problems; raise --problems), got {p!r}")
        if "completion_ids" in r:
            ids = r["completion_ids"]
            if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and 0 <= i < len(tok) for i in ids):
                raise ValueError(f"{where}: 'completion_ids' must be a non-empty list of token ids below {len(tok)}")
        elif isinstance(r.get("completion"), str):
            ids = tok(r["completion"], add_special_tokens=False)["input_ids"] + ([] if r.get("truncated") else [tok.eos_token_id])
        else:
            raise ValueError(f"{where}: needs 'completion_ids' (token ids) or 'completion' (text)")
        rollouts.append((p, list(ids)))
    if not rollouts:
        raise ValueError(f"{path}: no rollouts")
    rollouts.sort(key=lambda x: x[0])
    return rollouts


def _print(stats: dict) -> None:
    u, uc = stats["u"], stats["u_minus_control"]
    print(f"{stats['n_tokens']} tokens in {stats['n_rollouts']} rollouts; accuracy {stats['accuracy']:.3f}; demonstration for {stats['demonstration_fraction']:.0%}")
    print(f"u: mean {u['mean']:+.3f}, frac<0 {u['frac_neg']:.3f}, min {u['min']:.2f}   u−u_ctrl: mean {uc['mean']:+.3f}, frac<0 {uc['frac_neg']:.3f}")
    for name, c in stats["categories"].items():
        print(f"  {name:13s} n={c['u']['n']:5d}  u {c['u']['mean']:+.3f} ± {c['u']['ci95']:.3f}   u−u_ctrl {c['u_minus_control']['mean']:+.3f} ± {c['u_minus_control']['ci95']:.3f}")


def cli(argv: list[str]) -> dict:
    return main(configio.parse(PMIConfig, argv, prog="antisd pmi", description=__doc__.split("\n\n")[0]))
