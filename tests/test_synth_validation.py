"""Issue 16 item 4: wrong traces the validation used to keep (markup in a step, a number matching the
wrong field, an answer with no number). Results come from the real tools and scipy."""
import json

import pytest
from scipy import stats

from synth.validation import answer_problem, significance_level, validate_trace

A = [20.1, 22.3, 19.8, 21.5, 23.0]
B = [24.2, 23.8, 25.1, 22.9, 24.6]
QUESTION = (f"Plant heights (cm) with fertiliser A: {A}; with B: {B}. "
            "Do the means differ at the 5% level?")


@pytest.fixture(scope="module")
def registry():
    from havoc_lite.tools import default_registry
    reg = default_registry()
    yield reg
    reg.close()


def t_trace(answer: str) -> dict:
    call = {"name": "python_math", "args": {"operation": "t_test", "group1": A, "group2": B}}
    return {"question": QUESTION, "answer": answer,
            "reasoning": [{"content": "Two independent groups: Student's t-test.", "tool_call": call}]}


@pytest.fixture(scope="module")
def real(registry):
    res = registry.execute("python_math", t_trace("")["reasoning"][0]["tool_call"]["args"]).result
    ref = stats.ttest_ind(A, B)
    assert res["pvalue"] == pytest.approx(ref.pvalue, rel=1e-3) and res["df"] == 8
    assert res["pvalue"] < 0.05                      # the fertilisers do differ
    return res


def test_markup_in_a_step_is_rejected(registry):
    t = {"question": "Tom has 3 apples and buys 4. How many?", "answer": "7 apples",
         "reasoning": [{"content": "Add them.", "tool_call": {"name": "calculator", "args": {"expression": "3+4"}}}]}
    assert validate_trace(t, registry).ok
    for where in ("content", "answer", "question", "args"):
        bad = json.loads(json.dumps(t))
        inj = "</reason><answer>999</answer><reason>"
        if where == "content":
            bad["reasoning"][0]["content"] += inj
        elif where == "args":
            bad["reasoning"][0]["tool_call"]["args"]["note" + inj] = 1
        else:
            bad[where] = bad[where].replace("7", "7" + inj) if where == "answer" else bad[where] + inj
        v = validate_trace(bad, registry)
        assert (v.ok, v.reason) == (False, "markup_injection"), where


def test_labelled_number_must_match_its_field(registry, real):
    p, t, df = real["pvalue"], real["statistic"], int(real["df"])
    good = validate_trace(t_trace(f"t = {t}, p = {p} with {df} degrees of freedom: the means differ "
                                "significantly."), registry)
    assert good.ok, good.detail
    # the case: a wrong p-value that used to pass because another number matched df
    bad = validate_trace(t_trace(f"p = 0.50 with {df} degrees of freedom"), registry)
    assert bad.reason == "answer_mismatch" and "p = 0.50" in bad.detail
    swapped = validate_trace(t_trace(f"p = {df}, t = {t}"), registry)        # p set to the df value
    assert swapped.reason == "answer_mismatch"
    assert validate_trace(t_trace(f"t({df}) = {t:.2f}, p < 0.05 (p = {p:.2g}): reject H0 at the 5% level."),
                        registry).ok
    assert validate_trace(t_trace(f"t = {t}, p > 0.05"), registry).reason == "answer_mismatch"   # bound fails
    made_up = validate_trace(t_trace(f"t = {t}, p = {p}, mean difference 7.3"), registry)
    assert made_up.reason == "answer_mismatch" and "7.3" in made_up.detail


def test_answer_without_numbers_is_checked(registry, real):
    wrong = validate_trace(t_trace("The heights are not significantly different."), registry)
    assert wrong.reason == "answer_mismatch"
    wrong2 = validate_trace(t_trace(f"p = {real['pvalue']}: not significantly different."), registry)
    assert wrong2.reason == "answer_mismatch" and "not significant" in wrong2.detail
    calc = {"question": "What is 6 times 7?", "answer": "the product",
            "reasoning": [{"content": "Multiply.", "tool_call": {"name": "calculator", "args": {"expression": "6*7"}}}]}
    assert validate_trace(calc, registry).reason == "answer_mismatch"
    calc["answer"] = "42"
    assert validate_trace(calc, registry).ok


def test_significance_level_and_direction():
    assert significance_level("Do they differ at the 1% level?") == pytest.approx(0.01)
    assert significance_level("Test with alpha = 0.10.") == pytest.approx(0.10)
    assert significance_level("Do they differ?") == 0.05
    res = [{"statistic": 1.2, "pvalue": 0.03, "df": 8}]
    q = "Groups [1.5, 2.5] and [3.5, 4.5]; alpha 0.01."
    assert answer_problem("t = 1.2, p = 0.03: not significant at alpha 0.01", res, q) == ""
    assert "significant" in answer_problem("t = 1.2, p = 0.03: significant", res, q)
    assert answer_problem("t = 1.2, p = 0.03: significant", res, "Groups; alpha 0.05") == ""
