"""Graders: tool-answer match, and the pytest sandbox (pass, partial, timeout, memory cap)."""
import time

import pytest

from havoc_lite.eval.graders import PytestGrader, ToolAnswerGrader, extract_code, get_grader

TESTS = """
from solution import add

def test_small():
    assert add(2, 3) == 5

def test_negative():
    assert add(-2, -3) == -5

def test_zero():
    assert add(0, 0) == 0
"""


def test_tool_answer_grader():
    v = ToolAnswerGrader()
    ex = {"question": "What is 48/9?", "answer": "5.333333333"}
    ok_calls = [{"name": "calculator", "status": "success", "result": 5.333333333}]
    assert v(ex, "<tool>…</tool><answer>5.33333333333</answer>", ok_calls).passed
    assert not v(ex, "<answer>5.3</answer>", ok_calls).passed
    assert not v(ex, "the answer is 5.333333333", ok_calls).passed  # no <answer> tag
    text = {"answer": "Reject the null hypothesis"}
    assert v(text, "<answer> reject  the NULL hypothesis.</answer>").passed
    strict = ToolAnswerGrader(require_tool_success=True)
    verdict = strict(ex, "<answer>5.333333333</answer>", [{"status": "error", "error": "boom"}])
    assert not verdict.passed and verdict.checks == {"answer": True, "tools_ok": False}


def test_extract_code():
    assert extract_code("here:\n```python\nx = 1\n```\nand\n```python\ny = 2\n```") == "y = 2\n"
    assert extract_code("<answer>def f(): pass</answer>") == "def f(): pass"
    assert extract_code("no code") is None


def test_pytest_grader_pass_partial_and_no_code():
    v = get_grader("pytest", timeout_s=10)
    good = v({"tests": TESTS}, "```python\ndef add(a, b):\n    return a + b\n```")
    assert good.passed and good.reward == 1.0 and good.detail["total"] == 3
    partial = v({"tests": TESTS}, "```python\ndef add(a, b):\n    return abs(a) + abs(b)\n```")
    assert not partial.passed and partial.reward == pytest.approx(2 / 3)
    assert not v({"tests": TESTS}, "I cannot do that").passed


def test_pytest_grader_limits_time_and_memory():
    v = PytestGrader(timeout_s=2, memory_mb=512)
    t0 = time.perf_counter()
    loop = v({"tests": TESTS}, "```python\ndef add(a, b):\n    while True:\n        pass\n```")
    assert not loop.passed and time.perf_counter() - t0 < 15
    hog = v({"tests": TESTS}, "```python\ndef add(a, b):\n    x = bytearray(2 << 30)\n    return a + b\n```")
    assert not hog.passed and hog.reward == 0.0
