"""`antisd train`: GRPO / SD / AntiSD on one machine, through TRL's GRPOTrainer.

With no arguments it trains the embedded testbed model (shipped in the package) with the paper's AntiSD on the
Countdown task, evaluates held-out accuracy before and after, and writes a run directory:

    runs/train/config.yaml     the resolved config (preset + overrides)
    runs/train/metrics.jsonl   one line per step: train/, reward/, antisd/, eval/, perf/ keys
    runs/train/checkpoint-N/   model, optimizer, gate and σ_ref state (resume with --resume true)
    runs/train/plots.png       the main curves
    runs/train/summary.json    before/after held-out accuracy
    runs/train/final/          the trained model, with a model card (README.md)

A resumed run (``--resume true``) continues from its own recorded settings (config.yaml): give only what changes
on purpose. ``--steps`` may grow; any other change to what is trained is refused with the differences listed,
unless ``--accept_changes true`` (then each segment's changes are recorded in run.json).

Examples:
    antisd train
    antisd train --preset antisd_release --steps 50 --output_dir runs/release
    antisd train --config configs/examples/train.yaml --antisd_gate_down_ratio 0.9
    antisd train --output_dir runs/release --steps 80 --resume true
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from antisd.infra import configio

from antisd.infra import rundir
from antisd.method.settings import PREFIX, RENAMED, AntiSDSettings, from_prefixed, preset


@dataclass(frozen=True)
class TrainConfig:
    """Config of `antisd train`. AntiSD settings are given as ``--antisd_<field>`` flags or YAML keys; they override the preset."""

    RENAMED_OPTIONS: ClassVar[dict] = {PREFIX + old: PREFIX + new for old, new in RENAMED.items()}

    preset: str = "antisd"
    """Variant: grpo, sd, sd_jsd, antisd, antisd_release, no_gate, revkl_ascent, no_teacher, multiplicative, student_ppl_gate, antisd_frozen_teacher, antisd_ema_teacher, antisd_control_experimental."""
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
    """TRL loss aggregation: dapo (token-mean over the batch, as the released code's token-mean), grpo, dr_grpo, bnpo
    (or TRL's cispo, sapo, luspo, vespo)."""
    seed: int = 0
    """Seed for data order, sampling and initialisation of anything random."""
    save_steps: int = 10
    """Checkpoint every this many steps (0: only at the end); the last step is always checkpointed."""
    keep_checkpoints: int = 2
    """Complete checkpoints kept: after each new one is complete, older ones beyond this many are deleted (0: keep
    all). A checkpoint holds the weights and the optimizer state (≈ 12 bytes per parameter; 16 under DeepSpeed):
    ≈ 100 GiB for an 8B model. The run is refused if the output disk cannot hold keep_checkpoints + 1 of them and
    the final model."""
    resume: bool = False
    """Resume from the newest complete checkpoint of the run in output_dir (gate and σ_ref state included), with
    the run's recorded settings (config.yaml); flags given with it change only what they name."""
    accept_changes: bool = False
    """With --resume true: continue even though settings that change what is trained differ from the recorded
    ones (learning rate, task, seed, ...); each change is recorded in run.json's segments."""
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
        configio.check_at_least(self, {"steps": 1, "prompts_per_step": 1, "num_generations": 2, "max_completion_length": 1, "save_steps": 0, "keep_checkpoints": 0,
                                       "eval_k": 0, "eval_every": 0, "eval_problems": 1, "eval_batch_size": 1, "threads": 1, "grad_accum": 1})  # fmt: skip
        configio.check_positive(self, ("learning_rate", "temperature", "eval_temperature", "gpu_memory_gib"))
        configio.check_seed(self)
        configio.check_choice(self, {"loss_type": LOSS_TYPES, "vllm_mode": ("colocate", "server")})
        configio.check_nonempty(self, ("model", "task", "output_dir", "prompt_field", "answer_field"))
        if self.eval_every and not self.eval_k:
            raise ValueError(f"--eval_every {self.eval_every} evaluates with --eval_k samples per problem, but --eval_k is 0; give --eval_k ≥ 1 or drop --eval_every")
        for name in self.report_to.split(","):
            if name not in REPORT_TO:
                raise ValueError(f"--report_to {self.report_to!r}: {name!r} is not one of {list(REPORT_TO)}")
        if self.launch_config and not Path(self.launch_config).is_file():
            raise ValueError(f"--launch_config {self.launch_config}: no such file")
        if self.initial_eval_from and not Path(self.initial_eval_from).is_dir():
            raise ValueError(f"--initial_eval_from {self.initial_eval_from}: no such run directory")
        if self.resume and self.overwrite:
            raise ValueError("--resume true and --overwrite true contradict each other: choose one")
        if self.accept_changes and not self.resume:
            raise ValueError("--accept_changes true applies to --resume true only")
        preset(self.preset)  # an unknown name fails here, with the known names

    def settings(self) -> AntiSDSettings:
        """The AntiSD settings of this run: the explicit object, else the named preset."""
        return self.antisd if self.antisd is not None else preset(self.preset)


LOSS_TYPES = ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo", "luspo", "vespo")  # TRL 1.16's
# transformers' logging integrations and the module each needs (checked before the run directory is claimed)
REPORT_TO = {"none": None, "tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow", "comet_ml": "comet_ml",
             "clearml": "clearml", "swanlab": "swanlab", "dvclive": "dvclive", "neptune": "neptune", "codecarbon": "codecarbon"}  # fmt: skip


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

    return AntiSDConfig(**trl_kwargs(cfg, run_dir), antisd=cfg.settings(), keep_complete_checkpoints=cfg.keep_checkpoints)


# GRPOConfig fields antisd train sets from its own options (trl_args may not override them behind their back)
OWN_FLAGS = {
    "output_dir": "--output_dir", "max_steps": "--steps", "per_device_train_batch_size": "--prompts_per_step × --num_generations",
    "gradient_accumulation_steps": "--grad_accum", "bf16": "--bf16", "gradient_checkpointing": "--gradient_checkpointing",
    "use_vllm": "--use_vllm", "vllm_mode": "--vllm_mode", "num_generations": "--num_generations",
    "max_completion_length": "--max_completion_length", "learning_rate": "--learning_rate", "temperature": "--temperature",
    "loss_type": "--loss_type", "seed": "--seed", "report_to": "--report_to", "save_steps": "--save_steps",
    "chat_template_kwargs": "--enable_thinking", "save_total_limit": "--keep_checkpoints", "keep_complete_checkpoints": "--keep_checkpoints",
}  # fmt: skip


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
        save_steps=cfg.save_steps if cfg.save_steps > 0 else cfg.steps,  # transformers also saves the last step
        disable_tqdm=True,
        disable_dropout=True,
        dataloader_num_workers=0,
    )
    clash = sorted(k for k in cfg.trl_args if k.startswith(PREFIX) or k == "antisd")
    if clash:
        raise ValueError(f"trl_args may not set AntiSD fields {clash}: give them at the top level")
    for key in cfg.trl_args:
        if key in OWN_FLAGS:
            raise ValueError(f"--trl_args {key}: antisd train sets it from {OWN_FLAGS[key]}; give that instead (trl_args would override it silently)")
    from trl import GRPOConfig

    from antisd.integrations.trl import AntiSDConfig

    known = set(GRPOConfig.__dataclass_fields__) | set(AntiSDConfig.__dataclass_fields__)
    for key in cfg.trl_args:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            raise ValueError(f"--trl_args: {key!r} is not a GRPOConfig field" + (f"; did you mean {close[0]!r}?" if close else ""))
    return base | typed_trl_args(cfg.trl_args)


def typed_trl_args(trl_args: dict) -> dict:
    """``trl_args`` values converted to their GRPOConfig field types where the type is a plain scalar (or an
    optional one), so that ``{learning_rate: abc}`` is refused here, naming the field, not deep inside training."""
    import typing

    from antisd.integrations.trl import AntiSDConfig

    hints = typing.get_type_hints(AntiSDConfig)
    out = {}
    for key, value in trl_args.items():
        base, _ = configio._base_type(hints.get(key, object))
        out[key] = configio.convert(value, hints[key], f"--trl_args {key}") if base in (int, float, bool, str) else value
    return out


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
    return configio.load_yaml(cfg.launch_config) if cfg.launch_config else {}


def launch_of(cfg: TrainConfig, acc: dict | None = None):
    """The preflight's Launch from this config and its accelerate launch config."""
    from antisd.infra.preflight import Launch

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
        gradient_checkpointing=cfg.gradient_checkpointing, grad_accum=cfg.grad_accum, offload_optimizer=ds.get("offload_optimizer_device", "none") not in ("none", None),
        rollouts_per_step=rows, nodes=int(acc.get("num_machines", 1)), teacher=cfg.settings().teacher, teacher_offload=cfg.settings().teacher_offload,
        vllm=vllm, vllm_gpu_memory_utilization=cfg.trl_args.get("vllm_gpu_memory_utilization", 0.3),
        vllm_tensor_parallel=cfg.trl_args.get("vllm_tensor_parallel_size", 1), vllm_max_model_len=cfg.trl_args.get("vllm_max_model_length") or 0,
    )  # fmt: skip


def preflight(cfg: TrainConfig) -> tuple[str, list[str]]:
    """(report, problems) of the per-GPU memory estimate and the output disk need of this run."""
    from antisd.infra import preflight as pf
    from antisd.infra.models import resolve_model_path

    try:
        path = resolve_model_path(cfg.model)
    except FileNotFoundError:  # a registered model not installed here: its shape may still be shipped
        path = cfg.model
    shape = pf.load_shape(path, Path(__file__).resolve().parents[1] / "assets" / "models")
    launch = launch_of(cfg)
    # The disk is this machine's, where the run may not happen: said, not refused (the run itself refuses).
    disk, disk_problem = disk_need(cfg, shape.params(), deepspeed=launch.strategy in ("zero2", "zero3"))
    return pf.report(cfg.model, shape, launch) + "\n" + disk + (f"\n  NOT ON THIS DISK: {disk_problem}" if disk_problem else ""), pf.problems(shape, launch)


def free_disk_bytes(path: Path) -> int:
    """Free bytes on the file system that would hold ``path`` (its nearest existing ancestor)."""
    existing = next(p for p in [Path(path).absolute(), *Path(path).absolute().parents] if p.exists())
    return shutil.disk_usage(existing).free


def disk_need(cfg: TrainConfig, n_params: int, deepspeed: bool) -> tuple[str, str | None]:
    """(one line: checkpoint size and what the run needs on its output disk, the problem if it cannot fit or None).
    A run holds keep_checkpoints complete checkpoints plus the one being written, and the final model; with
    keep_checkpoints 0 every checkpoint is kept."""
    from antisd.infra.preflight import GIB, checkpoint_bytes

    checkpoint = checkpoint_bytes(n_params, deepspeed=deepspeed, kept_teacher=cfg.settings().teacher in ("ema", "frozen"))
    final = 4 * n_params
    interval = min(cfg.save_steps or cfg.steps, cfg.steps)
    saves = -(-cfg.steps // interval)  # every interval, and the last step
    held = min(cfg.keep_checkpoints + 1, saves) if cfg.keep_checkpoints else saves
    need, free = held * checkpoint + final, free_disk_bytes(Path(cfg.output_dir))
    line = (f"disk: a checkpoint ≈ {checkpoint / GIB:.2f} GiB (weights + optimizer{' + teacher' if cfg.settings().teacher in ('ema', 'frozen') else ''}), {held} held at once "
            f"(--keep_checkpoints {cfg.keep_checkpoints}) + the final model {final / GIB:.2f} GiB = {need / GIB:.2f} GiB; "
            f"{free / GIB:.1f} GiB free under {cfg.output_dir}")  # fmt: skip
    at_least = min(2, saves) * checkpoint + final  # two checkpoints: the newest complete one survives a kill during the next save
    if free < at_least:
        return line, (f"the output disk of {cfg.output_dir} has {free / GIB:.2f} GiB free; the run needs at least {at_least / GIB:.2f} GiB "
                      f"(two checkpoints of {checkpoint / GIB:.2f} GiB and the final model): free space or choose another --output_dir")  # fmt: skip
    return line, None


def main(cfg: TrainConfig) -> dict:
    import torch

    if cfg.dry_run or (cfg.launch_config and torch.cuda.is_available()):
        text = checked_preflight(cfg)
        if cfg.dry_run:
            return {"preflight": text}
    torch.set_num_threads(cfg.threads)
    run_dir = Path(cfg.output_dir)

    # 1. Every input is checked before anything is written: paths, the resume point, the trainer config, the task,
    # the model and tokenizer, and finally the trainer itself (which only creates the empty output directory).
    x = check_inputs(cfg, run_dir)
    if isinstance(x, dict):
        return x  # resumed a finished run: its summary
    from antisd.infra.runlog import JsonlMetrics

    metrics = JsonlMetrics(run_dir / "metrics.jsonl")
    held_out = HeldOut(cfg, x, metrics)
    trainer = make_trainer(cfg, x, run_dir, metrics, held_out)

    # 2. Claim the run directory (one run owns it) and record the config (the preset expanded: the file says exactly
    # what ran). A resume continues the newest complete checkpoint of this run; its changes were checked above.
    lock, run = claim_run(cfg, x, run_dir)
    trainer.antisd_run_id = run["run_id"]  # written into each checkpoint's completeness marker (antisd.infra.rundir)
    x.say(trainer.antisd_precision)  # refused in the trainer if AdamW would step 16-bit weights
    x.say(f"model {cfg.model}: {sum(p.numel() for p in x.model.parameters()) / 1e6:.2f}M params; task {x.task.name}: {len(x.task.train_rows)} train, "
          f"{len(x.task.heldout)} held-out; preset {cfg.preset}; {x.dist.num_processes} process(es)")  # fmt: skip
    for line in x.warnings + [f"resume: {line}" for line in (x.resume.notes if x.resume else [])]:
        x.say(line)

    # 3. Train (evaluating first, from AtTrainBegin), or, when the newest checkpoint is the last step, only load it
    if x.reused is not None:
        x.say(f"held-out before: avg@{cfg.eval_k} = {x.reused[f'eval/avg@{cfg.eval_k}']:.3f}, reused from {cfg.initial_eval_from}")
        if x.dist.is_main_process:
            metrics.write(0, x.reused)
    if x.resume is not None and x.resume.step >= cfg.steps:
        trainer.load_finished_checkpoint(str(x.resume.path))  # killed after its last checkpoint: nothing left to train
    else:
        trainer.train(resume_from_checkpoint=str(x.resume.path) if x.resume else None)
    before = x.reused or held_out.results.get(0) or logged_eval(run_dir, 0, cfg.eval_k)
    trainer.save_model(str(run_dir / "final"))  # every process calls it (sharded weights); the main one writes

    # 4. Evaluate after, summarise, plot, say where everything is
    step = trainer.state.global_step
    after = held_out.results.get(step) or logged_eval(run_dir, step, cfg.eval_k) or held_out(step, "after")
    summary = finish(cfg, x, run_dir, trainer, run, before=before, after=after)
    if lock is not None:
        lock.release()
    return summary


def checked_preflight(cfg: TrainConfig) -> str:
    """The per-GPU memory estimate, printed by one process; a launch that cannot fit is refused here."""
    text, bad = preflight(cfg)
    if int(os.environ.get("RANK", "0")) == 0:  # every process checks; one prints
        print(text)
    if bad:
        raise SystemExit(f"antisd train: this run cannot fit: {bad[0]}")
    return text


@dataclass
class Inputs:
    """Everything ``main`` checked before writing anything."""

    args: Any
    dist: Any
    resume: "ResumePoint | None"
    task: Any
    model: Any
    tok: Any
    warnings: list
    reused: dict | None
    """A step-0 evaluation reused from another run (--initial_eval_from), or None."""

    def say(self, *args, **kwargs) -> None:
        """Print on the main process only (under torchrun/accelerate every process runs this file)."""
        if self.dist.is_main_process:
            print(*args, **kwargs)


def check_inputs(cfg: TrainConfig, run_dir: Path) -> "Inputs | dict":
    """Check every input; a resumed run that is already finished returns its summary instead."""
    from accelerate import PartialState

    from antisd.infra.models import load_model
    from antisd.tasks import load_task

    configio.check_output_dir(run_dir, "--output_dir")
    args = trainer_args(cfg, run_dir)  # first: TrainingArguments sets up the process group that PartialState then reads
    dist = PartialState()
    resume = resume_point(cfg, run_dir) if cfg.resume else None
    if cfg.resume and resume is None:
        run = rundir.read_run(run_dir)
        if dist.is_main_process:
            print(f"{run_dir}: run {run['run_id']} is finished ({run['steps']} steps ≥ --steps {cfg.steps}); nothing to do")
        return json.loads((run_dir / "summary.json").read_text())
    check_report_to(cfg)
    task = load_task(cfg.task, seed=cfg.seed, n_heldout=cfg.eval_problems, prompt_field=cfg.prompt_field, answer_field=cfg.answer_field)
    check_task_size(cfg, task)
    model, tok = load_model(cfg.model)
    _, disk_problem = disk_need(cfg, sum(p.numel() for p in model.parameters()), deepspeed=launch_yaml(cfg).get("distributed_type") == "DEEPSPEED")
    if disk_problem:
        raise ValueError(disk_problem)
    warnings = warmup_warning(cfg) + data_warnings(cfg, task, tok, getattr(model.config, "max_position_embeddings", None))
    reused = initial_evaluation(cfg) if cfg.initial_eval_from and cfg.eval_k > 0 and resume is None else None
    return Inputs(args=args, dist=dist, resume=resume, task=task, model=model, tok=tok, warnings=warnings, reused=reused)


class HeldOut:
    """Held-out avg@k at a step, sharded over the processes (all of them call it) and written once."""

    def __init__(self, cfg: TrainConfig, x: Inputs, metrics):
        self.cfg, self.x, self.metrics = cfg, x, metrics
        self.results: dict[int, dict] = {}
        self.trainer = None  # set once the trainer exists; evaluation runs on its generation-ready model

    def __call__(self, step: int, tag: str) -> dict | None:
        from accelerate.utils import gather_object

        from antisd.evaluation.heldout import evaluate

        cfg, x = self.cfg, self.x
        if cfg.eval_k <= 0:
            return None
        with self.trainer.generation_model() as ready:  # gathered / full parameters under ZeRO-3 / FSDP
            result = evaluate(
                ready, x.tok, x.task, k=cfg.eval_k, temperature=cfg.eval_temperature, max_new_tokens=cfg.max_completion_length,
                batch_size=cfg.eval_batch_size, seed=cfg.seed, shard=(x.dist.process_index, x.dist.num_processes), gather=gather_object,
            )  # fmt: skip
        x.say(f"held-out {tag}: avg@{cfg.eval_k} = {result.avg_at_k:.3f}, pass@{cfg.eval_k} = {result.pass_at[cfg.eval_k]:.3f} ({result.n_problems} problems)")
        if x.dist.is_main_process:
            self.metrics.write(step, result.metrics())
        self.results[step] = result.metrics()
        return self.results[step]


def make_trainer(cfg: TrainConfig, x: Inputs, run_dir: Path, metrics, held_out: HeldOut):
    """The AntiSD trainer with antisd's callbacks; an output directory it made and left empty is removed on failure."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback

    from antisd.infra.runlog import AtTrainBegin, PeriodicEval, ProgressBar
    from antisd.integrations.trl import AntiSDTrainer

    # The step-0 evaluation runs once training has prepared the model (ZeRO-3 and FSDP shard it at preparation)
    evaluate_first = x.resume is None and x.reused is None and cfg.eval_k > 0
    callbacks = [metrics, *([AtTrainBegin(lambda: held_out(0, "before"))] if evaluate_first else []), ProgressBar(cfg.steps, cfg.settings())]
    if cfg.eval_every > 0 and cfg.eval_k > 0:
        callbacks.append(PeriodicEval(cfg.eval_every, lambda step: held_out(step, f"step {step}")))
    existed = run_dir.exists()
    try:
        trainer = AntiSDTrainer(
            model=x.model, reward_funcs=[x.task.reward_fn()], args=x.args, train_dataset=Dataset.from_list(x.task.train_rows),
            processing_class=x.tok, callbacks=callbacks, cut_demonstration=x.task.cut_demonstration, feedback=x.task.feedback,
        )  # fmt: skip
    except BaseException:
        if not existed and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # the trainer made it; nothing else was written
        raise
    trainer.remove_callback(PrinterCallback)  # the progress bar and metrics.jsonl replace the raw dict prints
    held_out.trainer = trainer
    return trainer


def claim_run(cfg: TrainConfig, x: Inputs, run_dir: Path) -> tuple[Any, dict]:
    """The main process claims the directory, records run.json (segments of accepted changes) and config.yaml."""
    lock, run = None, None
    if x.dist.is_main_process:
        lock, run = rundir.claim(run_dir, resume=cfg.resume, overwrite=cfg.overwrite, settings=cfg.settings().to_dict())
        if x.resume is not None and x.resume.changes:
            run = run | {"segments": [*run.get("segments", []), {"from_step": x.resume.step, "changes": x.resume.changes}]}
            rundir.write_json_atomic(run_dir / rundir.RUN_FILE, run)
        (run_dir / "config.yaml").write_text(configio.to_yaml(recordable(cfg)))
        if x.resume is not None:
            rundir.truncate_metrics(run_dir / "metrics.jsonl", x.resume.step)
    x.dist.wait_for_everyone()
    return lock, run or rundir.read_run(run_dir)


def finish(cfg: TrainConfig, x: Inputs, run_dir: Path, trainer, run: dict, *, before, after) -> dict:
    """summary.json, plots, the model card and the finished run.json (main process), and the printed summary."""
    from antisd.infra.runlog import gate_text, model_card, plot_metrics

    step = trainer.state.global_step
    summary = {
        "preset": cfg.preset, "steps": step, "processes": x.dist.num_processes, "precision": trainer.antisd_precision,
        "before": before, "after": after, "gate": trainer.gate.state_dict(), "gate_state": gate_text(cfg.settings(), trainer.gate),
        "sigma_ref": trainer.sigma_ref.value,
    }  # fmt: skip
    if x.dist.is_main_process:
        rundir.write_json_atomic(run_dir / "summary.json", summary)
        plot_metrics(run_dir / "metrics.jsonl", run_dir / "plots.png")
        card = model_card(cfg, summary, run)
        for folder in (run_dir, run_dir / "final"):
            (folder / "README.md").write_text(card)
        rundir.write_json_atomic(run_dir / rundir.RUN_FILE, run | {"finished": True, "steps": step, "antisd": cfg.settings().to_dict()})
        _print_summary(summary)
        x.say(outputs_note(cfg, run_dir))
    return summary


def outputs_note(cfg: TrainConfig, run_dir: Path) -> str:
    return (
        f"outputs in {run_dir}/: plots.png (curves), summary.json (before/after), metrics.jsonl (every step), final/ (the model, with README.md)\n"
        f"next: antisd eval --model {run_dir}/final   ·   antisd pmi --model {run_dir}/final   ·   "
        f"continue: antisd train --output_dir {run_dir} --steps {2 * cfg.steps} --resume true"
    )


def check_report_to(cfg: TrainConfig) -> None:
    """Each logging integration asked for is importable (else TRL would fail after the directory is claimed)."""
    import importlib.util

    for name in cfg.report_to.split(","):
        module = REPORT_TO[name]
        if module and importlib.util.find_spec(module) is None:
            raise ValueError(f"--report_to {name}: the {module!r} package is not installed (pip install {module})")


def check_task_size(cfg: TrainConfig, task) -> None:
    """A step takes prompts_per_step distinct training prompts (TRL drops an incomplete batch): fewer rows would
    train zero steps."""
    if len(task.train_rows) < cfg.prompts_per_step:
        raise ValueError(
            f"--task {cfg.task}: {len(task.train_rows)} training row(s) (after {len(task.heldout)} held out), fewer than "
            f"--prompts_per_step {cfg.prompts_per_step}: no step could be filled; give more rows or lower --prompts_per_step"
        )


def warmup_warning(cfg: TrainConfig) -> list[str]:
    """A warm-up as long as the run leaves no step with the AntiSD term: the run is GRPO under another name. Said
    loudly, not refused: a one-step smoke test of a recipe is legitimate (`antisd compare` refuses it)."""
    s = cfg.settings()
    if s.needs_warmup and s.lambda_max > 0 and s.gate_warmup_steps >= cfg.steps:
        return [f"warning: --antisd_gate_warmup_steps {s.gate_warmup_steps} ≥ --steps {cfg.steps}: every step is a warm-up step at λ = 0, "
                f"so this {cfg.preset} run is plain GRPO; give more --steps or a shorter warm-up for the AntiSD term to act"]  # fmt: skip
    return []


def logged_eval(run_dir: Path, step: int, k: int) -> dict | None:
    """The held-out metrics a run already logged at ``step`` (a resumed run does not evaluate them again)."""
    from antisd.infra.runlog import read_jsonl

    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("step") == step and f"eval/avg@{k}" in r]
    return {key: v for key, v in rows[-1].items() if key.startswith("eval/")} if rows else None


SAME_INITIAL_EVAL = ("model", "task", "seed", "eval_k", "eval_problems", "eval_temperature", "eval_batch_size", "max_completion_length", "prompt_field", "answer_field")


def initial_evaluation(cfg: TrainConfig) -> dict | None:
    """The step-0 evaluation metrics of ``cfg.initial_eval_from`` if that run evaluated the same model the same way
    (else an error naming the field that differs); None when it has no step-0 evaluation yet (this run evaluates)."""
    source = Path(cfg.initial_eval_from)
    theirs = configio.load_yaml(source / "config.yaml") if (source / "config.yaml").is_file() else None
    if theirs is None:
        raise ValueError(f"--initial_eval_from {source}: not a run directory (no config.yaml)")
    for name in SAME_INITIAL_EVAL:
        if theirs.get(name) != getattr(cfg, name):
            raise ValueError(f"--initial_eval_from {source}: its {name} is {theirs.get(name)!r}, this run's is {getattr(cfg, name)!r}; its step-0 evaluation is not this run's")
    return logged_eval(source, 0, cfg.eval_k)


def data_warnings(cfg: TrainConfig, task, tok, context: int | None) -> list[str]:
    """Refuse prompts that alone exceed the model's context; warn, with counts, about prompts that leave less
    room than max_completion_length, and, for the user's own data, repeated training prompts and held-out problems
    that are also trained on (the shipped tasks sample with replacement by design: nothing to act on)."""
    from antisd.tasks import BUILT_IN, duplicates_and_overlap

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
    if cfg.task in BUILT_IN:
        return warnings
    repeats, overlap = duplicates_and_overlap(task)
    if repeats:
        warnings.append(f"warning: {repeats} of {len(task.train_rows)} training rows repeat an earlier prompt")
    if overlap:
        warnings.append(f"warning: {overlap} of {len(task.heldout)} held-out problems are also training prompts: held-out accuracy is not held out")
    return warnings


# --- resume ------------------------------------------------------------------------------------------------------

# Settings a resumed run may change freely: they change neither what is trained nor how it is evaluated.
FREE_FIELDS_ON_RESUME = ("steps", "resume", "overwrite", "accept_changes", "threads", "save_steps", "report_to", "dry_run", "launch_config", "gpu_memory_gib", "initial_eval_from")
# AntiSD settings a resumed run may change freely: they do not touch the gate, σ_ref or τ calibrated so far.
FREE_ON_RESUME = ("log_categories_every", "diagnostics", "recalibrate_on_resume", "teacher_offload")


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run continues: the checkpoint, its step, the accepted changes and what to tell the user."""

    path: Path
    step: int
    changes: dict
    notes: list


# How a command line starts or continues a run, not what the run is: never taken from a recorded config.
INVOCATION_FIELDS = ("resume", "overwrite", "accept_changes", "dry_run")


def recordable(cfg: TrainConfig) -> TrainConfig:
    """The config as config.yaml records it: the preset's AntiSD settings expanded, the invocation flags off."""
    return dataclasses.replace(cfg, antisd=cfg.settings(), **{name: False for name in INVOCATION_FIELDS})


def recorded_config(run_dir: Path) -> dict | None:
    """The config a run recorded (config.yaml), as TrainConfig field values; None when there is none."""
    import typing

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    hints = typing.get_type_hints(TrainConfig)
    data = configio.load_yaml(path)
    unknown = sorted(k for k in data if k not in hints)
    if unknown:
        raise ValueError(f"{path}: fields {unknown} are not `antisd train` settings of this version; the run cannot be resumed as recorded")
    return {k: configio.convert(v, hints[k], f"{path}: {k}") for k, v in data.items()}


def resumed_values(values: dict, extras: dict) -> dict:
    """The field values of a resumed run: those it recorded, with only the fields (and antisd_* settings) given on
    this command line changed. A new preset replaces the recorded AntiSD settings."""
    run_dir = Path(values.get("output_dir", TrainConfig.output_dir))
    recorded = recorded_config(run_dir)
    if recorded is None:
        return with_settings(values, extras)  # no recorded run: claim refuses, naming the problem
    merged = {k: v for k, v in recorded.items() if k not in INVOCATION_FIELDS} | values
    if "preset" in values and values["preset"] != recorded.get("preset") and "antisd" not in values:
        merged.pop("antisd", None)
    return with_settings(merged, extras)


def changed_settings(cfg: TrainConfig, recorded: dict) -> tuple[dict, dict]:
    """({field: [recorded, now]} of the run settings, {field: [recorded, now]} of the AntiSD settings) that differ."""
    now = dataclasses.asdict(dataclasses.replace(cfg, antisd=cfg.settings()))
    fields = {k: [recorded.get(k), v] for k, v in now.items() if k not in FREE_FIELDS_ON_RESUME and k != "antisd" and recorded.get(k) != v}
    then_s = recorded.get("antisd") or {}
    then_s = then_s if isinstance(then_s, dict) else then_s.to_dict()
    antisd = {k: [then_s.get(k), v] for k, v in now["antisd"].items() if k not in FREE_ON_RESUME and then_s.get(k) != v}
    return fields, antisd


def resume_point(cfg: TrainConfig, run_dir: Path) -> ResumePoint | None:
    """The checkpoint to continue from (read only; nothing is written), or None when the run is finished with at
    least --steps steps (nothing to do). Refuses, naming the fix: a directory with no run or no complete checkpoint
    of it, changed settings (unless accepted), a --steps below the checkpoint."""
    run = rundir.read_run(run_dir) if run_dir.is_dir() else None
    if run is None:
        raise rundir.RunDirError(f"--resume true but {run_dir} holds no run (no {rundir.RUN_FILE}); start it without --resume")
    if run["finished"] and run["steps"] >= cfg.steps:
        return None
    recorded = recorded_config(run_dir) or {}
    fields, antisd = changed_settings(cfg, recorded)
    listed = lambda changes: ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in changes.items())  # noqa: E731
    if antisd and not cfg.settings().recalibrate_on_resume:
        raise rundir.RunDirError(f"--resume with changed AntiSD settings ({listed(antisd)}); the saved gate was calibrated under the old ones. "
                                 "Resume without the change, or add --antisd_recalibrate_on_resume true to warm up again with the new settings")  # fmt: skip
    if fields and not cfg.accept_changes:
        raise rundir.RunDirError(f"--resume with settings that differ from the run's recorded ones in {run_dir / 'config.yaml'} ({listed(fields)}); "
                                 "resume without them, or add --accept_changes true to continue with them (recorded in run.json)")  # fmt: skip
    point, skipped = rundir.last_complete(run_dir, run["run_id"])
    if point is None:
        raise rundir.RunDirError(f"--resume true but {run_dir} holds no complete checkpoint of run {run['run_id']}; start again with --overwrite true")
    step = int(point.name.split("-")[-1])
    if step > cfg.steps:
        raise rundir.RunDirError(f"--steps {cfg.steps} is below the step of the newest complete checkpoint ({point.name}); give --steps ≥ {step}")
    notes = [*skipped, f"from {point.name}" + (" (its last step: only the final records are written)" if step >= cfg.steps else "")]
    if fields or antisd:
        notes.append(f"continuing with changed settings: {listed(fields | antisd)} (recorded in {run_dir / rundir.RUN_FILE} segments)")
    return ResumePoint(point, step, fields | antisd, notes)


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"antisd train: {summary['preset']}, {summary['steps']} steps")
    table.add_column("metric")
    table.add_column("before")
    table.add_column("after")
    keys = sorted(set((summary["before"] or {}) | (summary["after"] or {})))
    for key in keys:
        fmt = lambda d: f"{d[key]:.3f}" if d and d.get(key) is not None else "-"  # noqa: E731
        table.add_row(key, fmt(summary["before"]), fmt(summary["after"]))
    table.add_row("AntiSD gate", "-", summary["gate_state"])
    Console().print(table)


def cli(argv: list[str]) -> dict:
    values, extras = configio.parse_values(TrainConfig, argv, prog="antisd train", description=__doc__.split("\n\n")[0], extra=antisd_fields())
    values = resumed_values(values, extras) if values.get("resume") else with_settings(values, extras)
    return main(TrainConfig(**values))
