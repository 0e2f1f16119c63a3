"""Cost of one training step: plain TRL GRPO vs antisd's presets, interleaved in one process, with a per-phase
breakdown and the peak memory of each phase.

    .venv/bin/python benchmarks/step_cost.py --model testbed --steps 8
    .venv/bin/python benchmarks/step_cost.py --model testbed --steps 8 --replay     # every variant, the same rollouts
    .venv/bin/python benchmarks/step_cost.py --model smollm2-135m --task gsm --prompts 4 --G 4 --max_tokens 160 --steps 3

Every variant is built once (same model weights, same data order, same seed); then the steps are interleaved
(variant A step 1, variant B step 1, …) so that machine noise hits all variants alike. Phases are timed
exclusively (a nested phase's time is not counted in its parent): generation, reward, context building, teacher
forward, separate student forward, loss forward, backward, optimizer; "other" is the rest of the step. A sampler
thread records the resident set size every 5 ms and keeps the peak of each phase. It prints medians with their
min–max spread, and the ratios the issue asks for, all from this one run:
- (antisd − TRL GRPO) / teacher forward: 1.0 means AntiSD costs exactly its one teacher forward;
- grpo preset / TRL GRPO: the λ = 0 baseline's overhead;
- the teacher sources (``--variants trl_grpo,antisd,antisd_frozen_teacher,antisd_ema_teacher``): a kept teacher's
  extra memory shows in the peak, an EMA teacher's update after each optimizer step in ``teacher_update``.

Without ``--replay`` each variant samples its own rollouts, so after the first update their lengths diverge and
the ratios mix the method's cost with its trajectory (1.02–1.31 across machines for the same code). With
``--replay`` the first variant's generation at each step is recorded and every other variant scores exactly those
completions (same prompts: checked), and the ratios are computed on the step *without* generation; the tokens each
phase processed are counted, so equal inputs can be seen. Results also go to ``--out``: ``step_cost.json`` and
``step_cost.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import psutil
import torch

PHASES = ("generation", "reward", "context", "teacher_forward", "student_forward", "loss_forward", "backward", "optimizer", "teacher_update", "other")


class PhaseClock:
    """Exclusive wall time and peak RSS per phase, with nesting (the innermost phase owns the time)."""

    def __init__(self):
        self.stack: list[list] = []  # [name, start, child_time]
        self.times: dict[str, float] = defaultdict(float)
        self.peak: dict[str, float] = defaultdict(float)
        self.tokens: dict[str, int] = defaultdict(int)
        self._proc, self._stop = psutil.Process(), threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while not self._stop.is_set():
            name = self.stack[-1][0] if self.stack else "other"
            self.peak[name] = max(self.peak[name], self._proc.memory_info().rss / 2**30)
            time.sleep(0.005)

    @contextmanager
    def phase(self, name: str):
        self.stack.append([name, time.perf_counter(), 0.0])
        try:
            yield
        finally:
            _, start, child = self.stack.pop()
            total = time.perf_counter() - start
            self.times[name] += total - child
            if self.stack:
                self.stack[-1][2] += total

    def reset(self):
        self.times.clear()
        self.peak.clear()
        self.tokens.clear()

    def count(self, tokens: int) -> None:
        """Tokens processed by the innermost phase (a forward's attention mask, a generation's completions)."""
        self.tokens[self.stack[-1][0] if self.stack else "other"] += int(tokens)


def _wrap(obj, attr: str, clock: PhaseClock, name_of):
    original = getattr(obj, attr)

    def wrapped(*args, **kwargs):
        with clock.phase(name_of(*args, **kwargs)):
            return original(*args, **kwargs)

    setattr(obj, attr, wrapped)


def instrument(trainer, clock: PhaseClock) -> None:
    calls = {"score": 0}
    _wrap(trainer, "_generate", clock, lambda *a, **k: "generation")
    _wrap(trainer, "_calculate_rewards", clock, lambda *a, **k: "reward")
    for attr in ("_rollouts", "_tokenize_teacher"):
        if hasattr(trainer, attr):
            _wrap(trainer, attr, clock, lambda *a, **k: "context")
    if hasattr(trainer, "_score"):

        def score_name(*a, **k):
            calls["score"] += 1
            return "teacher_forward" if calls["score"] % 2 == 1 or not trainer.args.score_student_separately else "student_forward"

        _wrap(trainer, "_score", clock, score_name)
    def forward_name(*a, **k):
        if torch.is_grad_enabled():
            return "loss_forward"
        inside = clock.stack[-1][0] if clock.stack else ""
        return inside if inside in ("teacher_forward", "student_forward") else "student_forward"  # TRL's old log-probs

    forward = trainer._get_per_token_logps_and_entropies

    def counted(model, input_ids, attention_mask, *a, **k):  # wrapped by the phase below: counts under its name
        clock.count(attention_mask.sum())
        return forward(model, input_ids, attention_mask, *a, **k)

    trainer._get_per_token_logps_and_entropies = counted
    _wrap(trainer, "_get_per_token_logps_and_entropies", clock, forward_name)
    _wrap(trainer.accelerator, "backward", clock, lambda *a, **k: "backward")


def record_or_replay(trainer, clock: PhaseClock, store: dict, first: bool) -> None:
    """--replay: the first variant's i-th generation is recorded; every other variant gets exactly those completions
    for its i-th generation (its prompts must be the same)."""
    generate = trainer._generate_single_turn
    calls = {"n": 0}

    def wrapped(prompt_ids, *a, **k):
        i, calls["n"] = calls["n"], calls["n"] + 1
        if first:
            ids, logprobs = generate(prompt_ids, *a, **k)
            store[i] = ([list(p) for p in prompt_ids], [list(c) for c in ids])
        else:
            prompts, ids = store[i]
            if [list(p) for p in prompt_ids] != prompts:
                raise RuntimeError(f"replay: generation {i} was asked for other prompts than the recorded ones")
            ids, logprobs = [list(c) for c in ids], None
        clock.count(sum(len(c) for c in ids))
        return ids, logprobs

    trainer._generate_single_turn = wrapped


def build(variant: str, cfg, model_name: str, task, tok_and_model):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from antisd.commands.train import TrainConfig, trainer_args, trl_kwargs
    from antisd.integrations.trl import AntiSDTrainer
    from antisd.method.settings import preset

    model, tok = tok_and_model()
    name, _, flag = variant.partition("+")
    tc = TrainConfig(preset=name if name != "trl_grpo" else "grpo", model=model_name, prompts_per_step=cfg.prompts, num_generations=cfg.G,
                     max_completion_length=cfg.max_tokens, steps=cfg.steps + 1, seed=0, save_steps=0, grad_accum=cfg.grad_accum, gradient_checkpointing=cfg.gradient_checkpointing)  # fmt: skip
    args = trainer_args(tc, cfg.out)
    data = Dataset.from_list(task.train_rows)
    if name == "trl_grpo":
        plain = GRPOConfig(**trl_kwargs(tc, cfg.out))
        return GRPOTrainer(model=model, reward_funcs=[task.reward_fn()], args=plain, train_dataset=data, processing_class=tok)
    if flag == "extra_forward":
        args.score_student_separately = True
    args.score_batch_size = cfg.score_batch_size
    args.antisd = preset(name).replace(gate_warmup_steps=1) if preset(name).needs_warmup else preset(name)
    return AntiSDTrainer(model=model, reward_funcs=[task.reward_fn()], args=args, train_dataset=data, processing_class=tok, cut_demonstration=task.cut_demonstration)


class Runner:
    """One variant's manual training loop (so that steps of several variants can be interleaved)."""

    def __init__(self, trainer, clock: PhaseClock):
        self.trainer, self.clock = trainer, clock
        trainer.create_optimizer_and_scheduler(num_training_steps=10**6)
        opt = trainer.optimizer
        _wrap(opt, "step", clock, lambda *a, **k: "optimizer")
        self.batches = iter(trainer.get_train_dataloader())
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps  # set by train() otherwise

    def step(self) -> tuple[float, dict[str, float], dict[str, float]]:
        t = self.trainer
        self.clock.reset()
        start = time.perf_counter()
        loss = 0.0
        with self.clock.phase("other"):
            for _ in range(t.args.gradient_accumulation_steps):
                loss += float(t.training_step(t.model, next(self.batches), None))
            t.optimizer.step()
            t.optimizer.zero_grad()
            if hasattr(t, "antisd_teacher"):  # what the trainer's callback does after every optimizer step (EMA teacher)
                with self.clock.phase("teacher_update"):
                    t.antisd_teacher.after_optimizer_step(t.model)
        total = time.perf_counter() - start
        self.last_loss = loss
        self.last_tokens = dict(self.clock.tokens)
        return total, dict(self.clock.times), dict(self.clock.peak)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="testbed")
    p.add_argument("--task", default="countdown")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--G", type=int, default=8)
    p.add_argument("--max_tokens", type=int, default=128)
    p.add_argument("--steps", type=int, default=8, help="measured steps per variant (after one warm-up step)")
    p.add_argument("--variants", default="trl_grpo,grpo,antisd,antisd_release,antisd+extra_forward")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--grad_accum", type=int, default=1, help="micro-batches per step (the loss's batch; generation is unchanged)")
    p.add_argument("--gradient_checkpointing", action="store_true", help="recompute activations in the backward")
    p.add_argument("--score_batch_size", type=int, default=None, help="rows per teacher scoring forward (default: the micro-batch)")
    p.add_argument("--out", default="runs/bench-step-cost", help="directory for step_cost.json and step_cost.md")
    p.add_argument("--replay", action="store_true", help="every variant scores the first variant's recorded rollouts (ratios without generation)")
    cfg = p.parse_args()
    torch.set_num_threads(cfg.threads)
    from antisd.infra.models import load_model
    from antisd.tasks import load_task

    task = load_task(cfg.task, seed=0, n_heldout=4)
    variants = cfg.variants.split(",")
    clock = PhaseClock()
    runners = {}
    store: dict = {}
    for v in variants:
        torch.manual_seed(0)
        trainer = build(v, cfg, cfg.model, task, lambda: load_model(cfg.model))
        instrument(trainer, clock)
        if cfg.replay:
            record_or_replay(trainer, clock, store, first=v == variants[0])
        runners[v] = Runner(trainer, clock)
    results: dict[str, list] = {v: [] for v in variants}
    for i in range(cfg.steps + 1):  # step 0 warms caches up and is not counted
        for v in variants:
            torch.manual_seed(1000 + i)
            total, phases, peaks = runners[v].step()
            if i:
                results[v].append((total, phases, peaks, runners[v].last_tokens))
            print(f"step {i} {v:22s} {total:7.2f} s  peak RSS {max(peaks.values(), default=0):.2f} GB  loss {runners[v].last_loss:+.6f}", file=sys.stderr, flush=True)
    report(results, cfg)


def report(results: dict, cfg) -> None:
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    lines = [f"model {cfg.model}, {cfg.prompts}×{cfg.G} rollouts, ≤ {cfg.max_tokens} tokens, grad_accum {cfg.grad_accum}, gradient checkpointing {cfg.gradient_checkpointing}, "
             f"score batch {cfg.score_batch_size}, {cfg.steps} measured steps per variant, {cfg.threads} threads, {'replayed rollouts' if cfg.replay else 'own rollouts'}"]  # fmt: skip
    lines.append(f"{'variant':22s} {'step s (min–max)':>20s}  " + "  ".join(f"{ph[:12]:>12s}" for ph in PHASES) + "   peak GB")
    summary = {}
    for v, rows in results.items():
        totals = [r[0] for r in rows]
        phase_med = {ph: med([r[1].get(ph, 0.0) for r in rows]) for ph in PHASES}
        without_generation = med([r[0] - r[1].get("generation", 0.0) for r in rows])
        tokens = {ph: med([r[3].get(ph, 0) for r in rows]) for ph in PHASES if any(r[3].get(ph) for r in rows)}
        peak = max(max(r[2].values(), default=0) for r in rows)
        summary[v] = {"step": med(totals), "step_without_generation": without_generation, "phases": phase_med, "tokens": tokens, "peak_rss_gb": peak,
                      "step_min": min(totals), "step_max": max(totals)}  # fmt: skip
        lines.append(f"{v:22s} {med(totals):7.3f} ({min(totals):.3f}–{max(totals):.3f})  " + "  ".join(f"{phase_med[ph]:12.3f}" for ph in PHASES) + f"   {peak:6.2f}")
    lines.append("\ntokens per phase (median per step):")
    for v, sm in summary.items():
        lines.append(f"  {v:22s} " + "  ".join(f"{ph}={n:.0f}" for ph, n in sm["tokens"].items()))
    lines.append("\npeak RSS (GB) per phase, max over steps:")
    for v, rows in results.items():
        lines.append(f"  {v:22s} " + "  ".join(f"{ph}={max(r[2].get(ph, 0) for r in rows):.2f}" for ph in PHASES if any(ph in r[2] for r in rows)))
    base = summary.get("trl_grpo")
    key = "step_without_generation" if cfg.replay else "step"
    if base:
        lines.append(f"\nratios on the {'step without generation (replayed rollouts)' if cfg.replay else 'whole step'}:")
        for v, sm in summary.items():
            if v == "trl_grpo":
                continue
            line = f"{v:22s} step ratio vs TRL GRPO {sm[key] / base[key]:.3f}"
            if sm["phases"]["teacher_forward"] > 0:
                sm["over_teacher_forward"] = (sm[key] - base[key]) / sm["phases"]["teacher_forward"]
                line += f";  (step − TRL GRPO) / teacher forward = {sm['over_teacher_forward']:.2f}  (1.00 = only the teacher forward added)"
            sm["ratio_vs_trl_grpo"] = sm[key] / base[key]
            lines.append(line)
    print("\n".join(lines))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_cost.json").write_text(json.dumps({"config": vars(cfg), "summary": summary}, indent=2))
    (out / "step_cost.md").write_text("```\n" + "\n".join(lines) + "\n```\n")
    print(f"\nwritten: {out / 'step_cost.json'}, {out / 'step_cost.md'}")


if __name__ == "__main__":
    main()
