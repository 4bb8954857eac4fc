"""The before/after demo end to end, tiny: a random 2-layer model with a Qwen2-style tokenizer
stands in for SmolLM2 (the real run is `python -m havoc_lite.pretrained_demo`, ~1 h on 2 cores)."""
import json
import re

import pytest
import torch

pytest.importorskip("peft")
pytest.importorskip("transformers")
from test_hf_tokenizer import qwen_hf  # noqa: E402

from havoc_lite.config import ModelConfig  # noqa: E402
from havoc_lite.model import HavocModel  # noqa: E402
from havoc_lite import pretrained_demo  # noqa: E402


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    hf = qwen_hf()
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(hf), d_model=32, n_layers=2, n_heads=2, num_kv_heads=1, ffn_hidden_size=64,
                      max_seq_len=1024, bos_id=hf.eos_token_id, eos_id=hf.eos_token_id, pad_id=hf.pad_token_id)
    folder = tmp_path_factory.mktemp("tiny_base")
    HavocModel(cfg).save_pretrained(folder)
    hf.save_pretrained(str(folder))
    return folder


def test_quick_demo_runs_every_stage_and_writes_the_table(tiny_base, tmp_path, capsys):
    out = tmp_path / "demo"
    rc = pretrained_demo.main(["--base", str(tiny_base), "--quick", "--out-dir", str(out), "--batch-size", "4"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    for stage in ("base", "tuned"):
        assert res[stage]["heldout"]["n"] == 4 and res[stage]["validation"]["n"] == 4 and res[stage]["gsm8k"]["n"] == 2
        assert 0.0 <= res[stage]["heldout"]["flexible"] <= 1.0
        assert len((out / f"{stage}_heldout.jsonl").read_text().splitlines()) == 4
    tune = res["tune"]
    assert tune["train_data"] == "mixed" and tune["sources"]["calculator"] == 40
    assert tune["steps"] == 3 and len(tune["losses"]) == 3 and all(l == l for l in tune["losses"])
    assert tune["command"].endswith("--batch-size 4")
    # the tuned folder holds a merged model one row per token of its tokenizer (markup added) ...
    from havoc_lite.hub import load_model
    from havoc_lite.markup import MARKUP_TOKENS
    from havoc_lite.tokenizer import load_tokenizer
    tuned, tok = load_model(out / "tuned"), load_tokenizer(out / "tuned")
    assert tuned.config.vocab_size == len(tok) == len(qwen_hf()) + len(MARKUP_TOKENS)
    # ... whose markup rows were trained away from their start (the pieces' mean) ...
    init = load_model(out / "init")
    ids = [tok.token_id(t) for t in MARKUP_TOKENS]
    assert not torch.allclose(tuned.embed_tokens.weight[ids].float(), init.embed_tokens.weight[ids].float())
    # ... and whose adapters were merged (a projection differs from the base's)
    base = load_model(tiny_base)
    assert not torch.allclose(tuned.layers[0].attn.q_proj.weight.float(), base.layers[0].attn.q_proj.weight.float())
    table = (out / "table.md").read_text()
    assert re.search(r"\| held-out arithmetic \(new phrasings\) \| 4 \| [\d.]+ / [\d.]+ \| [\d.]+ / [\d.]+ \|", table)
    assert re.search(r"\| validation arithmetic \(settings chosen here\) \| 4 \| [\d.]+ / ", table)


def test_training_data_mixes_the_grammar_and_the_nine_templates_unless_asked(tiny_base):
    from synth.arith_phrasings import generate_phrasings
    from synth.offline import generate_offline
    _, tok = pretrained_demo.load_base(tiny_base)
    questions = lambda d: [m[1]["content"] for m in d["calculator"]]  # noqa: E731
    mixed = pretrained_demo.training_examples(40, 5, tok, 4096)
    varied = pretrained_demo.training_examples(30, 5, tok, 4096, train_data="phrasings")
    old = pretrained_demo.training_examples(30, 5, tok, 4096, train_data="templates")
    assert questions(mixed) == ([t["question"] for t in generate_phrasings(30)]
                                + [t["question"] for t in generate_offline("arithmetic", 10)])
    assert questions(varied) == [t["question"] for t in generate_phrasings(30)]
    assert questions(old) == [t["question"] for t in generate_offline("arithmetic", 30)]
    assert varied["gsm8k"] == old["gsm8k"] == mixed["gsm8k"] and 0 < len(varied["gsm8k"]) <= 5
    with pytest.raises(ValueError, match="--train-data"):
        pretrained_demo.training_examples(3, 1, tok, 224, train_data="heldout")


def test_gsm8k_traces_come_from_the_file_given(tiny_base, tmp_path, capsys):
    from havoc_lite.eval.gsm8k import load_gsm8k
    from synth.gsm8k import convert
    from havoc_lite.tools import default_registry
    records = load_gsm8k(pretrained_demo.Path(pretrained_demo.__file__).parent / "assets" / "gsm8k_train_500.jsonl",
                         split="train")[200:260]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n" for r in records))
    _, tok = pretrained_demo.load_base(tiny_base)
    got = pretrained_demo.training_examples(4, 1000, tok, 4096, gsm8k_train=str(path))["gsm8k"]
    bundled = pretrained_demo.training_examples(4, 1000, tok, 4096)["gsm8k"]
    # every kept trace is one of the file's problems, in order, with its calculator steps re-run
    assert [m[1]["content"] for m in got] == [t["question"] for t in convert(records, default_registry()).traces]
    assert 40 <= len(got) <= 60 and len(bundled) > 400
    # a file that is not GSM8K is refused before any model is loaded: one line naming it, exit 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    assert pretrained_demo.main(["--base", str(tmp_path / "missing.gguf"), "--stages", "tune",
                                 "--gsm8k-train", str(bad), "--out-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pretrained_demo: --gsm8k-train:") and "bad.jsonl" in err and "\n" not in err


def test_markup_rows_start_at_the_mean_of_their_pieces(tiny_base):
    model, tok = pretrained_demo.load_base(tiny_base)
    model.resize_token_embeddings(len(tok))
    pretrained_demo.init_markup_rows(model, tok)
    w = model.embed_tokens.weight
    for t in ("<tool>", "</answer>"):
        pieces = tok.encode(t)
        assert len(pieces) > 1 and torch.allclose(w[tok.token_id(t)], w[pieces].mean(0))
    assert not torch.allclose(w[tok.token_id("<tool>")], w[tok.token_id("<answer>")])


def test_bad_base_is_one_line_and_exit_2(tmp_path, capsys):
    assert pretrained_demo.main(["--base", str(tmp_path / "missing.gguf"), "--out-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pretrained_demo:") and "missing.gguf" in err and "\n" not in err
    assert pretrained_demo.main(["--stages", "base,oops", "--out-dir", str(tmp_path / "o")]) == 2
    assert pretrained_demo.main(["--sets", "heldout,train", "--out-dir", str(tmp_path / "o")]) == 2
    assert "--sets" in capsys.readouterr().err
