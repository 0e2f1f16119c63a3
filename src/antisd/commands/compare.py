"""`antisd compare`: matched runs of several variants over several seeds, and a report.

Every (variant, seed) pair is one `antisd train` run in ``<output_dir>/<variant>-s<seed>`` with the same seed,
hence the same initial model, the same prompt order and the same evaluation noise as the other variants of that
seed. Held-out avg@k is measured every ``eval_every`` steps. Runs are resumable (a finished run is skipped, an
interrupted one resumes from its last checkpoint), and ``--report_only true`` re-plots from the run directories.

The report (``report.md`` + ``report.png``) gives: accuracy curves with per-seed spread; the primary metric, the
area under the held-out accuracy curve (AUC: mean avg@k over the evaluation points), with each variant's paired
difference to the baseline, its t-interval at the Bonferroni level for the number of variants compared and its
Holm-adjusted p-value (:mod:`antisd.evaluation.stats`); each variant's best avg@k and its step (on the seed-mean curve), the
steps to reach GRPO's best and the resulting speedup (the paper's Table 1 definition: GRPO's best step / first
step at which the variant reaches GRPO's best), final accuracy minus GRPO's (paired by seed, 95% t-interval), and
training dynamics: response length, student and teacher entropy, fraction of u < 0, gate activity.

``--plan_seeds true`` reads the baseline's finished runs in ``output_dir`` as a pilot and prints how many seeds
make the paired AUC interval at most ``target_halfwidth`` wide on each side (:func:`antisd.evaluation.stats.seeds_for_halfwidth`).

Example:
    antisd compare --variants grpo,sd,antisd_release,antisd --seeds 3 --steps 100 --eval_every 10
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from antisd.infra import configio

from antisd.infra import rundir

from antisd.evaluation import stats
from antisd.commands import train
from antisd.infra.runlog import read_jsonl
from antisd.method.settings import AntiSDSettings, from_prefixed, preset

DYNAMICS = (
    ("train/completions/mean_length", "response length"),
    ("train/entropy", "student entropy"),
    ("antisd/teacher_entropy_mean", "teacher entropy"),
    ("antisd/frac_u_neg", "fraction u < 0"),
    ("antisd/lambda_mean", "λ mean (0 while the gate is shut)"),
    ("antisd/term_ratio", "dose: mean |term| / mean |A_seq|"),
    ("reward/reward", "train reward"),
)


@dataclass(frozen=True)
class CompareConfig:
    """Config of `antisd compare`. Fields not listed here take `antisd train`'s defaults."""

    variants: list[str] = field(default_factory=lambda: ["grpo", "sd", "antisd_release", "antisd"])
    """Presets to compare (comma-separated); 'preset@field=value' overrides a trainer field, e.g. antisd@antisd_lambda_max=2."""
    seeds: int = 3
    """Seeds first_seed..first_seed+seeds-1 per variant."""
    first_seed: int = 0
    """First seed (a pilot uses seeds disjoint from the main comparison's, e.g. 100)."""
    steps: int = 100
    """Training steps per run."""
    eval_every: int = 10
    """Held-out evaluation every this many steps (and at step 0)."""
    eval_k: int = 4
    """Samples per held-out problem (avg@k)."""
    eval_problems: int = 128
    """Held-out problems."""
    eval_batch_size: int = 64
    """Held-out samples generated per batch (speed only)."""
    output_dir: str = "runs/compare"
    """Directory holding one run directory per (variant, seed), and the report."""
    baseline: str = "grpo"
    """Variant the speedup and deltas are measured against."""
    model: str = "testbed"
    """Model for every run (see `antisd train --model`)."""
    task: str = "countdown"
    """Task for every run."""
    prompts_per_step: int = 8
    """Problems per step."""
    num_generations: int = 8
    """Rollouts per problem."""
    learning_rate: float = 1e-4
    """Learning rate of every run."""
    report_only: bool = False
    """Only rebuild the report from existing run directories."""
    runaway_after: int = 10
    """Runaway rule: only steps after this one count (docs/results/testbed-v2.md)."""
    target_halfwidth: float = 0.03
    """Half-width of the paired AUC interval a seed plan aims at (0.03 = ±3 pp)."""
    plan_seeds: bool = False
    """Only plan: from the baseline's finished runs in output_dir (the pilot), print the seeds the comparison of
    ``variants`` needs for ``target_halfwidth`` (Bonferroni over the non-baseline variants), and exit."""
    trend_variants: list[str] = field(default_factory=list)
    """Variants in increasing order of a dose (the baseline may come first): the report adds the exact one-sided
    trend test of the collapse rate over them, scored 0, 1, 2, … (``stats.exact_trend_test``): one test where one
    Fisher test per dose has little power at a few seeds each."""
    plan_doses: list[float] = field(default_factory=list)
    """Only plan λ (issue #23): from the finished runs in output_dir of the first non-baseline variant (a pilot of a
    paper-form, constant-λ variant, whose term is proportional to λ), print the λ that gives each of these doses
    (mean `antisd/term_ratio` over the steps with the term on, e.g. 0.02,0.05,0.1,0.2), and exit."""

    def __post_init__(self):
        configio.check_at_least(self, {"seeds": 1, "first_seed": 0, "steps": 1, "eval_every": 1, "eval_k": 1, "eval_problems": 1,
                                       "eval_batch_size": 1, "prompts_per_step": 1, "num_generations": 2, "runaway_after": 0})  # fmt: skip
        configio.check_positive(self, ("learning_rate", "target_halfwidth"))
        if any(not (math.isfinite(d) and d > 0) for d in self.plan_doses):
            raise ValueError(f"--plan_doses must be doses > 0 (fractions of |A_seq|, e.g. 0.02,0.05), got {self.plan_doses}")
        if self.first_seed + self.seeds > configio.SEED_LIMIT:
            raise ValueError(f"--first_seed {self.first_seed} + --seeds {self.seeds} passes the largest seed 2^32 − 1")
        if self.eval_every > self.steps:
            raise ValueError(f"--eval_every {self.eval_every} > --steps {self.steps}: the runs would be evaluated at step 0 only")
        configio.check_nonempty(self, ("model", "task", "output_dir"))
        if not self.variants:
            raise ValueError("--variants is empty; give presets to compare, e.g. grpo,antisd")
        repeated = sorted({v for v in self.variants if self.variants.count(v) > 1})
        if repeated:
            raise ValueError(f"--variants names {repeated} twice; each variant is one set of runs")
        unknown = [v for v in self.trend_variants if v not in self.variants]
        if unknown or len(set(self.trend_variants)) != len(self.trend_variants) or len(self.trend_variants) == 1:
            raise ValueError(f"--trend_variants {self.trend_variants}: needs two or more distinct variants, each among --variants (not there: {unknown})")
        if self.baseline not in self.variants:
            raise ValueError(f"--baseline {self.baseline!r} is not among --variants {self.variants}; add it, or choose one of them")
        for variant in self.variants:
            name, settings = parse_variant(variant)
            if settings.needs_warmup and settings.lambda_max > 0 and settings.gate_warmup_steps >= self.steps:
                raise ValueError(f"variant {variant!r}: its warm-up of {settings.gate_warmup_steps} steps (λ = 0) is not shorter than --steps {self.steps}: "
                                 "it would be GRPO under another name; give more --steps or a shorter warm-up (@antisd_gate_warmup_steps=N)")  # fmt: skip


def seed_range(cfg: CompareConfig) -> range:
    return range(cfg.first_seed, cfg.first_seed + cfg.seeds)


def parse_variant(variant: str) -> tuple[str, AntiSDSettings]:
    """'preset' or 'preset@field=value@field=value' (AntiSD settings), e.g. 'antisd@antisd_lambda_max=2'.

    Returns the preset name and the settings object of the variant (the preset with the overrides applied).
    Every run of a comparison scores a teacher with its entropies (``diagnostics``), λ = 0 baselines too (a live
    teacher where the preset has none): the u diagnostics of every variant are the point of a comparison.
    """
    name, *overrides = variant.split("@")
    fields = train.antisd_fields()
    extras = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if key in train.TrainConfig.RENAMED_OPTIONS:
            raise ValueError(f"variant {variant!r}: {key} was renamed {train.TrainConfig.RENAMED_OPTIONS[key]}")
        if not sep or key not in fields:
            raise ValueError(f"variant {variant!r}: {item!r} is not field=value with an antisd_* field")
        extras[key] = configio.convert(value, fields[key][0], f"variant {variant!r}: {key}")
    return name, from_prefixed(preset(name), extras)


def with_diagnostics(settings: AntiSDSettings) -> AntiSDSettings:
    """The variant's settings with the teacher's diagnostics on (a live teacher for a λ = 0 baseline without one)."""
    return settings.replace(diagnostics=True, teacher="live" if settings.teacher == "none" else settings.teacher)


def run_config(cfg: CompareConfig, variant: str, seed: int) -> train.TrainConfig:
    """One run of the comparison; its directory is named after the variant and seed. Every variant but the first
    reuses the first one's step-0 evaluation of the seed (same model, same sampling noise: the same result)."""
    name, settings = parse_variant(variant)
    first = Path(cfg.output_dir) / f"{cfg.variants[0]}-s{seed}"
    return train.TrainConfig(
        preset=name, antisd=with_diagnostics(settings), model=cfg.model, task=cfg.task, output_dir=str(Path(cfg.output_dir) / f"{variant}-s{seed}"),
        steps=cfg.steps, prompts_per_step=cfg.prompts_per_step, num_generations=cfg.num_generations,
        learning_rate=cfg.learning_rate, seed=seed, save_steps=cfg.eval_every, eval_every=cfg.eval_every,
        eval_k=cfg.eval_k, eval_problems=cfg.eval_problems, eval_batch_size=cfg.eval_batch_size,
        initial_eval_from="" if variant == cfg.variants[0] else str(first),
    )  # fmt: skip


def _finished(run_dir: Path, steps: int) -> bool:
    path = run_dir / "summary.json"
    return path.exists() and json.loads(path.read_text())["steps"] >= steps


def plan_seeds(cfg: CompareConfig) -> dict:
    """Seeds needed for the target AUC half-width, from the baseline runs already in ``output_dir`` (a pilot)."""
    curves = _curves(cfg).get(cfg.baseline, {})
    pilot = [stats.curve_auc(c) for c in curves.values()]
    comparisons = max(len([v for v in cfg.variants if v != cfg.baseline]), 1)
    plan = stats.seeds_for_halfwidth(pilot, cfg.target_halfwidth, comparisons) | {"comparisons": comparisons, "pilot_auc": pilot}
    print(
        f"[compare] pilot: {len(pilot)} {cfg.baseline} seeds, AUC SD {plan['pilot_sd']:.4f} (paired SD taken as {plan['paired_sd']:.4f}); "
        f"±{cfg.target_halfwidth} at 95% Bonferroni over {comparisons} comparisons needs {plan['needed']} seeds → run {plan['seeds']}"
    )
    return plan


def plan_doses(cfg: CompareConfig) -> dict:
    """λ for each dose in ``cfg.plan_doses``, from the pilot runs of the first non-baseline variant in ``output_dir``.

    For the paper's form (constant λ, unshaped signal, additive) the term λ·δ is proportional to λ on the same
    rollouts, so dose(λ) = λ · r/λ_pilot with r the pilot's dose; across training the trajectory moves r, which
    is why the pilot's spread over seeds is reported and a check at the planned λ is advised."""
    variant = next((v for v in cfg.variants if v != cfg.baseline), None)
    if variant is None:
        raise ValueError("--plan_doses needs a non-baseline variant (the pilot's AntiSD variant) in --variants")
    settings = parse_variant(variant)[1]
    if settings.lambda_mode != "constant" or settings.shaping != "paper" or settings.compose != "additive" or settings.lambda_max <= 0:
        raise ValueError(f"--plan_doses: variant {variant!r} is not the paper's form with a constant λ > 0 (lambda_mode {settings.lambda_mode}, "
                         f"shaping {settings.shaping}, compose {settings.compose}, λ_max {settings.lambda_max}): its dose is not proportional to λ; "
                         "measure it at its own λ instead")  # fmt: skip
    per_seed = {}
    for seed in seed_range(cfg):
        rows = read_jsonl(Path(cfg.output_dir) / f"{variant}-s{seed}" / "metrics.jsonl")
        on = _finite([r for r in rows if r.get("antisd/gate_on") == 1], "antisd/term_ratio")
        if on:
            per_seed[seed] = statistics.fmean(on)
    if not per_seed:
        raise ValueError(f"--plan_doses: no run of {variant!r} in {cfg.output_dir} logged `antisd/term_ratio` with the term on (seeds {list(seed_range(cfg))})")
    dose = statistics.fmean(per_seed.values())
    lambdas = {d: d * settings.lambda_max / dose for d in cfg.plan_doses}
    spread = (min(per_seed.values()), max(per_seed.values()))
    print(f"[compare] pilot {variant}: λ {settings.lambda_max:g} gave a dose of {100 * dose:.2f}% (seeds {100 * spread[0]:.2f}–{100 * spread[1]:.2f}%)")
    for d, lam in lambdas.items():
        print(f"[compare]   dose {100 * d:g}% → λ = {lam:.4g}   (variant {variant.split('@')[0]}@antisd_lambda_max={lam:.4g})")
    return {"variant": variant, "lambda_pilot": settings.lambda_max, "dose_pilot": dose, "dose_per_seed": per_seed, "lambdas": lambdas}


def main(cfg: CompareConfig) -> Path:
    out = Path(cfg.output_dir)
    configio.check_output_dir(out, "--output_dir")
    if cfg.plan_seeds and not _curves(cfg).get(cfg.baseline):
        raise ValueError(f"--plan_seeds true needs finished {cfg.baseline} runs in {out} (the pilot); none found")
    if cfg.report_only and not _curves(cfg):
        raise ValueError(f"--report_only true but {out} holds no evaluated runs of {cfg.variants}")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.plan_doses:
        plan = plan_doses(cfg)
        (out / "dose_plan.json").write_text(json.dumps(plan | {"lambdas": {str(d): lam for d, lam in plan["lambdas"].items()}}, indent=2))
        return out / "dose_plan.json"
    if cfg.plan_seeds:
        plan = plan_seeds(cfg)
        (out / "seed_plan.json").write_text(json.dumps(plan, indent=2))
        return out / "seed_plan.json"
    (out / "compare.yaml").write_text(configio.to_yaml(cfg))

    # 1. Runs: skip finished ones, resume interrupted ones
    if not cfg.report_only:
        for seed in seed_range(cfg):
            for variant in cfg.variants:
                rc = run_config(cfg, variant, seed)
                run_dir = Path(rc.output_dir)
                if _finished(run_dir, cfg.steps):
                    print(f"[compare] {run_dir.name}: finished, skipped")
                    continue
                run = rundir.read_run(run_dir) if run_dir.is_dir() else None
                resume = run is not None and rundir.last_complete(run_dir, run["run_id"])[0] is not None
                print(f"[compare] {run_dir.name}: {'resuming' if resume else 'starting'}")
                train.main(dataclasses.replace(rc, resume=resume, overwrite=not resume))

    # 2. Report
    return write_report(cfg)


def _curves(cfg: CompareConfig) -> dict[str, dict[int, dict[int, float]]]:
    """variant -> seed -> {step: avg@k}."""
    key = f"eval/avg@{cfg.eval_k}"
    curves: dict[str, dict[int, dict[int, float]]] = {}
    for variant in cfg.variants:
        for seed in seed_range(cfg):
            rows = read_jsonl(Path(cfg.output_dir) / f"{variant}-s{seed}" / "metrics.jsonl")
            points = {r["step"]: r[key] for r in rows if key in r}
            if points:
                curves.setdefault(variant, {})[seed] = points
    return curves


def _mean_curve(per_seed: dict[int, dict[int, float]]) -> dict[int, float]:
    steps = sorted(set.intersection(*(set(c) for c in per_seed.values())))
    return {s: statistics.fmean(c[s] for c in per_seed.values()) for s in steps}


def _ci95(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return statistics.fmean(values), float("nan")
    interval = stats.paired_interval(values)
    return interval["mean"], interval["halfwidth"]


def summarise(cfg: CompareConfig) -> dict:
    curves = _curves(cfg)
    means = {v: _mean_curve(c) for v, c in curves.items()}
    rows = {}
    base = means.get(cfg.baseline)
    base_best_step, base_best = (max(base.items(), key=lambda kv: (kv[1], -kv[0])) if base else (None, None))
    comparisons = max(len([v for v in curves if v != cfg.baseline]), 1)  # the family the AUC intervals correct for
    base_curves = curves.get(cfg.baseline, {})
    base_finals = {seed: c[max(c)] for seed, c in base_curves.items()}
    base_aucs = {seed: stats.curve_auc(c) for seed, c in base_curves.items()}
    for variant, curve in means.items():
        best_step, best = max(curve.items(), key=lambda kv: (kv[1], -kv[0]))  # earliest step of the best value
        reach = next((s for s in sorted(curve) if s > 0 and base_best is not None and curve[s] >= base_best), None)
        finals = {seed: c[max(c)] for seed, c in curves[variant].items()}
        row = {"best": best, "best_step": best_step, "final": statistics.fmean(finals.values()), "seeds": len(finals), "reach_baseline_best": reach}
        row["speedup"] = (base_best_step / reach) if reach and base_best_step else None
        aucs = {seed: stats.curve_auc(c) for seed, c in curves[variant].items()}
        row["auc"] = statistics.fmean(aucs.values())
        if base is not None and variant != cfg.baseline:
            deltas = [finals[s] - base_finals[s] for s in finals if s in base_finals]
            row["final_delta"], row["final_delta_ci95"] = _ci95(deltas) if deltas else (None, None)
            auc_deltas = [aucs[s] - base_aucs[s] for s in aucs if s in base_aucs]
            if len(auc_deltas) >= 2:
                row["auc_delta"] = stats.paired_interval(auc_deltas, comparisons=comparisons)
        rows[variant] = row
    tested = {v: r["auc_delta"]["p"] for v, r in rows.items() if "auc_delta" in r}
    for variant, p in stats.holm(tested).items():
        rows[variant]["auc_delta"]["p_holm"] = p
    return {"rows": rows, "baseline": cfg.baseline, "baseline_best": base_best, "baseline_best_step": base_best_step, "comparisons": comparisons, "curves": curves}


REWARD, TRUNCATION, LENGTH = "reward/reward", "train/completions/clipped_ratio", "train/completions/mean_length"


def runaway(rows: list[dict], after: int = 10, window: int = 5) -> bool:
    """The protocol's runaway rule (docs/results/testbed-v2.md): after step ``after``, for ``window`` consecutive
    logged steps, the train reward is below half its first logged value or the truncation rate is above 50%."""
    train = [r for r in rows if r.get(REWARD) is not None]
    if not train:
        return False
    start, streak = train[0][REWARD], 0
    for r in train:
        streak = streak + 1 if _bad_step(r, start) and r["step"] > after else 0
        if streak >= window:
            return True
    return False


def _bad_step(row: dict, start: float) -> bool:
    """A logged step the runaway and collapse rules count: train reward below half its first value, or truncation
    above 50%."""
    return row[REWARD] < 0.5 * start or (row.get(TRUNCATION) or 0.0) > 0.5


def _finite(rows: list[dict], key: str) -> list[float]:
    """The finite values of ``key`` in logged rows (a NaN ratio, an absent key: left out)."""
    return [r[key] for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]


def collapsed(rows: list[dict], eval_k: int, after: int = 10, window: int = 5) -> bool:
    """Issue #23's collapse rule, which also sees the last steps (the runaway rule cannot: it needs ``window`` bad
    steps): the runaway rule; or the run ends on at least 2 consecutive bad steps after ``after``; or its last
    held-out avg@k is below half its best one (any evaluation, step 0 included)."""
    if runaway(rows, after=after, window=window):
        return True
    train = [r for r in rows if r.get(REWARD) is not None]
    if train:
        start, tail = train[0][REWARD], 0
        for r in reversed(train):
            if r["step"] <= after or not _bad_step(r, start):
                break
            tail += 1
        if tail >= 2:
            return True
    evals = sorted((r["step"], r[f"eval/avg@{eval_k}"]) for r in rows if r.get(f"eval/avg@{eval_k}") is not None)
    return bool(evals) and evals[-1][1] < 0.5 * max(v for _, v in evals)


def run_mechanisms(rows: list[dict], steps: int, eval_k: int, runaway_after: int = 10, gated: bool = True) -> dict:
    """One run's mechanism figures: runaway, gate-open fraction after warm-up (None for a variant without a gate),
    response length over the last 10 steps, truncation rate, and the held-out trace statistics (tries, deliberation
    lines) at the last evaluation."""
    late = [r[LENGTH] for r in rows if r.get(LENGTH) is not None and r["step"] > steps - 10]
    gate = [r["antisd/gate_on"] for r in rows if gated and r.get("antisd/gate_calibrated") == 1 and r.get("antisd/gate_on") is not None]
    trunc = [r[TRUNCATION] for r in rows if r.get(TRUNCATION) is not None]
    evals = [r for r in rows if r.get(f"eval/avg@{eval_k}") is not None]
    last = max(evals, key=lambda r: r["step"]) if evals else {}
    ratio, exceeds = _finite(rows, "antisd/term_ratio"), _finite(rows, "antisd/term_exceeds_frac")
    ratio_on = _finite([r for r in rows if r.get("antisd/gate_on") == 1], "antisd/term_ratio")
    return {
        "runaway": runaway(rows, after=runaway_after),
        "collapse": collapsed(rows, eval_k, after=runaway_after),
        "gate_open": statistics.fmean(gate) if gate else None,
        "length_late": statistics.fmean(late) if late else None,
        "truncation": statistics.fmean(trunc) if trunc else None,
        "term_ratio": statistics.fmean(ratio) if ratio else None,
        "term_ratio_on": statistics.fmean(ratio_on) if ratio_on else None,
        "term_exceeds": statistics.fmean(exceeds) if exceeds else None,
        "tries": last.get("eval/tries"),
        "deliberation_lines": last.get("eval/deliberation_lines"),
    }


def mechanisms(cfg: CompareConfig) -> dict[str, dict]:
    """variant -> {runaway seeds, mean of each figure, and its paired difference to the baseline (95% t-interval)}."""
    per_run = {
        v: {s: run_mechanisms(rows, cfg.steps, cfg.eval_k, cfg.runaway_after, _gated(v)) for s in seed_range(cfg) if (rows := read_jsonl(Path(cfg.output_dir) / f"{v}-s{s}" / "metrics.jsonl"))}
        for v in cfg.variants
    }
    base = per_run.get(cfg.baseline, {})
    out = {}
    for variant, runs in per_run.items():
        if not runs:
            continue
        row: dict = {"runaway_seeds": sum(m["runaway"] for m in runs.values()), "collapse_seeds": sum(m["collapse"] for m in runs.values()), "seeds": len(runs)}
        for key in ("gate_open", "term_ratio", "term_ratio_on", "term_exceeds", "length_late", "truncation", "tries", "deliberation_lines"):
            values = [m[key] for m in runs.values() if m[key] is not None]
            row[key] = statistics.fmean(values) if values else None
            deltas = [m[key] - base[s][key] for s, m in runs.items() if s in base and m[key] is not None and base[s][key] is not None]
            if variant != cfg.baseline and len(deltas) >= 2:
                row[f"{key}_delta"] = stats.paired_interval(deltas)
        out[variant] = row
    _collapse_tests(out, cfg.baseline)
    return out


def _collapse_tests(rows: dict[str, dict], baseline: str) -> None:
    """Each variant's collapse rate against the baseline's: Newcombe's 95% interval of the difference and Fisher's
    two-sided exact p, Holm-adjusted over the variants (issue #23's pre-registered test for rates)."""
    base = rows.get(baseline)
    if base is None:
        return
    p_values = {}
    for variant, row in rows.items():
        if variant == baseline:
            continue
        args = (row["collapse_seeds"], row["seeds"], base["collapse_seeds"], base["seeds"])
        row["collapse_delta"] = stats.rate_difference_interval(*args)
        p_values[variant] = row["collapse_delta"]["p"] = stats.fisher_exact(*args)
    for variant, p in stats.holm(p_values).items():
        rows[variant]["collapse_delta"]["p_holm"] = p


def collapse_trend(cfg: CompareConfig, mech: dict[str, dict]) -> dict | None:
    """The exact trend test of the collapse rate over ``cfg.trend_variants`` (None when not asked or not all run)."""
    if not cfg.trend_variants or any(v not in mech for v in cfg.trend_variants):
        return None
    groups = [(score, mech[v]["collapse_seeds"], mech[v]["seeds"]) for score, v in enumerate(cfg.trend_variants)]
    return {"variants": cfg.trend_variants, "collapsed": [f"{x}/{n}" for _, x, n in groups], "p": stats.exact_trend_test(groups)}


def _gated(variant: str) -> bool:
    """Whether a variant's AntiSD term has a gate (grpo, sd, no_gate have none: their 'gate open' is meaningless)."""
    settings = parse_variant(variant)[1]
    return settings.gate and settings.lambda_max > 0


def _fmt(x, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.1f}" if pct else f"{x}"


def _rate_delta(d: dict | None) -> str:
    return "–" if d is None else f"{100 * d['difference']:+.0f} [{100 * d['low']:+.0f}, {100 * d['high']:+.0f}]"


def _pct(x) -> str:
    """A small share in percent with two significant digits (the dose is often well under 1%)."""
    if x is None:
        return "–"
    pct = 100 * x
    return f"{pct:.0f}" if pct >= 10 else f"{pct:.1f}" if pct >= 1 else f"{pct:.2g}"


def _num(x, digits: int) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _delta(interval: dict | None, digits: int) -> str:
    return "–" if interval is None else f"{interval['mean']:+.{digits}f} ± {interval['halfwidth']:.{digits}f}"


def write_report(cfg: CompareConfig) -> Path:
    out = Path(cfg.output_dir)
    summary = summarise(cfg)
    png = plot_report(cfg, summary, out / "report.png")
    lines = [
        f"# antisd compare: {', '.join(cfg.variants)} × {cfg.seeds} seeds",
        "",
        f"Held-out avg@{cfg.eval_k} on {cfg.eval_problems} problems, every {cfg.eval_every} steps, {cfg.steps} steps per run; "
        f"task `{cfg.task}`, model `{cfg.model}`, {cfg.prompts_per_step} prompts × {cfg.num_generations} rollouts, lr {cfg.learning_rate}.",
        "Best and its step are read on the seed-mean curve; the speedup is "
        f"{cfg.baseline}'s best step / the first step at which the variant's mean curve reaches {cfg.baseline}'s best (× = never); "
        f"Δ final is the paired per-seed difference to {cfg.baseline} at the last step, with a 95% t-interval.",
        f"Primary metric: AUC = mean avg@{cfg.eval_k} over the evaluation points; Δ AUC is paired by seed, its interval a t-interval at "
        f"the Bonferroni level for {summary['comparisons']} comparisons (95% family-wise), p the paired t-test's, Holm-adjusted.",
        "",
        f"| variant | AUC (%) | Δ AUC vs {cfg.baseline} (pp) | p (Holm) | best avg@{cfg.eval_k} (%) | at step | final (%) | Δ final (pp) | first reaches {cfg.baseline}'s best | speedup |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, r in summary["rows"].items():
        delta = "–" if r.get("final_delta") is None else f"{100 * r['final_delta']:+.1f} ± {100 * r['final_delta_ci95']:.1f}"
        auc_d = r.get("auc_delta")
        auc_delta = "–" if auc_d is None else f"{100 * auc_d['mean']:+.1f} [{100 * auc_d['low']:+.1f}, {100 * auc_d['high']:+.1f}]"
        p_holm = "–" if auc_d is None else f"{auc_d['p_holm']:.3f}"
        reach = "×" if r["reach_baseline_best"] is None else str(r["reach_baseline_best"])
        speed = "×" if r["speedup"] is None else f"{r['speedup']:.1f}×"
        lines.append(f"| {variant} | {_fmt(r['auc'])} | {auc_delta} | {p_holm} | {_fmt(r['best'])} | {r['best_step']} | {_fmt(r['final'])} | {delta} | {reach} | {speed} |")
    mech = mechanisms(cfg)
    lines += [
        "",
        f"Mechanisms (descriptive; Δ paired by seed with an unadjusted 95% t-interval): runaway = after step {cfg.runaway_after}, 5 consecutive steps "
        "with train reward below half its first value or truncation above 50%; collapse = runaway, or the run ends on ≥ 2 such steps, or its last "
        "held-out score is below half its best (the collapse rate against the baseline: Newcombe 95% interval, Fisher's exact two-sided p, "
        "Holm-adjusted over the variants); gate open = mean `antisd/gate_on` after warm-up; "
        "dose = mean over steps of `antisd/term_ratio` (mean |term| / mean |A_seq| over response tokens, 0 on steps with the gate shut), "
        "and over the steps with the term on (`antisd/gate_on` = 1), with the share of tokens where the term exceeds |A_seq|; "
        f"length = mean response tokens over the last 10 steps; tries and deliberation lines per held-out response at the last evaluation.",
        "",
        f"| variant | runaway seeds | collapse seeds | Δ collapse rate vs {cfg.baseline} (pp) | p (Fisher, Holm) | gate open | dose (%) | dose when on (%) | term > A_seq (%) | length | Δ length vs {cfg.baseline} | tries | Δ tries | deliberation lines | truncation |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, m in mech.items():
        lines.append(
            f"| {variant} | {m['runaway_seeds']}/{m['seeds']} | {m['collapse_seeds']}/{m['seeds']} | {_rate_delta(m.get('collapse_delta'))} "
            f"| {_num((m.get('collapse_delta') or {}).get('p_holm'), 3)} | {_num(m['gate_open'], 2)} | {_pct(m['term_ratio'])} | {_pct(m['term_ratio_on'])} | {_pct(m['term_exceeds'])} | {_num(m['length_late'], 1)} | {_delta(m.get('length_late_delta'), 1)} "
            f"| {_num(m['tries'], 2)} | {_delta(m.get('tries_delta'), 2)} | {_num(m['deliberation_lines'], 2)} | {_num(m['truncation'], 3)} |"
        )
    trend = collapse_trend(cfg, mech)
    if trend is not None:
        lines += ["", f"Collapse rate against the dose order {' < '.join(cfg.trend_variants)}: collapsed seeds {trend['collapsed']}; "
                      f"exact one-sided Cochran–Armitage trend test (scores 0, 1, …), p = {trend['p']:.4f}."]  # fmt: skip
    lines += ["", f"![curves and dynamics]({png.name})", ""]
    (out / "report.md").write_text("\n".join(lines))
    (out / "report.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "curves"} | {"mechanisms": mech, "collapse_trend": trend}, indent=2))
    print("\n".join(lines))
    print(f"report: {out / 'report.md'} (with {png.name}); numbers in {out / 'report.json'}; one run directory per variant and seed in {out}/")
    return out / "report.md"


def plot_report(cfg: CompareConfig, summary: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("eval", f"held-out avg@{cfg.eval_k}")] + list(DYNAMICS)
    fig, axes = plt.subplots(2, 4, figsize=(18, 8))
    colors = {v: f"C{i}" for i, v in enumerate(cfg.variants)}
    for ax, (key, title) in zip(axes.flat, panels):
        for variant in cfg.variants:
            per_seed = _series(cfg, variant, key)
            if not per_seed:
                continue
            steps = sorted(set.intersection(*(set(s) for s in per_seed)))
            vals = [[s[t] for s in per_seed] for t in steps]
            mean = [statistics.fmean(v) for v in vals]
            ax.plot(steps, mean, color=colors[variant], label=variant, marker="." if key == "eval" else None)
            ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], color=colors[variant], alpha=0.15)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
    axes.flat[0].legend(fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"{', '.join(cfg.variants)}: mean over {cfg.seeds} seeds, band = min..max over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _series(cfg: CompareConfig, variant: str, key: str) -> list[dict[int, float]]:
    metric = f"eval/avg@{cfg.eval_k}" if key == "eval" else key
    out = []
    for seed in seed_range(cfg):
        rows = read_jsonl(Path(cfg.output_dir) / f"{variant}-s{seed}" / "metrics.jsonl")
        series = {r["step"]: r[metric] for r in rows if r.get(metric) is not None}
        if series:
            out.append(series)
    return out


def cli(argv: list[str]) -> Path:
    return main(configio.parse(CompareConfig, argv, prog="antisd compare", description=__doc__.split("\n\n")[0]))
