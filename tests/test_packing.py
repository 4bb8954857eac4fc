"""Packed SFT and the chunked loss: a packed example trains exactly as it would alone, the fused
head + loss equals the plain one (value and gradients), and the packed loader resumes exactly."""
import json
from pathlib import Path

import pytest
import torch

from havoc_lite import HavocModel, ModelConfig
from havoc_lite.data import PackedSFTLoader, SFTLoader, gsm8k_to_trace, trace_to_messages
from havoc_lite.loss import linear_cross_entropy, lm_loss
from havoc_lite.tokenizer import HavocTokenizer, train_tokenizer

GSM8K = Path(__file__).resolve().parents[1] / "havoc_lite" / "assets" / "gsm8k_train_500.jsonl"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok_pack")
    train_tokenizer([GSM8K], out, vocab_size=2048)
    return HavocTokenizer.load(out)


@pytest.fixture(scope="module")
def examples():
    """The smoke run's SFT data: offline calculator traces (100-300 tokens) and a few GSM8K ones."""
    from synth.offline import generate_offline
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()[:10]]
    return ([trace_to_messages(t) for t in generate_offline("arithmetic", 110, seed=0)]
            + [trace_to_messages(gsm8k_to_trace(r)) for r in rows])


def _model(vocab: int) -> HavocModel:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=vocab, d_model=64, n_layers=2, n_heads=4, num_kv_heads=2,
                      ffn_hidden_size=128, max_seq_len=512)
    return HavocModel(cfg).eval()


def test_packed_row_logits_equal_each_example_run_alone(tok, examples):
    loader = PackedSFTLoader(examples, tok, seq_len=512, batch_size=3, seed=0)
    x, y, pos = loader.next_batch()
    starts = [(b, t) for b in range(x.size(0)) for t in range(x.size(1)) if pos[b, t] == 0]
    assert len(starts) >= 2 * x.size(0)             # really packed: several examples a row
    model = _model(tok.vocab_size)
    with torch.no_grad():
        packed = model(x, positions=pos)
        checked = 0
        for b in range(x.size(0)):
            bounds = [t for t in range(x.size(1)) if pos[b, t] == 0] + [x.size(1)]
            for s, e in zip(bounds, bounds[1:]):
                alone = model(x[b:b + 1, s:e])
                torch.testing.assert_close(packed[b:b + 1, s:e], alone, rtol=1e-4, atol=1e-4)
                checked += 1
    assert checked == len(starts)
    # and the loss over a packed batch is the token-weighted loss of its examples run alone
    with torch.no_grad():
        assert torch.allclose(model(x, positions=pos, targets=y), lm_loss(packed, y), atol=1e-5)


@pytest.mark.parametrize("tied", [True, False])
def test_chunked_loss_matches_full_logits_value_and_gradients(tied):
    torch.manual_seed(1)
    cfg = ModelConfig(vocab_size=300, d_model=32, n_layers=1, n_heads=2, num_kv_heads=2,
                      ffn_hidden_size=64, max_seq_len=64, tie_embeddings=tied)
    model = HavocModel(cfg)
    x = torch.randint(0, 300, (3, 40))
    y = torch.randint(0, 300, (3, 40))
    y[0, :25] = -100
    ref = lm_loss(model(x), y)
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    got = model(x, targets=y)            # chunked, fused head + loss
    (got * 3).backward()                 # an upstream scale (grad accumulation) reaches every grad
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 3 * ref_grads[n], rtol=1e-4, atol=1e-7, msg=n)
    # chunk boundaries do not matter, and all-ignored targets give 0 (not NaN)
    h = torch.randn(50, 32)
    w = torch.randn(300, 32)
    t = torch.randint(0, 300, (50,))
    torch.testing.assert_close(linear_cross_entropy(h, w, t, chunk=7), lm_loss(h @ w.T, t))
    assert linear_cross_entropy(h, w, torch.full((50,), -100)).item() == 0.0


def test_chunked_loss_with_replaced_rows_equals_the_merged_head():
    """`rows`/`index` (trained markup rows over a frozen head): the same loss and gradients as the
    head with those rows written in, and no gradient for the replaced rows of `weight`."""
    torch.manual_seed(0)
    h = torch.randn(50, 32, requires_grad=True)
    w = torch.randn(300, 32, requires_grad=True)
    rows = torch.randn(4, 32, requires_grad=True)
    index = torch.tensor([3, 17, 250, 299])
    t = torch.randint(0, 300, (50,))
    t[:12] = -100
    t[12:16] = index                                   # the replaced rows as targets too
    got = linear_cross_entropy(h, w, t, chunk=7, rows=rows, index=index)
    got_grads = torch.autograd.grad(got, (h, w, rows))
    ref = lm_loss(h @ w.index_copy(0, index, rows).T, t)
    ref_grads = torch.autograd.grad(ref, (h, w, rows))
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    for a, b in zip(got_grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert got_grads[1][index].abs().sum() == 0 and got_grads[2].abs().sum() > 0
    with pytest.raises(ValueError, match="together"):
        linear_cross_entropy(h, w, t, rows=rows)


def test_packed_loader_fills_rows_keeps_examples_whole_and_resumes(tok, examples):
    plain = SFTLoader(examples, tok, seq_len=512, batch_size=4, seed=3)
    packed = PackedSFTLoader(examples, tok, seq_len=512, batch_size=4, seed=3, pad_to_seq_len=True)
    for _ in range(5):
        plain.next_batch()
        x, y, pos = packed.next_batch()
        assert x.shape == (4, 512)
    # rows are nearly full, and more of each step trains than with one padded example a row
    # (each batch padded only to its longest row), though prompts and tool results carry no loss
    assert packed.padding_efficiency > 0.9 > 0.7 > plain.padding_efficiency      # 0.96 vs 0.64
    assert packed.loss_token_share > 1.4 * plain.loss_token_share                 # 0.56 vs 0.36
    # every packed example is one whole rendered example: it starts with <|bos|> and ends on <|eos|>
    for b in range(4):
        bounds = [t for t in range(512) if pos[b, t] == 0]
        for s in bounds:
            if (y[b, s:] != -100).any():
                assert x[b, s].item() == tok.bos_id
    state = packed.state_dict()
    json.dumps(state)                                   # plain ints and strings
    expected = [packed.next_batch() for _ in range(4)]
    resumed = PackedSFTLoader(examples, tok, seq_len=512, batch_size=4, seed=3, pad_to_seq_len=True)
    resumed.load_state_dict(state)
    for a, b in zip(expected, (resumed.next_batch() for _ in range(4))):
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    with pytest.raises(ValueError, match="kind"):
        resumed.load_state_dict(plain.state_dict())


def test_chunked_loss_under_bf16_autocast_matches_the_plain_head():
    torch.manual_seed(0)
    h = torch.randn(64, 32, requires_grad=True)
    w = torch.randn(300, 32, requires_grad=True)
    t = torch.randint(0, 300, (64,))
    t[:10] = -100
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_cross_entropy(h, w, t, chunk=16)
    got.backward()
    got_grads = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = lm_loss(torch.nn.functional.linear(h, w), t)
    ref.backward()
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_grads[0], h.grad, rtol=0.02, atol=2e-3)   # bf16 matmuls
    torch.testing.assert_close(got_grads[1], w.grad, rtol=0.02, atol=2e-3)
    assert got_grads[1].dtype == torch.float32
    # the fp32 weight's gradient is summed over the chunks in fp32 and never rounded to bf16 on
    # its way back (it was once cast down and up again: every entry on the bf16 grid)
    on_bf16_grid = got_grads[1] == got_grads[1].bfloat16().float()
    assert on_bf16_grid.float().mean() < 0.5


def test_chunked_loss_under_fp16_autocast_keeps_small_gradients():
    # fp16's smallest normal is 6e-5: with many counted tokens, (softmax − one_hot) / n would sink
    # into its subnormals before the GradScaler's scale reached it, so fp16 divides by n at the end
    torch.manual_seed(0)
    h = torch.randn(4096, 32, requires_grad=True)
    w = (torch.randn(300, 32) * 0.1).requires_grad_()
    t = torch.randint(0, 300, (4096,))
    with torch.autocast("cpu", dtype=torch.float16):
        got = linear_cross_entropy(h, w, t, chunk=512)
    got.backward()
    got_grads = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    lm_loss(torch.nn.functional.linear(h, w), t).backward()          # fp32 reference
    torch.testing.assert_close(got_grads[1], w.grad, rtol=0.02, atol=1e-6)
    torch.testing.assert_close(got_grads[0], h.grad, rtol=0.02, atol=1e-7)
