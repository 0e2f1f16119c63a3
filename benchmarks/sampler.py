"""Wall time of `antisd eval`'s two samplers on the same prompts: transformers' generate against the shrinking
sampler (finished rows leave the batch). Both draw with temperature, top-k 50 and top-p; the script prints the
time, the tokens drawn and their ratio, from this one run.

    python benchmarks/sampler.py --model smollm2-135m --benchmark humaneval --problems 7 --k 10   # one batch of 64 + 6
    python benchmarks/sampler.py --model testbed --benchmark countdown --problems 32 --k 4
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="testbed")
    ap.add_argument("--benchmark", default="countdown")
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max_new_tokens", type=int, default=512)
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from antisd.evaluation.scoring import sample
    from antisd.evaluation.sets import load_benchmark
    from antisd.infra.models import load_model

    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    task = load_benchmark(args.benchmark, None, n=args.problems, seed=0)
    prompts = [tok.apply_chat_template(it.messages, add_generation_prompt=True, tokenize=False) for it in task.heldout]
    times, lengths = {}, {}
    for name, shrink in (("generate", False), ("shrinking", True)):
        start = time.perf_counter()
        out = sample(model, tok, prompts, args.k, temperature=0.7, top_p=0.95, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=0, shrink=shrink)
        times[name], lengths[name] = time.perf_counter() - start, [len(ids) for _, ids in out]
        print(f"{name:10s} {times[name]:8.1f} s   {len(out)} completions, mean length {statistics.fmean(lengths[name]):.1f}, "
              f"longest {max(lengths[name])}, at the limit {sum(n >= args.max_new_tokens for n in lengths[name])}", flush=True)
    print(f"time generate / shrinking = {times['generate'] / times['shrinking']:.2f}× "
          f"(mean lengths {statistics.fmean(lengths['generate']):.1f} vs {statistics.fmean(lengths['shrinking']):.1f}: other draws, same distribution)")


if __name__ == "__main__":
    main()
