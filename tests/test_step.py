"""AntiSDStep: the framework-blind step (τ calibration, release warm-up statistic, no-context rows, state)."""

from __future__ import annotations

import math

import pytest
import torch

from antisd.method.settings import AntiSDSettings, preset
from antisd.method.step import AntiSDStep, StepInputs


pytestmark = pytest.mark.exact  # numerical comparisons: rerun under other CPU kernels (Makefile)


def _inputs(teacher_logp_BT, student_logp_BT, **kw) -> StepInputs:
    B, T = teacher_logp_BT.shape
    return StepInputs(seq_adv_B=torch.zeros(B), teacher_logp_BT=teacher_logp_BT, student_logp_BT=student_logp_BT, response_mask_BT=torch.ones(B, T), teacher_entropy_BT=torch.full((B, T), 0.5), **kw)


def _uniform(ppl_B: list[float], T: int = 4) -> torch.Tensor:
    """[B, T] log-probs whose per-sequence perplexity is exactly ppl_B."""
    return torch.tensor([[-math.log(p)] * T for p in ppl_B])


def test_tau_comes_from_teacher_ppl_even_with_an_entropy_gate():
    """Issue #10 item 8: with λ from teacher PPL and a median-entropy gate, τ is 0.93 × warm teacher PPL."""
    s = preset("antisd_release").replace(gate_signal="teacher_entropy_median", warmup_statistic="step_mean", gate_lag=0, gate_up_ratio=1.0, gate_warmup_steps=1, gate_min_threshold=None, gate_rearm_from_floor=False)
    step = AntiSDStep(s)
    step(_inputs(_uniform([2.0, 2.0]), _uniform([2.0, 2.0])))  # warm-up: m = 2.0 (entropy warm value 0.5)
    assert step.gate.warm == pytest.approx(0.5) and step.ppl_warm == pytest.approx(2.0)
    assert step.tau() == pytest.approx(0.93 * 2.0)
    out = step(_inputs(_uniform([2.9, 1.5]), _uniform([2.0, 2.0])))
    assert out.gate_on
    assert out.lam_B[0] == pytest.approx(0.2 * math.log(2.9 / 1.86), rel=1e-5) and out.lam_B[1] == 0.0


def test_release_warm_value_is_upper_median_of_microbatch_means_with_spikes_dropped():
    s = preset("antisd_release").replace(gate_warmup_steps=2)
    step = AntiSDStep(s)
    mb = torch.tensor([0, 0, 1, 1])
    # micro-batch means: step 1 → 1.5, 3.5 (dropped: ≥ 3); step 2 → 2.5, 1.2  ⇒ values 1.5, 2.5, 1.2: upper median 1.5
    step(_inputs(_uniform([1.0, 2.0, 3.0, 4.0]), _uniform([2.0] * 4), microbatch_B=mb))
    step(_inputs(_uniform([2.0, 3.0, 1.2, 1.2]), _uniform([2.0] * 4), microbatch_B=mb))
    assert step.microbatch_warm_values == pytest.approx([1.5, 2.5, 1.2])
    assert step.ppl_warm == pytest.approx(1.5) and step.gate.warm == pytest.approx(1.5)
    # an even count: the upper median, not the mean or the lower median
    step2 = AntiSDStep(s.replace(gate_warmup_steps=1))
    step2(_inputs(_uniform([1.0, 1.0, 2.0, 2.0]), _uniform([2.0] * 4), microbatch_B=mb))
    assert step2.ppl_warm == pytest.approx(2.0)


def test_release_warm_up_with_every_microbatch_a_spike_falls_back_and_never_gives_nan():
    """Every warm-up micro-batch mean above the PPL spike (found by the verl tests, where it made the release's
    advantages NaN): the warm value falls back to the per-step statistic; an undefined τ would give λ_i = 0."""
    step = AntiSDStep(preset("antisd_release").replace(gate_warmup_steps=1))
    step(_inputs(_uniform([2.0, 5.0]), _uniform([2.0, 2.0]), microbatch_B=torch.tensor([0, 0])))  # mean 3.5: a spike
    assert step.microbatch_warm_values == [] and step.ppl_warm == pytest.approx(2.0) and step.gate.warm == pytest.approx(2.0)
    x = _inputs(_uniform([2.5, 2.5]), _uniform([2.0, 2.0]))
    x.seq_adv_B = torch.tensor([1.0, -1.0])
    out = step(x)
    assert torch.isfinite(out.advantages_BT).all() and (out.lam_B > 0).all()
    step.ppl_warm = math.nan  # a threshold nothing calibrated: no term rather than NaN advantages
    out = step(x)
    assert torch.equal(out.lam_B, torch.zeros(2)) and torch.equal(out.advantages_BT, torch.tensor([[1.0] * 4, [-1.0] * 4]))


def test_rows_without_privileged_context_get_no_term():
    """Issue #10 item 9: a teacher that saw the student's own prompt gives padding noise, not PMI."""
    s = preset("no_gate")
    teacher = torch.tensor([[-1.0, -2.0, -0.5], [-1.000001, -2.0, -0.4999]])
    student = torch.tensor([[-1.5, -1.0, -0.5], [-1.0, -2.0, -0.5]])
    out = AntiSDStep(s)(_inputs(teacher, student, has_context_B=torch.tensor([True, False])))
    assert torch.equal(out.advantages_BT[1], torch.zeros(3))  # A_seq only
    assert (out.advantages_BT[0] != 0).any()
    assert out.metrics["antisd/no_context_fraction"] == 0.5
    # the no-teacher ablation does not read the teacher, so it keeps its term on such rows
    out = AntiSDStep(preset("no_teacher").replace(gate=False))(_inputs(teacher, student, has_context_B=torch.tensor([True, False])))
    assert (out.advantages_BT[1] != 0).any()


def test_state_round_trips_and_recalibration_forgets_the_warm_ppl():
    s = preset("antisd_release").replace(gate_warmup_steps=1)
    step = AntiSDStep(s)
    step(_inputs(_uniform([2.0, 2.2]), _uniform([2.0, 2.0])))
    clone = AntiSDStep(s)
    clone.load_state_dict(step.state_dict())
    assert clone.state_dict() == step.state_dict() and clone.tau() == step.tau()
    rewarm = AntiSDStep(s.replace(recalibrate_on_resume=True))
    rewarm.load_state_dict(step.state_dict())
    assert rewarm.ppl_warm is None and not rewarm.gate.calibrated


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"gate_warmup_steps": 0}, "gate=True needs antisd_gate_warmup_steps ≥ 1"),
        ({"lambda_max": float("nan")}, "antisd_lambda_max=nan is not a finite number"),
        ({"shaping": "release", "gate": False, "gate_warmup_steps": 0}, "shaping='release' calibrates σ_ref"),
        ({"gate_up_ratio": 0.5}, "no hysteresis band"),
        ({"signal": "sdd"}, "antisd_signal='sdd' is not one of"),
    ],
)
def test_settings_refuse_impossible_combinations(changes, message):
    with pytest.raises(ValueError, match=message):
        AntiSDSettings().replace(**changes)


def test_settings_replace_names_unknown_fields():
    with pytest.raises(KeyError, match="Did you mean 'lambda_max'"):
        AntiSDSettings().replace(lamda_max=1.0)


def _dose_reference(seq_adv: list[float], teacher: list[list[float]], student: list[list[float]], lam: float) -> tuple[float, float]:
    """Issue #23's dose meter straight from Eq. 2 with δ = −φ(u), token by token: (Σ|λφ(u_t)| / Σ|A_i|, share of
    tokens where |λφ(u_t)| > |A_i|)."""
    term = base = exceed = n = 0.0
    for a, t_row, s_row in zip(seq_adv, teacher, student):
        for lt, ls in zip(t_row, s_row):
            u = lt - ls
            phi = 0.5 * (math.log1p(math.exp(u)) - math.log(2.0))
            term, base, exceed, n = term + abs(lam * phi), base + abs(a), exceed + (abs(lam * phi) > abs(a)), n + 1
    return term / base, exceed / n


@pytest.mark.parametrize("lam", [0.5, 4.0])
def test_term_ratio_is_the_terms_size_next_to_the_grpo_signal(lam):
    """The dose meter against a token-by-token reference; λ = 0 (GRPO) reads exactly 0; masked tokens don't count;
    permuting the rows changes nothing; NaN, not a division by zero, when no token carries a sequence advantage."""
    g = torch.Generator().manual_seed(0)
    teacher, student = -3 * torch.rand(4, 6, generator=g), -3 * torch.rand(4, 6, generator=g)
    seq_adv = torch.tensor([0.9, -0.3, 0.05, -1.2])
    step = AntiSDStep(preset("no_gate").replace(lambda_max=lam))
    x = _inputs(teacher, student)
    x.seq_adv_B = seq_adv
    m = step(x).metrics
    ratio, exceed = _dose_reference(seq_adv.tolist(), teacher.tolist(), student.tolist(), lam)
    assert m["antisd/term_ratio"] == pytest.approx(ratio, rel=1e-5)
    assert m["antisd/term_exceeds_frac"] == pytest.approx(exceed, abs=1e-12)
    assert m["antisd/term_abs_mean"] == pytest.approx(ratio * seq_adv.abs().mean().item(), rel=1e-5)
    assert 0 < exceed < 1 if lam == 4.0 else exceed < 1

    perm = torch.tensor([2, 0, 3, 1])
    xp = _inputs(teacher[perm], student[perm])
    xp.seq_adv_B = seq_adv[perm]
    assert AntiSDStep(preset("no_gate").replace(lambda_max=lam))(xp).metrics["antisd/term_ratio"] == pytest.approx(m["antisd/term_ratio"], rel=1e-6)

    masked = _inputs(torch.cat([teacher, torch.full((4, 2), -9.0)], 1), torch.cat([student, torch.zeros(4, 2)], 1))
    masked.response_mask_BT = torch.cat([torch.ones(4, 6), torch.zeros(4, 2)], 1)
    masked.seq_adv_B = seq_adv
    mm = AntiSDStep(preset("no_gate").replace(lambda_max=lam))(masked).metrics
    assert mm["antisd/term_ratio"] == pytest.approx(m["antisd/term_ratio"], rel=1e-6)

    assert AntiSDStep(preset("no_gate").replace(lambda_max=0.0))(x).metrics["antisd/term_ratio"] == 0.0
    assert math.isnan(AntiSDStep(preset("no_gate").replace(lambda_max=lam))(_inputs(teacher, student)).metrics["antisd/term_ratio"])
