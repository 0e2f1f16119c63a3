"""Per-seed detail of an `antisd compare` directory, beside its report (reads metrics.jsonl only; no torch).

    python scripts/compare_detail.py runs/testbed-v2 --seeds 8 --pair antisd_control_experimental:antisd

Prints, for every variant found: its AUC and final held-out avg@k per seed; the seeds whose held-out curve is
identical to the baseline's (the AntiSD term never acted: λ = 0 gives exactly GRPO); the gate's state at every
step after its calibration step (1 = open); and, for each ``--pair a:b``, the paired AUC difference a − b with a
t-interval at the Bonferroni level for ``--comparisons`` (the protocol's family) and its unadjusted p.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from antisd.evaluation import stats
def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open() if line.strip()] if path.exists() else []


def curve(rows: list[dict], k: int) -> dict[int, float]:
    return {r["step"]: r[f"eval/avg@{k}"] for r in rows if r.get(f"eval/avg@{k}") is not None}


def gate_states(rows: list[dict]) -> str:
    """'1'/'0' per step after the calibration step (the calibration step itself always runs at λ = 0)."""
    calibrated = [r for r in rows if r.get("antisd/gate_calibrated") == 1 and r.get("antisd/gate_on") is not None]
    return "".join(str(int(r["antisd/gate_on"])) for r in calibrated[1:])


def mean_on(rows: list[dict], key: str, last_step: int | None = None) -> float | None:
    """Mean of a finite ``key`` over the steps with the term on (``antisd/gate_on`` = 1), up to ``last_step``."""
    values = [r[key] for r in rows if r.get("antisd/gate_on") == 1 and isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
              and (last_step is None or r["step"] <= last_step)]  # fmt: skip
    return sum(values) / len(values) if values else None


def dose_line(rows: list[dict], window: int) -> str:
    """Dose and its two factors (the term's size, |A_seq|) early in a run and over all of it: a dose that grows
    because |A_seq| shrinks (groups turning uniform as a run collapses) reads differently from a growing term."""
    cells = []
    for key, scale in (("antisd/term_ratio", 100), ("antisd/term_abs_mean", 1), ("antisd/seq_adv_abs_mean", 1)):
        early, full = mean_on(rows, key, window), mean_on(rows, key)
        cells.append("–" if early is None else f"{scale * early:.3g} → {scale * full:.3g}")
    return " | ".join(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("output_dir", type=Path)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--first_seed", type=int, default=0)
    ap.add_argument("--eval_k", type=int, default=4)
    ap.add_argument("--baseline", default="grpo")
    ap.add_argument("--pair", action="append", default=[], help="a:b, paired AUC difference a − b")
    ap.add_argument("--comparisons", type=int, default=8, help="Bonferroni family size for the pair intervals")
    ap.add_argument("--dose_window", type=int, default=20, help="the early window (steps) for the dose per seed, e.g. a dose pilot's length")
    args = ap.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    variants = sorted({p.name.rsplit("-s", 1)[0] for p in args.output_dir.glob("*-s*") if p.is_dir()})
    variants = [args.baseline] + [v for v in variants if v != args.baseline]
    runs = {v: {s: read_rows(args.output_dir / f"{v}-s{s}" / "metrics.jsonl") for s in seeds} for v in variants}
    curves = {v: {s: curve(rows, args.eval_k) for s, rows in per_seed.items() if rows} for v, per_seed in runs.items()}
    aucs = {v: {s: stats.curve_auc(c) for s, c in per_seed.items() if c} for v, per_seed in curves.items()}

    print(f"AUC (%) per seed {list(seeds)} | final avg@{args.eval_k} (%) per seed")
    for v in variants:
        finals = [100 * c[max(c)] for c in curves[v].values() if c]
        print(f"  {v:32s} {' '.join(f'{100 * a:5.1f}' for a in aucs[v].values())} | {' '.join(f'{f:5.1f}' for f in finals)}")

    print(f"\nseeds whose held-out curve equals {args.baseline}'s exactly (the term never acted)")
    base = curves[args.baseline]
    for v in variants[1:]:
        same = [s for s, c in curves[v].items() if s in base and c == base[s]]
        print(f"  {v:32s} {same}")

    print("\ngate state per step after calibration (1 = open), open steps / steps")
    for v in variants:
        for s, rows in runs[v].items():
            gated = any(r.get("antisd/gate_calibrated") == 0 for r in rows)  # ungated presets are calibrated at step 1
            if gated:
                g = gate_states(rows)
                print(f"  {v:32s} s{s} {g}  {g.count('1')}/{len(g)}")

    print(f"\nper seed, over steps 1–{args.dose_window} with the term on → over the whole run: dose (%) | mean |term| | mean |A_seq|")
    for v in variants[1:]:
        for s, rows in runs[v].items():
            if rows:
                print(f"  {v:32s} s{s} {dose_line(rows, args.dose_window)}")

    for pair in args.pair:
        a, b = pair.split(":")
        deltas = [aucs[a][s] - aucs[b][s] for s in aucs[a] if s in aucs[b]]
        iv = stats.paired_interval(deltas, comparisons=args.comparisons)
        print(f"\nAUC {a} − {b}: {100 * iv['mean']:+.2f} pp, {100 * iv['level']:.2f}% interval "
              f"[{100 * iv['low']:+.2f}, {100 * iv['high']:+.2f}], p = {iv['p']:.3f} (unadjusted), n = {iv['n']}")


if __name__ == "__main__":
    main()
