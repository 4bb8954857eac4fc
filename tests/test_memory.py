"""Memory planner: parameter/gradient/AdamW bytes exactly against real tensors, activations against
what autograd really saves, and honest answers for big presets on small cards."""
from __future__ import annotations

import pytest
import torch

from havoc_lite import memory
from havoc_lite.config import ModelConfig
from havoc_lite.model import HavocModel, lm_loss

CFG = ModelConfig(vocab_size=512, d_model=64, n_layers=3, n_heads=4, num_kv_heads=2,
                  ffn_hidden_size=160, max_seq_len=128)


def tensor_bytes(ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


@pytest.mark.parametrize("tie", [True, False])
def test_weights_grads_and_adamw_state_bytes_are_exact(tie):
    cfg = ModelConfig(**{**CFG.to_dict(), "tie_embeddings": tie})
    model = HavocModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, cfg.vocab_size, (2, 16))
    lm_loss(model(x), x).backward()
    opt.step()
    parts = memory.plan(cfg, "sft", "a100-40", 2, 16, dtype="fp32").parts
    params = list(model.parameters())
    assert len(params) == memory.num_param_tensors(cfg)
    assert parts["weights (fp32 master)"] == tensor_bytes(params) == 4 * cfg.num_parameters()
    assert parts["gradients (fp32)"] == tensor_bytes(p.grad for p in params)
    state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    assert parts["AdamW m, v (fp32)"] == tensor_bytes(state)
    bf16 = memory.plan(cfg, "sft", "a100-40", 2, 16, dtype="bf16").parts
    assert bf16["bf16 weight copies"] == 2 * cfg.num_parameters()


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_activation_formula_matches_saved_tensors(dtype):
    torch.manual_seed(0)
    model = HavocModel(CFG)
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    B, T = 4, 64
    saved = {}

    def pack(t):
        st = t.untyped_storage()
        is_weight_copy = t.dim() == 2 and t.shape[0] != B * T  # autocast's bf16 copy of a weight
        if st.data_ptr() not in param_ptrs and not is_weight_copy and t.dim() > 0:
            saved[st.data_ptr()] = st.nbytes()
        return t

    x = torch.randint(0, CFG.vocab_size, (B, T))
    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
        lm_loss(model(x), x)
    measured = sum(saved.values())
    predicted = memory.activation_bytes(CFG, B, T, dtype) + 4 * B * T * CFG.vocab_size  # + log-softmax
    assert measured == pytest.approx(predicted, rel=0.02), (measured, predicted)


def test_seven_b_does_not_fit_a_24gb_card_and_the_planner_says_what_would():
    p = memory.plan("7b", "sft", "rtx4090-24", batch_size=1, seq_len=2048, grad_checkpointing=True)
    assert not p.fits
    fixed = p.parts["weights (fp32 master)"] + p.parts["gradients (fp32)"] + p.parts["AdamW m, v (fp32)"]
    assert fixed > 24 * memory.GiB   # 16 bytes/param: ~100 GiB
    text = p.report()
    assert "DOES NOT FIT" in text and "no batch size or checkpointing" in text and "FSDP over" in text
    fsdp_n = int(text.split("FSDP over ")[1].split()[0])
    assert memory.plan("7b", "sft", "rtx4090-24", 1, 2048, True, fsdp=fsdp_n).fits
    assert memory.plan("7b", "inference", "rtx4090-24", 1, 4096).fits     # bf16 serving fits
    assert memory.plan("50m", "pretrain", "rtx4090-24", 16, 1024).fits


def test_kv_cache_and_checkpointing_arithmetic():
    from havoc_lite.engine import KVCache
    # the planner's KV bytes == the bytes of the cache the engine really allocates (bf16), for a
    # small model on the CPU (after a forward through it) and for 7B on the meta device
    small = KVCache(CFG, 3, 40, dtype=torch.bfloat16)
    x = torch.randint(0, CFG.vocab_size, (3, 40))
    HavocModel(CFG)(x, kv_cache=small, positions=torch.arange(40).expand(3, 40))
    assert all(t.abs().sum() > 0 for t in small.k)                 # the model wrote its keys into this cache
    assert memory.kv_cache_bytes(CFG, 3, 40) == tensor_bytes(small.k + small.v)
    cfg = ModelConfig.from_preset("7b")
    big = KVCache(cfg, 1, 4096, device="meta", dtype=torch.bfloat16)
    assert memory.kv_cache_bytes(cfg, 1, 4096) == tensor_bytes(big.k + big.v) == 2 * 32 * 8 * 4096 * 128 * 2
    plain = memory.activation_bytes(cfg, 1, 4096, "bf16", grad_checkpointing=False)
    ckpt = memory.activation_bytes(cfg, 1, 4096, "bf16", grad_checkpointing=True)
    assert ckpt < plain / 5


def test_cli_and_table(capsys):
    assert memory.main(["--preset", "7b", "--gpu", "24", "--phase", "sft"]) == 1
    assert "DOES NOT FIT" in capsys.readouterr().out
    assert memory.main(["--all"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n| ") >= len(memory.PRESETS) and "7b" in out
    with pytest.raises(ValueError, match="unknown GPU"):
        memory.plan("7b", gpu="a200")


@pytest.mark.parametrize("tie", [True, False])
def test_train_hours_is_six_n_d_over_peak_times_mfu(tie):
    """The 6·N·D FLOPs behind `train_hours` against the FLOPs torch really runs for one training
    step (forward + backward, counted by `torch.utils.flop_counter`). Tied head: within 2 %
    (attention's own FLOPs are ~1 % at T=32). Untied: 6·N also counts the input embedding, which
    is a lookup, so the estimate is high by exactly 6·V·d per token (a conservative ETA)."""
    from torch.utils.flop_counter import FlopCounterMode
    from havoc_lite.memory import PEAK_BF16_TFLOPS, train_hours
    cfg = ModelConfig(**{**CFG.to_dict(), "tie_embeddings": tie})
    torch.manual_seed(0)
    model = HavocModel(cfg)
    x = torch.randint(0, cfg.vocab_size, (4, 32))
    with FlopCounterMode(display=False) as counter:
        lm_loss(model(x), x).backward()
    measured = counter.get_total_flops()
    tokens, gpus, mfu = x.numel(), 2, 0.5
    assert PEAK_BF16_TFLOPS["a100-40"] == 312      # NVIDIA A100 data sheet, dense bf16
    planned = train_hours(cfg, tokens, "a100-40", mfu=mfu, num_gpus=gpus) * 3600 * gpus * 312e12 * mfu
    lookup = 0 if tie else 6 * cfg.vocab_size * cfg.d_model * tokens
    assert measured == pytest.approx(planned - lookup, rel=0.02), (measured, planned, lookup)
    with pytest.raises(ValueError, match="mfu"):
        train_hours(cfg, 1e9, "a100-40", mfu=0)


# --- LoRA / QLoRA rows --------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(memory.PRETRAINED))
def test_adapter_count_matches_peft(name):
    """memory.lora_parameters == peft's own count on a (meta-device) model of each base's shape."""
    from peft import LoraConfig, get_peft_model
    cfg = memory.PRETRAINED[name]
    with torch.device("meta"):
        model = HavocModel(cfg)
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=list(memory.LORA_TARGETS)))
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert trainable == memory.lora_parameters(cfg, 16)
    assert total - trainable == cfg.num_parameters()
    # only the attention projections, as in the LoRA paper's GPT-3 runs
    small = memory.lora_parameters(cfg, 8, targets=("q_proj", "v_proj"))
    assert small == cfg.n_layers * 8 * (2 * cfg.d_model + cfg.n_heads * cfg.head_dim + cfg.num_kv_heads * cfg.head_dim)


@pytest.mark.parametrize("dtype,dropout", [("fp32", 0.0), ("bf16", 0.1)])
def test_lora_bytes_match_real_tensors(dtype, dropout):
    """Frozen base, adapters (with token rows), their gradients and AdamW states exactly;
    activations within 3 % of what autograd saves (adapters and dropout included)."""
    from havoc_lite.lora import apply_lora, cast_for_training
    torch.manual_seed(0)
    model = apply_lora(HavocModel(CFG), r=8, alpha=16, dropout=dropout, train_tokens=[500, 501])
    cast_for_training(model, torch.bfloat16 if dtype == "bf16" else torch.float32)
    parts = memory.plan(CFG, "sft", "a100-40", 4, 64, dtype=dtype, lora_r=8, lora_dropout=dropout,
                        new_tokens=2).parts
    frozen = [p for p in model.parameters() if not p.requires_grad]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert parts[f"frozen base ({dtype})"] == tensor_bytes(frozen)
    assert parts["adapters (fp32)"] == tensor_bytes(trainable)
    # activations: measured without the token rows (their few rows make the head save its input)
    torch.manual_seed(0)
    model = apply_lora(HavocModel(CFG), r=8, alpha=16, dropout=dropout)
    cast_for_training(model, torch.bfloat16 if dtype == "bf16" else torch.float32)
    parts = memory.plan(CFG, "sft", "a100-40", 4, 64, dtype=dtype, lora_r=8, lora_dropout=dropout).parts
    trainable = [p for p in model.parameters() if p.requires_grad]

    B, T = 4, 64
    weight_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        st = t.untyped_storage()
        is_weight_copy = t.dim() == 2 and t.shape[0] != B * T  # autocast's bf16 copy of a weight
        if st.data_ptr() not in weight_ptrs and not is_weight_copy and t.dim() > 0:
            saved[st.data_ptr()] = st.nbytes()
        return t

    x = torch.randint(0, CFG.vocab_size, (B, T))
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        loss = lm_loss(model(x), x)
    loss.backward()
    opt.step()
    assert parts["adapter gradients (fp32)"] == tensor_bytes(p.grad for p in trainable)
    state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    assert parts["adapter AdamW m, v (fp32)"] - 4 * len(trainable) <= tensor_bytes(state) <= parts["adapter AdamW m, v (fp32)"]
    predicted = parts["activations"] + 4 * B * T * CFG.vocab_size     # + the saved log-softmax
    assert sum(saved.values()) == pytest.approx(predicted, rel=0.03), (sum(saved.values()), predicted)


def test_lora_table_and_qlora_rows():
    cfg = memory.PRETRAINED["qwen2.5-1.5b"]
    lora = memory.plan("qwen2.5-1.5b", "sft", "t4-16", 1, 1024, lora_r=16)
    qlora = memory.plan("qwen2.5-1.5b", "sft", "t4-16", 1, 1024, lora_r=16, quantize="nf4")
    assert lora.parts["frozen base (bf16)"] == 2 * cfg.num_parameters()
    q = memory.target_weight_parameters(cfg)
    assert qlora.parts["frozen base, 4-bit NF4"] == pytest.approx(q * 4.127 / 8, abs=1)
    assert qlora.total < lora.total and lora.fits
    full = memory.plan("qwen2.5-1.5b", "sft", "t4-16", 1, 1024)
    assert not full.fits and "LoRA" in full.report()
    from havoc_lite.memory_tables import lora_table
    text = lora_table()
    assert "| smollm2-1.7b |" in text and "| qwen2.5-1.5b |" in text and "a100-40" in text
    with pytest.raises(ValueError, match="nf4"):
        memory.plan("smollm2-135m", quantize="nf4")


def test_planned_training_peak_within_ten_percent_of_measured_step():
    """The planner's total for one fp32 training step (chunked loss, as the Trainer runs it) stays
    within 10 % of the peak measured in a fresh process (bench.step_peak_memory: the kernel's
    peak-RSS counter over a steady-state step); the full-logits path really costs more."""
    import sys
    if not sys.platform.startswith("linux"):
        pytest.skip("the measurement reads /proc/self (Linux)")
    from havoc_lite.bench import step_peak_memory
    measured = step_peak_memory("tiny", 8, 256, "chunked")["peak_bytes"]
    planned = memory.plan("tiny", "sft", batch_size=8, seq_len=256, dtype="fp32", suggest=False).total
    assert planned == pytest.approx(measured, rel=0.10), (planned, measured)
    full = step_peak_memory("tiny", 8, 256, "full")["peak_bytes"]
    cfg = ModelConfig.from_preset("tiny")
    saved = memory.logits_bytes(cfg, 8, 256, "fp32", full_logits=True) - memory.logits_bytes(cfg, 8, 256, "fp32")
    assert full - measured == pytest.approx(saved, rel=0.15), (full - measured, saved)
