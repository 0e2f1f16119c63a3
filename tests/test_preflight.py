"""Preflight memory estimate (hand-computed cases, every shipped recipe fits 8×80 GB) and training precision."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from antisd import cli

from antisd.infra import configio
from antisd.infra import preflight as pf
from antisd.commands import train

GIB = 2**30
ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs" / "recipes").glob("*.yaml"))
TOY = pf.ModelShape(vocab=100, hidden=8, layers=2, heads=2, kv_heads=1, head_dim=4, intermediate=16, tied=False)


def test_parameter_count_by_hand():
    # per layer: q,o 8·2·4·2 = 128; k,v 8·1·4·2 = 64; MLP 3·8·16 = 384; two norms 16 ⇒ 592
    assert TOY.layer_params() == 592
    assert TOY.params() == 100 * 8 * 2 + 2 * 592 + 8  # untied embeddings + head, layers, final norm
    moe = pf.ModelShape(vocab=10, hidden=4, layers=1, heads=1, kv_heads=1, head_dim=4, intermediate=0, tied=True, experts=3, experts_per_token=1, expert_intermediate=2)
    assert moe.layer_params() == 4 * 4 * 2 + 4 * 4 * 2 + 3 * 3 * 4 * 2 + 4 * 3 + 8


def test_estimate_terms_by_hand():
    N, VH = TOY.params(), 100 * 8
    launch = pf.Launch(gpus=4, gpu_gib=1.0, strategy="ddp", micro_batch=2, seq_len=10, teacher_seq_len=12, vllm="none", overhead_gib=0.0)
    est = pf.estimate(TOY, launch)
    assert est["weights"] * GIB == 4 * N and est["gradients"] * GIB == 4 * N and est["optimizer"] * GIB == 8 * N
    assert est["activations"] * GIB == 2 * 10 * 8 * 2 * 2 + 2 * 10 * 34 * 8  # checkpoints + one layer's working set
    # TRL's head over 20 training tokens: a 20 × 32768 bf16 tile buffer, the flattened hidden, its fp32 gradient
    assert est["logprob_head"] * GIB == 20 * 32768 * 2 + 20 * 8 * 2 + 4 * 20 * 8
    assert est["teacher_head"] * GIB == 24 * 32768 * 2 + 2 * 24 * 8 * 2  # forward over 24 teacher tokens: no gradient
    assert est["teacher_forward"] * GIB == 2 * 12 * 34 * 8
    assert est["attention_mask"] * GIB == 2 * 10 * 10 and est["teacher_mask"] * GIB == 2 * 12 * 12  # boolean b·s²
    assert est["lm_head_grad"] * GIB == 4 * VH and est["reduce_bucket"] == 0  # the kernel's fp32 weight gradient
    static = 16 * N  # four DDP processes: the gradient buckets stay
    training = est["activations"] + est["logprob_head"] + est["lm_head_grad"] + est["attention_mask"]
    teacher = est["teacher_forward"] + est["teacher_head"] + est["teacher_mask"]
    assert est["phase_training"] * GIB == pytest.approx(static + training * GIB)
    assert est["phase_teacher"] * GIB == pytest.approx(static + teacher * GIB)
    assert est["total"] == max(est["phase_training"], est["phase_teacher"])  # the two phases never coexist
    z3 = pf.estimate(TOY, pf.Launch(gpus=4, strategy="zero3", vllm="none", overhead_gib=0.0, gradient_checkpointing=False, micro_batch=1, seq_len=10))
    assert z3["weights"] * GIB == pytest.approx(2 * N / 4) and z3["optimizer"] * GIB == pytest.approx(12 * N / 4)
    assert z3["gradients"] * GIB == pytest.approx(4 * N / 4)  # fp32 gradient partitions: 18 bytes per parameter
    assert z3["gathered_layers"] * GIB == 4 * max(TOY.layer_params(), VH) == 4 * VH  # the embedding is the largest module
    assert z3["activations"] * GIB == 2 * 10 * 34 * 8 and z3["lm_head_grad"] * GIB == 4 * VH
    assert z3["reduce_bucket"] * GIB == 2 * 5e8
    off = pf.Launch(gpus=4, nodes=2, strategy="zero3", offload_optimizer=True, vllm="none")
    assert pf.estimate(TOY, off)["optimizer"] == 0.0 and pf.host_offload_gib(TOY, off) * GIB == pytest.approx(16 * N / 2)


def test_cpu_accounting_by_hand():
    # TOY: H 8, A = 2 heads × 4 = 8, K = 1 × 4 = 4, I 16; fp32, one process, no checkpointing
    assert TOY.saved_per_token() == 4 * 8 + 5 * 8 + 2 * 4 + 4 * 16  # norms, q/out/copy + repeated k, v, k and v, MLP
    assert TOY.forward_transient_per_token() == 2 * 8 + max(5 * 8 + 3 * 4, 3 * 16)
    N, VH = TOY.params(), 100 * 8
    launch = pf.Launch(gpus=1, strategy="ddp", micro_batch=2, seq_len=10, teacher_seq_len=12, gradient_checkpointing=False, vllm="none", overhead_gib=0.0, device="cpu")
    est = pf.estimate(TOY, launch)
    assert est["activations"] * GIB == 2 * 2 * 10 * 144 * 4 + 2 * 2 * 10 * 8 * 4  # L layers + the final norm's input and output
    tile = 20 * 100 * 4  # the torch fallback's fp32 temporaries: min(tokens, 4096) × min(V, 32768)
    assert est["logprob_head"] * GIB == 20 * 32768 * 4 + 20 * 8 * 4 + 7.25 * tile + 4 * 20 * 8
    assert est["teacher_head"] * GIB == 24 * 32768 * 4 + 2 * 24 * 8 * 4 + 3 * 24 * 100 * 4
    assert est["teacher_forward"] * GIB == 2 * 12 * 68 * 4
    static = 12 * N  # one process frees its gradients every step: counted where the backward ends, not as static
    start = est["activations"] + est["logprob_head"] + est["lm_head_grad"] + est["attention_mask"]
    assert est["phase_training"] * GIB == pytest.approx(static + max(start, est["gradients"]) * GIB)
    assert est["phase_teacher"] * GIB == pytest.approx(static + (est["teacher_forward"] + est["teacher_head"] + est["teacher_mask"]) * GIB)
    accumulating = pf.estimate(TOY, pf.Launch(**{**launch.__dict__, "grad_accum": 2}))
    assert accumulating["phase_training"] * GIB == pytest.approx((16 * N) + start * GIB)  # gradients live across micro-batches
    qwen = pf.ModelShape.from_config({"model_type": "qwen3", "vocab_size": 100, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
                                      "num_key_value_heads": 1, "head_dim": 4, "intermediate_size": 16})  # fmt: skip
    assert qwen.qk_norm and qwen.saved_per_token() == TOY.saved_per_token() + 2 * 8 + 2 * 4  # q/k norms' inputs and outputs
    with pytest.raises(ValueError, match="device"):
        pf.estimate(TOY, pf.Launch(device="tpu"))


def test_head_constants_are_the_installed_trl_kernel():
    from trl.kernels.chunked_logprob import TOKEN_CHUNK_SIZE
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

    assert (pf.HEAD_ROWS, pf.HEAD_COLS) == (TOKEN_CHUNK_SIZE, _CHUNKED_LOGPROB_CHUNK_SIZE)


def test_vllm_room_counts_max_length_sequences_per_instance():
    shape = pf.load_shape("qwen3-8b", ROOT / "src" / "antisd" / "assets" / "models")
    launch = pf.Launch(gpus=8, gpu_gib=80, vllm_gpu_memory_utilization=0.3, vllm_tensor_parallel=1, vllm_max_model_len=20480, rollouts_per_step=256)
    share, weights, kv = pf.vllm_check(shape, launch)
    room, rollouts = pf.vllm_room(shape, launch)
    assert room == int((share - weights - 1.0) // kv) == 2 and rollouts == 256 // 8


def test_published_parameter_counts():
    shipped = ROOT / "src" / "antisd" / "assets" / "models"
    sizes = {"qwen3-8b": 8.2, "qwen3-4b-instruct-2507": 4.0, "qwen3-30b-a3b": 30.5}  # the model cards' totals
    for name, billions in sizes.items():
        assert pf.load_shape(name, shipped).params() / 1e9 == pytest.approx(billions, rel=0.03), name


def _recipe(path: Path, *argv: str) -> train.TrainConfig:
    return configio.parse(train.TrainConfig, ["--config", str(path), *argv], "t", "d", extra=train.antisd_fields(), combine=train.with_settings)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_fits_8x80gb(path):
    text, bad = train.preflight(_recipe(path))
    assert bad == [], text
    assert "FITS" in text and "8×80 GiB" in text


def test_plain_ddp_for_8b_is_refused_with_the_fix(tmp_path):
    ddp = tmp_path / "ddp.yaml"
    ddp.write_text("distributed_type: MULTI_GPU\nnum_processes: 8\nmixed_precision: bf16\n")
    _, bad = train.preflight(_recipe(ROOT / "configs/recipes/qwen3-8b.yaml", "--launch_config", str(ddp)))
    assert bad and "ZeRO-3/FSDP" in bad[0] and "optimizer" in bad[0]


def test_uncapped_vllm_context_and_single_gpu_30b_weights_are_refused():
    four = _recipe(ROOT / "configs/recipes/qwen3-4b-instruct-2507.yaml", "--trl_args", "{vllm_gpu_memory_utilization: 0.3}")
    _, bad = train.preflight(four)  # no vllm_max_model_length: the native 262,144-token context
    assert any("262144-token sequence" in b for b in bad)
    moe = _recipe(ROOT / "configs/recipes/qwen3-30b-a3b.yaml", "--trl_args", "{vllm_tensor_parallel_size: 1, vllm_max_model_length: 20480}")
    _, bad = train.preflight(moe)
    assert any("vllm_tensor_parallel_size" in b for b in bad)


def test_dry_run_cli_prints_and_exits(capsys):
    assert cli.main(["train", "--config", str(ROOT / "configs/recipes/qwen3-8b.yaml"), "--dry_run", "true"]) == 0
    out = capsys.readouterr().out
    assert "Qwen/Qwen3-8B" in out and "total" in out and "FITS" in out


# --- precision -----------------------------------------------------------------------------------------------


def test_loader_keeps_fp32_master_weights_from_a_bf16_checkpoint(tmp_path):
    from tiny import make_tiny_model

    from antisd.infra.models import check_training_precision, load_model

    src = make_tiny_model(tmp_path / "tiny")
    bf16_dir = tmp_path / "bf16"
    model, tok = load_model(str(src))
    model.to(torch.bfloat16).save_pretrained(bf16_dir)
    tok.save_pretrained(bf16_dir)
    loaded, _ = load_model(str(bf16_dir))
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert check_training_precision(loaded, "bf16") == "precision: weights float32 (fp32 master weights), compute bf16 autocast"
    assert check_training_precision(loaded, "no").endswith("compute fp32")
    with pytest.raises(ValueError, match=r"trainable weights are bfloat16.*Load the model in float32.*--bf16 true"):
        check_training_precision(loaded.to(torch.bfloat16), "bf16")
    assert "DeepSpeed optimizer" in check_training_precision(loaded, "bf16", engine_keeps_fp32_master=True)
