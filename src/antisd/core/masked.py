"""Masked reductions over [B, T] response tensors. Masked positions never influence a result."""

from __future__ import annotations

import torch


def masked_sum(x_BT: torch.Tensor, mask_BT: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x`` over valid positions; values at masked positions (even NaN/inf) are ignored."""
    x = torch.where(mask_BT.bool(), x_BT.float(), torch.zeros((), dtype=torch.float32, device=x_BT.device))
    return x.sum() if dim is None else x.sum(dim=dim)


def masked_mean(x_BT: torch.Tensor, mask_BT: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean over valid positions; 0 where there are none (an all-masked row has mean 0, not NaN)."""
    count = mask_BT.bool().sum() if dim is None else mask_BT.bool().sum(dim=dim)
    return masked_sum(x_BT, mask_BT, dim) / count.clamp(min=1)


def masked_std(x_BT: torch.Tensor, mask_BT: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Population standard deviation over valid positions (0 where fewer than one valid value)."""
    mean = masked_mean(x_BT, mask_BT, dim)
    centred = x_BT.float() - (mean if dim is None else mean.unsqueeze(dim))
    return masked_mean(centred.square(), mask_BT, dim).sqrt()


def masked_median(x_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Median of all valid values (lower median for an even count, as ``torch.median``); NaN if none."""
    values = x_BT.float()[mask_BT.bool()]
    if values.numel() == 0:
        return torch.tensor(float("nan"))
    return values.median()
