"""Offline generators, the validation rules and the GSM8K converter (no network)."""
import ast
import json
import operator
import random

import pytest
from scipy import stats

from synth.gsm8k import classify, convert, read_jsonl
from synth.offline import generate_offline
from synth.validation import answer_agrees, question_key, validate_trace


@pytest.fixture(scope="module")
def registry():
    from havoc_lite.tools import default_registry
    reg = default_registry()
    yield reg
    reg.close()


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.Mod: operator.mod, ast.FloorDiv: operator.floordiv}


def py_eval(expr: str):
    """Reference arithmetic for the templates' + - * / expressions (independent of the calculator)."""
    def ev(n):
        if isinstance(n, ast.BinOp):
            return _OPS[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp):
            return -ev(n.operand) if isinstance(n.op, ast.USub) else ev(n.operand)
        return n.value
    return ev(ast.parse(expr, mode="eval").body)


def test_arithmetic_reproducible_correct_and_revalidates(registry):
    a = generate_offline("arithmetic", 300, seed=3, registry=registry)
    assert a == generate_offline("arithmetic", 300, seed=3, registry=registry)
    assert a != generate_offline("arithmetic", 300, seed=4, registry=registry)
    assert len({t["id"] for t in a}) == len({question_key(t["question"]) for t in a}) == 300
    steps = {1: 0, 2: 0, 3: 0}
    for t in a:
        steps[len(t["reasoning"])] += 1
        prev = None
        for st in t["reasoning"]:
            expr = st["tool_call"]["args"]["expression"]
            value = py_eval(expr)
            assert st["tool_result"]["result"] == value          # the calculator's number is right
            if prev is not None:
                assert str(prev) in expr                           # the chain uses the real result
            prev = value
        assert t["answer"] == str(int(prev))
        v = validate_trace(t, registry)
        assert v.ok and v.trace == t and v.corrected == 0
    assert steps[1] > 100 and steps[2] > 30 and steps[3] > 5     # mostly short, a few longer


def test_train_test_disjoint_by_construction(registry):
    train = generate_offline("arithmetic", 400, seed=0, split="train", registry=registry)
    test = generate_offline("arithmetic", 100, seed=0, split="test", registry=registry)
    test_other_seed = generate_offline("arithmetic", 100, seed=7, split="test", registry=registry)
    k = lambda ts: {question_key(t["question"]) for t in ts}  # noqa: E731
    assert not k(train) & k(test) and not k(train) & k(test_other_seed)
    assert all(t["split"] == "test" for t in test)


def test_stats_traces_match_scipy(registry):
    traces = generate_offline("stats_tests", 40, seed=1, registry=registry)
    checked = 0
    for t in traces:
        assert validate_trace(t, registry).ok
        call = t["reasoning"][0]["tool_call"]["args"]
        res = t["reasoning"][0]["tool_result"]["result"]
        if call["operation"] == "t_test" and not call.get("paired"):
            ref = stats.ttest_ind(call["group1"], call["group2"], equal_var=call.get("equal_var", True))
            assert res["pvalue"] == pytest.approx(ref.pvalue, rel=1e-3)
            assert str(res["pvalue"]) in t["answer"]
            checked += 1
        elif call["operation"] == "anova":
            assert res["pvalue"] == pytest.approx(stats.f_oneway(*call["groups"]).pvalue, rel=1e-3)
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize("topic,n", [("algebra_calculus", 12), ("doe", 12), ("retrieval", 8)])
def test_other_topics_revalidate(registry, topic, n):
    traces = generate_offline(topic, n, seed=0, registry=registry)
    assert len(traces) == n and all(validate_trace(t, registry).ok for t in traces)
    tool = {"algebra_calculus": "symbolic_math", "doe": "dsl_executor", "retrieval": "rag"}[topic]
    assert all(st["tool_call"]["name"] == tool for t in traces for st in t["reasoning"])


def test_validation_rejections(registry):
    t = generate_offline("arithmetic", 40, seed=5, registry=registry)
    two = next(x for x in t if len(x["reasoning"]) == 2)
    one = next(x for x in t if len(x["reasoning"]) == 1)
    real = one["tool_result"]["result"]

    bad = json.loads(json.dumps(one)); bad["answer"] = str(real + 3)
    assert validate_trace(bad, registry).reason == "answer_mismatch"
    fixed = json.loads(json.dumps(one)); fixed["reasoning"][0]["tool_result"] = {"status": "success", "result": real + 3}
    v = validate_trace(fixed, registry)
    assert v.ok and v.corrected == 1 and v.trace["tool_result"]["result"] == real
    mid = json.loads(json.dumps(two)); mid["reasoning"][0]["tool_result"]["result"] += 1
    assert validate_trace(mid, registry).reason == "intermediate_mismatch"
    err = json.loads(json.dumps(one)); err["reasoning"][0]["tool_call"]["args"] = {"expression": "1/0"}
    assert validate_trace(err, registry).reason == "tool_error"
    none = {"question": "q?", "reasoning": [{"content": "think"}], "answer": "4"}
    assert validate_trace(none, registry).reason == "no_tool_call"
    for broken in ([], {"question": "q"}, {"question": "q", "answer": "1", "reasoning": [{"content": 3}]},
                   {**one, "reasoning": [{"content": "x", "tool_call": {"name": "rm_rf", "args": {}}}]}):
        assert validate_trace(broken, registry).reason == "malformed"


def test_number_agreement_rules():
    assert answer_agrees("p = 0.035, so reject", {"statistic": -2.3, "pvalue": 0.03466})   # rounded
    assert answer_agrees("34.7% of the time", {"share": 0.3466})                            # percent
    assert not answer_agrees("p = 0.04", {"pvalue": 0.03466})
    assert not answer_agrees("0", 0.3) and not answer_agrees("20", 19)
    assert answer_agrees("The derivative is 2*x + 3", {"result": "2*x + 3"})
    assert answer_agrees("no numbers here", 5)
    assert question_key("Tom has 12 apples!  How many?") == question_key("tom has 12 apples. how many")
    assert question_key("Tom has 12 apples") != question_key("Tom has 1.2 apples")


def test_gsm8k_classify_and_convert(registry):
    assert classify("48/2", "24", registry) == ("equal", 24)
    assert classify("10/3", "3.33", registry)[0] == "equal_rounded"
    assert classify("5*4", "25", registry) == ("disagree", 20)
    assert classify("3/4", "3/4", registry)[0] == "unparseable"
    assert classify("2 apples + 3", "5", registry)[0] == "unparseable"
    records = [
        {"question": "Q1", "answer": "48/2 = <<48/2=24>>24\n48+24 = <<48+24=72>>72\n#### 72"},
        {"question": "Q2", "answer": "5*4 = <<5*4=25>>25\n25+1 = <<25+1=26>>26\n#### 26"},   # wrong early
        {"question": "Q3", "answer": "2+2 = <<2+2=5>>5\n#### 5"},                             # wrong last
        {"question": "Q4", "answer": "no hashes"},
    ]
    res = convert(records, registry, source="t")
    a = res.report["annotations"]
    assert (a["total"], a["equal"], a["disagree"]) == (5, 3, 2)
    assert [t["id"] for t in res.traces] == ["t-00001", "t-00003"]
    assert res.traces[1]["tool_result"]["result"] == 4          # the real value replaced the wrong 5
    assert res.report["validation"]["rejected"]["intermediate_mismatch"] == 1
    assert res.report["bad_records"] == 1 and "t line 4" in res.report["bad_record_examples"][0]


def test_gsm8k_asset_counts_match_python_reference(registry):
    from pathlib import Path

    import havoc_lite
    path = Path(havoc_lite.__file__).parent / "assets" / "gsm8k_train_500.jsonl"
    rows = read_jsonl(path)[:150]
    res = convert(rows, registry, source="gsm8k")
    import re
    ref_total = ref_equal = 0
    for r in rows:
        for expr, val in re.findall(r"<<([^<>]*?)=([^<>]*)>>", r["answer"]):
            ref_total += 1
            ref_equal += abs(py_eval(expr) - float(val)) <= 1e-9 * max(1, abs(float(val)))
    assert res.report["annotations"]["total"] == ref_total
    assert res.report["annotations"]["equal"] == ref_equal
    assert res.report["written"] == len(rows)
    for t in random.Random(0).sample(res.traces, 20):       # each call's result is the real value
        for st in t["reasoning"]:
            if "tool_call" in st:
                assert st["tool_result"]["result"] == pytest.approx(py_eval(st["tool_call"]["args"]["expression"]))


# --- held-out phrasings -----------------------------------------------------------------------
def _skeleton(question: str, words) -> str:
    """The sentence with numbers and the given names/items replaced by placeholders."""
    import re
    s = re.sub(r"-?\d+", "N", question)
    for w in sorted(words, key=len, reverse=True):
        s = s.replace(w, "X")
    return s


def test_heldout_phrasings_share_no_sentence_shape_with_training_and_validate():
    from havoc_lite.eval.arith_heldout import NUM_KINDS, PEOPLE
    from havoc_lite.tools import default_registry
    from synth.offline import ITEMS, NAMES
    from synth.validation import validate_trace
    words = list(NAMES) + list(ITEMS) + list(PEOPLE)
    train = generate_offline("arithmetic", 600, seed=0)
    held = generate_offline("arithmetic", 200, seed=0, split="test", phrasing="heldout")
    assert held == generate_offline("arithmetic", 200, seed=0, split="test", phrasing="heldout")
    train_shapes = {_skeleton(t["question"], words) for t in train}
    held_shapes = {_skeleton(t["question"], words) for t in held}
    assert len(train_shapes) >= 9 and len(held_shapes) >= NUM_KINDS and not (train_shapes & held_shapes)
    registry = default_registry()
    for t in held:
        assert t["phrasing"] == "heldout" and t["id"].startswith("offline-arithmetic-heldout-s0-")
        assert validate_trace(t, registry).ok
        # numbers in the training templates' range, so phrasing is the only difference
        calls = [s["tool_call"]["args"]["expression"] for s in t["reasoning"]]
        assert calls and float(t["answer"]) == registry.execute("calculator", {"expression": calls[-1]}).result
        assert max(abs(int(x)) for x in __import__("re").findall(r"\d+", t["question"])) <= 400


def test_heldout_phrasing_is_refused_where_it_means_nothing():
    with pytest.raises(ValueError, match="use --split test"):
        generate_offline("arithmetic", 5, phrasing="heldout")
    with pytest.raises(ValueError, match="no held-out templates for topic 'doe'"):
        generate_offline("doe", 5, split="test", phrasing="heldout")


# --- PRIME sections taught by data ----------------------------------------------------------------
def test_trap_traces_carry_checked_prime_sections():
    """Each trace: a first attempt (a real call) that falls into the trap, an <attack> naming its
    result, a recomputation, and an answer that is not the attacked number; all re-executed."""
    from havoc_lite.data import render_trace
    from havoc_lite.tools import default_registry
    registry = default_registry()
    traces = generate_offline("arithmetic_traps", 60, seed=0)
    for t in traces:
        text = render_trace(t)
        for tag in ("advocate", "attack", "pragmatist", "verify"):
            assert text.count(f"<{tag}>") == 1 and text.index("<attack>") > text.index("<tool_result>")
        first = t["reasoning"][0]["tool_result"]["result"]
        attack = next(s for s in t["reasoning"] if s.get("role") == "attack")
        assert str(first) in attack["content"] and float(t["answer"]) != float(first)
        assert validate_trace(t, registry).ok


def test_validation_rejects_an_attack_that_checks_nothing():
    import copy
    from havoc_lite.tools import default_registry
    registry = default_registry()
    t = generate_offline("arithmetic_traps", 1, seed=1)[0]
    first = t["reasoning"][0]["tool_result"]["result"]
    vague = copy.deepcopy(t)
    next(s for s in vague["reasoning"] if s.get("role") == "attack")["content"] = "Something is off here."
    assert validate_trace(vague, registry).reason == "unchecked_attack"
    unfixed = copy.deepcopy(t)       # the answer keeps the result the attack called wrong
    unfixed["reasoning"] = [s for s in unfixed["reasoning"] if s.get("role") not in ("pragmatist", "verify")]
    unfixed["answer"] = str(first)
    assert validate_trace(unfixed, registry).reason == "unchecked_attack"
    bad_role = copy.deepcopy(t)
    bad_role["reasoning"][1]["role"] = "critic"
    assert validate_trace(bad_role, registry).reason == "malformed"


def test_claude_topic_for_prime_sections_asks_for_roles_and_validates_like_offline():
    """The Claude topic lets a step name its section; a trace written to it goes through the same
    checks (tool calls re-executed, the attack checked) as the offline traps."""
    from havoc_lite.tools import default_registry
    from synth.generate import load_topic, trace_schema
    spec = load_topic("arithmetic_traps")
    assert spec.roles and spec.tool == "calculator"
    item = trace_schema(spec.tool, spec.roles)["properties"]["reasoning"]["items"]["properties"]
    assert item["role"]["enum"] == ["advocate", "attack", "pragmatist", "verify"]
    assert "role" not in trace_schema("calculator")["properties"]["reasoning"]["items"]["properties"]
    claude_like = {"question": "A tap fills 12 litres every 30 minutes. How many litres in 3 hours?",
                   "reasoning": [
                       {"content": "3 hours times 12 litres.", "tool_call": {"name": "calculator", "args": {"expression": "3*12"}},
                        "tool_result": {"status": "success", "result": 36}},
                       {"role": "advocate", "content": "The first attempt multiplies 3 by 12 and gets 36."},
                       {"role": "attack", "content": "36 is wrong: 12 litres is per 30 minutes, so there are 6 periods."},
                       {"role": "pragmatist", "content": "6 half-hours times 12 litres.",
                        "tool_call": {"name": "calculator", "args": {"expression": "6*12"}}},
                       {"role": "verify", "content": "72 litres is twice 36, as half-hours are twice as many as hours."}],
                   "answer": "72 litres"}
    assert validate_trace(claude_like, default_registry()).ok
