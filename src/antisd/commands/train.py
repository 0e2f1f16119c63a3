"""`antisd train`: GRPO / SD / AntiSD on one machine, through TRL's GRPOTrainer.

With no arguments it trains the embedded testbed model (shipped in the package) with the paper's AntiSD on the
Countdown task, evaluates held-out accuracy before and after, and writes a run directory:

    runs/train/config.yaml     the resolved config (preset + overrides)
    runs/train/metrics.jsonl   one line per step: train/, reward/, antisd/, eval/, perf/ keys
    runs/train/checkpoint-N/   model, optimizer, gate and σ_ref state (resume with --resume true)
    runs/train/plots.png       the main curves
    runs/train/summary.json    before/after held-out accuracy

Examples:
    antisd train
    antisd train --preset antisd_release --steps 50 --output_dir runs/release
    antisd train --config my.yaml --antisd_gate_down_ratio 0.9
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from antisd import configio, rundir
from antisd.settings import PREFIX, AntiSDSettings, from_prefixed, preset


@dataclass(frozen=True)
class TrainConfig:
    """Config of `antisd train`. AntiSD settings are given as ``--antisd_<field>`` flags or YAML keys; they override the preset."""

    preset: str = "antisd"
    """Variant: grpo, sd, sd_jsd, antisd, antisd_release, no_gate, revkl_ascent, no_teacher, multiplicative, student_ppl_gate."""
    model: str = "testbed"
    """'testbed' (the tiny model shipped in the package), a local model directory, or a Hugging Face id already in the local cache."""
    task: str = "countdown"
    """'countdown' (embedded), 'gsm' (reasoning-gym, offline), a .jsonl/.parquet file, or hf:ORG/NAME[:split] (boxed-answer math)."""
    prompt_field: str = "prompt"
    """Prompt column of a file or hub data set (a string or a list of chat messages)."""
    answer_field: str = "answer"
    """Gold-answer column of a file or hub data set."""
    output_dir: str = "runs/train"
    """Run directory (config, metrics.jsonl, checkpoints, plots, summary)."""
    steps: int = 40
    """Optimizer steps (one generation batch per step)."""
    prompts_per_step: int = 8
    """Problems per step; each gets num_generations rollouts."""
    num_generations: int = 8
    """Rollouts per problem (the GRPO group size G)."""
    max_completion_length: int = 128
    """Maximum response tokens per rollout."""
    learning_rate: float = 1e-4
    """AdamW learning rate (the paper uses 1e-6 on 4B-30B models; a 1M-parameter model needs far more)."""
    temperature: float = 1.0
    """Sampling temperature of training rollouts (teacher and student log-probs use the same)."""
    loss_type: str = "dapo"
    """TRL loss aggregation: dapo (token-mean over the batch, as the released code's token-mean), grpo, dr_grpo, bnpo."""
    seed: int = 0
    """Seed for data order, sampling and initialisation of anything random."""
    save_steps: int = 10
    """Checkpoint every this many steps (0: only at the end)."""
    resume: bool = False
    """Resume from the newest complete checkpoint of the run in output_dir (gate and σ_ref state included)."""
    overwrite: bool = False
    """Start a new run in an output_dir that holds another run's files, deleting them (checkpoints, metrics, final)."""
    eval_k: int = 4
    """Samples per held-out problem for avg@k before and after training (0 skips evaluation)."""
    eval_every: int = 0
    """Also evaluate held-out avg@k every this many steps during training (0: only before and after)."""
    eval_problems: int = 128
    """Held-out problems evaluated."""
    eval_temperature: float = 0.7
    """Evaluation sampling temperature (the paper's T = 0.7, top-p 0.95)."""
    initial_eval_from: str = ""
    """A run directory whose step-0 held-out evaluation is reused instead of repeated: it must have the same model,
    task, seed and evaluation settings (checked). `antisd compare` sets it: every variant of a seed starts from the
    same model and samples with the same noise, so its step-0 result is identical."""
    eval_batch_size: int = 64
    """Held-out samples generated per batch (larger is faster on CPU for a tiny model; the results are the same
    in distribution, not sample by sample)."""
    threads: int = 2
    """torch CPU threads."""
    grad_accum: int = 1
    """Gradient accumulation steps per optimizer step (one generation batch per optimizer step either way)."""
    bf16: bool = False
    """bfloat16 mixed precision (GPU)."""
    gradient_checkpointing: bool = False
    """Activation checkpointing (long responses on GPU)."""
    use_vllm: bool = False
    """Generate rollouts with vLLM (TRL's use_vllm); the teacher is still scored by the trainer's model."""
    vllm_mode: str = "colocate"
    """TRL vLLM mode: 'colocate' (one node) or 'server' (a `trl vllm-serve` process)."""
    report_to: str = "none"
    """Where TRL also logs the metrics: none, tensorboard, wandb, trackio (comma-separated; the package must be installed)."""
    enable_thinking: bool | None = None
    """Chat-template thinking switch for Qwen3-style templates (None: the template's default)."""
    trl_args: dict = field(default_factory=dict)
    """Any other GRPOConfig field, e.g. {epsilon_high: 0.28} (YAML only)."""
    launch_config: str = ""
    """accelerate config file the run is launched with (DDP, DeepSpeed ZeRO, FSDP): read by the memory preflight."""
    gpu_memory_gib: float = 80.0
    """Memory of one GPU, for the preflight."""
    dry_run: bool = False
    """Only print the per-GPU memory preflight for this config and exit (non-zero if it cannot fit)."""
    antisd: AntiSDSettings | None = None
    """AntiSD settings; None: the preset's as they are. Set through antisd_<field> flags/keys, which override the preset."""

    def __post_init__(self):
        at_least = {"steps": 1, "prompts_per_step": 1, "num_generations": 2, "max_completion_length": 1, "save_steps": 0,
                    "eval_k": 0, "eval_every": 0, "eval_problems": 1, "eval_batch_size": 1, "threads": 1, "grad_accum": 1}  # fmt: skip
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ValueError(f"--{name} must be ≥ {low}, got {getattr(self, name)}")
        for name in ("learning_rate", "temperature", "eval_temperature", "gpu_memory_gib"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"--{name} must be a finite number > 0, got {value}")
        if self.resume and self.overwrite:
            raise ValueError("--resume true and --overwrite true contradict each other: choose one")
        preset(self.preset)  # an unknown name fails here, with the known names

    def settings(self) -> AntiSDSettings:
        """The AntiSD settings of this run: the explicit object, else the named preset."""
        return self.antisd if self.antisd is not None else preset(self.preset)


def antisd_fields() -> dict:
    """(type, help) of every AntiSD setting under its CLI/YAML name ``antisd_<field>``."""
    import typing

    hints = typing.get_type_hints(AntiSDSettings)
    docs = configio.field_docs(AntiSDSettings)
    return {PREFIX + f.name: (hints[f.name], docs.get(f.name, "")) for f in dataclasses.fields(AntiSDSettings)}


def with_settings(values: dict, overrides: dict) -> dict:
    """Command-line/YAML ``antisd_*`` overrides applied to the chosen preset, as the config's ``antisd`` object."""
    if not overrides:
        return values
    base = values.get("antisd") or preset(values.get("preset", TrainConfig.preset))
    return values | {"antisd": from_prefixed(base, overrides)}


def trainer_args(cfg: TrainConfig, run_dir: Path):
    """The AntiSDConfig of this run: the TRL settings and the AntiSD settings object."""
    from antisd.integrations.trl import AntiSDConfig

    return AntiSDConfig(**trl_kwargs(cfg, run_dir), antisd=cfg.settings())


def trl_kwargs(cfg: TrainConfig, run_dir: Path) -> dict:
    """The GRPOConfig fields of this run (the same for plain TRL GRPO, which benchmarks compare against)."""
    base = dict(
        output_dir=str(run_dir),
        max_steps=cfg.steps,
        per_device_train_batch_size=per_device_batch(cfg),
        gradient_accumulation_steps=cfg.grad_accum,
        bf16=cfg.bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        use_vllm=cfg.use_vllm,
        vllm_mode=cfg.vllm_mode,
        chat_template_kwargs=None if cfg.enable_thinking is None else {"enable_thinking": cfg.enable_thinking},
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",
        temperature=cfg.temperature,
        loss_type=cfg.loss_type,
        beta=0.0,
        seed=cfg.seed,
        use_cpu=not _has_cuda(),
        report_to=[x for x in cfg.report_to.split(",") if x] if cfg.report_to != "none" else "none",
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.save_steps if cfg.save_steps > 0 else cfg.steps,
        disable_tqdm=True,
        disable_dropout=True,
        dataloader_num_workers=0,
    )
    clash = sorted(k for k in cfg.trl_args if k.startswith(PREFIX) or k == "antisd")
    if clash:
        raise ValueError(f"trl_args may not set AntiSD fields {clash}: give them at the top level")
    from trl import GRPOConfig

    from antisd.integrations.trl import AntiSDConfig

    known = set(GRPOConfig.__dataclass_fields__) | set(AntiSDConfig.__dataclass_fields__)
    for key in cfg.trl_args:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            raise ValueError(f"--trl_args: {key!r} is not a GRPOConfig field" + (f"; did you mean {close[0]!r}?" if close else ""))
    return base | cfg.trl_args


def per_device_batch(cfg: TrainConfig) -> int:
    """Rollouts per device per micro-step: prompts × G spread over processes and accumulation steps."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    total = cfg.prompts_per_step * cfg.num_generations
    if total % (world * cfg.grad_accum):
        raise ValueError(f"prompts_per_step × num_generations = {total} does not split over {world} processes × grad_accum {cfg.grad_accum}")
    return total // (world * cfg.grad_accum)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


PROMPT_BUDGET = 2048  # the released launcher's prompt length; sets the longest training sequence in the preflight


def launch_yaml(cfg: TrainConfig) -> dict:
    """The accelerate launch config of this run ({} without one)."""
    import yaml

    return (yaml.safe_load(Path(cfg.launch_config).read_text()) or {}) if cfg.launch_config else {}


def launch_of(cfg: TrainConfig, acc: dict | None = None):
    """The preflight's Launch from this config and its accelerate launch config."""
    from antisd.preflight import Launch

    acc = launch_yaml(cfg) if acc is None else acc
    kind = acc.get("distributed_type", "MULTI_GPU")
    ds = acc.get("deepspeed_config") or {}
    strategy = {"DEEPSPEED": {2: "zero2", 3: "zero3"}.get(ds.get("zero_stage"), "ddp"), "FSDP": "fsdp"}.get(kind, "ddp")
    gpus = int(acc.get("num_processes", os.environ.get("WORLD_SIZE", 1))) * int(acc.get("num_machines", 1))
    rows = cfg.prompts_per_step * cfg.num_generations
    vllm = ("colocate" if cfg.vllm_mode == "colocate" else "server") if cfg.use_vllm else "none"
    return Launch(
        gpus=gpus, gpu_gib=cfg.gpu_memory_gib, strategy=strategy, micro_batch=max(rows // (gpus * cfg.grad_accum), 1),
        seq_len=PROMPT_BUDGET + cfg.max_completion_length,
        teacher_seq_len=cfg.settings().max_reprompt_len + cfg.max_completion_length,
        gradient_checkpointing=cfg.gradient_checkpointing, offload_optimizer=ds.get("offload_optimizer_device", "none") not in ("none", None),
        vllm=vllm, vllm_gpu_memory_utilization=cfg.trl_args.get("vllm_gpu_memory_utilization", 0.3),
        vllm_tensor_parallel=cfg.trl_args.get("vllm_tensor_parallel_size", 1), vllm_max_model_len=cfg.trl_args.get("vllm_max_model_length") or 0,
    )  # fmt: skip


def preflight(cfg: TrainConfig) -> tuple[str, list[str]]:
    """(report, problems) of the per-GPU memory estimate for this run."""
    from antisd import preflight as pf
    from antisd.runtime import resolve_model_path

    try:
        path = resolve_model_path(cfg.model)
    except FileNotFoundError:  # a registered model not installed here: its shape may still be shipped
        path = cfg.model
    shape = pf.load_shape(path, Path(__file__).resolve().parents[1] / "assets" / "models")
    launch = launch_of(cfg)
    return pf.report(cfg.model, shape, launch), pf.problems(shape, launch)


def main(cfg: TrainConfig) -> dict:
    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback

    from antisd.evaluation import evaluate
    from antisd.integrations.trl import AntiSDTrainer
    from antisd.runtime import check_training_precision, load_model
    from antisd.runlog import JsonlMetrics, PeriodicEval, ProgressBar, plot_metrics
    from antisd.tasks import load_task

    if cfg.dry_run or (cfg.launch_config and torch.cuda.is_available()):
        text, bad = preflight(cfg)
        print(text)
        if bad:
            raise SystemExit(f"antisd train: this run cannot fit: {bad[0]}")
        if cfg.dry_run:
            return {"preflight": text}
    torch.set_num_threads(cfg.threads)
    run_dir = Path(cfg.output_dir)
    metrics = JsonlMetrics(run_dir / "metrics.jsonl")

    # 1. Trainer config, task, model and tokenizer: every input is checked before anything is written
    args = trainer_args(cfg, run_dir)
    dist = PartialState()  # under torchrun/accelerate every process runs this file; only the main one writes or prints
    say = print if dist.is_main_process else (lambda *a, **k: None)
    task = load_task(cfg.task, seed=cfg.seed, n_heldout=cfg.eval_problems, prompt_field=cfg.prompt_field, answer_field=cfg.answer_field)
    model, tok = load_model(cfg.model)
    deepspeed = launch_yaml(cfg).get("distributed_type") == "DEEPSPEED"
    precision = check_training_precision(model, "bf16" if cfg.bf16 else "no", engine_keeps_fp32_master=deepspeed)
    say(precision)
    say(f"model {cfg.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params; task {task.name}: {len(task.train_rows)} train, {len(task.heldout)} held-out; preset {cfg.preset}; {dist.num_processes} process(es)")
    for line in data_warnings(cfg, task, tok, getattr(model.config, "max_position_embeddings", None)):
        say(line)
    reused = initial_evaluation(cfg) if cfg.initial_eval_from and cfg.eval_k > 0 else None

    # 2. Claim the run directory (one run owns it; a resume continues the newest *complete* checkpoint of this run)
    # and record the config (the preset is expanded, so the file says exactly what ran).
    lock = None
    if dist.is_main_process:
        lock, _ = rundir.claim(run_dir, resume=cfg.resume, overwrite=cfg.overwrite, settings=cfg.settings().to_dict())
    dist.wait_for_everyone()
    run = rundir.read_run(run_dir)
    try:
        resume_from = _resume_point(cfg, run_dir, run, say) if cfg.resume else None
    except rundir.RunDirError:
        if lock:
            lock.release()
        raise
    if resume_from == "finished":
        if lock:
            lock.release()
        return json.loads((run_dir / "summary.json").read_text())
    if dist.is_main_process:
        (run_dir / "config.yaml").write_text(configio.to_yaml(dataclasses.replace(cfg, antisd=cfg.settings())))
        if resume_from is not None:
            rundir.truncate_metrics(run_dir / "metrics.jsonl", int(resume_from.name.split("-")[-1]))
    dist.wait_for_everyone()

    evals: dict[int, object] = {}

    def held_out(step: int, tag: str):
        """Held-out avg@k, sharded over the processes (all of them call this) and written once."""
        if cfg.eval_k <= 0:
            return None
        result = evaluate(
            model, tok, task, k=cfg.eval_k, temperature=cfg.eval_temperature, max_new_tokens=cfg.max_completion_length,
            batch_size=cfg.eval_batch_size, seed=cfg.seed, shard=(dist.process_index, dist.num_processes), gather=gather_object,
        )  # fmt: skip
        say(f"held-out {tag}: avg@{cfg.eval_k} = {result.avg_at_k:.3f}, pass@{cfg.eval_k} = {result.pass_at[cfg.eval_k]:.3f} ({result.n_problems} problems)")
        if dist.is_main_process:
            metrics.write(step, result.metrics())
        evals[step] = result
        return result

    reused = reused if resume_from is None else None
    if reused is not None:
        say(f"held-out before: avg@{cfg.eval_k} = {reused.metrics()[f'eval/avg@{cfg.eval_k}']:.3f}, reused from {cfg.initial_eval_from}")
        if dist.is_main_process:
            metrics.write(0, reused.metrics())
    before = reused or (held_out(0, "before") if resume_from is None else None)

    # 3. Train
    callbacks = [metrics, ProgressBar(cfg.steps)]
    if cfg.eval_every > 0 and cfg.eval_k > 0:
        callbacks.append(PeriodicEval(cfg.eval_every, lambda step: held_out(step, f"step {step}")))
    trainer = AntiSDTrainer(
        model=model,
        reward_funcs=[task.reward_fn()],
        args=args,
        train_dataset=Dataset.from_list(task.train_rows),
        processing_class=tok,
        callbacks=callbacks,
        demonstration_cutter=task.cut_demonstration,
        run_id=run["run_id"],
    )
    trainer.remove_callback(PrinterCallback)  # the progress bar and metrics.jsonl replace the raw dict prints
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    trainer.save_model(str(run_dir / "final"))  # every process calls it (sharded weights); the main one writes
    if dist.is_main_process:  # the card names antisd and the paper (TRL writes it into the run directory)
        trainer.create_model_card(model_name=f"{Path(cfg.model).name}-{cfg.preset}", tags=[cfg.preset])
        shutil.copy(run_dir / "README.md", run_dir / "final" / "README.md")

    # 4. Evaluate, summarise, plot
    step = trainer.state.global_step
    after = evals[step] if step in evals else held_out(step, "after")
    summary = {
        "preset": cfg.preset,
        "steps": step,
        "processes": dist.num_processes,
        "precision": precision,
        "before": before.metrics() if before else None,
        "after": after.metrics() if after else None,
        "gate": trainer.gate.state_dict(),
        "sigma_ref": trainer.sigma_ref.value,
    }
    if dist.is_main_process:
        rundir.write_json_atomic(run_dir / "summary.json", summary)
        plot_metrics(run_dir / "metrics.jsonl", run_dir / "plots.png")
        rundir.write_json_atomic(run_dir / rundir.RUN_FILE, run | {"finished": True, "steps": step, "antisd": cfg.settings().to_dict()})
        _print_summary(summary)
        lock.release()
    return summary


SAME_INITIAL_EVAL = ("model", "task", "seed", "eval_k", "eval_problems", "eval_temperature", "eval_batch_size", "max_completion_length", "prompt_field", "answer_field")


@dataclass(frozen=True)
class ReusedEval:
    values: dict

    def metrics(self) -> dict:
        return self.values


def initial_evaluation(cfg: TrainConfig) -> ReusedEval | None:
    """The step-0 evaluation of ``cfg.initial_eval_from`` if that run evaluated the same model the same way (else
    an error naming the field that differs); None when it has no step-0 evaluation yet (this run evaluates)."""
    source = Path(cfg.initial_eval_from)
    theirs = configio.load_yaml(source / "config.yaml") if (source / "config.yaml").is_file() else None
    if theirs is None:
        raise ValueError(f"--initial_eval_from {source}: not a run directory (no config.yaml)")
    for name in SAME_INITIAL_EVAL:
        if theirs.get(name) != getattr(cfg, name):
            raise ValueError(f"--initial_eval_from {source}: its {name} is {theirs.get(name)!r}, this run's is {getattr(cfg, name)!r}; its step-0 evaluation is not this run's")
    from antisd.runlog import read_jsonl

    rows = [r for r in read_jsonl(source / "metrics.jsonl") if r.get("step") == 0 and f"eval/avg@{cfg.eval_k}" in r]
    return ReusedEval({k: v for k, v in rows[-1].items() if k.startswith("eval/")}) if rows else None


def data_warnings(cfg: TrainConfig, task, tok, context: int | None) -> list[str]:
    """Refuse prompts that alone exceed the model's context; warn, with counts, about prompts that leave less
    room than max_completion_length, repeated training prompts and held-out problems that are also trained on."""
    from antisd.tasks import duplicates_and_overlap

    warnings = []
    if context:
        kwargs = {"enable_thinking": cfg.enable_thinking} if cfg.enable_thinking is not None else {}
        lengths = [len(tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False, **kwargs)) if not isinstance(r["prompt"], str) else len(tok(r["prompt"])["input_ids"]) for r in task.train_rows]
        too_long = [i for i, n in enumerate(lengths) if n >= context]
        if too_long:
            first = task.train_rows[too_long[0]]["prompt"]
            text = (first if isinstance(first, str) else first[-1].get("content", ""))[:40]
            raise ValueError(f"{len(too_long)} of {len(lengths)} training prompts are longer than the model's context of {context} tokens (first: training row {too_long[0] + 1}, {lengths[too_long[0]]} tokens, {text!r}…); shorten or drop them")
        tight = sum(n + cfg.max_completion_length > context for n in lengths)
        if tight:
            warnings.append(f"warning: {tight} of {len(lengths)} training prompts leave less than --max_completion_length {cfg.max_completion_length} tokens of the model's {context}-token context")
    repeats, overlap = duplicates_and_overlap(task)
    if repeats:
        warnings.append(f"warning: {repeats} of {len(task.train_rows)} training rows repeat an earlier prompt")
    if overlap:
        warnings.append(f"warning: {overlap} of {len(task.heldout)} held-out problems are also training prompts: held-out accuracy is not held out")
    return warnings


# Settings a resumed run may change freely: they do not touch the gate, σ_ref or τ calibrated so far.
FREE_ON_RESUME = ("log_categories_every", "diagnostics", "recalibrate_on_resume")


def _resume_point(cfg: TrainConfig, run_dir: Path, run: dict, say):
    """The checkpoint to resume from, or "finished". Refuses (naming the fix) a changed setting the saved gate
    state depends on, and a directory with no complete checkpoint of this run."""
    if run["finished"] and run["steps"] >= cfg.steps:
        say(f"{run_dir}: run {run['run_id']} is finished ({run['steps']} steps ≥ --steps {cfg.steps}); nothing to do")
        return "finished"
    now, then = cfg.settings().to_dict(), run.get("antisd", {})
    changed = {k: (then.get(k), v) for k, v in now.items() if then.get(k) != v and k not in FREE_ON_RESUME}
    if changed and not now["recalibrate_on_resume"]:
        listed = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in changed.items())
        raise rundir.RunDirError(f"--resume with changed AntiSD settings ({listed}); the saved gate was calibrated under the old ones. "
                                 "Resume without the change, or add --antisd_recalibrate_on_resume true to warm up again with the new settings")  # fmt: skip
    point, skipped = rundir.last_complete(run_dir, run["run_id"])
    for line in skipped:
        say(f"resume: {line}")
    if point is None:
        raise rundir.RunDirError(f"--resume true but {run_dir} holds no complete checkpoint of run {run['run_id']}; start again with --overwrite true")
    say(f"resume: from {point.name}")
    return point


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"antisd train: {summary['preset']}, {summary['steps']} steps")
    table.add_column("metric")
    table.add_column("before")
    table.add_column("after")
    keys = sorted(set((summary["before"] or {}) | (summary["after"] or {})))
    for key in keys:
        fmt = lambda d: f"{d[key]:.3f}" if d and key in d else "-"  # noqa: E731
        table.add_row(key, fmt(summary["before"]), fmt(summary["after"]))
    gate = summary["gate"]
    table.add_row("gate warm value / state", "-", f"{gate['warm']} / {'on' if gate['active'] else 'off'}")
    Console().print(table)


def cli(argv: list[str]) -> dict:
    cfg = configio.parse(TrainConfig, argv, prog="antisd train", description=__doc__.split("\n\n")[0], extra=antisd_fields(), combine=with_settings)
    return main(cfg)
