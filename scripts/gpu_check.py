"""GPU check (issue #20): what a first GPU job would hit, measured in minutes on one lent GPU.

    make gpu-check          # on the lent GPU machine: its python3 + the carried wheels (scripts/gpu_wheels.sh)
    make gpu-check-tiny     # the same code on the CPU with tiny sizes (CI, under a minute)

Three parts, each recorded whatever the others do (a part that raises is recorded with its error):
1. numerics: the core functions and ``AntiSDStep`` (paper and release presets, warm-up then gated steps) on the
   device against the CPU on the same inputs: the largest |Δ| of each output and whether the gate decisions agree.
2. train: ``antisd train`` on the shipped testbed model on the device (bf16 autocast over fp32 master weights on a
   GPU), killed (as SIGKILL) right after its step-2 checkpoint is complete, then resumed to the end; and the same run
   uninterrupted. Checks: the resumed run ends at exactly --steps, logs every step once, its metrics are finite;
   reported: the largest weight difference between the resumed and the uninterrupted final model.
3. cost and memory: randomly initialised models with real architectures (Qwen3-0.6B/1.7B/4B shapes, fp32 master
   weights, bf16 autocast, gradient checkpointing) trained by the TRL trainer on *replayed* synthetic rollouts at
   real lengths (generation is replaced by fixed token ids: every variant sees the same rollouts), GRPO and AntiSD
   in turn. Per phase (teacher forward, training forward, backward, optimizer): median time and peak memory
   (``torch.cuda.max_memory_allocated``), and the preflight's prediction of each phase's peak for the same shape on
   one GPU (its terms: static = weights + optimizer (+ gradients in the training phase), plus the phase's working
   set and the log-prob head), with the relative error.

Output: ``<out>/gpu-check.json`` (everything) and ``<out>/gpu-check.md`` (the tables).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

SHAPES = ("qwen3-0.6b", "qwen3-1.7b", "qwen3-4b-instruct-2507")
TINY_SHAPE = {"vocab_size": 640, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
              "head_dim": 32, "intermediate_size": 192, "tie_word_embeddings": True, "max_position_embeddings": 1024}  # fmt: skip


# --- 1. numerics --------------------------------------------------------------------------------------------------


def part_numerics(device: str) -> dict:
    from antisd import core
    from antisd.method.settings import preset
    from antisd.method.step import AntiSDStep, StepInputs

    gen = torch.Generator().manual_seed(0)
    B, T, V = 8, 64, 4096
    t_BT, s_BT = -3 * torch.rand(B, T, generator=gen), -3 * torch.rand(B, T, generator=gen)
    mask_BT = (torch.rand(B, T, generator=gen) > 0.1).float()
    logits_BTV, ids_BT = 4 * torch.randn(B, T, V, generator=gen), torch.randint(0, V, (B, T), generator=gen)
    here = lambda x: x.to(device)  # noqa: E731
    diffs = {}

    def compare(name: str, cpu: torch.Tensor, dev: torch.Tensor) -> None:
        diffs[name] = float((cpu.double() - dev.double().cpu()).abs().max())

    u = core.token_pmi(t_BT, s_BT, mask_BT)
    compare("phi", core.jsd_phi(u), core.jsd_phi(here(u)))
    compare("release_signal", core.release_signal(u, s_BT, mask_BT, core.get_signal("antisd"), sigma_ref=1.0),
            core.release_signal(here(u), here(s_BT), here(mask_BT), core.get_signal("antisd"), sigma_ref=1.0))  # fmt: skip
    for dtype in (torch.float32, torch.bfloat16):
        logp, ent = core.logp_entropy_from_logits(logits_BTV.to(dtype), ids_BT)
        logp_d, ent_d = core.logp_entropy_from_logits(here(logits_BTV.to(dtype)), here(ids_BT))
        compare(f"logp_{str(dtype)[6:]}", logp, logp_d)
        compare(f"entropy_{str(dtype)[6:]}", ent, ent_d)

    gates = {}
    for name in ("antisd", "antisd_release"):
        settings = preset(name).replace(gate_warmup_steps=2)
        cpu_step, dev_step = AntiSDStep(settings), AntiSDStep(settings)
        decisions = []
        for k in range(5):  # two warm-up steps, then the entropy falls: the gate has something to decide
            g = torch.Generator().manual_seed(100 + k)
            teacher = -3 * torch.rand(B, T, generator=g) * (1 + k)
            x = dict(seq_adv_B=torch.randn(B, generator=g), teacher_logp_BT=teacher, student_logp_BT=-3 * torch.rand(B, T, generator=g),
                     response_mask_BT=mask_BT, teacher_entropy_BT=torch.rand(B, T, generator=g) / (1 + k))  # fmt: skip
            a = cpu_step(StepInputs(**x))
            b = dev_step(StepInputs(**{key: here(v) for key, v in x.items()}))
            compare(f"step_{name}_advantages_{k}", a.advantages_BT, b.advantages_BT)
            decisions.append((a.gate_on, b.gate_on))
        gates[name] = {"cpu": [a for a, _ in decisions], "device": [b for _, b in decisions], "agree": all(a == b for a, b in decisions)}
    worst = max(diffs.values())
    return {"device": device, "max_abs_diff": diffs, "worst": worst, "gates": gates, "ok": worst < 1e-3 and all(g["agree"] for g in gates.values())}


# --- 2. train, kill, resume ----------------------------------------------------------------------------------------


def part_train(device: str, out: Path, tiny: bool) -> dict:
    """The testbed model trained on the device, killed after its step-2 checkpoint, resumed; and uninterrupted."""
    steps = 4 if tiny else 6
    args = ["train", "--model", "testbed", "--preset", "antisd", "--antisd_gate_warmup_steps", "1", "--steps", str(steps), "--save_steps", "2",
            "--prompts_per_step", "4" if tiny else "8", "--num_generations", "4" if tiny else "8", "--max_completion_length", "48" if tiny else "128",
            "--eval_k", "1", "--eval_problems", "8", "--seed", "0", "--bf16", str(device == "cuda").lower()]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    driver = [sys.executable, str(ROOT / "tests" / "fault_driver.py")]
    cli = [sys.executable, "-m", "antisd.cli"]
    runs = {}

    def run(name: str, argv: list[str], **extra_env) -> subprocess.CompletedProcess:
        start = time.perf_counter()
        done = subprocess.run(argv, env=env | extra_env, capture_output=True, text=True, timeout=600)
        runs[name] = {"rc": done.returncode, "seconds": round(time.perf_counter() - start, 1), "stderr_tail": done.stderr[-1500:]}
        return done

    run("uninterrupted", [*cli, *args, "--output_dir", str(out / "uninterrupted")])
    run("killed", [*driver, *args, "--output_dir", str(out / "resumed")], ANTISD_FAULT="marker_after", ANTISD_FAULT_STEP="2")
    resumed = run("resumed", [*cli, "train", "--output_dir", str(out / "resumed"), "--resume", "true"])
    rows = [json.loads(x) for x in (out / "resumed" / "metrics.jsonl").read_text().splitlines()] if (out / "resumed" / "metrics.jsonl").exists() else []
    step_rows = [r for r in rows if "antisd/gate_on" in r]
    finite = all(math.isfinite(v) for r in step_rows for k, v in r.items() if isinstance(v, float) and k.startswith(("antisd/", "reward/")))
    summary = json.loads((out / "resumed" / "summary.json").read_text()) if (out / "resumed" / "summary.json").exists() else {}
    weights = _max_weight_diff(out / "resumed" / "final", out / "uninterrupted" / "final")
    ok = (runs["killed"]["rc"] == 137 and resumed.returncode == 0 and summary.get("steps") == steps
          and [r["step"] for r in step_rows] == list(range(1, steps + 1)) and finite)  # fmt: skip
    return {"device": device, "steps": steps, "runs": runs, "resume_line": next((x for x in resumed.stdout.splitlines() if x.startswith("resume: from")), None),
            "logged_steps": [r["step"] for r in step_rows], "finite": finite, "precision": summary.get("precision"),
            "final_weights_max_abs_diff_vs_uninterrupted": weights, "ok": ok}  # fmt: skip


def _max_weight_diff(a: Path, b: Path) -> float | None:
    from safetensors.torch import load_file

    if not (a / "model.safetensors").exists() or not (b / "model.safetensors").exists():
        return None
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return max(float((x[k].double() - y[k].double()).abs().max()) for k in x)


# --- 3. cost and memory on replayed rollouts ------------------------------------------------------------------------


class PhaseMeter:
    """Exclusive wall time and peak memory per phase; nested phases hand their peak to their parent.

    On a GPU the peak is ``torch.cuda.max_memory_allocated``. A CPU has no such counter, so there a step runs under
    ``measure(fn)``: torch's profiler records every allocation and free of torch's CPU allocator (``profile_memory``,
    kernels' own buffers included) and each phase's time range; a phase's peak is the bytes live at the step's start
    (every tensor Python can reach: weights, optimizer state, …) plus the highest running sum of the allocations
    inside its range. Both count allocated tensor bytes, not the allocator's cache or the process's other memory."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"
        self.stack: list[dict] = []
        self.times: dict[str, float] = {}
        self.peaks: dict[str, float] = {}

    def _peak(self) -> float:
        return torch.cuda.max_memory_allocated() / 2**30 if self.cuda else 0.0

    @contextmanager
    def phase(self, name: str):
        if self.cuda:
            torch.cuda.synchronize()
            if self.stack:  # the parent's peak so far, before the reset below forgets it
                self.stack[-1]["peak"] = max(self.stack[-1]["peak"], self._peak())
            torch.cuda.reset_peak_memory_stats()
        frame = {"name": name, "start": time.perf_counter(), "child": 0.0, "peak": 0.0}
        self.stack.append(frame)
        try:
            with contextlib.nullcontext() if self.cuda else torch.profiler.record_function(PHASE_TAG + name):
                yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
            self.stack.pop()
            total = time.perf_counter() - frame["start"]
            self.times[name] = self.times.get(name, 0.0) + total - frame["child"]
            peak = max(frame["peak"], self._peak())
            self.peaks[name] = max(self.peaks.get(name, 0.0), peak)
            if self.stack:
                self.stack[-1]["child"] += total
                self.stack[-1]["peak"] = max(self.stack[-1]["peak"], peak)

    def measure(self, fn) -> None:
        """Run ``fn`` (one step, its phases inside); on a CPU, set each phase's peak from the allocation events."""
        if self.cuda:
            fn()
            return
        live = live_cpu_tensor_bytes()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        for name, peak in cpu_phase_peaks(prof.profiler.kineto_results.events(), live).items():
            self.peaks[name] = max(self.peaks.get(name, 0.0), peak / 2**30)

    def reset(self) -> None:
        self.times, self.peaks = {}, {}


PHASE_TAG = "antisd-phase::"


def live_cpu_tensor_bytes() -> int:
    """Bytes of the CPU tensor storages Python can reach now (each storage once)."""
    gc.collect()
    storages = {}
    with warnings.catch_warnings():  # isinstance on deprecated module attributes (torch.distributed.reduce_op) warns
        warnings.simplefilter("ignore", FutureWarning)
        objects = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]
    for obj in objects:
        if obj.device.type == "cpu" and not obj.is_meta:
            try:
                st = obj.untyped_storage()
            except (RuntimeError, NotImplementedError):  # tensors without a storage (sparse, wrapper subclasses)
                continue
            storages[st.data_ptr()] = max(storages.get(st.data_ptr(), 0), st.nbytes())
    return sum(storages.values())


def cpu_phase_peaks(events, live_at_start: int) -> dict[str, int]:
    """Peak bytes per tagged phase from profiler events: ``live_at_start`` + the highest running sum of the
    CPU allocation events (+bytes allocated, −bytes freed) inside the phase's time range."""
    allocs = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    times, running, total = [], [], live_at_start
    for t, nbytes in allocs:
        total += nbytes
        times.append(t)
        running.append(total)
    peaks = {}
    for e in events:
        if not e.name().startswith(PHASE_TAG):
            continue
        lo, hi = bisect.bisect_left(times, e.start_ns()), bisect.bisect_right(times, e.end_ns())
        before = running[lo - 1] if lo else live_at_start
        name = e.name()[len(PHASE_TAG):]
        peaks[name] = max(peaks.get(name, 0), before, *running[lo:hi])
    return peaks


def _wrap(obj, attr: str, meter: PhaseMeter, name_of) -> None:
    original = getattr(obj, attr)

    def wrapped(*args, **kwargs):
        with meter.phase(name_of()):
            return original(*args, **kwargs)

    setattr(obj, attr, wrapped)


def build_trainer(variant: str, model, tok, rows: list[dict], response_len: int, micro_batch: int, G: int, out: Path, device: str,
                  checkpointing: bool = True):
    """A trainer whose generation is replayed: every call returns the same fixed token ids (a rollout of
    ``response_len`` tokens drawn from the tokenizer's vocabulary); the first rollout of each group is "correct",
    so every other rollout's teacher sees a demonstration as long as a response."""
    from datasets import Dataset

    from antisd.integrations.trl import AntiSDConfig, AntiSDTrainer
    from antisd.method.settings import preset

    gen = torch.Generator().manual_seed(7)
    vocab = len(tok)
    replay = [torch.randint(10, vocab - 10, (response_len,), generator=gen).tolist() for _ in range(micro_batch)]

    def reward(completions, **kwargs) -> list[float]:
        return [1.0 if i % G == 0 else 0.0 for i in range(len(completions))]

    settings = preset(variant).replace(gate_warmup_steps=1, gate=False) if variant != "grpo" else preset("grpo")
    args = AntiSDConfig(
        output_dir=str(out), max_steps=10**6, per_device_train_batch_size=micro_batch, num_generations=G, max_completion_length=response_len,
        learning_rate=1e-6, beta=0.0, bf16=device == "cuda", use_cpu=device != "cuda", gradient_checkpointing=checkpointing, report_to="none",
        logging_steps=1, save_strategy="no", disable_tqdm=True, antisd=settings.replace(max_reprompt_len=4 * response_len + 4096),
    )  # fmt: skip
    trainer = AntiSDTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    trainer._generate_single_turn = lambda prompt_ids, *a, **k: ([list(replay[i % micro_batch]) for i in range(len(prompt_ids))], None)
    tokenize = trainer._tokenize_teacher

    def tokenize_and_measure(*a, **k):  # the teacher's sequence length (prompt + demonstration + feedback + response)
        ids, mask = tokenize(*a, **k)
        trainer.teacher_width = ids.shape[1]
        return ids, mask

    trainer._tokenize_teacher = tokenize_and_measure
    return trainer


def measure_variant(trainer, meter: PhaseMeter, steps: int) -> dict:
    _wrap(trainer, "_score", meter, lambda: "teacher_forward")
    _wrap(trainer, "_compute_loss", meter, lambda: "training_forward")
    _wrap(trainer.accelerator, "backward", meter, lambda: "backward")
    trainer.create_optimizer_and_scheduler(num_training_steps=10**6)
    _wrap(trainer.optimizer, "step", meter, lambda: "optimizer")
    if trainer.args.gradient_checkpointing:  # Trainer.train() turns it on; this loop calls training_step itself
        trainer.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs)
    batches = iter(trainer.get_train_dataloader())
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    per_step = []
    for i in range(steps + 1):  # the first step allocates the optimizer state and warms kernels up: not counted
        meter.reset()
        start = time.perf_counter()
        batch = next(batches)

        def step():
            with meter.phase("other"):
                trainer.training_step(trainer.model, batch, None)
                trainer.optimizer.step()
                trainer.optimizer.zero_grad(set_to_none=True)

        if i:
            meter.measure(step)  # on a CPU under the profiler, which also slows it: CPU times here are not costs
        else:
            step()  # the warm-up step is not measured
        if i:
            per_step.append({"total": time.perf_counter() - start, "times": dict(meter.times), "peaks": dict(meter.peaks)})
    phases = sorted({p for s in per_step for p in s["times"]})
    return {
        "step_seconds": statistics.median(s["total"] for s in per_step),
        "phase_seconds": {p: statistics.median(s["times"].get(p, 0.0) for s in per_step) for p in phases},
        "phase_peak_gib": {p: max(s["peaks"].get(p, 0.0) for s in per_step) for p in phases},
    }


def predicted_phase_peaks(shape, micro_batch: int, seq_len: int, teacher_len: int, gpu_gib: float, device: str = "cuda",
                          checkpointing: bool = True) -> dict:
    """The preflight's prediction of each phase's peak for one process (no sharding, no vLLM, no overhead:
    max_memory_allocated excludes the CUDA context): the teacher phase and the training phase (the backward) as the
    preflight composes them, and the training forward's, which it does not need (below the backward's):
    weights + optimizer + activations + the head's forward + the mask."""
    from antisd.infra.preflight import GIB, Launch, estimate, head_bytes

    e = estimate(shape, Launch(gpus=1, gpu_gib=gpu_gib, strategy="ddp", micro_batch=micro_batch, seq_len=seq_len, teacher_seq_len=teacher_len,
                               gradient_checkpointing=checkpointing, vllm="none", overhead_gib=0.0, device=device))  # fmt: skip
    forward_head = head_bytes(shape, micro_batch * seq_len, device, backward=False) / GIB
    return {
        "teacher_forward": e["phase_teacher"],
        "training_forward": e["weights"] + e["optimizer"] + e["activations"] + forward_head + e["attention_mask"],
        "backward": e["phase_training"],
        "preflight_total": e["total"],
    }


def part_cost(device: str, out: Path, tiny: bool) -> dict:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from antisd.infra.preflight import ModelShape
    from antisd.infra.models import load_model

    _, tok = load_model("testbed")  # token ids only: the model's vocabulary is the real one, the ids come from here
    shapes = {"tiny": TINY_SHAPE} if tiny else {name: json.loads((ROOT / "src/antisd/assets/models" / f"{name}.json").read_text()) for name in SHAPES}
    prompt_len, response_len, G, micro_batch, steps = (48, 32, 2, 4, 1) if tiny else (1536, 6144, 4, 4, 2)
    words = ["alpha", "beta", "gamma", "delta", "sigma", "omega", "theta", "kappa"]
    rows = [{"prompt": [{"role": "user", "content": " ".join(words[(i + j) % len(words)] for j in range(prompt_len))}]} for i in range(64)]
    gpu_gib = torch.cuda.get_device_properties(0).total_memory / 2**30 if device == "cuda" else 0.0
    results = {}
    for name, config in shapes.items():
        shape = ModelShape.from_config(config)
        entry = {"params_b": shape.params() / 1e9, "prompt_tokens": None, "response_tokens": response_len, "micro_batch": micro_batch, "variants": {}}
        for variant in ("grpo", "antisd"):
            try:
                torch.manual_seed(0)
                with torch.device(device):
                    model = Qwen3ForCausalLM(Qwen3Config(**{k: v for k, v in config.items() if k != "model_type"}, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
                trainer = build_trainer(variant, model, tok, rows, response_len, micro_batch, G, out / f"cost-{name}-{variant}", device)
                meter = PhaseMeter(device)
                entry["variants"][variant] = measure_variant(trainer, meter, steps)
                if getattr(trainer, "teacher_width", None):
                    entry["teacher_tokens"] = int(trainer.teacher_width)
                entry["prompt_tokens"] = len(tok.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False))
            except Exception as e:  # noqa: BLE001 — an out-of-memory on one shape is a result, not the end of the check
                entry["variants"][variant] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            finally:
                model = trainer = None  # noqa: F841
                if device == "cuda":
                    torch.cuda.empty_cache()
        seq = (entry["prompt_tokens"] or prompt_len) + response_len
        teacher_len = entry.get("teacher_tokens") or (entry["prompt_tokens"] or prompt_len) + 2 * response_len + 64  # prompt + demonstration + feedback + response
        entry["predicted_gib"] = predicted_phase_peaks(shape, micro_batch, seq, teacher_len, gpu_gib)
        measured = entry["variants"].get("antisd", {}).get("phase_peak_gib", {})
        entry["relative_error"] = {p: (entry["predicted_gib"][p] - measured[p]) / measured[p] for p in ("teacher_forward", "training_forward", "backward")
                                   if measured.get(p) and math.isfinite(measured[p]) and measured[p] > 0}  # fmt: skip
        grpo, anti = entry["variants"].get("grpo", {}), entry["variants"].get("antisd", {})
        if "step_seconds" in grpo and "step_seconds" in anti and anti["phase_seconds"].get("teacher_forward"):
            entry["antisd_minus_grpo_over_teacher_forward"] = (anti["step_seconds"] - grpo["step_seconds"]) / anti["phase_seconds"]["teacher_forward"]
        results[name] = entry
    return {"device": device, "shapes": results, "ok": all("error" not in v for e in results.values() for v in e["variants"].values())}


# --- report ---------------------------------------------------------------------------------------------------------


def run_part(name: str, fn) -> dict:
    start = time.perf_counter()
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 — each part is recorded whatever the others do
        result = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(f"[gpu-check] {name}: {'ok' if result.get('ok') else 'FAILED'} in {result['seconds']} s", flush=True)
    return result


def environment(device: str) -> dict:
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__, "device": device}
    try:
        import trl

        env["trl"] = trl.__version__
    except ImportError:
        env["trl"] = None
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        env |= {"gpu": p.name, "gpu_gib": round(p.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    return env


def markdown(report: dict) -> str:
    lines = [f"# GPU check ({report['environment'].get('gpu', 'CPU, --tiny')})", "", "```", json.dumps(report["environment"]), "```", ""]
    for part in ("numerics", "train", "cost"):
        r = report[part]
        lines.append(f"## {part}: {'ok' if r.get('ok') else 'FAILED'} ({r.get('seconds')} s)")
        if "error" in r:
            lines += ["", "```", r["error"], "```"]
    num = report["numerics"]
    if "max_abs_diff" in num:
        lines += ["", "| output | max abs diff device vs CPU |", "|---|---|"] + [f"| {k} | {v:.2e} |" for k, v in num["max_abs_diff"].items()]
    train = report["train"]
    if "runs" in train:
        lines += ["", f"resumed: {train['resume_line']}; steps logged {train['logged_steps']}; finite {train['finite']}; {train['precision']}; "
                      f"final weights max |Δ| vs uninterrupted {train['final_weights_max_abs_diff_vs_uninterrupted']}"]  # fmt: skip
    for name, e in report["cost"].get("shapes", {}).items():
        lines += ["", f"### {name}: {e['params_b']:.2f}B params, prompt {e['prompt_tokens']} + response {e['response_tokens']} tokens, teacher sequence {e.get('teacher_tokens')}, micro-batch {e['micro_batch']}", "",
                  "| variant | phase | median s | peak GiB (allocated) | predicted GiB | error |", "|---|---|---|---|---|---|"]  # fmt: skip
        for variant, v in e["variants"].items():
            if "error" in v:
                lines.append(f"| {variant} | – | – | – | – | {v['error']} |")
                continue
            for phase, secs in v["phase_seconds"].items():
                pred = e["predicted_gib"].get(phase)
                err = e["relative_error"].get(phase) if variant == "antisd" else None
                peak = v["phase_peak_gib"].get(phase)
                lines.append(f"| {variant} | {phase} | {secs:.3f} | {'–' if peak is None else f'{peak:.2f}'} | {'–' if pred is None else f'{pred:.2f}'} | {'–' if err is None else f'{100 * err:+.0f}%'} |")
            lines.append(f"| {variant} | step | {v['step_seconds']:.3f} | | | |")
        if "antisd_minus_grpo_over_teacher_forward" in e:
            lines.append(f"\n(AntiSD − GRPO) / teacher forward = {e['antisd_minus_grpo_over_teacher_forward']:.2f}")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/gpu-check")
    p.add_argument("--tiny", action="store_true", help="CPU, tiny sizes: the same code in under a minute (CI)")
    p.add_argument("--parts", default="numerics,train,cost")
    p.add_argument("--work", default="", help="scratch directory for the runs' files (default: inside --out); only the report goes to --out")
    cfg = p.parse_args()
    from antisd.cli import quiet

    quiet()  # third-party warnings and progress bars, as for the console script
    out, work = Path(cfg.out), Path(cfg.work or Path(cfg.out) / "work")
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() and not cfg.tiny else "cpu"
    torch.set_num_threads(2 if cfg.tiny else min(16, os.cpu_count() or 1))
    parts = cfg.parts.split(",")
    report = {"environment": environment(device), "tiny": cfg.tiny}
    report["numerics"] = run_part("numerics", lambda: part_numerics(device)) if "numerics" in parts else {"ok": None}
    report["train"] = run_part("train", lambda: part_train(device, work / "train", cfg.tiny)) if "train" in parts else {"ok": None}
    report["cost"] = run_part("cost", lambda: part_cost(device, work, cfg.tiny)) if "cost" in parts else {"ok": None}
    (out / "gpu-check.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "gpu-check.md").write_text(markdown(report))
    print(f"[gpu-check] {out / 'gpu-check.md'}")
    return 0 if all(report[k].get("ok") is not False for k in ("numerics", "train", "cost")) else 1


if __name__ == "__main__":
    sys.exit(main())
