"""GRPO group advantages and the composition of A_seq with the per-token signal (paper Eq. 2).

additive (paper's choice):  A_{i,t} = A_i^seq + λ_i · δ_{i,t}
multiplicative (ablation):  A_{i,t} = A_i^seq · (1 + λ_i · δ_{i,t})

δ already carries its sign: for AntiSD δ = −φ(u), so the additive form is A_seq − λ·φ(u) (Alg. 1 line 11).
Masked positions of the composed advantage hold A_i^seq, so with λ = 0 the result is bit-identical to the
sequence advantage broadcast over tokens, i.e. plain GRPO.
"""

from __future__ import annotations

import torch


def group_advantages(rewards_B: torch.Tensor, group_size: int, *, scale_by_std: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO advantages (R_i − mean_g R) / (std_g R + eps) with consecutive groups of ``group_size``.

    Args:
        rewards_B: [B] rewards, B a multiple of ``group_size``; rollouts of one group are consecutive.
        group_size: G.
        scale_by_std: divide by the group std (paper §1.1) or not (Dr.GRPO-style).
        eps: added to the std, as TRL does.
    Returns:
        [B] float32 advantages. A group whose rewards are all equal gets exactly 0, whatever eps or rounding.
        The std is the unbiased (n−1) one, matching TRL's GRPOTrainer.
    """
    if rewards_B.numel() % group_size:
        raise ValueError(f"{rewards_B.numel()} rewards do not split into groups of {group_size}")
    r_BG = rewards_B.float().view(-1, group_size)
    centred_BG = r_BG - r_BG.mean(dim=1, keepdim=True)
    if scale_by_std and group_size > 1:
        centred_BG = centred_BG / (r_BG.std(dim=1, keepdim=True) + eps)
    uniform_B = (r_BG.max(dim=1).values == r_BG.min(dim=1).values)[:, None]
    return torch.where(uniform_B, 0.0, centred_BG).reshape(-1)


def compose_additive(adv_B: torch.Tensor, signal_BT: torch.Tensor, lam_B: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """A_{i,t} = A_i + λ_i·δ_{i,t} on valid tokens, A_i elsewhere.

    Args:
        adv_B: [B] sequence advantages.
        signal_BT: [B, T] per-token signal δ.
        lam_B: [B] per-sequence weight (a scalar λ broadcast by the caller).
        mask_BT: [B, T] valid tokens.
    Returns:
        [B, T] float32 advantages.
    """
    base_BT = adv_B.float()[:, None].expand_as(signal_BT)
    return torch.where(mask_BT.bool(), base_BT + lam_B.float()[:, None] * signal_BT.float(), base_BT)


def compose_multiplicative(adv_B: torch.Tensor, signal_BT: torch.Tensor, lam_B: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """A_{i,t} = A_i·(1 + λ_i·δ_{i,t}) on valid tokens, A_i elsewhere (the ablated form; dead when A_i = 0)."""
    base_BT = adv_B.float()[:, None].expand_as(signal_BT)
    return torch.where(mask_BT.bool(), base_BT * (1.0 + lam_B.float()[:, None] * signal_BT.float()), base_BT)


def term_dose_sums(seq_adv_B: torch.Tensor, adv_BT: torch.Tensor, mask_BT: torch.Tensor) -> list[float]:
    """The sums behind the dose meter (issue #23): how large the per-token term is next to the GRPO signal.

    The term is whatever the composition added to A_seq, A_{i,t} − A_i (λ_i·δ_{i,t} in the additive form), so the
    meter reads the same for any composer, shaping or λ mode. Float64 sums, so that a caller can reduce them
    across processes before dividing.

    Args:
        seq_adv_B: [B] sequence advantages A_i.
        adv_BT: [B, T] composed advantages.
        mask_BT: [B, T] the tokens to measure over.
    Returns:
        [Σ|A_{i,t} − A_i|, Σ|A_i|, #tokens with |A_{i,t} − A_i| > |A_i|, #tokens], each over the masked tokens.
    """
    m = mask_BT.bool()
    seq_BT = seq_adv_B.float().double()[:, None].expand(adv_BT.shape)  # A_seq as the composers saw it (float32)
    term, base = (adv_BT.double() - seq_BT)[m].abs(), seq_BT[m].abs()
    return [term.sum().item(), base.sum().item(), float((term > base).sum().item()), float(m.sum().item())]


COMPOSERS = {"additive": compose_additive, "multiplicative": compose_multiplicative}
