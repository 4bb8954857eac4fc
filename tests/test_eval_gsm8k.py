"""GSM8K loading, extraction and scoring on the real data: gold outputs score 100 %, shuffled ~0 %."""
import json
import random
from pathlib import Path

import pytest

from havoc_lite.eval import (COT_EXEMPLARS, GSM8KGrader, Sample, build_messages, build_text_prompt,
                             evaluate_gsm8k, extract_flexible, extract_gold, extract_strict, load_gsm8k)

FULL_TEST = Path("/work/shared/data/gsm8k/test.jsonl")


def _examples():
    # the full 1,319-problem test split when this box has it, else the packaged 100
    return load_gsm8k(FULL_TEST if FULL_TEST.is_file() else None)


def _canned(outputs_by_question):
    def generate_fn(prompts, seed):
        return [Sample(text=outputs_by_question[p[-1]["content"]], num_tokens=1, elapsed_s=0.01)
                for p in prompts]
    return generate_fn


def test_strict_and_flexible_extraction():
    assert extract_strict("<reason>9*2=18</reason><answer>$18 dollars</answer>") == "18"
    assert extract_strict("She makes 9 * 2 = $18.\n#### 18") == "18"
    assert extract_strict("so 5 + 4 = 9. The answer is 9.") == "9"
    assert extract_strict("the total is 10.0 apples") is None  # no mark: strict refuses
    assert extract_flexible("the total is 10.0 apples") == "10"
    assert extract_flexible("3 boxes, 1,250 pens, so $2,500.50 in all.") == "2500.5"
    assert extract_flexible("no digits") is None
    # a binary minus is not a sign (lm-eval's gsm8k-cot reads "35 - 2" as 2 too); "-5" and "-$5" are
    assert extract_flexible("A: 35 - 2") == "2" and extract_flexible("a loss of -5") == "-5"
    assert extract_flexible("it cost -$5") == "-5" and extract_flexible("it is $ 12") == "12"


def test_cot_exemplars_are_the_wei_et_al_eight_and_extract():
    assert len(COT_EXEMPLARS) == 8
    assert [a for _, _, a in COT_EXEMPLARS] == ["6", "5", "39", "8", "9", "29", "33", "8"]
    prompt = build_text_prompt("How many?", shots=8)
    assert prompt.count("Q: ") == 9 and prompt.endswith("Q: How many?\nA:")
    for q, cot, ans in COT_EXEMPLARS:
        block = f"{cot} The answer is {ans}."
        assert extract_strict(block) == ans and extract_flexible(block) == ans
    msgs = build_messages("How many?", shots=3)
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert all(extract_strict(m["content"]) == COT_EXEMPLARS[i][2]
               for i, m in enumerate(x for x in msgs if x["role"] == "assistant"))


def test_load_gsm8k_local_and_errors(tmp_path):
    rows = load_gsm8k(limit=5)
    assert len(rows) == 5 and rows[0]["gold"] == "18"  # Janet's ducks
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "#### 3"}) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        load_gsm8k(bad)
    bad.write_text(json.dumps({"question": "q", "answer": "no number here"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1"):
        load_gsm8k(bad)
    with pytest.raises(FileNotFoundError):
        load_gsm8k(tmp_path / "missing.jsonl")


def test_gold_solutions_score_100_and_shuffled_near_0(tmp_path):
    examples = _examples()
    gold = {ex["question"]: ex["answer"] for ex in examples}
    out = tmp_path / "gold.jsonl"
    s = evaluate_gsm8k(examples=examples, generate_fn=_canned(gold), batch_size=64,
                       output_jsonl=out, progress=False)
    m = s["metrics"]
    assert m["strict"]["accuracy"] == 1.0 and m["flexible"]["accuracy"] == 1.0
    lines = out.read_text().splitlines()
    assert len(lines) == len(examples)
    rec = json.loads(lines[0])
    assert rec["checks"] == {"flexible": True, "strict": True} and rec["answers"]["strict"] == "18"

    qs = [ex["question"] for ex in examples]
    answers = [ex["answer"] for ex in examples]
    random.Random(0).shuffle(answers)
    shuffled = dict(zip(qs, answers))
    m = evaluate_gsm8k(examples=examples, generate_fn=_canned(shuffled), batch_size=64,
                       progress=False)["metrics"]
    assert m["strict"]["accuracy"] < 0.05 and m["flexible"]["accuracy"] < 0.05


def test_gsm8k_grader_strict_vs_flexible():
    v = GSM8KGrader()
    ex = {"answer": "blah #### 1,000"}
    verdict = v(ex, "I think it's 1000 total")
    assert not verdict.passed and verdict.checks == {"strict": False, "flexible": True}
    assert v(ex, "<answer>1000.00</answer>").passed
    assert GSM8KGrader("flexible")(ex, "I think it's 1000 total").passed
    assert extract_gold("#### 72") == "72"
