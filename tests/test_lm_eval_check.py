"""The kit's GSM8K scoring against lm-evaluation-harness on the same model, prompts and problems.

lm-eval is not a dependency of the kit (it pulls in scikit-learn, nltk, aiohttp, sacrebleu, ...),
so this test skips where it is not installed; `pip install lm-eval` to run it (~2 min on 1 core).
"""
import json

import pytest

pytest.importorskip("lm_eval", reason="lm-eval not installed (pip install lm-eval): the cross-check needs it")


def test_kit_and_lm_eval_agree_on_100_problems(tmp_path, monkeypatch):
    import torch
    from havoc_lite.config import ModelConfig
    from havoc_lite.eval.gsm8k import ASSET_TEST
    from havoc_lite.eval.lm_eval_check import CheckArgs, compare
    from havoc_lite.model import HavocModel
    from havoc_lite.tokenizer import train_tokenizer
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = [json.loads(line)["question"] + " " + json.loads(line)["answer"] for line in open(ASSET_TEST)]
    tok = train_tokenizer(texts, tmp_path / "tok", vocab_size=600)
    torch.manual_seed(0)
    model = HavocModel(ModelConfig.from_preset("tiny", vocab_size=tok.vocab_size))
    model.save_pretrained(tmp_path / "model")
    r = compare(CheckArgs(model=str(tmp_path / "model"), tokenizer=str(tmp_path / "tok"), limit=100,
                          max_new_tokens=16, out=str(tmp_path / "out")))
    assert r["n"] == 100
    # the same prompt ids and greedy decoding give the same text on every problem
    assert r["same_text"] == 100, [p for p in r["problems"] if not p["same_text"]][:3]
    # equal accuracies, or every disagreement explained by an extraction rule, not the generation
    assert r["equal"] or r["explained"], r["disagreements"]
    for d in r["disagreements"]:
        assert d["reason"] in ("markup", "strict regex", "flexible regex", "normalisation")
