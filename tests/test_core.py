"""antisd.core against the slow references in tests/reference.py, plus invariances."""

from __future__ import annotations

import math

import pytest
import torch

import reference as ref
from antisd import core
def _batch(seed: int, B: int = 6, T: int = 9, V: int | None = None):
    g = torch.Generator().manual_seed(seed)
    teacher = -torch.rand(B, T, generator=g) * 8
    student = -torch.rand(B, T, generator=g) * 8
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    lengths[0] = T  # one full row
    lengths[1] = 0  # one empty row
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return teacher, student, mask


# --- φ and the signals ----------------------------------------------------------------------------------------

# The digest's worked values of −φ(u) (paper-digest.md §3.1), to three decimals.
WORKED = {-20: 0.347, -5: 0.343, -3: 0.322, -1: 0.190, 0: 0.0, 1: -0.310, 2: -0.717, 3: -1.178, 5: -2.157, 20: -9.65}


pytestmark = pytest.mark.exact  # numerical comparisons: rerun under other CPU kernels (Makefile)


@pytest.mark.parametrize("u, expected", sorted(WORKED.items()))
def test_antisd_signal_matches_digest_worked_values(u, expected):
    got = core.get_signal("antisd")(torch.tensor([float(u)]), torch.zeros(1)).item()
    assert got == pytest.approx(expected, abs=5e-4 if abs(expected) < 1 else 5e-3)
    assert got == pytest.approx(-ref.phi(u), abs=1e-6)


def test_phi_properties():
    u = torch.linspace(-30, 30, 2001, dtype=torch.float64)  # float32 saturates e^u below ~-17
    phi = core.jsd_phi(u)
    assert torch.all(phi[1:] > phi[:-1])  # strictly increasing (Lemma 5 i)
    assert core.jsd_phi(torch.tensor(0.0)).item() == 0.0
    assert torch.all(torch.sign(phi) == torch.sign(u))  # Lemma 5 ii
    assert torch.all(-phi <= 0.5 * math.log(2) + 1e-7)  # bounded above by ½ln2 (iii)


@pytest.mark.parametrize("name", sorted(core.SIGNALS))
def test_every_signal_matches_reference(name):
    teacher, student, mask = _batch(1)
    u = core.token_pmi(teacher, student, mask)
    got = core.paper_signal(u, student, mask, core.get_signal(name))
    for i in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            want = ref.SIGNAL_REF[name](teacher[i, t].item() - student[i, t].item(), student[i, t].item()) if mask[i, t] else 0.0
            assert got[i, t].item() == pytest.approx(want, abs=1e-5)


def test_unknown_signal_suggests_close_name():
    with pytest.raises(KeyError, match="Did you mean 'antisd'"):
        core.get_signal("antsd")


def test_register_signal_refuses_silent_replacement():
    with pytest.raises(ValueError, match="already registered"):
        core.register_signal("sd", lambda u, s: u * 2)


# --- composition (paper form) --------------------------------------------------------------------------------


@pytest.mark.parametrize("compose", ["additive", "multiplicative"])
@pytest.mark.parametrize("signal", ["antisd", "sd", "sd_jsd", "revkl_ascent"])
def test_paper_advantages_match_loop_reference(signal, compose):
    teacher, student, mask = _batch(2)
    adv = torch.randn(mask.shape[0], generator=torch.Generator().manual_seed(3))
    lam = torch.full((mask.shape[0],), 0.5)
    u = core.token_pmi(teacher, student, mask)
    got = core.COMPOSERS[compose](adv, core.paper_signal(u, student, mask, core.get_signal(signal)), lam, mask)
    want = ref.paper_advantages(adv.tolist(), teacher.tolist(), student.tolist(), mask.tolist(), signal, lam.tolist(), compose)
    torch.testing.assert_close(got, torch.tensor(want), rtol=1e-5, atol=1e-5)


def test_lambda_zero_gives_exactly_grpo():
    teacher, student, mask = _batch(4)
    adv = torch.randn(mask.shape[0])
    for shaped in (
        core.paper_signal(core.token_pmi(teacher, student, mask), student, mask, core.get_signal("antisd")),
        core.release_signal(core.token_pmi(teacher, student, mask), student, mask, core.get_signal("antisd"), sigma_ref=1.0),
    ):
        out = core.compose_additive(adv, shaped, torch.zeros(mask.shape[0]), mask)
        assert torch.equal(out, adv[:, None].expand_as(out))


def test_masked_positions_change_nothing():
    teacher, student, mask = _batch(5)
    adv = torch.randn(mask.shape[0])
    lam = torch.full((mask.shape[0],), 0.3)
    junk_t, junk_s = teacher.clone(), student.clone()
    junk_t[~mask] = float("nan")
    junk_s[~mask] = 1e9
    for fn in (
        lambda t, s: core.paper_signal(core.token_pmi(t, s, mask), s, mask, core.get_signal("antisd")),
        lambda t, s: core.release_signal(core.token_pmi(t, s, mask), s, mask, core.get_signal("antisd"), sigma_ref=0.7),
    ):
        a = core.compose_additive(adv, fn(teacher, student), lam, mask)
        b = core.compose_additive(adv, fn(junk_t, junk_s), lam, mask)
        assert torch.equal(a, b)
        assert torch.isfinite(b).all()


def test_permuting_a_group_permutes_its_advantages():
    teacher, student, mask = _batch(6, B=8)
    rewards = torch.tensor([1.0, 0, 0, 1, 0, 1, 1, 1])
    perm = torch.tensor([3, 0, 2, 1, 7, 4, 6, 5])  # within groups of 4

    def pipeline(r, t, s, m):
        adv = core.group_advantages(r, 4)
        z = core.release_signal(core.token_pmi(t, s, m), s, m, core.get_signal("antisd"), sigma_ref=1.5)
        lam = core.teacher_ppl_lambda(core.sequence_ppl(t, m), tau=1.2)
        return core.compose_additive(adv, z, lam, m)

    out = pipeline(rewards, teacher, student, mask)
    out_perm = pipeline(rewards[perm], teacher[perm], student[perm], mask[perm])
    torch.testing.assert_close(out_perm, out[perm], rtol=0, atol=0)


# --- release shaping -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma_ref", [None, 0.8, 3.0])
@pytest.mark.parametrize("len_mask", [None, 5])
@pytest.mark.parametrize("signal", ["antisd", "sd_jsd", "sd", "no_teacher"])
def test_release_signal_matches_loop_reference(sigma_ref, len_mask, signal):
    teacher, student, mask = _batch(7, B=7, T=11)
    got = core.release_signal(
        core.token_pmi(teacher, student, mask), student, mask, core.get_signal(signal), sigma_ref=sigma_ref, len_mask=len_mask
    )
    want = ref.release_z(teacher.tolist(), student.tolist(), mask.tolist(), signal, sigma_ref, len_mask=len_mask)
    torch.testing.assert_close(got, torch.tensor(want), rtol=1e-4, atol=1e-5)


def test_release_signal_has_zero_mean_per_sequence_and_is_clipped():
    teacher, student, mask = _batch(8, B=5, T=40)
    z = core.release_signal(core.token_pmi(teacher, student, mask), student, mask, core.get_signal("antisd"), sigma_ref=None, z_clip=1.0)
    assert z.abs().max() <= 1.0
    unclipped = core.release_signal(core.token_pmi(teacher, student, mask), student, mask, core.get_signal("antisd"), sigma_ref=None, z_clip=1e9)
    torch.testing.assert_close(core.masked_mean(unclipped, mask, dim=1), torch.zeros(5), atol=1e-5, rtol=0)


def test_outlier_zeroing_hits_only_large_u():
    u = torch.tensor([[0.5, -2.5, 2.0, -1.75, 30.0]])
    assert core.zero_outliers(u, sigma_ref=1.0, k_sigma=2.0).tolist() == [[0.5, 0.0, 2.0, -1.75, 0.0]]
    assert torch.equal(core.zero_outliers(u, sigma_ref=None, k_sigma=2.0), u)


def test_teacher_ppl_lambda_matches_reference_and_caps():
    ppl = torch.tensor([0.9, 1.0, 1.1, 1.5, 2.0, 2.99, 3.01, 50.0])
    tau = 1.05
    got = core.teacher_ppl_lambda(ppl, tau)
    want = [ref.ppl_lambda(p, tau) for p in ppl.tolist()]
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-6, rtol=0)
    assert got.max() <= 0.2 * math.log(3) + 1e-6  # the effective cap of the release formula
    assert got[-1] == 0 and got[-2] == 0  # spike mask PPL > 3


def test_sequence_ppl():
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.1, 0.1, 0.1]]))
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(core.sequence_ppl(logp, mask), torch.tensor([math.sqrt(8.0), 10.0]))


def test_sigma_ref_freezes_after_warmup():
    ref_ = core.SigmaRef(warmup_steps=3)
    for v in (1.0, float("nan"), 2.0):
        ref_.observe(v)
    assert ref_.value is None  # the NaN step does not count
    ref_.observe(3.0)
    assert ref_.value == pytest.approx(2.0)
    ref_.observe(100.0)
    assert ref_.value == pytest.approx(2.0)
    clone = core.SigmaRef()
    clone.load_state_dict(ref_.state_dict())
    assert clone.state_dict() == ref_.state_dict()


# --- GRPO advantages -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("G", [2, 4, 8])
def test_group_advantages_match_reference(scale, G):
    g = torch.Generator().manual_seed(G)
    rewards = (torch.rand(4 * G, generator=g) > 0.5).float() * torch.rand(4 * G, generator=g)
    rewards[:G] = 0.7  # a zero-variance group of a non-representable value
    got = core.group_advantages(rewards, G, scale_by_std=scale)
    want = ref.grpo(rewards.tolist(), G, scale)
    torch.testing.assert_close(got, torch.tensor(want), rtol=1e-5, atol=1e-6)
    assert torch.all(got[:G] == 0)


def test_group_advantages_shift_invariant_and_permutation_equivariant():
    r = torch.tensor([0.0, 1, 1, 0, 0.2, 0.9, 0.4, 0.4])
    torch.testing.assert_close(core.group_advantages(r + 3.0, 4), core.group_advantages(r, 4), atol=1e-5, rtol=0)
    perm = torch.tensor([2, 3, 0, 1, 5, 4, 7, 6])
    torch.testing.assert_close(core.group_advantages(r[perm], 4), core.group_advantages(r, 4)[perm])


def test_group_advantages_rejects_ragged_groups():
    with pytest.raises(ValueError, match="groups of 4"):
        core.group_advantages(torch.zeros(6), 4)


# --- gate ----------------------------------------------------------------------------------------------------


def test_gate_warmup_then_hysteresis_paper():
    gate = core.SchmittGate(warmup_steps=3, down_ratio=0.9, up_ratio=1.0, lag=0)
    assert [gate.step(v) for v in (1.0, 1.2, 1.1)] == [False, False, False]  # warm-up: λ = 0
    assert gate.warm == pytest.approx(1.1) and gate.tau_down == pytest.approx(0.99)
    # in the band [0.99, 1.1): stays on; below τ_down: off; back in the band: stays off; ≥ H_warm: on
    assert [gate.step(v) for v in (1.0, 0.995, 0.98, 1.05, 1.09, 1.1, 1.0)] == [True, True, False, False, False, True, True]
    assert gate.transitions == 2


def test_gate_release_lag_and_floor():
    gate = core.SchmittGate(warmup_steps=2, down_ratio=0.93, up_ratio=1.07, min_threshold=1.01, lag=1)
    gate.step(1.0)
    gate.step(1.0)
    assert gate.tau_down == pytest.approx(1.01)  # max(0.93·m, 1.01)
    assert gate.step(0.5) is True  # decided by the previous step: still on for this one
    assert gate.step(2.0) is False  # the 0.5 closed it for this step
    assert gate.step(1.0) is True  # 2.0 ≥ 1.07 reopened it


def test_gate_ignores_nonfinite_and_roundtrips_state():
    gate = core.SchmittGate(warmup_steps=2)
    gate.step(float("nan"))
    assert not gate.calibrated and gate.skipped == 1
    gate.step(2.0)
    gate.step(2.0)
    assert gate.calibrated
    gate.step(1.0)
    assert not gate.active
    clone = core.SchmittGate(warmup_steps=99)
    clone.load_state_dict(gate.state_dict())
    assert clone.state_dict() == gate.state_dict()
    assert [clone.step(v) for v in (1.5, 2.0)] == [gate.step(v) for v in (1.5, 2.0)]


def test_gate_recalibrate_warms_up_again():
    gate = core.SchmittGate(warmup_steps=1)
    gate.step(1.0)
    gate.recalibrate()
    assert gate.step(5.0) is False and gate.warm == 5.0


def _pooled_gate_reference(warm: float, stats: list[float], pool: int, down: float, up: float) -> list[bool]:
    """The pooled gate from its definition: after warm-up, the Schmitt trigger sees the mean of the last ``pool``
    statistics (fewer at the start), closing below down·warm and reopening at up·warm (lag 0)."""
    on, seen, out = True, [], []
    for v in stats:
        seen.append(v)
        mean = sum(seen[-pool:]) / len(seen[-pool:])
        on = False if on and mean < down * warm else True if not on and mean >= up * warm else on
        out.append(on)
    return out


@pytest.mark.parametrize("pool", [1, 3])
def test_pooled_gate_decides_on_the_mean_of_recent_steps(pool):
    g = torch.Generator().manual_seed(pool)
    stats = (1.0 + 0.15 * torch.randn(40, generator=g)).tolist()
    gate = core.SchmittGate(warmup_steps=1, down_ratio=0.9, up_ratio=1.0, pool_steps=pool)
    assert gate.step(1.0) is False  # warm-up: m = 1.0
    got = [gate.step(v) for v in stats]
    assert got == _pooled_gate_reference(1.0, stats, pool, 0.9, 1.0)
    if pool == 1:
        return
    # one low batch in a steady run closes a per-step gate but not a 3-step pooled one
    for p, expected in ((1, False), (3, True)):
        gate = core.SchmittGate(warmup_steps=1, down_ratio=0.9, up_ratio=1.0, pool_steps=p)
        gate.step(1.0)
        assert [gate.step(v) for v in (1.0, 1.0, 0.8)][-1] is expected
    # the window survives a state round trip (a resumed run decides as an uninterrupted one)
    gate = core.SchmittGate(warmup_steps=1, down_ratio=0.9, up_ratio=1.0, pool_steps=3)
    for v in [1.0] + stats[:5]:
        gate.step(v)
    clone = core.SchmittGate(warmup_steps=1, pool_steps=3)
    clone.load_state_dict(gate.state_dict())
    assert [clone.step(v) for v in stats[5:]] == [gate.step(v) for v in stats[5:]]
    with pytest.raises(ValueError, match="pool_steps"):
        core.SchmittGate(pool_steps=0)


def test_gate_rejects_inverted_band():
    with pytest.raises(ValueError, match="hysteresis"):
        core.SchmittGate(down_ratio=1.1, up_ratio=1.0)


# --- chunked log-probs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_logp_entropy_from_logits_matches_reference(chunk):
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(3, 4, 7, generator=g) * 3
    ids = torch.randint(0, 7, (3, 4), generator=g)
    logp, ent = core.logp_entropy_from_logits(logits, ids, temperature=0.7, chunk_size=chunk)
    for b in range(3):
        for t in range(4):
            want_lp, want_h = ref.logp_entropy([x / 0.7 for x in logits[b, t].tolist()], ids[b, t].item())
            assert logp[b, t].item() == pytest.approx(want_lp, abs=1e-5)
            assert ent[b, t].item() == pytest.approx(want_h, abs=1e-5)


def test_logp_entropy_from_hidden_equals_logits_path_in_bf16():
    g = torch.Generator().manual_seed(10)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(2, 6, 16, generator=g)
    ids = torch.randint(0, 50, (2, 6), generator=g)
    a = core.logp_entropy_from_hidden(hidden, head, ids, chunk_size=4)
    b = core.logp_entropy_from_logits(head(hidden), ids, chunk_size=3)
    torch.testing.assert_close(a, b)
    lp16, _ = core.logp_entropy_from_logits(head(hidden).bfloat16(), ids)
    assert lp16.dtype == torch.float32


def test_masked_median_and_empty():
    x = torch.tensor([[1.0, 9.0, 3.0], [2.0, 100.0, 0.0]])
    m = torch.tensor([[1, 0, 1], [1, 0, 0]])
    assert core.masked_median(x, m).item() == 2.0
    assert math.isnan(core.masked_median(x, torch.zeros_like(m)).item())


# --- fixtures that separate median from mean, `<` from `<=`, and the spike boundary (issue #10) ---------------


def test_gate_warm_value_is_the_median_not_the_mean():
    gate = core.SchmittGate(warmup_steps=3, down_ratio=0.5, up_ratio=1.0)
    for stat in (1.0, 2.0, 9.0):  # median 2, mean 4
        gate.step(stat)
    assert gate.warm == 2.0 and gate.tau_down == 1.0 and gate.tau_up == 2.0


def test_gate_closes_strictly_below_tau_down_and_reopens_at_tau_up():
    gate = core.SchmittGate(warmup_steps=1, down_ratio=0.5, up_ratio=1.0, lag=0)
    gate.step(4.0)  # warm 4: τ_down 2, τ_up 4
    assert gate.step(2.0) is True  # equal to τ_down: stays open (stat < τ_down closes)
    assert gate.step(1.999) is False
    assert gate.step(3.999) is False  # below τ_up: stays shut
    assert gate.step(4.0) is True  # equal to τ_up: reopens (stat ≥ τ_up)


def test_gate_rearms_from_the_floor_when_the_floor_binds():
    floor = core.SchmittGate(warmup_steps=1, down_ratio=0.93, up_ratio=1.07, min_threshold=1.01, rearm_from_floor=True)
    plain = core.SchmittGate(warmup_steps=1, down_ratio=0.93, up_ratio=1.07, min_threshold=1.01)
    for g in (floor, plain):
        g.step(1.05)  # 0.93·1.05 = 0.9765 < 1.01: the floor binds
    assert floor.tau_down == plain.tau_down == 1.01
    assert floor.tau_up == pytest.approx(1.07 * 1.01 / 0.93) and plain.tau_up == pytest.approx(1.07 * 1.05)
    high = core.SchmittGate(warmup_steps=1, down_ratio=0.93, up_ratio=1.07, min_threshold=1.01, rearm_from_floor=True)
    high.step(2.0)  # the floor does not bind: both rules agree
    assert high.tau_up == pytest.approx(1.07 * 2.0)


def test_sigma_ref_is_the_mean_of_warmup_stds_not_the_median():
    ref_ = core.SigmaRef(warmup_steps=3)
    for v in (1.0, 2.0, 9.0):  # mean 4, median 2
        ref_.observe(v)
    assert ref_.value == 4.0


def test_ppl_spike_zeroes_lambda_strictly_above_the_spike():
    ppl_B = torch.tensor([3.0, 3.0001, 2.0])
    lam_B = core.teacher_ppl_lambda(ppl_B, tau=1.0, ppl_spike=3.0)
    assert lam_B[0] == pytest.approx(0.2 * math.log(3.0))  # exactly at the spike: kept
    assert lam_B[1] == 0.0 and lam_B[2] == pytest.approx(0.2 * math.log(2.0))
