"""Per-GPU memory of a training run, before it starts: does the recipe fit the GPUs?

Pure arithmetic (stdlib only) from the model's ``config.json`` and the launch settings. Every term is an estimate
with its formula written next to it; the total is compared with the GPU's memory and a run that cannot fit is
refused with the terms that dominate. Bytes per parameter follow the usual mixed-precision accounting
(ZeRO paper, Rajbhandari et al. 2020): fp32 master weights, bf16 compute copies, two fp32 Adam moments.

Strategies (``strategy``):
- ``ddp``: every GPU holds fp32 weights (4N), fp32 gradients (4N) and Adam (8N): 16N bytes, unsharded.
- ``zero2``: bf16 weights replicated (2N); gradients (2N) and fp32 master + Adam (12N) sharded over n GPUs.
- ``zero3`` / ``fsdp``: everything sharded: (2 + 2 + 12)N/n, plus the gathered bf16 weights of the largest
  layer twice (current + prefetch); with ``offload_optimizer`` the 12N/n lives in CPU memory.
Activations (bf16, per GPU, one micro-batch of b sequences of length s, hidden H, L layers):
- with gradient checkpointing: the layer inputs b·s·H·2·L plus one layer's working set b·s·34·H
  (Korthikanti et al. 2022, flash/SDPA attention: no s² term);
- without: L·b·s·34·H.
The log-prob head is tiled (TRL's fused LM head): one tile of ``head_tile`` positions × V in fp32, ×2 for the
softmax. The teacher's no-grad forward over (context + prompt + response) keeps one layer's working set.
vLLM colocated reserves ``vllm_gpu_memory_utilization`` of the GPU; its weights (bf16, over tensor-parallel
ranks) and the KV cache of one sequence of ``vllm_max_model_len`` tokens must fit inside that share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

GIB = 2**30
STRATEGIES = ("ddp", "zero2", "zero3", "fsdp")


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer that set its memory (read from a Hugging Face config.json)."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool
    experts: int = 0
    experts_per_token: int = 0
    expert_intermediate: int = 0
    max_position: int = 0

    @classmethod
    def from_config(cls, cfg: dict) -> "ModelShape":
        hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        return cls(
            vocab=cfg["vocab_size"], hidden=hidden, layers=cfg["num_hidden_layers"], heads=heads,
            kv_heads=cfg.get("num_key_value_heads") or heads, head_dim=cfg.get("head_dim") or hidden // heads,
            intermediate=cfg.get("intermediate_size", 0), tied=bool(cfg.get("tie_word_embeddings", False)),
            experts=cfg.get("num_experts", 0) or 0, experts_per_token=cfg.get("num_experts_per_tok", 0) or 0,
            expert_intermediate=cfg.get("moe_intermediate_size", 0) or 0, max_position=cfg.get("max_position_embeddings", 0),
        )  # fmt: skip

    def layer_params(self) -> int:
        attn = self.hidden * self.heads * self.head_dim * 2 + self.hidden * self.kv_heads * self.head_dim * 2
        mlp = self.experts * 3 * self.hidden * self.expert_intermediate + self.hidden * self.experts if self.experts else 3 * self.hidden * self.intermediate
        return attn + mlp + 2 * self.hidden

    def params(self) -> int:
        """N: embeddings (+ an untied LM head) and L layers (norms included, biases ignored)."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.layers * self.layer_params() + self.hidden

    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * 2  # K and V, bf16


@dataclass(frozen=True)
class Launch:
    """How the run is launched (per node)."""

    gpus: int = 8
    gpu_gib: float = 80.0
    strategy: str = "zero3"
    micro_batch: int = 1
    """Sequences per GPU per forward/backward (per_device_train_batch_size)."""
    seq_len: int = 18432
    """Longest training sequence: prompt + response."""
    teacher_seq_len: int = 22528
    """Longest teacher sequence: teacher prompt (≤ max_reprompt_len) + response."""
    gradient_checkpointing: bool = True
    offload_optimizer: bool = False
    """ZeRO-3 optimizer state (fp32 master + Adam, 12N/n) in CPU memory instead of on the GPU."""
    head_tile: int = 1024
    vllm: str = "colocate"
    """'colocate', 'server' (vLLM on other GPUs: nothing here) or 'none'."""
    vllm_gpu_memory_utilization: float = 0.3
    vllm_tensor_parallel: int = 1
    vllm_max_model_len: int = 0
    overhead_gib: float = 3.0
    """CUDA context, NCCL buffers, allocator fragmentation."""


def estimate(shape: ModelShape, launch: Launch) -> dict[str, float]:
    """Per-GPU memory in GiB, term by term, plus 'total' and 'capacity'."""
    if launch.strategy not in STRATEGIES:
        raise ValueError(f"strategy {launch.strategy!r} is not one of {STRATEGIES}")
    N, n = shape.params(), launch.gpus
    if launch.strategy == "ddp":
        weights, grads, optim, gathered = 4 * N, 4 * N, 8 * N, 0
    elif launch.strategy == "zero2":
        weights, grads, optim, gathered = 2 * N, 2 * N / n, 12 * N / n, 0
    else:
        weights, grads, optim, gathered = 2 * N / n, 2 * N / n, 12 * N / n, 2 * 2 * shape.layer_params()
    if launch.offload_optimizer:
        if launch.strategy not in ("zero3", "fsdp"):
            raise ValueError("offload_optimizer is modelled for zero3/fsdp only")
        optim = 0
    b, s, H, L = launch.micro_batch, launch.seq_len, shape.hidden, shape.layers
    layer_work = b * s * 34 * H
    activations = b * s * H * 2 * L + layer_work if launch.gradient_checkpointing else L * layer_work
    head = 2 * 4 * b * min(launch.head_tile, s) * shape.vocab
    teacher = b * launch.teacher_seq_len * 34 * H
    vllm = launch.vllm_gpu_memory_utilization * launch.gpu_gib * GIB if launch.vllm == "colocate" else 0.0
    terms = {
        "weights": weights, "gradients": grads, "optimizer": optim, "gathered_layers": gathered,
        "activations": activations, "logprob_head": head, "teacher_forward": teacher, "vllm": vllm,
        "overhead": launch.overhead_gib * GIB,
    }  # fmt: skip
    out = {k: v / GIB for k, v in terms.items()}
    out["total"] = sum(out.values())
    out["capacity"] = launch.gpu_gib
    out["params_b"] = N / 1e9
    return out


def checkpoint_bytes(n_params: int, deepspeed: bool = False) -> int:
    """A training checkpoint on disk. Plain: fp32 weights (4N) and AdamW's two fp32 moments (8N), 12N. DeepSpeed
    ZeRO: the optimizer shards hold the fp32 master weights and both moments (12N), the engine's model states the
    16-bit weights (2N), and transformers saves the gathered 16-bit model (2N): 16N (131 GB for Qwen3-8B)."""
    return (16 if deepspeed else 12) * n_params


def vllm_check(shape: ModelShape, launch: Launch) -> tuple[float, float, float]:
    """(share GiB, weights GiB per tensor-parallel rank, KV GiB of one max-length sequence) for colocated vLLM."""
    share = launch.vllm_gpu_memory_utilization * launch.gpu_gib
    weights = 2 * shape.params() / launch.vllm_tensor_parallel / GIB
    max_len = launch.vllm_max_model_len or shape.max_position
    kv = shape.kv_bytes_per_token() * max_len / launch.vllm_tensor_parallel / GIB
    return share, weights, kv


def problems(shape: ModelShape, launch: Launch) -> list[str]:
    """Why the run cannot fit ([] if it can), each with the terms that dominate and a fix."""
    est = estimate(shape, launch)
    found = []
    if est["total"] > est["capacity"]:
        top = sorted((k for k in est if k not in ("total", "capacity", "params_b")), key=lambda k: -est[k])[:3]
        found.append(
            f"needs {est['total']:.1f} GiB per GPU, the GPU has {est['capacity']:.0f} GiB (largest: "
            + ", ".join(f"{k} {est[k]:.1f}" for k in top)
            + "); shard with ZeRO-3/FSDP, enable gradient checkpointing, lower the micro-batch, or move vLLM to server mode"
        )
    if launch.vllm == "colocate":
        share, weights, kv = vllm_check(shape, launch)
        if weights + kv > share:
            found.append(
                f"colocated vLLM gets {share:.1f} GiB but needs {weights:.1f} GiB of weights + {kv:.1f} GiB of KV cache for one "
                f"{launch.vllm_max_model_len or shape.max_position}-token sequence; raise vllm_tensor_parallel_size, cap vllm_max_model_len, or use server mode"
            )
    return found


def load_shape(model: str, shipped: Path) -> ModelShape:
    """The shape of a local model directory, or of a paper model from the shipped config excerpts."""
    local = Path(model) / "config.json"
    if local.is_file():
        return ModelShape.from_config(json.loads(local.read_text()))
    excerpt = shipped / (model.split("/")[-1].lower() + ".json")
    if excerpt.is_file():
        return ModelShape.from_config(json.loads(excerpt.read_text()))
    raise FileNotFoundError(f"no config.json for {model!r}: give a local model directory (shipped excerpts: {sorted(p.stem for p in shipped.glob('*.json'))})")


def report(name: str, shape: ModelShape, launch: Launch) -> str:
    est = estimate(shape, launch)
    lines = [f"{name}: {est['params_b']:.2f}B params, {launch.gpus}×{launch.gpu_gib:.0f} GiB, {launch.strategy}, micro-batch {launch.micro_batch}, seq {launch.seq_len}, vLLM {launch.vllm}"]
    for key in ("weights", "gradients", "optimizer", "gathered_layers", "activations", "logprob_head", "teacher_forward", "vllm", "overhead", "total"):
        lines.append(f"  {key:16s} {est[key]:8.1f} GiB")
    if launch.vllm == "colocate":
        share, weights, kv = vllm_check(shape, launch)
        lines.append(f"  vLLM share {share:.1f} GiB ⊇ weights {weights:.1f} + KV(one max-length sequence) {kv:.1f} GiB")
    bad = problems(shape, launch)
    lines.append("  FITS" if not bad else "  DOES NOT FIT: " + " | ".join(bad))
    return "\n".join(lines)
