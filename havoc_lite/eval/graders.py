"""Graders: decide whether one model output solves one example.

Every grader is a callable `grader(example: dict, output: str, tool_calls: list[dict]) -> Grade`.
- `GSM8KGrader`: the extracted number equals the gold number (strict and flexible both reported).
- `ToolAnswerGrader`: the `<answer>` of a tool trace equals the expected answer (numbers within a
  relative tolerance, text after case/space folding), and reports whether every tool call succeeded.
- `PytestGrader`: the output's Python code passes the example's unit tests, run by pytest in a
  subprocess with CPU-time, memory and wall-clock limits (as halo-forge's pytest grader).
A grader never raises on model output: anything unparsable is a failed grade with a reason.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..markup import ANSWER, section_bodies, wrap
from ..numbers import normalize_number, normalized_equal
from .extract import extract_flexible, extract_gold, extract_strict


@dataclass
class Grade:
    """What a grader returns for one output.

    passed: the primary decision; reward: in [0, 1] (fraction of tests for pytest, else 0/1);
    checks: named pass/fail results (e.g. {"strict": True, "flexible": True}), each reported as its
    own accuracy / pass@k; answers: the extracted answer per check (for maj@k); detail: free-form.
    """
    passed: bool
    reward: float
    checks: dict[str, bool] = field(default_factory=dict)
    answers: dict[str, Optional[str]] = field(default_factory=dict)
    detail: dict = field(default_factory=dict)


class GSM8KGrader:
    """GSM8K match. The example needs "gold" (normalised) or "answer" (a solution with `#### N`).
    `primary` ("strict" | "flexible") picks which extraction decides `passed`."""

    def __init__(self, primary: str = "strict"):
        if primary not in ("strict", "flexible"):
            raise ValueError(f"GSM8KGrader primary must be 'strict' or 'flexible', got {primary!r}")
        self.primary = primary

    def __call__(self, example: dict, output: str, tool_calls: Sequence[dict] = ()) -> Grade:
        gold = example.get("gold") or extract_gold(str(example["answer"]))
        answers = {"strict": extract_strict(output), "flexible": extract_flexible(output)}
        checks = {name: a is not None and a == gold for name, a in answers.items()}
        ok = checks[self.primary]
        return Grade(ok, float(ok), checks, answers, {"gold": gold})


def _fold(text: str) -> str:
    return " ".join(str(text).casefold().split()).rstrip(".")


class ToolAnswerGrader:
    """Tool-trace answer match. The example needs "answer" (the expected final answer: a number or
    text). The output's first `<answer>…</answer>` is compared: as numbers within `rel_tol` when
    both are numeric, else as case- and space-folded text. `require_tool_success` also fails an
    output any of whose tool calls returned an error."""

    def __init__(self, rel_tol: float = 1e-6, require_tool_success: bool = False):
        self.rel_tol, self.require_tool_success = rel_tol, require_tool_success

    def __call__(self, example: dict, output: str, tool_calls: Sequence[dict] = ()) -> Grade:
        expected = str(example["answer"])
        bodies = section_bodies(output, ANSWER)
        got = bodies[0].strip() if bodies else None
        gold_num = normalize_number(expected)
        if got is None:
            correct = False
        elif gold_num is not None:
            correct = normalized_equal(extract_strict(wrap(ANSWER, got)), gold_num, self.rel_tol)
        else:
            correct = _fold(got) == _fold(expected)
        tools_ok = all(c.get("status") == "success" for c in tool_calls)
        ok = correct and (tools_ok or not self.require_tool_success)
        answer = (normalize_number(got) or _fold(got)) if got is not None else None
        return Grade(ok, float(ok), {"answer": correct, "tools_ok": tools_ok},
                       {"answer": answer}, {"expected": expected})


_CODE_RE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def extract_code(output: str) -> Optional[str]:
    """The Python code in an output: the last ```python fenced block, else the `<answer>` body."""
    blocks = _CODE_RE.findall(output)
    if blocks:
        return blocks[-1]
    bodies = section_bodies(output, ANSWER)
    return bodies[0] if bodies else None


def _limit_child(cpu_s: int, memory_bytes: int):
    """preexec_fn for the sandbox child: cap CPU seconds and address space (resource.setrlimit)."""
    def apply():
        import resource
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


class PytestGrader:
    """Run the example's unit tests against the output's code, in a subprocess sandbox.

    The example needs "tests": pytest source that imports the solution (`from solution import *`).
    The code goes to `solution.py` in a fresh temporary folder; pytest runs there with
    RLIMIT_CPU = `timeout_s`, RLIMIT_AS = `memory_mb` MiB, a wall-clock limit of 2·`timeout_s`
    (the whole process group is killed), and an environment stripped to PATH/HOME.
    reward = passed tests / all tests; passed = every test passed.
    """

    def __init__(self, timeout_s: int = 10, memory_mb: int = 1024):
        self.timeout_s, self.memory_mb = timeout_s, memory_mb

    def __call__(self, example: dict, output: str, tool_calls: Sequence[dict] = ()) -> Grade:
        code = extract_code(output)
        if code is None:
            return Grade(False, 0.0, {"tests": False}, {"answer": None}, {"error": "no code block"})
        result = self.run(code, example["tests"])
        ok = result["total"] > 0 and result["passed"] == result["total"]
        reward = result["passed"] / result["total"] if result["total"] else 0.0
        return Grade(ok, reward, {"tests": ok}, {"answer": None}, result)

    def run(self, code: str, tests: str) -> dict:
        """Run `tests` against `code`. Returns {"passed", "total", "error" (str|None), "elapsed_s"}."""
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="havoc_pytest_") as tmp:
            Path(tmp, "solution.py").write_text(code, encoding="utf-8")
            Path(tmp, "test_solution.py").write_text(tests, encoding="utf-8")
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "--junitxml=report.xml", "test_solution.py"]
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp,
                   "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1"}
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=_limit_child(self.timeout_s, self.memory_mb << 20))
            error = None
            try:
                out, _ = proc.communicate(timeout=2 * self.timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate()
                error = f"timed out after {2 * self.timeout_s} s"
            passed = total = 0
            report = Path(tmp, "report.xml")
            if report.is_file():
                try:
                    root = ET.parse(report).getroot()
                    suite = root if root.tag == "testsuite" else root.find("testsuite")
                    total = int(suite.get("tests", 0))
                    bad = sum(int(suite.get(a, 0)) for a in ("failures", "errors", "skipped"))
                    passed = max(total - bad, 0)
                except (ET.ParseError, AttributeError, ValueError) as e:
                    error = error or f"unreadable pytest report: {e}"
            elif error is None:
                error = f"pytest exited {proc.returncode}: {out.decode(errors='replace')[-300:]}"
            if error is None and proc.returncode not in (0, 1):
                error = f"pytest exited {proc.returncode}"
        return {"passed": passed, "total": total, "error": error,
                "elapsed_s": time.perf_counter() - t0}


def get_grader(name: str, **kwargs):
    """'gsm8k' | 'tool' | 'pytest' -> a grader instance."""
    table = {"gsm8k": GSM8KGrader, "tool": ToolAnswerGrader, "pytest": PytestGrader}
    if name not in table:
        raise ValueError(f"unknown grader {name!r}; choose one of {sorted(table)}")
    return table[name](**kwargs)
