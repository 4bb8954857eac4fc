"""HavocModel: shapes, causality, KV-cache equivalence, GQA, loss, save/load, presets, learning."""
import pytest
import torch

from havoc_lite.config import PRESETS, ModelConfig
from havoc_lite.engine import KVCache
from havoc_lite.model import HavocModel, lm_loss


def small_cfg(**kw):
    base = dict(vocab_size=97, d_model=64, n_layers=2, n_heads=4, num_kv_heads=2,
                ffn_hidden_size=96, max_seq_len=64)
    base.update(kw)
    return ModelConfig(**base)


def build(seed=0, **kw):
    torch.manual_seed(seed)
    return HavocModel(small_cfg(**kw)).eval()


def test_forward_shapes_and_dtype():
    m = build()
    x = torch.randint(0, 97, (3, 11))
    logits = m(x)
    assert logits.shape == (3, 11, 97)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_causality_future_tokens_never_change_earlier_logits():
    m = build()
    x = torch.randint(0, 97, (2, 20))
    base = m(x)
    for t in (0, 7, 19):
        y = x.clone()
        y[:, t] = (y[:, t] + 1) % 97
        out = m(y)
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=0)
        assert not torch.allclose(out[:, t], base[:, t])


@pytest.mark.parametrize("kv", [1, 2, 4])
def test_kv_cache_decode_equals_full_forward_unequal_prompts(kv):
    """Prefill right-padded prompts of unequal length, then decode one token a step; the logits
    at every real position equal a plain forward of each row's own sequence (1e-5)."""
    m = build(num_kv_heads=kv)
    torch.manual_seed(1)
    lengths, total = [3, 9, 5], 20
    seqs = [torch.randint(0, 97, (total,)) for _ in lengths]
    full = [m(s[None])[0] for s in seqs]
    cache = KVCache(m.config, len(lengths), total, dtype=torch.float32)
    P = max(lengths)
    ids = torch.stack([torch.cat([s[:n], torch.full((P - n,), 2)]) for s, n in zip(seqs, lengths)])
    pos = torch.stack([torch.clamp(torch.arange(P) + 0, max=total - 1) for _ in lengths])
    # padded slots sit beyond each row's prompt (overwritten later)
    logits = m(ids, positions=pos, kv_cache=cache)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(logits[b, :n], full[b][:n], rtol=0, atol=1e-5)
    cur = list(lengths)
    while min(cur) < total:
        live = [b for b in range(len(lengths)) if cur[b] < total]
        tok = torch.stack([seqs[b][min(cur[b], total - 1)] for b in range(len(lengths))])[:, None]
        p = torch.tensor([[min(c, total - 1)] for c in cur])
        out = m(tok, positions=p, kv_cache=cache)
        for b in live:
            torch.testing.assert_close(out[b, 0], full[b][cur[b]], rtol=0, atol=1e-5)
            cur[b] += 1


def test_lm_loss_ignores_minus_100():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    targets[0, 1] = targets[1, 4] = -100
    keep = targets != -100
    expected = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(lm_loss(logits, targets), expected)
    # changing the logits at an ignored position changes nothing
    logits2 = logits.clone()
    logits2[0, 1] += 100.0
    torch.testing.assert_close(lm_loss(logits2, targets), expected)
    assert lm_loss(logits, torch.full((2, 5), -100)).item() == 0.0


def test_model_loss_is_hf_shifted():
    m = build()
    x = torch.randint(0, 97, (2, 12))
    labels = x.clone()
    labels[:, :4] = -100
    logits = m(x)
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 97), labels[:, 1:].reshape(-1),
                                            ignore_index=-100)
    torch.testing.assert_close(m.loss(x, labels), ref)


@pytest.mark.parametrize("kv", [1, 2, 4])
def test_gqa_matches_explicit_head_repeat(kv):
    """GQA equals multi-head attention whose K/V heads are the shared heads repeated."""
    m = build(num_kv_heads=kv)
    x = torch.randint(0, 97, (2, 10))
    mha = build(num_kv_heads=4)
    state = m.state_dict()
    rep, hd = 4 // kv, m.config.head_dim
    for i in range(m.config.n_layers):
        for name in ("k_proj", "v_proj"):
            w = state[f"layers.{i}.attn.{name}.weight"].view(kv, hd, -1)
            state[f"layers.{i}.attn.{name}.weight"] = w.repeat_interleave(rep, 0).reshape(4 * hd, -1)
    mha.load_state_dict(state)
    torch.testing.assert_close(m(x), mha(x), rtol=0, atol=1e-5)
    assert sum(p.numel() for p in m.parameters()) == m.config.num_parameters()


def test_save_load_round_trip_bit_exact(tmp_path):
    for tie in (True, False):
        m = build(tie_embeddings=tie)
        m.save_pretrained(tmp_path / str(tie))
        m2 = HavocModel.from_pretrained(tmp_path / str(tie)).eval()
        assert m2.config == m.config
        for (k, a), (k2, b) in zip(m.state_dict().items(), m2.state_dict().items()):
            assert k == k2 and torch.equal(a, b), k
        x = torch.randint(0, 97, (2, 9))
        assert torch.equal(m(x), m2(x))
        assert (m2.lm_head.weight is m2.embed_tokens.weight) == tie


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_parameter_count_of_every_preset(name):
    cfg = ModelConfig.from_preset(name)
    with torch.device("meta"):
        m = HavocModel(cfg)
    assert m.num_parameters() == cfg.num_parameters()
    assert sum(p.numel() for p in m.parameters()) == cfg.num_parameters()


def test_parameter_count_matches_published_llama2():
    """Llama-2-7B / 13B shapes (MHA, 32k vocab, untied head) give Meta's published counts
    (6,738,415,616 and 13,015,864,320: HF model cards / `num_parameters()` of the checkpoints)."""
    llama7 = ModelConfig(vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, num_kv_heads=32,
                         ffn_hidden_size=11008, tie_embeddings=False)
    llama13 = ModelConfig(vocab_size=32000, d_model=5120, n_layers=40, n_heads=40, num_kv_heads=40,
                          ffn_hidden_size=13824, tie_embeddings=False)
    assert llama7.num_parameters() == 6_738_415_616
    assert llama13.num_parameters() == 13_015_864_320


def test_bad_inputs_raise_value_error():
    m = build()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m(torch.tensor([[1, 2, 97]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="max_seq_len"):
        m(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="max_seq_len"):
        cache = KVCache(m.config, 1, 64)
        m(torch.zeros(1, 1, dtype=torch.long), positions=torch.tensor([[64]]), kv_cache=cache)
    with pytest.raises(ValueError, match="num_kv_heads"):
        small_cfg(n_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="positions"):
        m(torch.zeros(1, 1, dtype=torch.long), kv_cache=KVCache(m.config, 1, 8))


def test_tiny_model_overfits_four_sequences():
    """A tiny model memorises 4 fixed random sequences: loss < 0.1 within 300 AdamW steps."""
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", vocab_size=64, max_seq_len=32)
    m = HavocModel(cfg)
    data = torch.randint(3, 64, (4, 32))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.0)
    loss = None
    for step in range(300):
        loss = m.loss(data, data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if loss.item() < 0.1:
            break
    assert loss.item() < 0.1, f"loss {loss.item():.3f} after {step + 1} steps"


@pytest.mark.parametrize("tie", [True, False])
def test_resize_token_embeddings_mean_rows_and_unchanged_logits(tmp_path, tie):
    """Growing the vocab keeps old rows, sets new rows (embedding, and head when untied) to the
    mean of the old rows, keeps a tied head tied, and leaves logits of old ids unchanged."""
    m = build(tie_embeddings=tie)
    x = torch.randint(0, 97, (2, 9))
    before = m(x)
    emb0, head0 = m.embed_tokens.weight.detach().clone(), m.lm_head.weight.detach().clone()
    assert m.resize_token_embeddings(105) is m
    assert m.config.vocab_size == 105
    assert m.embed_tokens.weight.shape == (105, 64) and m.lm_head.weight.shape == (105, 64)
    assert torch.equal(m.embed_tokens.weight[:97], emb0)
    torch.testing.assert_close(m.embed_tokens.weight[97:], emb0.mean(0).expand(8, -1))
    assert (m.lm_head.weight is m.embed_tokens.weight) == tie
    if not tie:
        torch.testing.assert_close(m.lm_head.weight[97:], head0.mean(0).expand(8, -1))
        assert torch.equal(m.lm_head.weight[:97], head0)
    after = m(x)
    assert after.shape == (2, 9, 105)
    torch.testing.assert_close(after[..., :97], before, rtol=0, atol=0)
    m(torch.tensor([[100, 104]]))                       # new ids are now valid input
    # a gradient step reaches the new rows, and the resized model round-trips through disk
    m.train()
    m.loss(torch.tensor([[1, 100, 104, 3]]), torch.tensor([[1, 100, 104, 3]])).backward()
    assert m.embed_tokens.weight.grad[100].abs().sum() > 0
    m.eval().save_pretrained(tmp_path)
    m2 = HavocModel.from_pretrained(tmp_path)
    assert m2.config.vocab_size == 105 and torch.equal(m2(x), m(x))
    # shrinking drops the tail; cutting off a special id is refused
    m.resize_token_embeddings(90)
    assert m.embed_tokens.weight.shape == (90, 64) and m.lm_head.weight.shape == (90, 64)
    with pytest.raises(ValueError, match="pad_id"):
        m.resize_token_embeddings(2)
    m.to(torch.bfloat16).resize_token_embeddings(99)    # keeps the dtype (and device)
    assert m.embed_tokens.weight.dtype == m.lm_head.weight.dtype == torch.bfloat16
    assert (m.lm_head.weight is m.embed_tokens.weight) == tie


def test_old_config_json_without_new_fields_loads(tmp_path):
    """A config.json written before attention_bias / rope_scaling existed still loads."""
    import json
    m = build()
    m.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    for k in ("attention_bias", "rope_scaling"):
        data.pop(k)
    (tmp_path / "config.json").write_text(json.dumps(data))
    m2 = HavocModel.from_pretrained(tmp_path)
    assert not m2.config.attention_bias and m2.config.rope_scaling is None
    x = torch.randint(0, 97, (1, 5))
    assert torch.equal(m2(x), m(x))


def test_attention_bias_parameters_and_count():
    m = build(attention_bias=True)
    assert m.layers[0].attn.q_proj.bias.shape == (64,) and m.layers[0].attn.k_proj.bias.shape == (32,)
    assert m.layers[0].attn.o_proj.bias is None
    assert sum(p.numel() for p in m.parameters()) == m.config.num_parameters()
    with pytest.raises(ValueError, match="rope_scaling type 'yarn'"):
        small_cfg(rope_scaling={"rope_type": "yarn", "factor": 4.0})
    with pytest.raises(ValueError, match="lacks"):
        small_cfg(rope_scaling={"rope_type": "llama3", "factor": 8.0})


def test_engine_decode_reads_nothing_back_and_bad_ids_are_caught_at_entry(monkeypatch):
    """The engine tells the model the attended length on the host (`KVCache.filled`), so a decode
    step never reads `positions` back from the device (the per-step stall on a GPU); the tokens
    equal those of the fallback path, which computes it with `aminmax`. An out-of-vocab id is
    refused where it enters: the engine's prompt check, with a clear message."""
    from havoc_lite.engine import generate
    m = build(seed=3, initializer_range=0.5)
    prompts = [[5, 9, 13], [7, 1, 2, 3, 4, 60]]
    ref = [g.tokens for g in generate(m, prompts, max_new_tokens=10)]
    calls = []
    real = torch.aminmax
    monkeypatch.setattr(torch, "aminmax", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert [g.tokens for g in generate(m, prompts, max_new_tokens=10)] == ref
    assert calls == []
    cache = KVCache(m.config, 1, 8)                 # a caller that sets nothing: one aminmax
    m(torch.tensor([[1, 2]]), positions=torch.tensor([[0, 1]]), kv_cache=cache)
    assert len(calls) == 1
    with pytest.raises(ValueError, match=r"prompt 1 has token id 97 outside the vocabulary \[0, 97\)"):
        generate(m, [[1, 2], [3, 97]], max_new_tokens=2)


def test_neftune_noise_equals_hugging_face_hook_and_only_in_training():
    """NEFTune (arXiv:2310.05914) against transformers' own hook on the embedding: the first
    block receives the same noisy embeddings from the same RNG state."""
    from transformers.integrations.neftune import neftune_post_forward_hook
    m = build()
    x = torch.randint(0, 97, (3, 11))
    seen = []
    m.layers[0].register_forward_hook(lambda mod, args, out: seen.append(args[0].detach()))
    m.train()
    m(x)                                              # alpha 0: no noise
    assert torch.equal(seen[-1], m.embed_tokens(x))
    m.neftune_noise_alpha = 5.0
    torch.manual_seed(3)
    m(x)
    m.embed_tokens.neftune_noise_alpha = 5.0
    torch.manual_seed(3)
    ref = neftune_post_forward_hook(m.embed_tokens, (x,), m.embed_tokens(x))
    assert torch.allclose(seen[-1], ref, atol=1e-6, rtol=0) and not torch.equal(seen[-1], m.embed_tokens(x))
    noise = (seen[-1] - m.embed_tokens(x)).abs().max().item()
    assert 0.5 * 5.0 / (11 * 64) ** 0.5 < noise <= 5.0 / (11 * 64) ** 0.5 + 1e-6
    m.eval()                                          # evaluation and generation: never noisy
    m(x)
    assert torch.equal(seen[-1], m.embed_tokens(x))
