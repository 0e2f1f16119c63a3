"""Mutation check: plant wiring and formula errors in the trainer and core, one at a time, and see which the
tests kill. Rerun after any change to the trainer, step, context or core:

    .venv/bin/python scripts/mutants.py            # all mutants (≈ 30 s each on 2 cores)
    .venv/bin/python scripts/mutants.py tau_rearm  # some, by name

Each mutant is a literal text replacement in one source file, applied to a copy of the repository in a temporary
directory (the working tree is never touched). A mutant whose replacement text is not found is reported as
STALE (the code moved on: update the list). Exit status 1 if any mutant survives or is stale.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The oracle runs first, so a wiring error it catches is reported as killed by it.
TESTS = ["tests/test_oracle.py", "tests/test_core.py", "tests/test_context.py", "tests/test_step.py", "tests/test_wiring.py", "tests/test_control.py",
         "tests/test_teacher_pass.py", "tests/test_code.py", "tests/test_code_sets.py", "tests/test_stats.py", "tests/test_testbed.py", "tests/test_compare.py"]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    what: str


TRAINER = "src/antisd/integrations/trl/trainer.py"
STEP = "src/antisd/method/step.py"
CONTEXT = "src/antisd/method/context.py"
MODES = "src/antisd/method/modes.py"
PASS = "src/antisd/method/teacher_pass.py"
TEACHERS = "src/antisd/method/teachers.py"
CODE = "src/antisd/tasks/code.py"
CODE_SETS = "src/antisd/evaluation/code_sets.py"
ADVANTAGES = "src/antisd/core/advantages.py"
GATE = "src/antisd/core/gate.py"
STATS = "src/antisd/evaluation/stats.py"
COMPARE = "src/antisd/commands/compare.py"
CHECK = "src/antisd/testbed/check.py"
MUTANTS = [
    # the 7 trainer wiring errors of issue #10
    Mutant("teacher_shift", TRAINER, "return self._score(ids, mask, completion_ids.size(1), entropy, model=model)",
           "logp, ent = self._score(ids, mask, completion_ids.size(1) + 1, True, model=model); return logp[:, :-1], ent[:, :-1]",
           "teacher log-probs shifted by one token"),
    Mutant("self_demo", CONTEXT, "picks = select_demonstrations_by_group(scored, group_ids, s.success_threshold)",
           "picks = select_demonstrations_by_group(scored, group_ids, s.success_threshold, exclude_self=False)",
           "a rollout shown its own text as the demonstration"),
    Mutant("feedback_swap", CONTEXT, "line = s.feedback_correct if rewards[g] >= s.success_threshold else s.feedback_incorrect",
           "line = s.feedback_incorrect if rewards[g] >= s.success_threshold else s.feedback_correct",
           "correct/incorrect feedback swapped"),
    Mutant("gate_student_ppl", MODES, 'return ppl_statistic(teacher_ppl_B, mask_BT, settings.ppl_spike, reducer)',
           'return ppl_statistic(student_ppl_B, mask_BT, settings.ppl_spike, reducer)', "the PPL gate reads the student's PPL"),
    Mutant("tau_rearm", MODES, "else s.lambda_tau_ratio * m", "else s.gate_up_ratio * m", "τ from the re-arm ratio"),
    Mutant("no_generation_prompt", CONTEXT, "tokenizer.apply_chat_template(prompt, add_generation_prompt=True,",
           "tokenizer.apply_chat_template(prompt, add_generation_prompt=False,", "add_generation_prompt=False on the teacher prompt"),
    Mutant("right_padded_teacher", TRAINER, "[i, width - len(r) :]", "[i, : len(r)]", "teacher prompt right-padded"),
    # the 4 core errors that survived the old fixtures
    Mutant("spike_ge", "src/antisd/core/shaping.py", "torch.where(ppl_B.float() > ppl_spike", "torch.where(ppl_B.float() >= ppl_spike",
           "PPL spike `>` → `>=`"),
    Mutant("gate_le", "src/antisd/core/gate.py", "if self.active and stat < self.tau_down:", "if self.active and stat <= self.tau_down:",
           "gate closes at `<=` instead of `<`"),
    Mutant("warm_mean", "src/antisd/core/gate.py", "self.warm = statistics.median(self.warm_values)",
           "self.warm = statistics.mean(self.warm_values)", "warm value: mean instead of median"),
    Mutant("sigma_ref_median", "src/antisd/core/shaping.py", "self.value = sum(self.observed) / len(self.observed)",
           "self.value = sorted(self.observed)[len(self.observed) // 2]", "σ_ref: median instead of mean"),
    # further formula and wiring errors
    Mutant("phi_sign", "src/antisd/core/signals.py", "return -jsd_phi(u_BT)", "return jsd_phi(u_BT)", "AntiSD signal with SD's sign"),
    Mutant("zscore_unbiased", "src/antisd/core/masked.py", "return masked_mean(centred.square(), mask_BT, dim).sqrt()",
           "return (masked_sum(centred.square(), mask_BT, dim) / (mask_BT.bool().sum() if dim is None else mask_BT.bool().sum(dim=dim)).sub(1).clamp(min=1)).sqrt()",
           "unbiased instead of population std"),
    Mutant("outlier_k", MODES, "k_sigma=s.outlier_k,", "k_sigma=s.outlier_k + 1.0,", "outlier threshold off by σ"),
    Mutant("microbatch_lower_median", STEP, "local = upper_median(self.microbatch_warm_values)",
           "local = statistics.median_low(self.microbatch_warm_values)", "release warm statistic: lower instead of upper median"),
    Mutant("context_not_excluded", STEP, 'if x.has_context_B is not None and s.signal != "no_teacher":', "if False:",
           "rows without privileged context keep the term"),
    Mutant("teacher_messages_all", CONTEXT, 'kept = prompt_messages[:-1] if mode == "all_but_last"', 'kept = prompt_messages if mode == "all_but_last"',
           "release teacher message list keeps the last message"),
    # the experimental control-subtracted preset (issue #12 §2), killed by tests/test_control.py
    Mutant("control_is_teacher", CONTEXT, "source = texts[mismatched[g]] if mismatched[g] is not None else None",
           "source = texts[picks[g]]", "the control teacher sees the row's own sibling (u − u_control ≡ 0)"),
    Mutant("control_sign", STEP, "u_BT = u_BT - token_pmi(control_logp_BT, student_logp_BT, mask_BT)",
           "u_BT = u_BT + token_pmi(control_logp_BT, student_logp_BT, mask_BT)", "u + u_control instead of u − u_control"),
    Mutant("control_lost_at_loss", TRAINER, 'out["antisd_control_logp"] = teacher.control_logp_BT', 'out["antisd_control_logp"] = teacher.teacher_logp_BT',
           "the loss-time composition gets the teacher's log-probs as the control's"),
    # the three kinds of wiring error of issue #19, killed by tests/test_wiring.py and tests/test_oracle.py
    Mutant("step_stat_mean", MODES, "return values.median().item() if values.numel()", "return values.mean().item() if values.numel()",
           "gate statistic: mean of token entropies instead of the median"),
    Mutant("ppl_warm_mean", STEP, "self.ppl_warm = statistics.median(finite) if finite else math.nan",
           "self.ppl_warm = statistics.fmean(finite) if finite else math.nan", "warm teacher PPL m: mean of the warm-up steps instead of the median"),
    Mutant("gate_stat_local", MODES, "values = reducer.gather(teacher_entropy_BT[mask_BT.bool()].float())",
           "values = teacher_entropy_BT[mask_BT.bool()].float()", "entropy gate statistic from this process's rows only"),
    Mutant("sigma_ref_local", STEP, "self.sigma_ref.observe(global_token_std(-u_BT, signal_mask_BT, reducer))",
           "self.sigma_ref.observe(global_token_std(-u_BT, signal_mask_BT, LOCAL))", "σ_ref from this process's rows only"),
    Mutant("ppl_stat_local", MODES, "total, count = reducer.sum([ppl_B[keep_B].double().sum().item(), keep_B.sum().item()])",
           "total, count = [float(ppl_B[keep_B].double().sum().item()), float(keep_B.sum().item())]", "PPL gate statistic and warm PPL (τ) from this process's rows only"),
    Mutant("teacher_with_grad", TRAINER, "with torch.no_grad(), checkpointing:", "with checkpointing:",
           "the teacher forward runs with gradient (the advantages would carry it into the loss)"),
    # the one teacher pass and the teacher sources of issue #21, killed by tests/test_teacher_pass.py
    Mutant("context_rows_with_padding", PASS, '"rows": sum(real),', '"rows": len(real),', "context fractions counted over padding rows too"),
    Mutant("ema_weights_swapped", TEACHERS, "add_(p.detach().to(t.device, t.dtype), alpha=1.0 - self.decay)",
           "add_(p.detach().to(t.device, t.dtype), alpha=self.decay)", "EMA step with the decay on the wrong side"),
    Mutant("frozen_scores_live", TRAINER, "with self.antisd_teacher.scoring(self.model) as model:", "with contextlib.nullcontext(self.model) as model:",
           "the teacher pass scores with the live policy whatever the teacher source"),
    Mutant("teacher_not_restored", TRAINER, "self.antisd_teacher.load(Path(checkpoint))", "pass", "a resumed run keeps a fresh teacher copy"),
    # code reasoning (issue #22), killed by tests/test_code.py and tests/test_code_sets.py
    Mutant("code_first_block", CODE, "return blocks[-1] if blocks else None", "return blocks[0] if blocks else None", "the program is the first code block, not the last"),
    Mutant("code_cut_first_block", CODE, "return completion[: matches[-1].end()] if matches", "return completion[: matches[0].end()] if matches",
           "a demonstration cut after its first code block"),
    Mutant("code_feedback_failed", CODE, "FEEDBACK.format(passed=passed, total=len(tests))", "FEEDBACK.format(passed=len(tests) - passed, total=len(tests))",
           "the feedback counts failed tests as passed"),
    Mutant("code_prefix_dropped", CODE, "_passes((row.get(\"prefix\") or \"\") + program,", "_passes(program,", "the problem's prefix (imports, helpers) not run"),
    Mutant("code_deadline_ignored", CODE, "left = _step_time_left(limits.wall_seconds)", "left = limits.wall_seconds", "code grading ignores the step deadline"),
    Mutant("evalplus_base_only", CODE_SETS, "inputs = list(r.get(\"base_input\") or []) + list(r.get(\"plus_input\") or [])",
           "inputs = list(r.get(\"base_input\") or [])", "EvalPlus rows tested on their base inputs only"),
    # the dose study (issue #23): dose meter, pooled gate, rate statistics, collapse rule, regime properties
    Mutant("dose_signed", ADVANTAGES, "term, base = (adv_BT.double() - seq_BT)[m].abs(), seq_BT[m].abs()", "term, base = (adv_BT.double() - seq_BT)[m], seq_BT[m].abs()",
           "the dose meter sums the signed term (positive and negative parts cancel)"),
    Mutant("dose_unmasked", ADVANTAGES, "    m = mask_BT.bool()\n    seq_BT", "    m = torch.ones_like(mask_BT, dtype=torch.bool)\n    seq_BT", "the dose counts padding tokens"),
    Mutant("pool_ignored", GATE, "stat = statistics.fmean(self.recent)", "stat = self.recent[-1]", "the pooled gate decides on this step's statistic alone"),
    Mutant("fisher_drops_observed", STATS, "if p <= pmf[a] * (1 + 1e-7)", "if p < pmf[a]", "two-sided Fisher leaves out the observed table and its ties"),
    Mutant("newcombe_wrong_limit", STATS, "low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)", "low = d - math.sqrt((p1 - l1) ** 2 + (p2 - l2) ** 2)",
           "Newcombe's lower limit with the second rate's lower instead of upper Wilson limit"),
    Mutant("collapse_tail_blind", COMPARE, "if tail >= 2:", "if tail >= 5:", "the collapse rule misses a collapse in the last steps"),
    Mutant("check_dose_signed", CHECK, "jsd_phi(torch.tensor(u, dtype=torch.float64)).abs().mean()", "jsd_phi(torch.tensor(u, dtype=torch.float64)).mean()",
           "the regime check's mean |φ(u)| without the absolute value"),
]


def run(mutant: Mutant, workdir: Path) -> tuple[str, float, str]:
    target = workdir / mutant.path
    original = target.read_text()
    if mutant.old not in original:
        return "STALE", 0.0, ""
    target.write_text(original.replace(mutant.old, mutant.new))
    env = os.environ | {"PYTHONPATH": str(workdir / "src"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TESTS], cwd=workdir, env=env, capture_output=True, text=True)
    target.write_text(original)
    failed = [line.split(" ")[1].split("::", 1)[-1] for line in proc.stdout.splitlines() if line.startswith("FAILED ")]
    return ("killed" if proc.returncode != 0 else "SURVIVED"), time.time() - start, (failed[0] if failed else "")


def main(names: list[str]) -> int:
    chosen = [m for m in MUTANTS if not names or m.name in names]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "repo"
        shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "__pycache__", "*.egg-info"))
        bad = 0
        print(f"{'mutant':24} {'result':8} {'secs':>4}  {'killed by':58} what")
        for m in chosen:
            result, secs, by = run(m, work)
            bad += result != "killed"
            print(f"{m.name:24} {result:8} {secs:4.0f}  {by[:58]:58} {m.what}", flush=True)
    print(f"{len(chosen) - bad} of {len(chosen)} killed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
