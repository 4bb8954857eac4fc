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
    cfg = ModelConfig.from_preset("7b")
    assert memory.kv_cache_bytes(cfg, 1, 4096) == 2 * 32 * 8 * 4096 * 128 * 2  # 0.5 GiB
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


def test_train_hours_is_six_n_d_over_peak_times_mfu():
    from havoc_lite.config import PRESETS
    from havoc_lite.memory import PEAK_BF16_TFLOPS, train_hours
    cfg = PRESETS["50m"]
    hours = train_hours(cfg, 1e9, "a100-40", mfu=0.5, num_gpus=2)
    assert hours == pytest.approx(6 * cfg.num_parameters() * 1e9 / (2 * 312e12 * 0.5) / 3600)
    assert PEAK_BF16_TFLOPS["a100-40"] == 312
    with pytest.raises(ValueError, match="mfu"):
        train_hours(cfg, 1e9, "a100-40", mfu=0)
