"""`antisd pmi`: the paper's PMI diagnostic (§3, Fig. 2) on any model, before or during training.

1. Sample G rollouts per problem from the student prompt (or load them from a JSONL file).
2. Grade them; build each rollout's privileged context exactly as in training (first other correct sibling +
   feedback on this rollout), or from the problem's reference solution (``--context reference``).
3. Score every sampled token under the student prompt, the teacher prompt, and a *control* teacher whose
   context is another problem's demonstration with the same feedback line.
4. Write ``pmi.html`` (tokens coloured by u, density plot, token and category tables), ``density.png``,
   ``pmi.json`` (statistics) and ``tokens.jsonl`` (every token's values).

Example:
    antisd pmi --model testbed --problems 50 --G 4 --output_dir runs/pmi-testbed
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from antisd import configio


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
    context: str = "group"
    """'group' (a correct sibling, as in training), 'reference' (the problem's reference solution) or 'group_then_reference'."""
    temperature: float = 1.0
    """Sampling and scoring temperature (the training temperature)."""
    max_new_tokens: int = 96
    """Maximum response tokens of generated rollouts."""
    skip_first: int = 8
    """Category means are also reported with the first this-many response tokens excluded (position confound)."""
    deliberation: list[str] | None = None
    """Deliberation words (default: the built-in list, see antisd.pmi.DELIBERATION)."""
    structural: list[str] | None = None
    """Structural / shortcut words (default: antisd.pmi.STRUCTURAL)."""
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
        configio.check_choice(self, {"context": CONTEXTS})
        if self.rollouts and not Path(self.rollouts).is_file():
            raise ValueError(f"--rollouts {self.rollouts}: no such file")
        for name in ("deliberation", "structural"):
            if getattr(self, name) is not None and not getattr(self, name):
                raise ValueError(f"--{name} is empty; leave it out for the built-in list")
        configio.check_nonempty(self, ("model", "task", "output_dir"))


CONTEXTS = ("group", "reference", "group_then_reference")


def _prompt_text(tok, messages: list[dict]) -> str:
    return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def main(cfg: PMIConfig) -> dict:
    from rich.progress import track

    from antisd import context as ctx
    from antisd import pmi
    from antisd.runtime import load_model
    from antisd.scoring import sample, score
    from antisd.tasks import load_task

    import torch

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.output_dir)
    configio.check_output_dir(out, "--output_dir")
    model, tok = load_model(cfg.model)
    task = load_task(cfg.task, seed=cfg.seed, n_heldout=cfg.problems)
    items = _problems(task, cfg.problems)
    student_prompts = [_prompt_text(tok, it.messages) for it in items]

    # 1. Rollouts, grouped by problem (G consecutive rows per problem)
    if cfg.rollouts:
        rollouts = read_rollouts(Path(cfg.rollouts), len(items), tok)
    else:
        print(f"sampling {cfg.G} rollouts for {len(items)} problems")
        rollouts = sample(model, tok, student_prompts, cfg.G, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    texts = [tok.decode(ids, skip_special_tokens=True) for _, ids in rollouts]
    grades = [task.grade(text, items[p].row) for (p, _), text in zip(rollouts, texts)]
    rewards = [float("nan") if g[0] is None else g[0] for g in grades]  # NaN: unparseable gold, never a demonstration

    # 2. Teacher and control contexts, built as in training
    demo_of = _demonstrations(cfg, rollouts, texts, rewards, items, task)
    templates = ctx.ContextTemplates()
    teacher_prompts, control_prompts = [], []
    for k, ((p, _), (_, feedback)) in enumerate(zip(rollouts, grades)):
        prompt = ctx.last_user_text(items[p].messages)
        other = next((demo_of[j] for j in _others(k, rollouts) if demo_of[j] is not None), None)
        teacher_prompts.append(_prompt_text(tok, ctx.teacher_messages(items[p].messages, ctx.teacher_user_text(prompt, demo_of[k], feedback, templates))))
        control_prompts.append(_prompt_text(tok, ctx.teacher_messages(items[p].messages, ctx.teacher_user_text(prompt, other, feedback, templates))))

    # 3. Score under student, teacher and control teacher (batched, with progress)
    enc = lambda texts_: [tok(t, add_special_tokens=False)["input_ids"] for t in texts_]  # noqa: E731
    completions = [ids for _, ids in rollouts]
    scored = {}
    for name, prompts in track(list({"student": [student_prompts[p] for p, _ in rollouts], "teacher": teacher_prompts, "control": control_prompts}.items()), description="scoring"):
        scored[name] = score(model, enc(prompts), completions, tok.pad_token_id, temperature=cfg.temperature, batch_size=cfg.batch_size)
    (s, hs, mask), (t, ht, _), (c, _, _) = scored["student"], scored["teacher"], scored["control"]

    # 4. Statistics and report
    tokens = [[tok.decode([i]) for i in ids] for ids in completions]
    records = pmi.token_records(tokens, s, t, c, hs, ht, mask)
    categories = {"deliberation": tuple(cfg.deliberation or pmi.DELIBERATION), "structural": tuple(cfg.structural or pmi.STRUCTURAL)}
    stats = pmi.statistics_of(records, categories, skip_first=cfg.skip_first)
    stats |= {"model": cfg.model, "task": task.name, "problems": len(items), "G": cfg.G, "accuracy": sum(rewards) / len(rewards),
              "demo_fraction": sum(d is not None for d in demo_of) / len(demo_of), "context": cfg.context}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    pmi.density_png(records, out / "density.png")
    headers = {k: f"problem {p} · reward {rewards[k]:.0f} · context: {_context_label(demo_of[k], items[p].row.get('reference'))}" for k, (p, _) in enumerate(rollouts)}
    (out / "pmi.html").write_text(pmi.render_html(f"PMI diagnostic: {cfg.model} on {task.name}", records, stats, out / "density.png", headers))
    (out / "pmi.json").write_text(json.dumps(stats, indent=2, default=float))
    with (out / "tokens.jsonl").open("w") as f:
        for r in pmi.records_as_json(records):
            f.write(json.dumps(r) + "\n")
    _print(stats)
    print(f"open {out / 'pmi.html'} (tokens coloured by u, density, category tables); statistics in {out / 'pmi.json'}, every token in {out / 'tokens.jsonl'}")
    return stats


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


def _context_label(demo: str | None, reference: str | None) -> str:
    if demo is None:
        return "feedback only"
    return "reference solution" if reference is not None and demo == reference else "demonstration (a correct sibling)"


def _others(k: int, rollouts) -> list[int]:
    """Rollout indices of *other* problems, nearest first (the control's mismatched context)."""
    p = rollouts[k][0]
    return sorted((j for j, (q, _) in enumerate(rollouts) if q != p), key=lambda j: (abs(rollouts[j][0] - p), j))


def _demonstrations(cfg: PMIConfig, rollouts, texts, rewards, items, task) -> list[str | None]:
    from antisd import context as ctx

    by_problem: dict[int, list[int]] = {}
    for k, (p, _) in enumerate(rollouts):
        by_problem.setdefault(p, []).append(k)
    cut = task.cut_demonstration or (lambda x: x)
    demos: list[str | None] = [None] * len(rollouts)
    for p, ks in by_problem.items():
        reference = items[p].row.get("reference")
        picks = ctx.select_demonstrations([rewards[k] for k in ks], len(ks))
        for k, pick in zip(ks, picks):
            if cfg.context in ("group", "group_then_reference") and pick is not None:
                demos[k] = cut(texts[ks[pick]])
            elif cfg.context in ("reference", "group_then_reference") and reference:
                demos[k] = reference
    return demos


def _print(stats: dict) -> None:
    u, uc = stats["u"], stats["u_minus_control"]
    print(f"{stats['n_tokens']} tokens in {stats['n_rollouts']} rollouts; accuracy {stats['accuracy']:.3f}; demonstration for {stats['demo_fraction']:.0%}")
    print(f"u: mean {u['mean']:+.3f}, frac<0 {u['frac_neg']:.3f}, min {u['min']:.2f}   u−u_ctrl: mean {uc['mean']:+.3f}, frac<0 {uc['frac_neg']:.3f}")
    for name, c in stats["categories"].items():
        print(f"  {name:13s} n={c['u']['n']:5d}  u {c['u']['mean']:+.3f} ± {c['u']['ci95']:.3f}   u−u_ctrl {c['u_minus_control']['mean']:+.3f} ± {c['u_minus_control']['ci95']:.3f}")


def cli(argv: list[str]) -> dict:
    return main(configio.parse(PMIConfig, argv, prog="antisd pmi", description=__doc__.split("\n\n")[0]))
