"""The preflight's memory formula against measured CPU peaks (issue #20), where no GPU is at hand.

    .venv/bin/python benchmarks/preflight_memory.py --out docs/results/preflight-cpu

For the testbed (testbed-v3) and SmolLM2-135M shapes, randomly initialised from their config.json (memory depends
on the shape, not on the weights' values), at two response lengths each (and SmolLM2 once more with gradient checkpointing), the TRL trainer trains AntiSD on replayed
rollouts (the GPU check's ``build_trainer``: every rollout is the same fixed token ids, each teacher prompt holds a
correct sibling's demonstration): a warm-up step that allocates the optimizer state, then one measured step. Per
phase (teacher forward, training forward, backward, optimizer) it records the peak bytes of torch's CPU allocator
(the GPU check's ``PhaseMeter``: profiler allocation events plus the tensors live at the step's start) and the
preflight's prediction for the same shape, micro-batch and lengths on the CPU (``Launch(device="cpu")``: fp32
compute, eager attention through SDPA, TRL's torch fallback of its LM-head kernel), and the relative error. Output:
``preflight-memory.json`` and ``preflight-memory.md`` under ``--out``. Alone on the machine: ≈ 14 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "scripts")]

import torch  # noqa: E402

CASES = ("testbed-v3:128", "testbed-v3:384", "smollm2-135m:256", "smollm2-135m:1024", "smollm2-135m:1024:checkpointing")
PHASES = ("teacher_forward", "training_forward", "backward", "optimizer")


def model_config(name: str) -> dict:
    """The shape's config.json: the shipped testbed's, or the shipped excerpt of a hub model's."""
    from antisd.infra.preflight import load_config

    return load_config(str(ROOT / "src/antisd/assets" / name), ROOT / "src/antisd/assets/models")


def measure_case(name: str, response_len: int, checkpointing: bool, micro_batch: int, G: int, work: Path) -> dict:
    from gpu_check import PhaseMeter, build_trainer, measure_variant
    from transformers import AutoConfig, AutoModelForCausalLM

    from antisd.infra.models import load_model

    _, tok = load_model("testbed")  # token ids and chat template only: every id is inside both vocabularies
    words = ["alpha", "beta", "gamma", "delta", "sigma", "omega", "theta", "kappa"]
    rows = [{"prompt": [{"role": "user", "content": " ".join(words[(i + j) % len(words)] for j in range(48))}]} for i in range(64)]
    config = model_config(name)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    trainer = build_trainer("antisd", model, tok, rows, response_len, micro_batch, G, work / f"{name}-{response_len}", "cpu", checkpointing=checkpointing)
    start = time.perf_counter()
    measured = measure_variant(trainer, PhaseMeter("cpu"), steps=1)
    prompt = len(tok.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False))
    return {"model": name, "response_tokens": response_len, "checkpointing": checkpointing, "prompt_tokens": prompt, "teacher_tokens": int(trainer.teacher_width),
            "micro_batch": micro_batch, "config": config, "measured_gib": measured["phase_peak_gib"], "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def predict(case: dict) -> dict:
    from gpu_check import predicted_phase_peaks

    from antisd.infra.preflight import ModelShape

    shape = ModelShape.from_config(case["config"])
    seq = case["prompt_tokens"] + case["response_tokens"]
    return predicted_phase_peaks(shape, case["micro_batch"], seq, case["teacher_tokens"], gpu_gib=0.0, device="cpu", checkpointing=case["checkpointing"])


def markdown(cases: list[dict]) -> str:
    lines = ["# Preflight against measured CPU peaks", "", "`.venv/bin/python benchmarks/preflight_memory.py` — peak bytes of torch's CPU allocator per phase of one",
             "AntiSD step (replayed rollouts, fp32, micro-batch below) against the preflight's prediction (`Launch(device=\"cpu\")`).", "",
             "| model | prompt + response | teacher tokens | micro-batch | checkpointing | phase | measured GiB | predicted GiB | error |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in cases:
        for phase in PHASES:
            m, p = c["measured_gib"].get(phase), c["predicted_gib"].get(phase)
            err = f"{100 * (p - m) / m:+.1f}%" if m and p is not None else "–"
            lines.append(f"| {c['model']} | {c['prompt_tokens']} + {c['response_tokens']} | {c['teacher_tokens']} | {c['micro_batch']} | {'yes' if c['checkpointing'] else 'no'} | {phase} | "
                         f"{m:.3f} | {'–' if p is None else f'{p:.3f}'} | {err} |")  # fmt: skip
    worst = max((abs(e) for c in cases for e in c["relative_error"].values()), default=float("nan"))
    lines += ["", f"Largest |error|: {100 * worst:.1f}% (acceptance of issue #20: within ±15%)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/preflight-memory")
    p.add_argument("--micro_batch", type=int, default=4)
    p.add_argument("--cases", default=",".join(CASES), help="model:response_tokens[:checkpointing], comma-separated")
    a = p.parse_args()
    from antisd.cli import quiet

    quiet()
    torch.set_num_threads(2)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    for item in a.cases.split(","):
        name, length, *mode = item.split(":")
        if mode not in ([], ["checkpointing"]):
            raise ValueError(f"--cases {item!r}: after model:length only ':checkpointing' is known, got {':'.join(mode)!r}")
        case = measure_case(name, int(length), mode == ["checkpointing"], a.micro_batch, 4, out / "work")
        case["predicted_gib"] = predict(case)
        case["relative_error"] = {ph: (case["predicted_gib"][ph] - m) / m for ph, m in case["measured_gib"].items() if ph in case["predicted_gib"] and m > 0}
        print(f"[preflight-memory] {item}: " + ", ".join(f"{ph} {case['measured_gib'][ph]:.3f} GiB measured / {case['predicted_gib'][ph]:.3f} predicted"
                                                     for ph in PHASES if ph in case["predicted_gib"]) + f" ({case['seconds']} s)", flush=True)  # fmt: skip
        cases.append(case)
    (out / "preflight-memory.json").write_text(json.dumps(cases, indent=2))
    (out / "preflight-memory.md").write_text(markdown(cases))
    print(markdown(cases))


if __name__ == "__main__":
    main()
