"""Every recipe parses, carries the paper's Table 5 values, and runs one step with a tiny model on the same path."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from antisd import cli

from antisd.infra import configio
from antisd.commands import train

RECIPES = sorted((Path(__file__).resolve().parents[1] / "configs" / "recipes").glob("*.yaml"))


def test_there_is_a_recipe_per_paper_model():
    assert {p.stem for p in RECIPES} == {"qwen3-8b", "qwen3-4b-instruct-2507", "olmo-3-7b-instruct", "olmo-3-7b-think", "qwen3-30b-a3b", "qwen3-8b-code"}


def test_code_recipe_is_the_8b_recipe_on_dolci_code():
    """Issue #22: the paper's code run (§7.3) is Qwen3-8B with the one Table 5 setup, on Dolci-RLZero code."""
    parse = lambda name: configio.parse(train.TrainConfig, ["--config", str(RECIPES[0].parent / f"{name}.yaml")], "t", "d", extra=train.antisd_fields(), combine=train.with_settings)  # noqa: E731
    code, math = parse("qwen3-8b-code"), parse("qwen3-8b")
    assert code.task == "code:hf:allenai/Dolci-RL-Zero-Code-7B" and dataclasses.replace(code, task=math.task) == math


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_with_table5_values(path):
    cfg = configio.parse(train.TrainConfig, ["--config", str(path)], "t", "d", extra=train.antisd_fields(), combine=train.with_settings)
    assert (cfg.learning_rate, cfg.prompts_per_step, cfg.num_generations, cfg.steps, cfg.temperature) == (1e-6, 32, 8, 200, 1.0)
    assert cfg.trl_args["beta"] == 0.0 and cfg.settings().gate_down_ratio == 0.93
    thinking = path.stem == "olmo-3-7b-think"
    assert cfg.max_completion_length == (32768 if thinking else 16384)
    assert cfg.settings().gate_warmup_steps == (10 if thinking else 5)
    assert cfg.settings().len_mask == (32768 if thinking else 12000)
    assert cfg.enable_thinking is thinking and cfg.loss_type == ("grpo" if thinking else "dapo")


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_dry_runs_one_step_with_a_tiny_model(path, tmp_path_factory):
    from tiny import make_tiny_model

    model = make_tiny_model(tmp_path_factory.mktemp("tiny"))
    out = tmp_path_factory.mktemp("run")
    task = "code-basic" if path.stem.endswith("-code") else "countdown"
    swap = ["--model", str(model), "--task", task, "--steps", "1", "--prompts_per_step", "2", "--num_generations", "2",
            "--max_completion_length", "8", "--grad_accum", "1", "--bf16", "false", "--use_vllm", "false", "--output_dir", str(out)]  # fmt: skip
    assert cli.main(["train", "--config", str(path), *swap]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["preset"] == "antisd_release"
    resolved = (out / "config.yaml").read_text()
    assert "learning_rate: 1.0e-06" in resolved and "gradient_checkpointing: true" in resolved


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.stem)
def test_accelerate_configs_parse(path):
    cfg = yaml.safe_load(path.read_text())
    assert cfg["mixed_precision"] == "bf16" and cfg["num_processes"] >= 1
