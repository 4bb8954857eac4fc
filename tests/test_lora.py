"""LoRA through peft: a fresh adapter changes nothing, only adapters train, merged == adapted,
adapter counts match peft's own count, QLoRA is refused on CPU with one line."""
from __future__ import annotations

import copy

import pytest
import torch

from havoc_lite.config import ModelConfig
from havoc_lite.lora import (DEFAULT_TARGETS, apply_lora, base_fingerprint, has_lora, load_lora_state_dict,
                             lora_settings, lora_state_dict, merge_lora)
from havoc_lite.model import HavocModel, lm_loss

SMALL = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, num_kv_heads=2, ffn_hidden_size=64,
             max_seq_len=64)


def small_model(seed: int = 0, **kw) -> HavocModel:
    torch.manual_seed(seed)
    return HavocModel(ModelConfig(**{**SMALL, **kw}))


def batch(seed: int = 1, B: int = 3, T: int = 12):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, SMALL["vocab_size"], (B, T), generator=g)


def train_adapters(model: HavocModel, steps: int = 5) -> None:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = batch()
    for _ in range(steps):
        loss = lm_loss(model(x)[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad()


def test_fresh_adapter_gives_the_base_logits_and_only_adapters_train():
    base = small_model()
    x = batch()
    with torch.no_grad():
        ref = base(x)
    model = apply_lora(copy.deepcopy(base), r=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        assert torch.equal(model(x), ref)                      # B = 0: bitwise the base
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    # one A and one B per targeted projection per layer
    assert len(trainable) == 2 * len(DEFAULT_TARGETS) * SMALL["n_layers"]
    # a backward fills grads on adapters only (B's grads are non-zero as A is random)
    lm_loss(model(x)[:, :-1], x[:, 1:]).backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == (n in trainable)


def test_merged_logits_equal_adapter_logits_after_training():
    model = apply_lora(small_model(), r=4, alpha=16, dropout=0.1, targets=("q_proj", "v_proj", "down_proj"))
    train_adapters(model)
    model.eval()
    x = batch(seed=5)
    with torch.no_grad():
        adapted = model(x)
        base_only = small_model()(x)
    assert not torch.allclose(adapted, base_only, atol=1e-3)  # training moved the model
    merged = merge_lora(model)
    assert not has_lora(merged) and type(merged) is HavocModel
    assert set(merged.state_dict()) == set(small_model().state_dict())
    with torch.no_grad():
        torch.testing.assert_close(merged(x), adapted, rtol=1e-5, atol=1e-5)


def test_adapter_state_dict_round_trips_and_is_checked():
    model = apply_lora(small_model(), r=4, alpha=8)
    train_adapters(model, steps=2)
    state = {k: v.clone() for k, v in lora_state_dict(model).items()}
    assert all(".lora_A.weight" in k or ".lora_B.weight" in k for k in state)
    assert state["layers.0.attn.q_proj.lora_A.weight"].shape == (4, SMALL["d_model"])
    other = apply_lora(small_model(), r=4, alpha=8)
    load_lora_state_dict(other, state)
    x = batch()
    with torch.no_grad():
        assert torch.equal(other.eval()(x), model.eval()(x))
    with pytest.raises(ValueError, match="another lora_r"):
        load_lora_state_dict(apply_lora(small_model(), r=8, alpha=8), state)
    with pytest.raises(ValueError, match="missing"):
        load_lora_state_dict(apply_lora(small_model(), r=4, targets=("q_proj", "gate_proj")), state)


def test_bad_settings_and_qlora_on_cpu_are_one_line_errors():
    with pytest.raises(ValueError, match="lora_r must be a positive int"):
        lora_settings(r=0)
    with pytest.raises(ValueError, match=r"lora_targets \['wq'\]"):
        lora_settings(targets=("q_proj", "wq"))
    with pytest.raises(ValueError, match="lora_dropout"):
        lora_settings(dropout=1.0)
    assert lora_settings(targets="v_proj,q_proj")["targets"] == ["q_proj", "v_proj"]
    if not torch.cuda.is_available():
        model = small_model()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(ValueError, match="needs a CUDA GPU") as e:
            apply_lora(model, quantize="nf4")
        assert "\n" not in str(e.value)
        assert not has_lora(model) and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_base_fingerprint_tells_bases_apart():
    assert base_fingerprint(small_model(0)) == base_fingerprint(small_model(0))
    assert base_fingerprint(small_model(0)) != base_fingerprint(small_model(1))


@pytest.mark.parametrize("tie", [True, False])
def test_new_token_rows_train_and_merge(tie):
    """Rows added for markup tokens are trained (input and output side), the rest of the embedding
    stays frozen, and the merged model (still tied when the base was) equals the adapted one."""
    base = small_model(tie_embeddings=tie)
    new = [60, 61, 62, 63]
    model = apply_lora(copy.deepcopy(base), r=4, alpha=8, dropout=0.0, train_tokens=new)
    x = batch()
    x[:, 5] = 61
    with torch.no_grad():
        assert torch.equal(model(x), base(x))                 # fresh: unchanged
    train_adapters_on(model, x)
    model.eval()
    with torch.no_grad():
        adapted = model(x)
    state = lora_state_dict(model)
    assert any("trainable_tokens_delta" in k for k in state)
    merged = merge_lora(model)
    assert (merged.lm_head.weight is merged.embed_tokens.weight) == tie
    with torch.no_grad():
        torch.testing.assert_close(merged(x), adapted, rtol=1e-5, atol=1e-5)
    old = [i for i in range(SMALL["vocab_size"]) if i not in new]
    assert torch.equal(merged.embed_tokens.weight[old], base.embed_tokens.weight[old])
    assert not torch.allclose(merged.embed_tokens.weight[new], base.embed_tokens.weight[new])
    assert not torch.allclose(merged.lm_head.weight[new], base.lm_head.weight[new])
    if not tie:
        assert torch.equal(merged.lm_head.weight[old], base.lm_head.weight[old])


@pytest.mark.parametrize("tie", [True, False])
def test_trained_token_rows_without_peft_copies_equal_peft(tie, monkeypatch):
    """With markup rows wrapped by peft, the model reads the k trained rows directly (`lora.embed`,
    `head_logits`, and the fused loss with `rows`), never peft's merged [V, d] copy. Reference: the
    same model through peft's own modules (`token_rows` switched off), logits first. Same logits,
    loss and gradients (adapters and token rows), after the rows have moved away from their start."""
    import havoc_lite.lora as lora_mod
    model = apply_lora(small_model(tie_embeddings=tie), r=4, alpha=8, dropout=0.0, train_tokens=[61, 63, 60, 62])
    x = batch()
    x[:, 5] = 61
    x[1, 7] = 63
    train_adapters_on(model, x)                       # the rows and B are no longer at their start
    y = x.clone()
    y[:, ::3] = -100
    y[0, 4] = 62                                      # a markup token as a target
    trained = [p for p in model.parameters() if p.requires_grad]

    def loss_logits_grads():
        loss = model(x, targets=y)
        grads = torch.autograd.grad(loss, trained)
        with torch.no_grad():
            logits = model(x)
        return loss.detach(), logits, grads

    ours = loss_logits_grads()
    calls = []
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer
    original = TrainableTokensLayer.get_merged_weights
    monkeypatch.setattr(TrainableTokensLayer, "get_merged_weights",
                        lambda self, *a: calls.append(1) or original(self, *a))
    assert model(x, targets=y) is not None and not calls    # our path builds no merged copy
    monkeypatch.setattr(lora_mod, "token_rows", lambda module: None)
    ref = loss_logits_grads()
    assert calls                                            # the reference went through peft's copy
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours[1], ref[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(ours[2], ref[2]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(g.abs().sum() > 0 for n, g in zip(names, ours[2]) if "trainable_tokens" in n)


def train_adapters_on(model: HavocModel, x: torch.Tensor, steps: int = 5) -> None:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        lm_loss(model(x)[:, :-1], x[:, 1:]).backward()
        opt.step()
        opt.zero_grad()


needs_cuda_bnb = pytest.mark.skipif(
    not torch.cuda.is_available() or __import__("importlib.util").util.find_spec("bitsandbytes") is None,
    reason="QLoRA needs a CUDA GPU and bitsandbytes (pip install bitsandbytes); runs in the GPU check")


@needs_cuda_bnb
def test_qlora_on_cuda_trains_saves_resumes_and_merges(tmp_path):
    """QLoRA end to end on the GPU: NF4 base close to the bf16 one, adapters learn, adapters-only
    checkpoints, resume, and merge into the unquantised base (loadable by transformers)."""
    import bitsandbytes as bnb
    from havoc_lite.config import TrainConfig
    from havoc_lite.merge import merge_run
    from havoc_lite.train import Trainer
    from test_train_loader import WindowLoader, pattern_tokens
    cfg = dict(SMALL, d_model=128, n_heads=4, num_kv_heads=2, ffn_hidden_size=256)
    torch.manual_seed(0)
    base = HavocModel(ModelConfig(**cfg))
    base.save_pretrained(tmp_path / "base")
    x = batch().cuda()
    with torch.no_grad():
        ref = copy.deepcopy(base).cuda()(x)
    q = apply_lora(copy.deepcopy(base), r=4, alpha=8, dropout=0.0, quantize="nf4").cuda()
    assert isinstance(q.layers[0].attn.q_proj.base_layer, bnb.nn.Linear4bit)
    with torch.no_grad():
        err = (q(x) - ref).abs().max().item()
    assert err < 0.1 * ref.abs().max().item(), err                 # 4-bit rounding, not garbage

    def run(**kw):
        tc = TrainConfig(phase="sft", init_from=str(tmp_path / "base"), lora_r=4, lora_alpha=8.0, quantize="nf4",
                         batch_size=4, seq_len=16, max_steps=20, warmup_steps=2, lr=1e-2, min_lr=1e-3,
                         save_every=10, eval_every=0, out_dir=str(tmp_path / "run"), wandb_mode="disabled",
                         progress=False, device="cuda", **kw)
        t = Trainer(tc, train_loader=WindowLoader(pattern_tokens(4000), 16, 4, seed=1))
        return t, t.train()
    t, first = run(stop_at_step=10)
    assert first["loss"][-1] < first["loss"][0]
    saved = load_file_keys(tmp_path / "run/step_000010/model.safetensors")
    assert saved and all("lora_" in k for k in saved)
    t2, second = run()
    assert t2.resumed_from.name == "step_000010" and second["final_step"] == 20
    out = merge_run(tmp_path / "run", tmp_path / "merged")
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.isfinite(hf(batch()).logits).all()


def load_file_keys(path) -> list[str]:
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        return list(f.keys())
