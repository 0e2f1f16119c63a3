"""Per-token log-probs and entropies without a float32 [B, T, V] log-softmax.

Rows (B·T positions) are processed in chunks: each chunk is cast to float32, normalised with logsumexp, and
only the [chunk] log-prob of the sampled token and the [chunk] entropy are kept. Peak extra memory is
``chunk_size × V`` floats instead of ``B × T × V``. :func:`logp_entropy_from_hidden` goes one step further and
applies the LM head per chunk, so the [B, T, V] logits never exist at all.
"""

from __future__ import annotations

from typing import Callable

import torch


def _chunk_logp_entropy(logits_NV: torch.Tensor, ids_N: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    # Two [N, V] float32 buffers at most: the scaled logits (a private copy, so the caller's tensor is never
    # modified) and the probabilities, which are turned into p·x in place for the entropy H = log Z − Σ p·x.
    x_NV = logits_NV.to(torch.float32, copy=True)
    if temperature != 1.0:
        x_NV.div_(temperature)
    logz_N = torch.logsumexp(x_NV, dim=-1)
    logp_N = x_NV.gather(-1, ids_N[:, None]).squeeze(-1) - logz_N
    p_NV = (x_NV - logz_N[:, None]).exp_()
    entropy_N = logz_N - p_NV.mul_(x_NV).sum(dim=-1)
    return logp_N, entropy_N


def logp_entropy_from_logits(
    logits_BTV: torch.Tensor, ids_BT: torch.Tensor, *, temperature: float = 1.0, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of ``ids`` and full-vocabulary entropy at every position, in row chunks.

    Args:
        logits_BTV: [B, T, V] logits aligned with ``ids_BT`` (logits at t predict ids at t), any float dtype.
        ids_BT: [B, T] token ids.
        temperature: logits are divided by it first (the sampling temperature).
        chunk_size: positions per chunk.
    Returns:
        (logp_BT, entropy_BT), both float32.
    """
    B, T, V = logits_BTV.shape
    flat_logits, flat_ids = logits_BTV.reshape(B * T, V), ids_BT.reshape(B * T)
    logps, entropies = [], []
    for start in range(0, B * T, chunk_size):
        logp_N, ent_N = _chunk_logp_entropy(flat_logits[start : start + chunk_size], flat_ids[start : start + chunk_size], temperature)
        logps.append(logp_N)
        entropies.append(ent_N)
    return torch.cat(logps).view(B, T), torch.cat(entropies).view(B, T)


def logp_entropy_from_hidden(
    hidden_BTH: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    ids_BT: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`logp_entropy_from_logits`, but projecting ``hidden_BTH`` through ``head`` chunk by chunk.

    Args:
        hidden_BTH: [B, T, H] final hidden states aligned with ``ids_BT``.
        head: maps [N, H] to [N, V] logits (the model's output embedding).
    """
    B, T, H = hidden_BTH.shape
    flat_hidden, flat_ids = hidden_BTH.reshape(B * T, H), ids_BT.reshape(B * T)
    logps, entropies = [], []
    for start in range(0, B * T, chunk_size):
        logits_NV = head(flat_hidden[start : start + chunk_size])
        logp_N, ent_N = _chunk_logp_entropy(logits_NV, flat_ids[start : start + chunk_size], temperature)
        logps.append(logp_N)
        entropies.append(ent_N)
    return torch.cat(logps).view(B, T), torch.cat(entropies).view(B, T)
