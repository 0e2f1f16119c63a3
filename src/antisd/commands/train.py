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
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from antisd import configio
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
    """Resume from the last checkpoint in output_dir (gate and σ_ref state included)."""
    eval_k: int = 4
    """Samples per held-out problem for avg@k before and after training (0 skips evaluation)."""
    eval_every: int = 0
    """Also evaluate held-out avg@k every this many steps during training (0: only before and after)."""
    eval_problems: int = 128
    """Held-out problems evaluated."""
    eval_temperature: float = 0.7
    """Evaluation sampling temperature (the paper's T = 0.7, top-p 0.95)."""
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
    enable_thinking: bool | None = None
    """Chat-template thinking switch for Qwen3-style templates (None: the template's default)."""
    trl_args: dict = field(default_factory=dict)
    """Any other GRPOConfig field, e.g. {epsilon_high: 0.28} (YAML only)."""
    antisd: AntiSDSettings | None = None
    """AntiSD settings; None: the preset's as they are. Set through antisd_<field> flags/keys, which override the preset."""

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
        report_to="none",
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


def main(cfg: TrainConfig) -> dict:
    import torch
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback

    from antisd.evaluation import evaluate
    from antisd.integrations.trl import AntiSDTrainer
    from antisd.runtime import load_model
    from antisd.runlog import JsonlMetrics, PeriodicEval, ProgressBar, plot_metrics
    from antisd.tasks import load_task

    torch.set_num_threads(cfg.threads)
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = JsonlMetrics(run_dir / "metrics.jsonl")

    # 1. Resolve and record the config (the preset is expanded, so the file says exactly what ran)
    args = trainer_args(cfg, run_dir)
    (run_dir / "config.yaml").write_text(configio.to_yaml(dataclasses.replace(cfg, antisd=cfg.settings())))

    # 2. Task, model, tokenizer
    task = load_task(cfg.task, seed=cfg.seed, n_heldout=cfg.eval_problems, prompt_field=cfg.prompt_field, answer_field=cfg.answer_field)
    model, tok = load_model(cfg.model)
    print(f"model {cfg.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params; task {task.name}: {len(task.train_rows)} train, {len(task.heldout)} held-out; preset {cfg.preset}")

    def held_out(tag: str):
        if cfg.eval_k <= 0:
            return None
        result = evaluate(model, tok, task, k=cfg.eval_k, temperature=cfg.eval_temperature, max_new_tokens=cfg.max_completion_length, seed=cfg.seed)
        print(f"held-out {tag}: avg@{cfg.eval_k} = {result.avg_at_k:.3f}, pass@{cfg.eval_k} = {result.pass_at[cfg.eval_k]:.3f} ({result.n_problems} problems)")
        return result

    resume_from = _last_checkpoint(run_dir) if cfg.resume else None
    before = held_out("before") if resume_from is None else None
    if before is not None:
        metrics.write(0, before.metrics())

    # 3. Train
    callbacks = [metrics, ProgressBar(cfg.steps)]
    if cfg.eval_every > 0 and cfg.eval_k > 0:
        callbacks.append(PeriodicEval(cfg.eval_every, lambda step: metrics.write(step, held_out(f"step {step}").metrics())))
    trainer = AntiSDTrainer(
        model=model,
        reward_funcs=[task.reward_fn()],
        args=args,
        train_dataset=Dataset.from_list(task.train_rows),
        processing_class=tok,
        callbacks=callbacks,
        demonstration_cutter=task.cut_demonstration,
    )
    trainer.remove_callback(PrinterCallback)  # the progress bar and metrics.jsonl replace the raw dict prints
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    trainer.save_model(str(run_dir / "final"))

    # 4. Evaluate, summarise, plot
    already = cfg.eval_every > 0 and trainer.state.global_step % cfg.eval_every == 0
    after = held_out("after") if not already else _last_eval(run_dir / "metrics.jsonl", cfg.eval_k)
    if after is not None and not already:
        metrics.write(trainer.state.global_step, after.metrics())
    summary = {
        "preset": cfg.preset,
        "steps": trainer.state.global_step,
        "before": before.metrics() if before else None,
        "after": after.metrics() if after else None,
        "gate": trainer.gate.state_dict(),
        "sigma_ref": trainer.sigma_ref.value,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_metrics(run_dir / "metrics.jsonl", run_dir / "plots.png")
    _print_summary(summary)
    return summary


def _last_eval(path: Path, k: int):
    """The last held-out evaluation in metrics.jsonl, as an EvalResult-like record."""
    from antisd.evaluation import EvalResult
    from antisd.runlog import read_jsonl

    rows = [r for r in read_jsonl(path) if f"eval/avg@{k}" in r]
    if not rows:
        return None
    r = rows[-1]
    return EvalResult(r[f"eval/avg@{k}"], {j: r[f"eval/pass@{j}"] for j in sorted({1, k})}, k, 0, [])


def _last_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    if not ckpts:
        raise FileNotFoundError(f"--resume true but {run_dir} holds no checkpoint-N directory")
    return ckpts[-1]


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
