"""Per-GPU memory of a training run, before it starts: does the recipe fit the GPUs?

Pure arithmetic (stdlib only) from the model's ``config.json`` and the launch settings. Every term is an estimate
with its formula written next to it; the total is compared with the GPU's memory and a run that cannot fit is
refused with the terms that dominate. Bytes per parameter follow the usual mixed-precision accounting
(ZeRO paper, Rajbhandari et al. 2020): fp32 master weights, bf16 compute copies, two fp32 Adam moments.

Strategies (``strategy``), N parameters over n GPUs:
- ``ddp``: every GPU holds fp32 weights (4N), fp32 gradients (4N) and Adam (8N): 16N bytes, unsharded.
- ``zero2``: bf16 weights replicated (2N); fp32 gradient partitions (4N/n; DeepSpeed reduces bf16 gradients into
  the fp32 partitions its optimizer steps) and fp32 master + Adam (12N/n); plus the reduce bucket.
- ``zero3`` / ``fsdp``: everything sharded, (2 + 4 + 12)N/n = 18N/n, plus the gathered bf16 weights of the largest
  module twice (current + prefetch; the embedding or the LM head, V·H, is larger than any layer) and the reduce
  bucket; with ``offload_optimizer`` the 12N/n lives in host memory, where the CPU Adam also keeps fp32 gradients:
  16N over the nodes, reported per node.
Two phases never coexist in a step: the teacher's no-grad forward (at generation time) and the training forward +
backward. Each phase's total is the static memory plus its working set; the run needs the larger:
- training, at the backward's start (every activation live, the log-prob head's backward running): the activations
  (``activation_bytes``), TRL's chunked log-prob head (``head_bytes``), its fp32 weight gradient at full size (4·V·H,
  even when the weights are sharded) and the padded rows' boolean attention mask b·s² bytes. Gradients that one plain
  process frees every step are counted at the backward's end instead, when every gradient exists and the
  activations are gone (``persistent_gradients``);
- teacher: the no-grad forward over (teacher context + response) (``teacher_forward_bytes``), the head's forward
  and the mask b·s_t² bytes.
``device`` picks the accounting: 'cuda' (bf16 autocast; activations by Korthikanti et al. 2022) or 'cpu' (fp32;
tensors counted one by one from the layer's code; checked against measured peaks by benchmarks/preflight_memory.py).
vLLM colocated reserves ``vllm_gpu_memory_utilization`` of the GPU; its bf16 weights (over tensor-parallel ranks),
a reserve for its profiling run and CUDA graphs (``vllm_reserve_gib``) and the KV cache of one sequence of
``vllm_max_model_len`` tokens must fit inside that share; how many such sequences fit at once is reported against
the rollouts each vLLM instance generates (fewer means generation in waves: slower, not out of memory).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

GIB = 2**30
STRATEGIES = ("ddp", "zero2", "zero3", "fsdp")
QK_NORM_MODELS = ("qwen3", "qwen3_moe", "olmo2", "olmo3")
HEAD_ROWS, HEAD_COLS = 4096, 32768
"""TRL's chunked log-prob kernel (``trl.kernels.chunked_logprob``): token rows per tile (TOKEN_CHUNK_SIZE) and the
vocabulary chunk its buffer is allocated at (``_CHUNKED_LOGPROB_CHUNK_SIZE``) whatever the vocabulary's size;
tests/test_preflight.py checks them against the installed TRL."""


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
    qk_norm: bool = False
    """Per-head RMSNorms on q and k (Qwen3, OLMo-2/3): two more saved tensors each in a layer's backward."""

    @classmethod
    def from_config(cls, cfg: dict) -> "ModelShape":
        hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        return cls(
            vocab=cfg["vocab_size"], hidden=hidden, layers=cfg["num_hidden_layers"], heads=heads,
            kv_heads=cfg.get("num_key_value_heads") or heads, head_dim=cfg.get("head_dim") or hidden // heads,
            intermediate=cfg.get("intermediate_size", 0), tied=bool(cfg.get("tie_word_embeddings", False)),
            experts=cfg.get("num_experts", 0) or 0, experts_per_token=cfg.get("num_experts_per_tok", 0) or 0,
            expert_intermediate=cfg.get("moe_intermediate_size", 0) or 0, max_position=cfg.get("max_position_embeddings", 0),
            qk_norm=cfg.get("model_type", "") in QK_NORM_MODELS,
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

    def saved_per_token(self) -> int:
        """Elements one decoder layer keeps for its backward per token, in eager fp32 (a Llama/Qwen3 layer read op
        by op): both RMSNorms' input and normalised output (4H); q after RoPE, the SDPA output and its contiguous
        copy for o_proj (3A); k after RoPE and v (2K); k and v repeated to the query heads, as transformers does
        when a padding mask is passed (2A); gate, SiLU(gate), up and their product (4I, dense MLP: the routed
        experts' share for MoE); with q/k norms their inputs and outputs (2A + 2K)."""
        A, K = self.heads * self.head_dim, self.kv_heads * self.head_dim
        inter = self.experts_per_token * self.expert_intermediate if self.experts else self.intermediate
        return 4 * self.hidden + 5 * A + 2 * K + 4 * inter + (2 * A + 2 * K if self.qk_norm else 0)

    def forward_transient_per_token(self) -> int:
        """Elements live at once per token inside one layer of a no-grad forward: the residual and its norm (2H)
        with either the attention's q, k, v, their RoPE outputs, the repeated k, v and the output (5A + 3K), or the
        MLP's SiLU(gate), up and product (3I)."""
        A, K = self.heads * self.head_dim, self.kv_heads * self.head_dim
        inter = self.experts_per_token * self.expert_intermediate if self.experts else self.intermediate
        return 2 * self.hidden + max(5 * A + 3 * K, 3 * inter)


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
    grad_accum: int = 1
    """Micro-batches per optimizer step: with more than one, gradients live through the next forward."""
    device: str = "cuda"
    """'cuda': bf16 autocast, TRL's Triton log-prob kernel, SDPA/flash attention (activations by Korthikanti et al.);
    'cpu': fp32 throughout, the kernel's torch fallback, activations counted tensor by tensor (``saved_per_token``)."""
    vllm: str = "colocate"
    """'colocate', 'server' (vLLM on other GPUs: nothing here) or 'none'."""
    vllm_gpu_memory_utilization: float = 0.3
    vllm_tensor_parallel: int = 1
    vllm_max_model_len: int = 0
    vllm_reserve_gib: float = 1.0
    """Inside vLLM's share: its profiling run's activations and the captured CUDA graphs (an assumption until measured)."""
    rollouts_per_step: int = 0
    """Prompts × G of one step (0: unknown): what the vLLM instances generate together."""
    nodes: int = 1
    """Machines; the offloaded optimizer state of a node's GPUs lives in that node's host memory."""
    reduce_bucket_elems: float = 5e8
    """DeepSpeed's reduce bucket (elements, bf16) under ZeRO-2/3 (its default 5e8: 0.93 GiB)."""
    overhead_gib: float = 3.0
    """CUDA context, NCCL buffers, allocator fragmentation."""
    teacher: str = "live"
    """settings.teacher: 'ema' and 'frozen' keep one more fp32 copy of the weights on every GPU (4N), 'live' none."""
    teacher_offload: bool = False
    """settings.teacher_offload: the kept copy lives in host memory between teacher passes (on the GPU during one)."""


def estimate(shape: ModelShape, launch: Launch) -> dict[str, float]:
    """Per-GPU memory in GiB, term by term; the two phases; 'total' (the larger phase) and 'capacity'."""
    if launch.strategy not in STRATEGIES:
        raise ValueError(f"strategy {launch.strategy!r} is not one of {STRATEGIES}")
    if launch.device not in ("cuda", "cpu"):
        raise ValueError(f"device {launch.device!r} is not 'cuda' or 'cpu'")
    N, n, VH = shape.params(), launch.gpus, shape.vocab * shape.hidden
    if launch.strategy == "ddp":
        weights, grads, optim, gathered = 4 * N, 4 * N, 8 * N, 0
    elif launch.strategy == "zero2":
        weights, grads, optim, gathered = 2 * N, 4 * N / n, 12 * N / n, 0
    else:
        weights, grads, optim, gathered = 2 * N / n, 4 * N / n, 12 * N / n, 2 * 2 * max(shape.layer_params(), VH)
    if launch.offload_optimizer:
        if launch.strategy not in ("zero3", "fsdp"):
            raise ValueError("offload_optimizer is modelled for zero3/fsdp only")
        optim = 0
    b, s, st = launch.micro_batch, launch.seq_len, launch.teacher_seq_len
    terms = {
        "weights": weights, "gradients": grads, "optimizer": optim, "gathered_layers": gathered,
        "reduce_bucket": 2 * launch.reduce_bucket_elems if launch.strategy in ("zero2", "zero3") else 0.0,
        "vllm": launch.vllm_gpu_memory_utilization * launch.gpu_gib * GIB if launch.vllm == "colocate" else 0.0,
        "overhead": launch.overhead_gib * GIB,
        "teacher_weights": 4 * N if kept_teacher(launch) and not launch.teacher_offload else 0.0,
        # training phase (its peak: the backward's start, every activation live and the head's backward running)
        "activations": activation_bytes(shape, launch),
        "logprob_head": head_bytes(shape, b * s, launch.device, backward=True),
        "lm_head_grad": 4 * VH,  # the kernel's fp32 weight gradient, at full size even when the weights are sharded
        "attention_mask": b * s * s,
        # teacher phase
        "teacher_forward": teacher_forward_bytes(shape, launch),
        "teacher_head": head_bytes(shape, b * st, launch.device, backward=False),
        "teacher_mask": b * st * st,
        "teacher_onloaded": 4 * N if kept_teacher(launch) and launch.teacher_offload else 0.0,
    }  # fmt: skip
    out = {k: v / GIB for k, v in terms.items()}
    static = sum(out[k] for k in STATIC if k != "gradients") + (out["gradients"] if persistent_gradients(launch) else 0.0)
    backward_start = sum(out[k] for k in TRAINING_PHASE)
    # Gradients freed after each step (one process, set to None) grow while the activations are freed: the larger end
    out["phase_training"] = static + (backward_start if persistent_gradients(launch) else max(backward_start, out["gradients"]))
    out["phase_teacher"] = static + sum(out[k] for k in TEACHER_PHASE)
    out["total"] = max(out["phase_training"], out["phase_teacher"])
    out["capacity"] = launch.gpu_gib
    out["params_b"] = N / 1e9
    return out


STATIC = ("weights", "gradients", "optimizer", "gathered_layers", "reduce_bucket", "vllm", "overhead", "teacher_weights")
TRAINING_PHASE = ("activations", "logprob_head", "lm_head_grad", "attention_mask")
TEACHER_PHASE = ("teacher_forward", "teacher_head", "teacher_mask", "teacher_onloaded")


def persistent_gradients(launch: Launch) -> bool:
    """Whether gradient memory stays allocated between steps: sharded strategies' partitions, DDP's buckets across
    processes, and any run accumulating over micro-batches; one plain process frees them (set to None) every step."""
    return launch.strategy != "ddp" or launch.gpus > 1 or launch.grad_accum > 1


def activation_bytes(shape: ModelShape, launch: Launch) -> float:
    """What the training forward keeps for the backward. GPU (bf16): Korthikanti et al. 2022, b·s·34·H bytes per
    layer with SDPA/flash attention (no s² term); with gradient checkpointing the layer inputs b·s·H·2·L plus one
    layer's working set. CPU (fp32): ``saved_per_token`` elements per layer, plus the final norm's input and output."""
    b, s, H, L = launch.micro_batch, launch.seq_len, shape.hidden, shape.layers
    if launch.device == "cpu":
        layer, inputs, tail = b * s * shape.saved_per_token() * 4, b * s * H * 4 * L, 2 * b * s * H * 4
    else:
        layer, inputs, tail = b * s * 34 * H, b * s * H * 2 * L, 0
    return (inputs + layer if launch.gradient_checkpointing else L * layer) + tail


def teacher_forward_bytes(shape: ModelShape, launch: Launch) -> float:
    """The teacher's no-grad forward, over its longer sequence: GPU, one layer's working set b·s_t·34·H (bf16);
    CPU, the elements one layer holds at once (``forward_transient_per_token``) in fp32."""
    b, st = launch.micro_batch, launch.teacher_seq_len
    return b * st * shape.forward_transient_per_token() * 4 if launch.device == "cpu" else b * st * 34 * shape.hidden


def head_bytes(shape: ModelShape, tokens: int, device: str, backward: bool) -> float:
    """TRL's chunked log-prob head over ``tokens`` positions (it never builds [tokens, V] logits): its tile buffer
    of min(tokens, 4096) × 32768 in the compute dtype, the backbone's output it flattens (tokens·H), and in the
    backward the fp32 hidden gradient (4·tokens·H). On a CPU its torch fallback adds fp32 temporaries of the tile's
    size (min(tokens, 4096) × min(V, 32768)): 3 in the forward (the scaled logits, their shift, its exp), 7¼ in the
    backward (scaled logits twice, log p, p, the gradient, 1[target] as bool and float, two products)."""
    c = 4 if device == "cpu" else 2
    rows = min(tokens, HEAD_ROWS)
    tile = rows * min(shape.vocab, HEAD_COLS) * 4 if device == "cpu" else 0
    base = rows * HEAD_COLS * c + tokens * shape.hidden * c
    return base + (7.25 * tile + 4 * tokens * shape.hidden if backward else 3 * tile + tokens * shape.hidden * c)


TEACHER_COPY = ("teacher_weights", "teacher_onloaded")  # shown only for a kept (ema, frozen) teacher


def kept_teacher(launch: Launch) -> bool:
    """Whether the teacher has weights of its own (ema, frozen) rather than being the policy (live)."""
    return launch.teacher in ("ema", "frozen")
TERMS = (*STATIC, *TRAINING_PHASE, *TEACHER_PHASE)


def host_offload_gib(shape: ModelShape, launch: Launch) -> float:
    """Host memory per node with the optimizer offloaded (pinned): the CPU Adam steps fp32 master weights with fp32
    gradients and two moments, 16N over the nodes."""
    return 16 * shape.params() / launch.nodes / GIB if launch.offload_optimizer else 0.0


def checkpoint_bytes(n_params: int, deepspeed: bool = False, kept_teacher: bool = False) -> int:
    """A training checkpoint on disk. Plain: fp32 weights (4N) and AdamW's two fp32 moments (8N), 12N. DeepSpeed
    ZeRO: the optimizer shards hold the fp32 master weights and both moments (12N), the engine's model states the
    16-bit weights (2N), and transformers saves the gathered 16-bit model (2N): 16N (131 GB for Qwen3-8B). An EMA or
    frozen teacher adds its fp32 weights (4N)."""
    return ((16 if deepspeed else 12) + (4 if kept_teacher else 0)) * n_params


def vllm_check(shape: ModelShape, launch: Launch) -> tuple[float, float, float]:
    """(share GiB, weights GiB per tensor-parallel rank, KV GiB of one max-length sequence) for colocated vLLM."""
    share = launch.vllm_gpu_memory_utilization * launch.gpu_gib
    weights = 2 * shape.params() / launch.vllm_tensor_parallel / GIB
    max_len = launch.vllm_max_model_len or shape.max_position
    kv = shape.kv_bytes_per_token() * max_len / launch.vllm_tensor_parallel / GIB
    return share, weights, kv


def vllm_room(shape: ModelShape, launch: Launch) -> tuple[int, int]:
    """(max-length sequences whose KV cache fits at once in one vLLM instance, rollouts that instance generates per
    step; 0 when unknown). An instance spans vllm_tensor_parallel GPUs; the step's rollouts split over the instances."""
    share, weights, kv = vllm_check(shape, launch)
    room = max(int((share - weights - launch.vllm_reserve_gib) // kv), 0) if kv > 0 else 0
    instances = max(launch.gpus // launch.vllm_tensor_parallel, 1)
    return room, -(-launch.rollouts_per_step // instances) if launch.rollouts_per_step else 0


def problems(shape: ModelShape, launch: Launch) -> list[str]:
    """Why the run cannot fit ([] if it can), each with the terms that dominate and a fix."""
    est = estimate(shape, launch)
    found = []
    if est["total"] > est["capacity"]:
        phase = "training" if est["phase_training"] >= est["phase_teacher"] else "teacher"
        terms = STATIC + (TRAINING_PHASE if phase == "training" else TEACHER_PHASE)
        top = sorted(terms, key=lambda k: -est[k])[:3]
        found.append(
            f"needs {est['total']:.1f} GiB per GPU in the {phase} phase, the GPU has {est['capacity']:.0f} GiB (largest: "
            + ", ".join(f"{k} {est[k]:.1f}" for k in top)
            + "); shard with ZeRO-3/FSDP, enable gradient checkpointing, lower the micro-batch, or move vLLM to server mode"
        )
    if launch.vllm == "colocate":
        share, weights, kv = vllm_check(shape, launch)
        if weights + launch.vllm_reserve_gib + kv > share:
            found.append(
                f"colocated vLLM gets {share:.1f} GiB but needs {weights:.1f} GiB of weights + {launch.vllm_reserve_gib:.1f} GiB of profiling and "
                f"CUDA-graph reserve + {kv:.1f} GiB of KV cache for one {launch.vllm_max_model_len or shape.max_position}-token sequence; "
                "raise vllm_tensor_parallel_size, cap vllm_max_model_len, or use server mode"
            )
    return found


def load_config(model: str, shipped: Path) -> dict:
    """The config.json of a local model directory, or a paper model's shipped config excerpt."""
    local = Path(model) / "config.json"
    if local.is_file():
        return json.loads(local.read_text())
    excerpt = shipped / (model.split("/")[-1].lower() + ".json")
    if excerpt.is_file():
        return json.loads(excerpt.read_text())
    raise FileNotFoundError(f"no config.json for {model!r}: give a local model directory (shipped excerpts: {sorted(p.stem for p in shipped.glob('*.json'))})")


def load_shape(model: str, shipped: Path) -> ModelShape:
    """The shape of a local model directory, or of a paper model from the shipped config excerpts."""
    return ModelShape.from_config(load_config(model, shipped))


def teacher_line(shape: ModelShape, launch: Launch) -> str:
    """What the teacher source costs in memory (its compute is one no-grad forward a step for every source)."""
    if not kept_teacher(launch):
        return f"  teacher: {launch.teacher}: the policy itself scores (no copy of the weights)"
    copy_gib = 4 * shape.params() / GIB
    where = f"in host memory, {copy_gib:.1f} GiB per process, moved to the GPU for each teacher pass" if launch.teacher_offload else f"{copy_gib:.1f} GiB per GPU"
    update = "; an EMA update (one pass over the weights) after every optimizer step" if launch.teacher == "ema" else ""
    return f"  teacher: {launch.teacher}: one more copy of the weights (fp32, {where}){update}; +{copy_gib:.1f} GiB per checkpoint"


def report(name: str, shape: ModelShape, launch: Launch) -> str:
    est = estimate(shape, launch)
    lines = [f"{name}: {est['params_b']:.2f}B params, {launch.gpus}×{launch.gpu_gib:.0f} GiB, {launch.strategy}, micro-batch {launch.micro_batch}, seq {launch.seq_len}, vLLM {launch.vllm}"]
    for group, keys in (("static", STATIC), ("training phase", TRAINING_PHASE), ("teacher phase", TEACHER_PHASE)):
        lines.append(f"  {group}:")
        lines += [f"    {key:16s} {est[key]:8.1f} GiB" for key in keys if key not in TEACHER_COPY or kept_teacher(launch)]
    lines.append(f"  per GPU: training phase {est['phase_training']:.1f} GiB, teacher phase {est['phase_teacher']:.1f} GiB (the phases never coexist)")
    lines.append(f"  {'total':18s} {est['total']:8.1f} GiB")
    if launch.offload_optimizer:
        lines.append(f"  host memory for the offloaded optimizer: {host_offload_gib(shape, launch):.0f} GiB per node (pinned)")
    lines.append(teacher_line(shape, launch))
    if launch.vllm == "colocate":
        share, weights, kv = vllm_check(shape, launch)
        lines.append(f"  vLLM share {share:.1f} GiB ⊇ weights {weights:.1f} + reserve {launch.vllm_reserve_gib:.1f} + KV(one max-length sequence) {kv:.1f} GiB")
        room, rollouts = vllm_room(shape, launch)
        if rollouts:
            waves = -(-rollouts // room) if room else float("inf")
            lines.append(f"  vLLM KV room: {room} max-length sequences at once per instance for {rollouts} rollouts"
                         + (f": generation in up to {waves} waves when every rollout runs to the limit" if room < rollouts else ""))  # fmt: skip
    bad = problems(shape, launch)
    lines.append("  FITS" if not bad else "  DOES NOT FIT: " + " | ".join(bad))
    return "\n".join(lines)
