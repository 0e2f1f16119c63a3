"""Teacher sources: whose weights score the privileged context (``settings.teacher``).

- ``live`` — the policy itself, current weights, no gradient: the paper's teacher. Nothing kept.
- ``frozen`` — the initial policy, copied once when training starts: the ablation that asks whether the signal
  comes from the context or from the drift between an evolving teacher and the student.
- ``ema`` — an exponential moving average of the policy, θ_T ← d·θ_T + (1 − d)·θ after every optimizer step
  (as SDPO's EMA teacher): a slower, smoother teacher.

``frozen`` and ``ema`` hold one more copy of the weights (in the policy's dtype), on the policy's device or, with
``offload``, in host memory between teacher passes. Their weights are part of every checkpoint
(:meth:`TeacherSource.state_dict`), so a resumed run continues with the same teacher. Framework-neutral: plain
``torch.nn.Module`` operations; an adapter calls :meth:`scoring` around its teacher forward and
:meth:`after_optimizer_step` after each update.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Callable

import torch

WEIGHTS_FILE = "antisd_teacher.safetensors"


class TeacherSource:
    """The live teacher (the policy itself); the base of the kept teachers."""

    name = "live"
    keeps_weights = False

    @contextlib.contextmanager
    def scoring(self, policy: torch.nn.Module):
        """The module to score the teacher's inputs with (no gradient is taken by the caller)."""
        yield policy

    def after_optimizer_step(self, policy: torch.nn.Module) -> None:
        """Called after every optimizer step with the updated policy."""

    def save(self, folder: Path) -> None:
        """Write the teacher's weights into a checkpoint folder (nothing for the live teacher)."""

    def load(self, folder: Path) -> None:
        """Read them back from a checkpoint folder (nothing for the live teacher)."""


class KeptTeacher(TeacherSource):
    """A teacher with weights of its own: a copy of the policy taken at construction (the initial policy)."""

    keeps_weights = True

    def __init__(self, policy: torch.nn.Module, offload: bool = False, prepare: Callable[[torch.nn.Module], None] | None = None):
        self.offload = offload
        self.model = copy.deepcopy(policy).requires_grad_(False)
        # A framework's instance-level patch of ``forward`` (TRL's fused LM head) closes over the *policy's* original
        # forward, which a deep copy keeps: the copy would silently run the policy. Drop it; ``prepare`` re-patches.
        self.model.__dict__.pop("forward", None)
        if prepare is not None:
            prepare(self.model)
        self.model.to("cpu" if offload else _device_of(policy))

    @contextlib.contextmanager
    def scoring(self, policy: torch.nn.Module):
        # Same mode as the live teacher would be in (dropout, if any, behaves alike), on the policy's device.
        self.model.train(policy.training)
        if self.offload:
            self.model.to(_device_of(policy))
        try:
            yield self.model
        finally:
            if self.offload:
                self.model.to("cpu")

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_model

        save_model(self.model, str(Path(folder) / WEIGHTS_FILE))

    def load(self, folder: Path) -> None:
        from safetensors.torch import load_model

        path = Path(folder) / WEIGHTS_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the run's {self.name} teacher was not saved in this checkpoint")
        load_model(self.model, str(path), device=str(_device_of(self.model)))


class FrozenTeacher(KeptTeacher):
    """The initial policy, never updated."""

    name = "frozen"


class EMATeacher(KeptTeacher):
    """θ_T ← decay·θ_T + (1 − decay)·θ after every optimizer step; buffers follow the policy's."""

    name = "ema"

    def __init__(self, policy: torch.nn.Module, decay: float, offload: bool = False, prepare: Callable[[torch.nn.Module], None] | None = None):
        super().__init__(policy, offload, prepare)
        self.decay = decay

    @torch.no_grad()
    def after_optimizer_step(self, policy: torch.nn.Module) -> None:
        for t, p in zip(self.model.parameters(), policy.parameters(), strict=True):
            t.mul_(self.decay).add_(p.detach().to(t.device, t.dtype), alpha=1.0 - self.decay)
        for t, b in zip(self.model.buffers(), policy.buffers(), strict=True):
            t.copy_(b)


def make_teacher(kind: str, policy: torch.nn.Module, *, decay: float = 0.99, offload: bool = False, prepare: Callable[[torch.nn.Module], None] | None = None) -> TeacherSource:
    """The teacher source named by ``settings.teacher`` ('none' gets the live source; it is never asked to score).
    ``prepare`` patches a kept copy as the framework patched the policy (e.g. TRL's fused LM head)."""
    if kind in ("live", "none"):
        return TeacherSource()
    if kind == "frozen":
        return FrozenTeacher(policy, offload, prepare)
    if kind == "ema":
        return EMATeacher(policy, decay, offload, prepare)
    raise ValueError(f"unknown teacher {kind!r}: live, ema, frozen or none")


def _device_of(module: torch.nn.Module) -> torch.device:
    first = next(module.parameters(), None)
    return first.device if first is not None else torch.device("cpu")
