"""Cross-process reductions: the one thing the method asks of a framework besides its tensors.

Every decision that must be the same on all processes (gate, σ_ref, τ) is taken from values reduced with a
:class:`Reducer`; an adapter supplies one over its collectives (TRL: accelerate), or :data:`LOCAL` where one process
holds the whole batch (verl's driver, ``antisd pmi``).
"""

from __future__ import annotations

import math
from typing import Protocol, Sequence

import torch


class Reducer(Protocol):
    """Cross-process reductions a framework provides (identity on one process)."""

    def sum(self, values: Sequence[float]) -> list[float]:
        """Elementwise sum of ``values`` over processes (float64)."""

    def gather(self, x_N: torch.Tensor) -> torch.Tensor:
        """1-D ``x_N`` of every process, concatenated (lengths may differ between processes)."""


class LocalReducer:
    """The reducer of a single process: sums and gathers are the identity."""

    def sum(self, values: Sequence[float]) -> list[float]:
        return [float(v) for v in values]

    def gather(self, x_N: torch.Tensor) -> torch.Tensor:
        return x_N.flatten()


LOCAL = LocalReducer()


def global_token_std(x_BT: torch.Tensor, mask_BT: torch.Tensor, reducer: Reducer) -> float:
    """Population std of ``x`` over the valid tokens of every process (one-pass sums, float64)."""
    m = mask_BT.bool()
    s, ss, n = reducer.sum([x_BT[m].double().sum().item(), x_BT[m].double().square().sum().item(), m.sum().item()])
    return math.sqrt(max(ss / n - (s / n) ** 2, 0.0)) if n else float("nan")
