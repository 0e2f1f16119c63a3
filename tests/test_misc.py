"""pass@k, config parsing, presets."""

from __future__ import annotations

import ast
import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest

from antisd.infra import configio
from antisd.core.passk import pass_at_k
from antisd.method.settings import PRESETS, preset

SRC = Path(__file__).resolve().parents[1] / "src" / "antisd"


@pytest.mark.parametrize("n", [1, 2, 5, 7])
def test_pass_at_k_equals_brute_force_enumeration(n):
    for c in range(n + 1):
        outcomes = [1] * c + [0] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(range(n), k))
            brute = sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_endpoints():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 = mean accuracy
    assert pass_at_k(10, 1, 10) == 1.0 and pass_at_k(10, 0, 10) == 0.0  # pass@n = any correct
    assert all(pass_at_k(10, 3, k) <= pass_at_k(10, 3, k + 1) for k in range(1, 10))
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


@dataclass(frozen=True)
class _Cfg:
    """A test config."""

    steps: int = 3
    """How many steps."""
    rate: float | None = None
    """A rate."""
    flag: bool = False
    """A flag."""


def test_configio_precedence_and_types(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 7\nrate: 0.5\n")
    cfg = configio.parse(_Cfg, ["--config", str(f), "--steps", "9", "--flag", "true"], "p", "d")
    assert cfg == _Cfg(steps=9, rate=0.5, flag=True)
    assert configio.parse(_Cfg, ["--rate", "none"], "p", "d").rate is None
    assert configio.field_docs(_Cfg) == {"steps": "How many steps.", "rate": "A rate.", "flag": "A flag."}


def test_configio_errors_name_the_problem(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("step: 7\n")
    with pytest.raises(ValueError, match="unknown key 'step'. Did you mean 'steps'"):
        configio.parse(_Cfg, ["--config", str(f)], "p", "d")
    with pytest.raises(ValueError, match="--flag: cannot read 'maybe' as bool"):
        configio.parse(_Cfg, ["--flag", "maybe"], "p", "d")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        configio.parse(_Cfg, ["--config", str(tmp_path / "nope.yaml")], "p", "d")


def test_every_preset_builds_a_valid_trainer_config(tmp_path):
    from antisd.integrations.trl import AntiSDConfig

    for name in PRESETS:
        cfg = AntiSDConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", antisd=preset(name))
        assert cfg.antisd.signal in ("antisd", "sd", "sd_jsd", "revkl_ascent", "no_teacher")
    assert preset("grpo").lambda_max == 0.0
    assert preset("antisd_release").gate_up_ratio == 1.07 and preset("antisd").gate_up_ratio == 1.0


def test_math_grade_requires_boxed_final_answer():
    from antisd.tasks.math_grading import last_boxed, math_grade

    assert last_boxed("a \\boxed{\\frac{1}{2}} b \\boxed{3}") == "3"
    assert last_boxed("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert math_grade("so \\boxed{\\frac{1}{2}}", "0.5")[0] == 1.0
    assert math_grade("the answer is 0.5", "0.5") == (0.0, "Your answer is incorrect.")  # unmarked number
    assert math_grade("\\boxed{3}", "4")[0] == 0.0
    assert math_grade("\\boxed{1,000}", "1000")[0] == 1.0


@pytest.mark.parametrize("command", [["train"], ["eval"], ["pmi"], ["compare"], ["testbed", "build"], ["testbed", "check"]])
def test_every_command_help_prints_every_field(command, capsys):
    """`--help` must work for every command: a '%' in a field docstring once broke argparse's formatter."""
    from antisd import cli
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--seed" in out or "--seeds" in out or "--model" in out, out[:500]


def test_gate_state_is_told_the_same_way_everywhere():
    """The progress bar, the summary and the model card tell the gate's state from one source: a preset without a
    gate never reads 'gate on' in one place and 'off' in another (issue #19)."""
    from antisd.core import SchmittGate
    from antisd.infra.runlog import _bar_gate, gate_text

    def gate(s, warm: float | None, active: bool):
        g = SchmittGate(warmup_steps=s.gate_warmup_steps if s.needs_warmup else 0)
        g.warm, g.active, g.warm_values = warm, active, [warm] * g.warmup_steps if warm is not None else []
        return g

    cases = [  # preset, warm value, active, logged gate_on, logged gate_calibrated, bar, summary's opening words
        ("grpo", None, False, 1.0, 1.0, "no term", "no AntiSD term"),
        ("sd", None, False, 1.0, 1.0, "no gate", "no gate: the term is always on"),
        ("no_gate", None, False, 1.0, 1.0, "no gate", "no gate: the term is always on"),
        ("sd_jsd", None, False, 0.0, 0.0, "warm-up", "warming up"),
        ("sd_jsd", 1.5, True, 1.0, 1.0, "no gate", "no gate: the term is on after the warm-up"),
        ("antisd", None, False, 0.0, 0.0, "warm-up", "warming up"),
        ("antisd", 0.7, True, 1.0, 1.0, "open", "open (warm value 0.7"),
        ("antisd", 0.7, False, 0.0, 1.0, "shut", "shut (warm value 0.7"),
    ]
    for name, warm, active, on, calibrated, bar, text in cases:
        s = preset(name)
        assert _bar_gate(s, {"antisd/gate_on": on, "antisd/gate_calibrated": calibrated}) == bar, name
        assert gate_text(s, gate(s, warm, active)).startswith(text), (name, gate_text(s, gate(s, warm, active)))
