"""Markup parsing, PRIME's checks on planted errors, and roles."""
import json

import pytest

from havoc_lite.markup import parse
from havoc_lite.prime import ReasoningBudget, extract_roles, run_checks, system_prompt
from havoc_lite.prime.router import BUDGET_SECTIONS
from havoc_lite.tools import default_registry, format_call


@pytest.fixture(scope="module")
def tools():
    # these tests are about the checks, not time limits: a loaded machine must not turn a slow
    # scipy call into a missing result (the limits have their own tests in test_tools_*.py)
    return default_registry(timeout_s=60.0)


QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many "
            "clips in May. How many clips did Natalia sell altogether in April and May?")


def call(name, args, result_json=None, tools=None):
    """<tool>…</tool><tool_result>…</tool_result> with the REAL result unless one is given."""
    body = format_call(name, args)
    if result_json is None:
        result_json = tools.execute(name, args).to_json()
    return f"<tool>{body}</tool><tool_result>{result_json}</tool_result>"


def good_text(tools, answer="72"):
    return ("<reason>April is 48; May is half of that.</reason>"
            + call("calculator", {"expression": "48/2"}, tools=tools)
            + "<reason>Add April and May.</reason>"
            + call("calculator", {"expression": "48 + 24"}, tools=tools)
            + f"<answer>{answer}</answer><|end|>")


def failed(v):
    return set(v.failed)


# --- markup -----------------------------------------------------------------------------------
def test_parse_clean_text_and_pair_calls(tools):
    p = parse(good_text(tools))
    assert p.problems == [] and p.outside == ""
    assert p.tags == ["reason", "tool", "tool_result", "reason", "tool", "tool_result", "answer"]
    assert p.answer == "72"
    assert [(c.name, c.args, c.result) for c in p.tool_calls] == [
        ("calculator", {"expression": "48/2"}, {"status": "success", "result": 24}),
        ("calculator", {"expression": "48 + 24"}, {"status": "success", "result": 72})]


def test_parse_messy_text_records_problems_without_raising():
    messy = ("Sure! <reason>first idea <tool>{\"tool\": \"calculator\", \"args\": {\"expression\": "
             "\"2+2\"}}</tool><tool_result>{\"status\": \"success\", \"result\": 4}</tool_result>"
             "</reason></verify><attack>maybe wrong<answer> 4 ")
    p = parse(messy)
    assert p.tags == ["reason", "tool", "tool_result", "attack", "answer"]
    assert p.first("reason") == "first idea"
    assert p.answer == "4"                                   # unclosed at end, content kept
    assert [s.closed for s in p.sections] == [False, True, True, False, False]
    text = " | ".join(p.problems)
    for expected in ("unclosed <reason>", "stray </reason>", "stray </verify>",
                     "unclosed <attack>", "unclosed <answer> at end", "text outside sections"):
        assert expected in text, (expected, p.problems)
    assert p.outside == "Sure!"
    assert p.tool_calls[0].name == "calculator" and p.tool_calls[0].succeeded


def test_parse_edge_cases():
    assert parse("").sections == [] and parse("").problems == []
    p = parse("<tool_result>{\"status\": \"success\", \"result\": 1}</tool_result>")
    assert "without a preceding <tool>" in p.problems[0]
    p = parse("<tool>{\"tool\": \"calculator\"}</tool><tool_result>not json</tool_result>")
    assert p.tool_calls[0].result is None and "not valid JSON" in p.tool_calls[0].result_error
    # a stray closing tag inside an open section is dropped, the section goes on
    p = parse("<reason>a</answer>b</reason>")
    assert p.first("reason") == "a</answer>b" and "stray </answer> inside <reason>" in p.problems[0]
    # chat control tokens are not text outside sections
    assert parse("<answer>x</answer><|end|><|eos|>").problems == []


# --- checks: correct texts pass ---------------------------------------------------------------
def test_correct_text_passes_every_check(tools):
    v = run_checks(good_text(tools), tools, prompt=QUESTION)
    assert v.passed, v.to_dict()
    assert all(c.passed and not c.skipped for c in v.checks.values())
    assert set(v.checks) == {"well_formed", "answer_present", "tool_calls_succeeded",
                             "tool_results_match", "answer_supported"}
    assert v.replayed == {0: True, 1: True}


def test_one_step_derivation_and_rounding_are_supported(tools):
    # calculator gives 24; the model adds the 48 from the question itself: 48 + 24 = 72
    text = ("<reason>half of 48</reason>" + call("calculator", {"expression": "48/2"}, tools=tools)
            + "<answer>72 clips</answer>")
    assert not run_checks(text, tools, prompt=QUESTION)["answer_supported"].passed    # strict default
    assert run_checks(text, tools, prompt=QUESTION, allow_derivation=True)["answer_supported"].passed
    # without the question, 48 is not available: 72 = 24 + 48 cannot be derived (24*3 needs a 3)
    assert not run_checks(text, tools, allow_derivation=True)["answer_supported"].passed
    # statistics: p-value 0.3466 reported rounded, statistic restated
    args = {"operation": "t_test", "group1": [1, 2, 3, 4, 5], "group2": [2, 3, 4, 5, 6]}
    stats = "<reason>compare means</reason>" + call("python_math", args, tools=tools)
    for answer, ok in [("t = -1.0, p = 0.35, not significant at 0.05", True),
                       ("p = 0.3466", True), ("p = 34.66%", True), ("p = 0.31", False),
                       ("p = 0.035", False)]:
        v = run_checks(stats + f"<answer>{answer}</answer>", tools,
                   prompt="Is the difference significant at 0.05? Group 1 = [1, 2, 3, 4, 5] "
                          "and group 2 = [2, 3, 4, 5, 6].")
        assert v["answer_supported"].passed is ok, (answer, v["answer_supported"].detail)


# --- checks: planted errors, each caught by its named check -----------------------------------
def test_wrong_answer_is_caught_by_answer_supported(tools):
    for wrong in ("73", "100", "70"):
        v = run_checks(good_text(tools, answer=wrong), tools, prompt=QUESTION)
        assert failed(v) == {"answer_supported"}, (wrong, v.to_dict())
        assert wrong in v["answer_supported"].detail
    # 96 = 24 + 72 is one step from the tool results: caught by default, let through with
    # allow_derivation (the documented price of that option)
    assert failed(run_checks(good_text(tools, answer="96"), tools, prompt=QUESTION)) == {"answer_supported"}
    assert run_checks(good_text(tools, answer="96"), tools, prompt=QUESTION, allow_derivation=True).passed
    # a number the question gives is not an answer the tools support
    half = "<reason>half of 48</reason>" + call("calculator", {"expression": "48/2"}, tools=tools)
    v = run_checks(half + "<answer>48</answer>", tools, prompt=QUESTION)
    assert failed(v) == {"answer_supported"} and "restates" in v["answer_supported"].detail


def test_tampered_tool_result_is_caught_by_tool_results_match(tools):
    # the first result is forged (25); the model carries it on honestly: 48 + 25 = 73
    tampered = good_text(tools).replace('"result": 24}', '"result": 25}').replace("48 + 24", "48 + 25")
    tampered = tampered.replace('"result": 72}', '"result": 73}').replace("<answer>72", "<answer>73")
    v = run_checks(tampered, tools, prompt=QUESTION)
    assert failed(v) == {"tool_results_match"}, v.to_dict()
    assert v.replayed == {0: False, 1: True}
    assert "re-run gives" in v["tool_results_match"].detail
    # without a registry the check is skipped, not passed silently as checked
    v = run_checks(tampered, None, prompt=QUESTION)
    assert v["tool_results_match"].skipped and v.passed


def test_missing_answer_is_caught_by_answer_present(tools):
    text = good_text(tools).split("<answer>")[0]
    v = run_checks(text, tools, prompt=QUESTION)
    assert failed(v) == {"answer_present"}
    assert v["answer_supported"].skipped
    v = run_checks(good_text(tools, answer="  "), tools, prompt=QUESTION)
    assert "answer_present" in failed(v) and "empty" in v["answer_present"].detail


def test_malformed_tool_json_is_caught(tools):
    text = ('<reason>half</reason><tool>{"tool": "calculator", "args": {"expression": "48/2"}</tool>'
            '<tool_result>{"status": "error", "error": "tool call is not valid JSON"}</tool_result>'
            '<answer>24</answer>')
    v = run_checks(text, tools, prompt=QUESTION)
    assert {"well_formed", "tool_calls_succeeded"} <= failed(v)
    assert "not valid JSON" in v["well_formed"].detail
    assert "call 0" in v["tool_calls_succeeded"].detail


def test_failing_tool_and_missing_result_fail_tool_calls_succeeded(tools):
    bad = call("calculator", {"expression": "1/0"}, tools=tools)
    assert '"status": "error"' in bad
    v = run_checks(f"<reason>r</reason>{bad}<answer>0</answer>", tools)
    assert "tool_calls_succeeded" in failed(v) and "tool_results_match" not in failed(v)
    text = f'<reason>r</reason><tool>{format_call("calculator", {"expression": "2+2"})}</tool><answer>4</answer>'
    v = run_checks(text, tools)
    assert "no <tool_result>" in v["tool_calls_succeeded"].detail and "tool_results_match" in failed(v)


def test_required_sections(tools):
    heavy = BUDGET_SECTIONS[ReasoningBudget.HEAVY]
    v = run_checks(good_text(tools), tools, prompt=QUESTION, required_sections=heavy[2:])
    assert failed(v) == {"sections_present"}
    assert "advocate" in v["sections_present"].detail


# --- roles -------------------------------------------------------------------------------------
def test_roles_extracted_from_a_verified_heavy_answer(tools):
    prompt = ("A lab has a budget for at most 8 runs. Each factor must have exactly 2 levels. "
              "Which design should we use?")
    text = "<reason>3 factors at 2 levels</reason>" + call("calculator", {"expression": "2**3"}, tools=tools) \
        + "<advocate>8 runs fit</advocate><attack>none</attack><pragmatist>ok</pragmatist>" \
        + "<verify>8 <= 8</verify><answer>A full factorial, 2 levels per factor: 8 runs</answer>"
    parsed = parse(text)
    v = run_checks(parsed, tools, prompt=prompt)
    assert v.passed, v.to_dict()
    assert extract_roles(parsed) == {"advocate": "8 runs fit", "attack": "none",
                                     "pragmatist": "ok", "verify": "8 <= 8"}


def test_system_prompt_per_budget(tools):
    heavy = system_prompt(BUDGET_SECTIONS[ReasoningBudget.HEAVY], tools.describe())
    for tag in ("<reason>", "<advocate>", "<attack>", "<pragmatist>", "<verify>", "<answer>", "calculator"):
        assert tag in heavy
    light = system_prompt(BUDGET_SECTIONS[ReasoningBudget.LIGHT])
    assert "<reason>" in light and "<tool>" not in light and "<attack>" not in light


def test_gsm8k_gold_traces_pass_and_planted_answers_are_caught(tools):
    """On real data: the shipped GSM8K slice rendered as calculator traces (the SFT format).
    Gold solutions whose last step is annotated pass; gold+1 answers are caught. Measured on the
    first 1,000 train solutions: 95.6% pass, 98.0% caught (see prime/checks.py's docstring)."""
    from importlib.resources import files

    from havoc_lite.data import gsm8k_to_trace, render_trace
    lines = (files("havoc_lite") / "assets" / "gsm8k_train_500.jsonl").read_text().splitlines()
    passed = caught = replay_fail = 0
    for line in lines:
        ex = json.loads(line)
        trace = gsm8k_to_trace(ex)
        text = render_trace(trace)
        v = run_checks(text, tools, prompt=ex["question"])
        passed += v.passed
        replay_fail += not v["tool_results_match"].passed
        wrong = str(int(float(trace["answer"].replace(",", ""))) + 1)
        planted = text.rsplit("<answer>", 1)[0] + f"<answer>{wrong}</answer>"
        caught += not run_checks(planted, None, prompt=ex["question"])["answer_supported"].passed
    n = len(lines)
    assert replay_fail == 0                    # every annotated <<a=b>> agrees with the calculator
    assert passed / n >= 0.93 and caught / n >= 0.95, (passed / n, caught / n)
