"""Data pipeline: shards, PretrainLoader resume/ranks/weights, SFT kinds, GSM8K traces, SFTLoader."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from havoc_lite.data import (DataError, PretrainLoader, SFTLoader, SFTMixture, gsm8k_to_trace,
                             hub_record_to_messages, load_hub_sft, load_jsonl_examples,
                             prepare_pretraining, render_trace, trace_to_messages)
from havoc_lite.tokenizer import HavocTokenizer, train_tokenizer
from havoc_lite.tools import default_registry

ASSETS = Path(__file__).resolve().parents[1] / "havoc_lite" / "assets"
GSM8K = ASSETS / "gsm8k_train_500.jsonl"


@pytest.fixture(scope="session")
def tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok_data")
    train_tokenizer([ASSETS / "tinyshakespeare_200k.txt", GSM8K], out, vocab_size=2048)
    return HavocTokenizer.load(out)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """general/: Shakespeare split into 3 .txt files; math/: GSM8K as {"text"} JSONL; code/: tiny."""
    root = tmp_path_factory.mktemp("corpus")
    text = (ASSETS / "tinyshakespeare_200k.txt").read_text()
    (root / "general").mkdir()
    for i in range(3):
        (root / "general" / f"part{i}.txt").write_text(text[i * 60000:(i + 1) * 60000])
    (root / "math").mkdir()
    with open(root / "math" / "gsm8k.jsonl", "w") as f:
        for line in GSM8K.read_text().splitlines():
            ex = json.loads(line)
            f.write(json.dumps({"text": ex["question"] + "\n" + ex["answer"]}) + "\n")
    (root / "code").mkdir()
    (root / "code" / "a.txt").write_text("def f(x):\n    return x + 1\n" * 400)
    return root


@pytest.fixture(scope="session")
def shards(tok, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    index = prepare_pretraining(corpus, tok, out, shard_tokens=20000, num_workers=0)
    return out, index


def test_shards_hold_exactly_the_tokenised_documents(tok, corpus, shards):
    out, index = shards
    assert index["complete"] and index["dtype"] == "uint16"
    assert set(index["domains"]) == {"general", "math", "code"}
    math = index["domains"]["math"]
    assert math["documents"] == 500 and len(math["shards"]) > 1
    # Concatenated shards == each record's tokens followed by <|eos|>, in file order.
    expected = []
    for line in (corpus / "math" / "gsm8k.jsonl").read_text().splitlines():
        expected += tok.encode(json.loads(line)["text"]) + [tok.eos_id]
    got = np.concatenate([np.fromfile(out / s["file"], dtype=np.uint16) for s in math["shards"]])
    assert got.tolist() == expected and math["tokens"] == len(expected)
    general = np.concatenate([np.fromfile(out / s["file"], dtype=np.uint16)
                              for s in index["domains"]["general"]["shards"]])
    assert (general == tok.eos_id).sum() == 3 == index["domains"]["general"]["documents"]
    assert tok.decode(general.tolist(), skip_special=True) == "".join(
        (corpus / "general" / f"part{i}.txt").read_text() for i in range(3))
    assert index["total_tokens"] == sum(d["tokens"] for d in index["domains"].values())
    assert json.loads((out / "index.json").read_text()) == index
    # Same tokenizer and sources: the index is reused without work.
    assert prepare_pretraining(corpus, tok, out) == index


def test_parallel_preparation_matches_serial(tok, corpus, shards, tmp_path):
    out, index = shards
    par = prepare_pretraining(corpus, tok, tmp_path, num_workers=2, block_chars=20000, shard_tokens=20000)
    for d in index["domains"]:
        a = np.concatenate([np.fromfile(out / s["file"], dtype=np.uint16) for s in index["domains"][d]["shards"]])
        b = np.concatenate([np.fromfile(tmp_path / s["file"], dtype=np.uint16) for s in par["domains"][d]["shards"]])
        assert np.array_equal(a, b), d


def test_bad_line_raises_naming_file_and_line_and_keeps_written_shards(tok, tmp_path):
    (tmp_path / "src" / "math").mkdir(parents=True)
    good = [json.dumps({"text": "one two three four " * 50})] * 40
    lines = good + ['{"text": "broken'] + good
    (tmp_path / "src" / "math" / "m.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"m\.jsonl:41: invalid JSON"):
        prepare_pretraining(tmp_path / "src", tok, tmp_path / "out", shard_tokens=500, block_chars=1)
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["complete"] is False and "m.jsonl:41" in index["error"]
    ids = np.concatenate([np.fromfile(tmp_path / "out" / s["file"], dtype=np.uint16)
                          for s in index["domains"]["math"]["shards"]])
    one = tok.encode(json.loads(good[0])["text"]) + [tok.eos_id]
    assert ids.tolist() == one * 40  # every document read before the bad line is on disk, whole

    (tmp_path / "src" / "math" / "m.jsonl").write_text('{"txt": "x"}\n')
    with pytest.raises(DataError, match=r"m\.jsonl:1: .*'text'"):
        prepare_pretraining(tmp_path / "src", tok, tmp_path / "out2")
    (tmp_path / "src" / "math" / "m.jsonl").unlink()
    (tmp_path / "src" / "math" / "latin1.txt").write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt:2: not valid UTF-8"):
        prepare_pretraining(tmp_path / "src", tok, tmp_path / "out3")
    (tmp_path / "src" / "math" / "latin1.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        prepare_pretraining(tmp_path / "src", tok, tmp_path / "out4")


def test_pretrain_loader_windows_and_resume(shards):
    out, _ = shards
    a = PretrainLoader(out, seq_len=32, batch_size=4, seed=3, domain_weights={"general": 1, "math": 1, "code": 1})
    first = [a.next_batch() for _ in range(5)]
    x, y = first[0]
    assert x.shape == y.shape == (4, 32) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])  # aligned targets
    state = torch.load(_roundtrip(a.state_dict()), weights_only=True)
    rest = [a.next_batch() for _ in range(200)]  # crosses epochs of the small "code" domain
    b = PretrainLoader(out, seq_len=32, batch_size=4, seed=3, domain_weights={"general": 1, "math": 1, "code": 1})
    b.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(rest, (b.next_batch() for _ in range(200))):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    c = PretrainLoader(out, seq_len=32, batch_size=4, seed=3, domain_weights={"general": 1, "math": 1, "code": 1})
    assert all(torch.equal(p[0], q[0]) for p, q in zip(first, (c.next_batch() for _ in range(5))))
    with pytest.raises(ValueError, match="seq_len"):
        PretrainLoader(out, seq_len=16, batch_size=4, seed=3,
                       domain_weights={"general": 1, "math": 1, "code": 1}).load_state_dict(state)


def _roundtrip(state):
    import io
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf


def _windows(loader, n):
    return {tuple(r.tolist()) for _ in range(n) for r in loader.next_batch()[0]}


def test_pretrain_loader_ranks_disjoint_and_epoch_covers(shards):
    out, index = shards
    w = {"math": 1.0}
    ranks = [PretrainLoader(out, seq_len=64, batch_size=8, domain_weights=w, seed=0, rank=r, world_size=2)
             for r in range(2)]
    per_epoch = ranks[0]._n_windows("math", 0)[-1] // 2  # windows each rank gets in epoch 0
    steps = per_epoch // 8
    seen = [_windows(r, steps) for r in ranks]
    assert len(seen[0]) == len(seen[1]) == steps * 8  # no repeats within an epoch
    assert not seen[0] & seen[1]  # ranks never share a window
    assert ranks[0].state_dict()["streams"] == ranks[1].state_dict()["streams"]


def test_pretrain_domain_weights(shards):
    out, _ = shards
    with pytest.warns(UserWarning, match=r"no data for \['stats', 'engineering'\]|no data for"):
        loader = PretrainLoader(out, seq_len=16, batch_size=64, seed=0)
    # Defaults 25/30/10 for math/general/code renormalised over the present domains.
    assert loader.weights == pytest.approx({"math": 0.25 / 0.65, "general": 0.30 / 0.65, "code": 0.10 / 0.65})
    for _ in range(20):
        loader.next_batch()
    streams = loader.state_dict()["streams"]  # [epoch, draws this epoch] per domain
    assert all(epoch == 0 for epoch, _ in streams.values())
    total = sum(draws for _, draws in streams.values())
    assert total == 20 * 64
    for d, p in loader.weights.items():
        assert abs(streams[d][1] / total - p) < 0.05, d
    with pytest.raises(DataError, match="none of the weighted domains"):
        PretrainLoader(out, seq_len=16, batch_size=2, domain_weights={"stats": 1.0})


def test_gsm8k_to_trace_matches_calculator():
    ex = json.loads(GSM8K.read_text().splitlines()[0])
    trace = gsm8k_to_trace(ex)
    assert trace["answer"] == "72"
    assert [s.get("tool_call") for s in trace["reasoning"]] == [
        {"name": "calculator", "args": {"expression": "48/2"}},
        {"name": "calculator", "args": {"expression": "48+24"}}, None]
    assert trace["reasoning"][0]["tool_result"] == {"status": "success", "result": 24}
    assert trace["reasoning"][0]["content"] == "Natalia sold 48/2 ="
    assert trace["reasoning"][2]["content"] == "72 clips altogether in April and May."
    assert trace["tool_result"] == {"status": "success", "result": 72}
    assert gsm8k_to_trace({"question": "q", "answer": "$<<12/60=0.2>>0.2\n#### 10"})["reasoning"][0][
        "tool_result"]["result"] == 0.2
    # The annotated values agree with what our calculator computes on the annotated expressions.
    reg = default_registry()
    agree = total = 0
    for line in GSM8K.read_text().splitlines()[:200]:
        for step in gsm8k_to_trace(json.loads(line))["reasoning"]:
            if "tool_call" in step:
                total += 1
                r = reg.execute("calculator", step["tool_call"]["args"])
                want = step["tool_result"]["result"]
                agree += r.status == "success" and abs(r.result - want) <= 1e-6 * max(1, abs(want))
    assert total > 500 and agree / total > 0.97
    with pytest.raises(DataError, match="####"):
        gsm8k_to_trace({"question": "q", "answer": "no final line"})


def test_render_trace_format_and_result_fallback():
    trace = {"question": "Is 2 > 1?",
             "reasoning": [{"step": 1, "content": "Compare.", "tool_call": {"name": "calculator", "args": {"expression": "2-1"}},
                            "tool_result": {"status": "error", "error": "boom"}},
                           {"step": 2, "content": "Again.", "tool_call": {"name": "calculator", "args": {"expression": "2-1"}}}],
             "tool_result": {"status": "success", "result": 1}, "answer": "yes"}
    assert render_trace(trace) == (
        '<reason>Compare.</reason><tool>{"tool": "calculator", "args": {"expression": "2-1"}}</tool>'
        '<tool_result>{"status": "error", "error": "boom"}</tool_result>'
        '<reason>Again.</reason><tool>{"tool": "calculator", "args": {"expression": "2-1"}}</tool>'
        '<tool_result>{"status": "success", "result": 1}</tool_result><answer>yes</answer>')
    msgs = trace_to_messages(trace, system="Use tools.")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    del trace["reasoning"][0]["tool_result"]
    with pytest.raises(DataError, match="step 0 calls 'calculator' but has no tool_result"):
        render_trace(trace)


def test_load_jsonl_all_kinds_and_errors(tmp_path):
    gsm = json.loads(GSM8K.read_text().splitlines()[0])
    records = [{"prompt": "p", "completion": "c"},
               {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
               {"question": "q", "reasoning": [{"step": 1, "content": "r"}], "answer": "a"},
               gsm, {"text": "plain"}]
    f = tmp_path / "mix.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    ex = load_jsonl_examples(f)
    assert ex[0] == [{"role": "user", "content": "p"}, {"role": "assistant", "content": "c"}]
    assert ex[1][1] == {"role": "assistant", "content": "yo"}
    assert ex[2][1]["content"] == "<reason>r</reason><answer>a</answer>"
    assert ex[3][0]["content"] == gsm["question"] and "<tool>" in ex[3][1]["content"]
    assert ex[4] == [{"role": "assistant", "content": "plain"}]
    f.write_text(json.dumps(records[0]) + "\n" + json.dumps({"prompt": "p"}) + "\n")
    with pytest.raises(DataError, match=r"mix\.jsonl:2: cannot tell the record kind"):
        load_jsonl_examples(f)
    with pytest.raises(DataError, match=r"mix\.jsonl:2: prompt/completion"):
        load_jsonl_examples(f, kind="prompt_completion")
    f.write_text('{"messages": [{"role": "bot", "content": "x"}]}\n')
    with pytest.raises(DataError, match=r"mix\.jsonl:1: message 0"):
        load_jsonl_examples(f)
    f.write_text("")
    with pytest.raises(DataError, match="no record"):
        load_jsonl_examples(f)


def test_hub_mappings_through_datasets_json(tmp_path):
    rows = {
        "openmathinstruct2": [{"problem": "1+1?", "generated_solution": "It is 2.", "expected_answer": "2",
                               "problem_source": "augmented_math"}],
        "slimorca": [{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                                        {"from": "gpt", "value": "Hello", "weight": 1.0}]}],
        "cot_collection": [{"source": "Q?", "rationale": "Because.", "target": "A", "task": "t", "type": "CoT"}],
        "gsm8k": [json.loads(GSM8K.read_text().splitlines()[0])],
    }
    out = {}
    for name, data in rows.items():
        f = tmp_path / f"{name}.jsonl"
        f.write_text("".join(json.dumps(r) + "\n" for r in data))
        out[name] = load_hub_sft(name, data_files=str(f), cache_dir=str(tmp_path / "hf"))
    assert out["openmathinstruct2"] == [[{"role": "user", "content": "1+1?"},
                                         {"role": "assistant", "content": "<reason>It is 2.</reason><answer>2</answer>"}]]
    assert out["slimorca"] == [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                                {"role": "assistant", "content": "Hello"}]]
    assert out["cot_collection"][0][1]["content"] == "<reason>Because.</reason><answer>A</answer>"
    assert out["gsm8k"][0][1]["content"].endswith("<answer>72</answer>")
    assert load_hub_sft("Open-Orca/SlimOrca", data_files=str(tmp_path / "slimorca.jsonl"),
                        cache_dir=str(tmp_path / "hf")) == out["slimorca"]
    with pytest.raises(DataError, match="row 0: .*'expected_answer'"):
        hub_record_to_messages("openmathinstruct2", {"problem": "x", "generated_solution": "y"}, where="row 0")
    with pytest.raises(ValueError, match="unknown hub SFT data set"):
        load_hub_sft("nope", data_files=str(tmp_path / "gsm8k.jsonl"))


def test_sft_loader_masks_padding_and_truncation(tok, caplog):
    short = [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi there"}]
    long = [{"role": "user", "content": "Go."}, {"role": "assistant", "content": "word " * 200}]
    loader = SFTLoader([short, long], tok, seq_len=48, batch_size=2, seed=0)
    with caplog.at_level("WARNING"):
        x, y = loader.next_batch()
    assert x.shape == y.shape == (2, 48)  # the long example is cut to seq_len + 1 tokens
    assert loader.num_truncated == 1 and "truncated" in caplog.text
    ids, mask = tok.render_chat(short)
    row = [b for b in range(2) if x[b, 0] == ids[0] and x[b, 2] == ids[2]][0]
    n = len(ids) - 1
    assert x[row, :n].tolist() == ids[:-1] and (x[row, n:] == tok.pad_id).all()
    assert y[row, :n].tolist() == [t if m else -100 for t, m in zip(ids[1:], mask[1:])]
    assert (y[row, n:] == -100).all()
    # Targets are exactly the assistant's tokens and its <|end|>: never the user's, pad or eos.
    assert tok.decode([t for t in y[row].tolist() if t != -100]) == "hi there<|end|>"
    assert loader.padding_efficiency == pytest.approx((n + 48) / 96)


def test_sft_loader_resume_ranks_and_mixture(tok):
    examples = load_jsonl_examples(GSM8K)[:40]
    other = [[{"role": "user", "content": f"n{i}"}, {"role": "assistant", "content": f"m{i}"}] for i in range(30)]
    mix = lambda: SFTMixture({"math": (examples, 3.0), "chat": (other, 1.0), "empty": ([], 1.0)}, seed=0)  # noqa
    with pytest.warns(UserWarning, match="empty"):
        a = SFTLoader(mix(), tok, seq_len=512, batch_size=4, seed=5)
    assert a.mixture.weights == pytest.approx({"math": 0.75, "chat": 0.25})
    for _ in range(3):
        a.next_batch()
    state = torch.load(_roundtrip(a.state_dict()), weights_only=True)
    rest = [a.next_batch() for _ in range(30)]
    with pytest.warns(UserWarning):
        b = SFTLoader(mix(), tok, seq_len=512, batch_size=4, seed=5)
    b.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(rest, (b.next_batch() for _ in range(30))):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # Two ranks over one epoch of a list: disjoint halves that cover it.
    rows = []
    for r in range(2):
        ld = SFTLoader(other, tok, seq_len=32, batch_size=5, seed=1, rank=r, world_size=2)
        rows.append({tok.decode(x[i].tolist(), skip_special=True) for _ in range(3) for x, _ in [ld.next_batch()]
                     for i in range(5)})
    assert not rows[0] & rows[1] and len(rows[0] | rows[1]) == 30


def test_train_config_sft_sources_sample_by_weight(tok, tmp_path):
    """`TrainConfig.sft_sources` + `sft_weights` feed the trainer an SFTMixture: a source with
    weight 0 never appears, and each source gives its eval_fraction to the held-out loader."""
    from havoc_lite.config import TrainConfig
    from havoc_lite.train import build_loaders
    for name, word in (("reasoning", "apple"), ("general", "zebra")):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            for i in range(40):
                f.write(json.dumps({"prompt": f"Say {word} {i}.", "completion": f"{word} {i}"}) + "\n")
    cfg = TrainConfig(phase="sft", seq_len=32, batch_size=8, eval_fraction=0.1, wandb_mode="disabled",
                      sft_sources={"reasoning": str(tmp_path / "reasoning.jsonl"),
                                   "general": str(tmp_path / "general.jsonl")},
                      sft_weights={"reasoning": 1.0, "general": 0.0})
    train, held_out = build_loaders(cfg, tok)
    text = "".join(tok.decode(x[0].tolist()) for x, *_ in (train.next_batch() for _ in range(5)))
    assert "apple" in text and "zebra" not in text
    held = "".join(tok.decode(row.tolist()) for row in held_out.next_batch()[0])
    assert "apple" in held and "zebra" in held        # 4 + 4 held out, from both sources
    with pytest.raises(ValueError, match="sft_mixture"):
        build_loaders(TrainConfig(phase="sft", sft_sources=cfg.sft_sources, wandb_mode="disabled"), tok)


# --- issue 16: length drops, huge records, hostile nesting ---------------------------------------
def _long_prompt_examples(n_long=20, n_short=5):
    long = [[{"role": "user", "content": f"Question {i}: " + "tell me more " * 60},
             {"role": "assistant", "content": "ok"}] for i in range(n_long)]
    short = [[{"role": "user", "content": f"Hi {i}."}, {"role": "assistant", "content": "hello"}]
             for i in range(n_short)]
    return long + short


def test_sft_loader_refuses_to_drop_most_examples_for_length(tok, caplog, tmp_path):
    examples = _long_prompt_examples()
    with pytest.raises(DataError, match=r"20 of 25 examples \(80%\) would be dropped.*seq_len=48.*"
                                        r"max_drop_fraction=0.2"):
        SFTLoader(examples, tok, seq_len=48, batch_size=2, seed=0)
    with caplog.at_level("WARNING"):
        loader = SFTLoader(examples, tok, seq_len=48, batch_size=2, seed=0, max_drop_fraction=0.9)
    assert loader.length_report == {"sft": {"checked": 25, "truncated": 20, "dropped": 20}}
    assert "20 of 25 examples are longer" in caplog.text and "0 truncated there" in caplog.text \
        and "20 dropped" in caplog.text
    for _ in range(10):
        loader.next_batch()
    assert loader.num_skipped > 0 and "dropped" in caplog.text
    # the TrainConfig field reaches the loader
    from havoc_lite.config import TrainConfig
    from havoc_lite.train import build_loaders
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in examples))
    kw = dict(phase="sft", train_data=str(path), seq_len=48, batch_size=2, eval_fraction=0)
    with pytest.raises(DataError, match="would be dropped"):
        build_loaders(TrainConfig(**kw), tok)
    assert build_loaders(TrainConfig(**kw, max_drop_fraction=0.9), tok)[0].max_drop_fraction == 0.9
    with pytest.raises(ValueError, match="max_drop_fraction"):
        TrainConfig(max_drop_fraction=1.5)


class CountingTokenizer:
    """Wraps a tokenizer and records the characters of content each render_chat call received."""

    def __init__(self, tok):
        self.tok, self.seen = tok, []

    def __getattr__(self, name):
        return getattr(self.tok, name)

    def render_chat(self, messages):
        self.seen.append(sum(len(m["content"]) for m in messages))
        return self.tok.render_chat(messages)


def test_sft_loader_renders_a_huge_record_only_up_to_what_it_keeps(tok):
    from havoc_lite.data import CHARS_PER_TOKEN_BOUND
    huge = [{"role": "user", "content": "Summarise."},
            {"role": "assistant", "content": "the answer is long " * 1_000_000}]     # 19 MB
    counting = CountingTokenizer(tok)
    loader = SFTLoader([huge, huge], counting, seq_len=48, batch_size=2, seed=0)
    for _ in range(5):
        x, y = loader.next_batch()
    assert max(counting.seen) <= CHARS_PER_TOKEN_BOUND * 49        # never the 19 MB
    assert loader.num_truncated == 10
    # ... and the kept tokens are those of the full rendering (reference: render it all once)
    ids, mask = tok.render_chat([huge[0], {"role": "assistant",
                                           "content": "the answer is long " * 2000}])
    assert x[0].tolist() == ids[:48]


def test_deeply_nested_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": "fine"}\n' + '{"a": ' + "[" * 200_000 + "]" * 200_000 + "}\n")
    with pytest.raises(DataError, match=r"deep.jsonl:2: JSON nested too deeply"):
        load_jsonl_examples(path)
