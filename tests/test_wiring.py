"""Wiring errors the end-to-end tests could not see (issue #19): each test here fails when its error is planted
(``scripts/mutants.py``: step_stat_mean, ppl_warm_mean, gate_stat_local, sigma_ref_local, ppl_stat_local; the
third kind, a teacher forward run with gradient, is caught in tests/test_oracle.py: teacher_with_grad).

1. Aggregators over a multi-step warm-up with distinct values (one warm-up step cannot tell a mean from a median).
2. Batch-level decisions (gate statistic, σ_ref, τ) on two shards, each stepping its own rows with a reducer that
   exchanges values with the other shard (two threads standing in for two processes), against one step over the
   union of the rows: a decision taken on a shard's local rows instead of the reduced ones differs.
"""

from __future__ import annotations

import math
import statistics
import threading

import pytest
import torch

from antisd.method.settings import preset
from antisd.method.step import LOCAL, AntiSDStep, StepInputs

pytestmark = pytest.mark.exact  # numerical comparisons: rerun under other CPU kernels (Makefile)


# --- 1. aggregators -------------------------------------------------------------------------------------------


def _uniform(ppl_B: list[float], T: int = 4) -> torch.Tensor:
    """[B, T] log-probs whose per-sequence perplexity is exactly ppl_B."""
    return torch.tensor([[-math.log(p)] * T for p in ppl_B])


def test_step_gate_statistic_is_the_lower_median_of_token_entropies():
    """The paper's statistic is a median (torch's: the lower one for an even count), not a mean."""
    step = AntiSDStep(preset("antisd").replace(gate_warmup_steps=2))
    entropy_BT = torch.tensor([[0.1, 0.2], [0.9, 1.6]])
    x = StepInputs(seq_adv_B=torch.zeros(2), teacher_logp_BT=torch.full((2, 2), -1.0), student_logp_BT=torch.full((2, 2), -1.0), response_mask_BT=torch.ones(2, 2), teacher_entropy_BT=entropy_BT)
    assert step.decide(x).statistic == pytest.approx(0.2)  # mean 0.7, median of the middle two 0.55


def test_warm_values_over_four_distinct_warmup_steps_are_medians():
    """Four warm-up steps with distinct statistics: the gate's warm value and the warm teacher PPL m (behind τ) are
    medians of the per-step values (the mean of the middle two for an even count), not means or other quantiles."""
    s = preset("antisd_release").replace(gate_signal="teacher_entropy_median", warmup_statistic="step_mean", gate_warmup_steps=4, gate_lag=0,
                                         gate_up_ratio=1.0, gate_min_threshold=None, gate_rearm_from_floor=False)  # fmt: skip
    step = AntiSDStep(s)
    entropies, ppls = [0.1, 0.9, 0.5, 0.6], [1.2, 2.0, 1.5, 2.6]
    for h, p in zip(entropies, ppls):
        step(StepInputs(seq_adv_B=torch.zeros(2), teacher_logp_BT=_uniform([p, p]), student_logp_BT=_uniform([2.0, 2.0]), response_mask_BT=torch.ones(2, 4), teacher_entropy_BT=torch.full((2, 4), h)))
    assert step.gate.warm == pytest.approx(statistics.median(entropies)) == pytest.approx(0.55)  # mean 0.525
    assert step.ppl_warm == pytest.approx(statistics.median(ppls)) == pytest.approx(1.75)  # mean 1.825
    assert step.tau() == pytest.approx(0.93 * 1.75)


# --- 2. two shards against one step over their union --------------------------------------------------------------


class PairReducer:
    """The reducer of one of two shards run in two threads: every sum and gather exchanges with the other shard."""

    def __init__(self, rank: int, barrier: threading.Barrier, slots: list):
        self.rank, self.barrier, self.slots = rank, barrier, slots

    def _exchange(self, value):
        self.slots[self.rank] = value
        self.barrier.wait()
        both = list(self.slots)
        self.barrier.wait()  # nobody writes the next value before both have read this one
        return both

    def sum(self, values) -> list[float]:
        a, b = self._exchange([float(v) for v in values])
        return [x + y for x, y in zip(a, b)]

    def gather(self, x_N: torch.Tensor) -> torch.Tensor:
        return torch.cat(self._exchange(x_N.flatten().clone()))


def _steps_on_two_shards(settings, batches: list[tuple[StepInputs, StepInputs]]) -> list[list]:
    """Each shard steps its own rows of every batch in its own thread; returns [shard][step] outputs."""
    barrier, slots, results, errors = threading.Barrier(2, timeout=60), [None, None], [[], []], []

    def shard(rank: int):
        step, reducer = AntiSDStep(settings), PairReducer(rank, barrier, slots)
        try:
            for batch in batches:
                results[rank].append(step(batch[rank], reducer))
        except BaseException as e:  # noqa: BLE001 — re-raised in the main thread
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=shard, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def _union(a: StepInputs, b: StepInputs) -> StepInputs:
    cat = lambda x, y: None if x is None else torch.cat([x, y])  # noqa: E731
    return StepInputs(**{f: cat(getattr(a, f), getattr(b, f)) for f in ("seq_adv_B", "teacher_logp_BT", "student_logp_BT", "response_mask_BT", "teacher_entropy_BT")})


def _batch(gen: torch.Generator, B: int, T: int, entropy: tuple[float, float], u_spread: float, teacher_ppl: float) -> StepInputs:
    """B rows of T tokens: entropies uniform in ``entropy``, u = t − s spread ±u_spread, teacher PPL ≈ teacher_ppl."""
    lo, hi = entropy
    u_BT = (torch.rand(B, T, generator=gen) * 2 - 1) * u_spread
    teacher_BT = torch.full((B, T), -math.log(teacher_ppl)) + 0.05 * (torch.rand(B, T, generator=gen) - 0.5)
    adv_B = torch.randn(B, generator=gen)
    return StepInputs(seq_adv_B=adv_B, teacher_logp_BT=teacher_BT, student_logp_BT=teacher_BT - u_BT, response_mask_BT=torch.ones(B, T), teacher_entropy_BT=lo + (hi - lo) * torch.rand(B, T, generator=gen))


def _assert_shards_equal_union(settings, batches):
    shards = _steps_on_two_shards(settings, batches)
    union_step = AntiSDStep(settings)
    gates = []
    for k, (a, b) in enumerate(batches):
        whole = union_step(_union(a, b), LOCAL)
        gates.append(whole.gate_on)
        B0 = a.seq_adv_B.numel()
        for rank, rows in ((0, slice(0, B0)), (1, slice(B0, None))):
            part = shards[rank][k]
            assert part.gate_on == whole.gate_on, f"step {k} shard {rank}: gate {part.gate_on} vs {whole.gate_on} over the union"
            torch.testing.assert_close(part.lam_B, whole.lam_B[rows], atol=1e-6, rtol=0, msg=lambda e: f"step {k} shard {rank}: λ_i: {e}")
            torch.testing.assert_close(part.advantages_BT, whole.advantages_BT[rows], atol=1e-5, rtol=1e-6, msg=lambda e: f"step {k} shard {rank}: advantages: {e}")
    return gates, union_step


def test_paper_gate_on_two_shards_equals_one_step_over_their_union():
    """Shard 0's entropies fall and shard 1's rise after warm-up: over the union the median drops below τ_down and
    the gate closes (then reopens); each shard alone would decide otherwise."""
    gen = torch.Generator().manual_seed(0)
    plan = [((0.2, 0.6), (0.6, 1.0)), ((0.2, 0.6), (0.6, 1.0)), ((0.05, 0.15), (0.85, 0.95)), ((0.5, 0.9), (0.5, 0.9))]
    batches = [(_batch(gen, 2, 8, e0, 1.0, 1.5), _batch(gen, 2, 8, e1, 1.0, 1.5)) for e0, e1 in plan]
    gates, _ = _assert_shards_equal_union(preset("antisd").replace(gate_warmup_steps=2), batches)
    assert gates == [False, False, False, True], f"the scenario must close and reopen the gate: {gates}"


def test_release_sigma_ref_tau_and_ppl_gate_on_two_shards_equal_one_step_over_their_union():
    """Shard 0 has a narrow u spread and low teacher PPL, shard 1 a wide spread and high PPL: σ_ref (outlier
    zeroing), the warm PPL behind τ (λ_i) and the PPL gate statistic each differ between a shard and the union."""
    gen = torch.Generator().manual_seed(1)
    batches = [(_batch(gen, 3, 8, (0.4, 0.6), 0.5, 1.3), _batch(gen, 3, 8, (0.4, 0.6), 6.0, 2.2)) for _ in range(4)]
    s = preset("antisd_release").replace(gate_warmup_steps=2, warmup_statistic="step_mean")
    _, union_step = _assert_shards_equal_union(s, batches)
    assert union_step.sigma_ref.value is not None and union_step.ppl_warm is not None
    # the scenario is discriminating: each shard alone would calibrate differently
    alone = [AntiSDStep(s), AntiSDStep(s)]
    for a, b in batches[:2]:
        alone[0](a)
        alone[1](b)
    for solo in alone:
        assert abs(solo.sigma_ref.value - union_step.sigma_ref.value) > 0.1 and abs(solo.ppl_warm - union_step.ppl_warm) > 0.1
