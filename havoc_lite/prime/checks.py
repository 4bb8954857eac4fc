"""PRIME's checks: named checks of an assistant turn against its own tool results.

`run_checks(text_or_parsed, tools, prompt=None, required_sections=())` runs:

- `well_formed`: the markup parses with no problems (no unclosed or stray tags, no text outside
  sections, every tool call and tool result is valid JSON of the right shape).
- `answer_present`: there is an `<answer>` section with non-blank content.
- `tool_calls_succeeded`: every `<tool>` has a `<tool_result>` and its status is "success".
- `tool_results_match`: every well-formed call is run again with `tools` and gives the injected
  result (same status; for successes, equal values, numbers within a relative 1e-9). Catches a
  tampered or hallucinated `<tool_result>`. Skipped when `tools` is None.
- `answer_supported`: the numbers in `<answer>` follow from the tool results (rule below). Skipped
  when there is no answer or no successful tool result to check against.
- `sections_present`: each of `required_sections` appears (HEAVY's roles, for example).

Rule for `answer_supported`. Let R be every number in the successful tool results (numeric leaves,
and number literals inside string results), P the numbers in the prompt. A number a written in
the answer *matches* x when |a - x| <= half a unit in a's last written digit ("0.35" matches 0.3466,
"24" matches only 24 ± 1e-9 relative), or, for a whole-number answer, a is x rounded, floored or
ceiled (for |x| >= 1, direct matches only, not derivations), or, for "a%", a/100 matches x. Then:
- every number in the answer must match something in R ∪ P (an answer may restate givens:
  "t = -1.0, p = 0.35, not significant at 0.05");
- and at least one of them must match R, not just restate the prompt (an answer "48" to a
  question that gives 48 is not supported by a calculator that returned 24).
With `allow_derivation=True` a number may also match a one-step derivation r op y, r in R,
y in R ∪ P, y != r, op in + - * / (the model did one last step in its head: 48 from the prompt +
24 from the calculator = 72). That is off by default because it lets many wrong answers through:
on the first 1,000 GSM8K train solutions rendered as tool traces (`data.gsm8k_to_trace`), gold
answers pass 95.6% without derivations and 98.0% with them, while answers planted as gold+1 are
caught 98.0% without and 77.6% with (gold×2: 92.7% vs 57.0%).
An answer with no numbers passes (there is nothing numeric to support).

Checks are independent: a turn fails as a whole (`CheckReport.passed` False) when any check that
was not skipped fails.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import product
from typing import Any, Iterable, Optional, Union

from ..numbers import Number, find_numbers, numbers_in, same_value, states_value
from ..markup import ANSWER, TOOL_RESULT, Parsed, open_tag, parse

CHECK_NAMES = ("well_formed", "answer_present", "tool_calls_succeeded", "tool_results_match",
               "answer_supported", "sections_present")
_MAX_POOL = 64   # numbers kept for one-step derivations (O(n²) pairs)


@dataclass
class Check:
    """One named check: `passed`, a one-line `detail`, and `skipped` when it could not run (a
    skipped check does not fail the turn)."""

    name: str
    passed: bool
    detail: str = ""
    skipped: bool = False


@dataclass
class CheckReport:
    """All checks of one turn. `passed` is True when no check that ran failed. `replayed` maps a
    tool call's step to whether its re-run gave the injected result."""

    checks: dict[str, Check]
    replayed: dict[int, bool] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed or c.skipped for c in self.checks.values())

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks.values() if not c.passed and not c.skipped]

    def __getitem__(self, name: str) -> Check:
        return self.checks[name]

    def to_dict(self) -> dict:
        return {"passed": self.passed,
                "checks": {n: {"passed": c.passed, "skipped": c.skipped, "detail": c.detail}
                           for n, c in self.checks.items()}}


def run_checks(text_or_parsed: Union[str, Parsed], tools=None, prompt: Optional[str] = None,
           required_sections: Iterable[str] = (), allow_derivation: bool = False) -> CheckReport:
    """Run the named checks on an assistant turn (module docstring gives each rule).

    Args:
        text_or_parsed: the decoded assistant text, or a `markup.Parsed` of it.
        tools: a `havoc_lite.tools.ToolRegistry` to re-run calls with; None skips
            `tool_results_match`.
        prompt: the user's question; its numbers may appear in the answer (see the rule).
        required_sections: section tags that must be present.
        allow_derivation: accept answer numbers one arithmetic step from the tool results.

    Returns:
        `CheckReport`; never raises on malformed text (that is what the checks report).
    """
    parsed = text_or_parsed if isinstance(text_or_parsed, Parsed) else parse(text_or_parsed)
    checks: dict[str, Check] = {}

    def add(name: str, passed: bool, detail: str = "", skipped: bool = False) -> None:
        checks[name] = Check(name, bool(passed), detail, skipped)

    add("well_formed", not parsed.problems, "; ".join(parsed.problems) or "ok")

    answer = parsed.answer
    if answer is None:
        add("answer_present", False, f"no {open_tag(ANSWER)} section")
    elif not answer.strip():
        add("answer_present", False, f"{open_tag(ANSWER)} is empty")
    else:
        add("answer_present", True, f"answer: {answer[:80]!r}")

    calls = parsed.tool_calls
    bad = [f"call {c.step}: " + (c.call_error or c.result_error or
                                 (f"no {open_tag(TOOL_RESULT)}" if c.result is None else
                                  f"status {c.result.get('status')!r}: {c.result.get('error')}"))
           for c in calls if not c.succeeded]
    add("tool_calls_succeeded", not bad, "; ".join(bad) or f"{len(calls)} call(s) succeeded")

    replayed: dict[int, bool] = {}
    if tools is None:
        add("tool_results_match", True, "no registry given", skipped=True)
    else:
        mismatches = []
        for c in calls:
            if c.call_error is not None:
                continue   # malformed call: well_formed reports it; nothing to re-run
            fresh = tools.execute(c.name, c.args).to_dict()
            same = c.result is not None and _same_result(fresh, c.result)
            replayed[c.step] = same
            if not same:
                mismatches.append(f"call {c.step} {c.name}: injected {c.result_text!r}, "
                                  f"re-run gives {fresh!r}")
        checked = len(replayed)
        add("tool_results_match", not mismatches, "; ".join(mismatches)
            or f"{checked} call(s) re-run with identical results", skipped=checked == 0)

    add(*_answer_supported(parsed, prompt, allow_derivation))

    missing = [s for s in required_sections if not parsed.has(s)]
    if required_sections:
        add("sections_present", not missing, f"missing {missing}" if missing else "all present")
    return CheckReport(checks=checks, replayed=replayed)


def _same_result(a: Any, b: Any) -> bool:
    """Equal JSON values; numbers equal within a relative 1e-9 (bool is not a number here)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.get("status") == b.get("status") == "error":
            return True   # error texts may name paths or timings; the status is what counts
        return a.keys() == b.keys() and all(_same_result(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_result(x, y) for x, y in zip(a, b))
    num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if num(a) and num(b):
        return same_value(a, b)
    return a == b


def _matches(a: Number, x: float, whole_rounding: bool = True) -> bool:
    """Does the written number `a` state the value x (rounding rules of the module doc)?
    `whole_rounding` allows a whole-number answer to be x rounded/floored/ceiled."""
    return states_value(a, x, rel_tol=1e-9, whole_is_exact=True, zero_is_exact=False,
                        whole_rounding=whole_rounding)


def _derived(r_pool: list[float], pool: list[float]) -> Iterable[float]:
    for r, y in product(r_pool, pool):
        if y == r:          # two distinct values: r - r = 0 and r / r = 1 would "support" any 0 or 1
            continue
        yield r + y
        yield r * y
        yield r - y
        yield y - r
        if y != 0:
            yield r / y
        if r != 0:
            yield y / r


def _answer_supported(parsed: Parsed, prompt: Optional[str], allow_derivation: bool) -> tuple:
    name = "answer_supported"
    if parsed.answer is None or not parsed.answer.strip():
        return name, False, "no answer to check", True
    literals = find_numbers(parsed.answer, "prime")
    if not literals:
        return name, True, "no numbers in the answer"
    results = [n for c in parsed.tool_calls if c.succeeded
               for n in numbers_in(c.result.get("result"), "prime")]
    if not results:
        return name, False, "no successful tool result to check the answer against", True
    given = [n.value for n in find_numbers(prompt or "", "prime")]
    r_pool = list(dict.fromkeys(results))[:_MAX_POOL]
    pool = list(dict.fromkeys(results + given))[:_MAX_POOL]

    def supported(literal: Number, allow_given: bool) -> bool:
        candidates = r_pool + (pool if allow_given else [])
        if any(_matches(literal, x) for x in candidates):
            return True
        return allow_derivation and any(_matches(literal, d, whole_rounding=False)
                   for d in _derived(r_pool, pool) if math.isfinite(d))

    problems = [f"{lit.text} is neither given nor a tool result"
                + (" nor one step from them" if allow_derivation else "")
                for lit in literals if not supported(lit, allow_given=True)]
    if not problems and not any(supported(lit, allow_given=False) for lit in literals):
        problems.append(f"no number of the answer follows from the tool results {r_pool[:8]}; "
                        "it only restates the question")
    if problems:
        return name, False, "; ".join(problems)
    return name, True, f"{len(literals)} number(s) follow from {len(r_pool)} tool result number(s)"
