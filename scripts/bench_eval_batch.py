"""Held-out evaluation speed against the generation batch size, measured in one run (CPU, 2 threads).

    .venv/bin/python scripts/bench_eval_batch.py --model testbed-v2 --problems 128 --k 4 --sizes 64,256

Prints seconds per evaluation and the ratio to the first batch size, and avg@k (the same in distribution, not
sample by sample: the batch size changes how the sampling noise is laid out).
"""

from __future__ import annotations

import argparse
import time

import torch

from antisd.evaluation.heldout import evaluate
from antisd.infra.models import load_model
from antisd.tasks import countdown_task


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="testbed-v2")
    ap.add_argument("--problems", type=int, default=128)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--sizes", default="64,256")
    ap.add_argument("--max_new_tokens", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model, tok = load_model(args.model)
    task = countdown_task(n_train=8, n_heldout=args.problems, seed=0)
    times = {}
    for size in [int(s) for s in args.sizes.split(",")]:
        start = time.perf_counter()
        result = evaluate(model, tok, task, k=args.k, max_new_tokens=args.max_new_tokens, batch_size=size, seed=0)
        times[size] = time.perf_counter() - start
        first = next(iter(times.values()))
        print(f"batch {size:4d}: {times[size]:6.1f} s for {args.problems}×{args.k} samples ({first / times[size]:.2f}× the first), avg@{args.k} {result.avg_at_k:.3f}, mean length {result.mean_length:.1f}")


if __name__ == "__main__":
    main()
