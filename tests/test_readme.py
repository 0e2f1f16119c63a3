"""The README's first contact works as written: its Python example runs, its example config is valid, its help
commands answer (issue #19)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from antisd import cli
ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")


def python_example() -> str:
    """The ```python block that follows "From Python" in README.md."""
    after = README[README.index("From Python") :]
    match = re.search(r"```python\n(.*?)```", after, flags=re.DOTALL)
    assert match, "README.md has no ```python block after 'From Python'"
    return match.group(1)


@pytest.mark.slow
def test_readme_python_example_runs_as_written(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(python_example())
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^2 steps; gate: (open|shut)$", done.stdout, flags=re.MULTILINE), done.stdout[-2000:]
    assert (tmp_path / "runs" / "python-example" / "checkpoint-2").is_dir()


def test_example_config_is_valid_and_dry_runs(capsys):
    from antisd.infra import configio
    from antisd.commands import train

    path = ROOT / "configs" / "examples" / "train.yaml"
    assert f"--config {path.relative_to(ROOT)}" in README
    cfg = configio.parse(train.TrainConfig, ["--config", str(path)], "antisd train", "", extra=train.antisd_fields(), combine=train.with_settings)
    assert cfg.preset == "antisd_release" and cfg.settings().shaping == "release" and cfg.settings().lambda_max == 0.5
    assert cfg.trl_args == {"epsilon_high": 0.28} and cfg.eval_every == 20
    assert cli.main(["train", "--config", str(path), "--dry_run", "true"]) == 0
    assert "testbed" in capsys.readouterr().out  # the memory preflight's report of this config


@pytest.mark.parametrize("argv", [[], ["--help"], ["models", "--help"], ["models", "install", "--help"], ["testbed", "--help"], ["models", "list"]], ids=str)
def test_help_everywhere_exits_zero(argv, capsys):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: antisd") or "smollm2-135m" in out
