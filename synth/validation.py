"""Check a tool trace against the real tools, whoever wrote it (Claude, a template, a converter).

A trace is the tool-trace record of docs/architecture.md:
`{"id", "question", "reasoning": [{"step", "content", "tool_call"?: {"name", "args"},
"tool_result"?}], "tool_result", "answer"}`.

`validate_trace` runs every `tool_call` through a `havoc_lite.tools.ToolRegistry` and returns a
cleaned trace whose tool results are the real ones, or a rejection reason:

- `malformed`            a field is missing or has the wrong type, or a tool name is unknown
- `no_tool_call`         the trace calls no tool (only when `require_tool=True`)
- `tool_error`           a call fails when we run it (the model would learn a broken call)
- `intermediate_mismatch` a non-final step states a result whose numbers are not the real
                          ones: later steps were reasoned from a wrong value, so it cannot be fixed
- `answer_mismatch`      the final answer disagrees with the real tool results
- `markup_injection`     a text field or a tool result holds a markup token ("</reason>",
                          "<answer>", ...): rendered for training it would become real control
                          tokens with loss on them

"Disagrees" (`answer_problem`) is checked on numbers, on labels and on significance words. A stated
number `a` written with `d` decimals matches a real value `v` when
`|a - v| <= max(rel_tol * |v|, 0.5 * 10**-d)`, i.e. `a` is `v` to relative tolerance or `v` rounded
to the precision the answer wrote ("p = 0.035" for 0.03466; "19" for 19.0); "34.7%" also matches
0.347. The answer is rejected when
1. the last result has numbers (outside strings) and no prose, and the answer states none of
   them (no number at all, or none that matches);
2. a number labelled with a result field ("p = 0.50", "df: 4", "t = 2.1", "slope of 3") does not
   match that field, so a p-value cannot pass by matching the degrees of freedom;
3. a number matches nothing at all: no tool result, argument or number of the question (a bound
   such as "p < 0.001" is exempt, but must hold for the p-value);
4. the answer calls the result (not) significant while the latest p-value says otherwise at the
   question's level (alpha, "5% level"; 0.05 when it names none).
A result of prose (a retrieved passage with its scores) or whose numbers sit inside strings (a
symbolic expression) is not held to rule 1. A final stated tool result that is wrong is simply replaced by the real one
("corrected").

`question_key` is the normalised hash used to drop near-duplicate questions (case, spacing,
punctuation and Unicode forms folded away; numbers kept, since they make a different problem).
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from havoc_lite.numbers import SYNTH_LITERAL, Number, find_numbers, numbers_in, numeric_leaves, states_value
from havoc_lite.markup import SPECIAL_TOKENS, STEP_ROLES

REJECT_REASONS = ("malformed", "no_tool_call", "tool_error", "intermediate_mismatch",
                  "answer_mismatch", "markup_injection", "unchecked_attack", "duplicate")



def _matches(a: Number, v: float, rel_tol: float) -> bool:
    """The written `a` states `v` (module docstring); a written 0 only matches a real 0."""
    return states_value(a, v, rel_tol=rel_tol, zero_is_exact=True)


def _numbers(text: str) -> list[Number]:
    return find_numbers(text, "synth")


def _values(result: Any) -> list[float]:
    return numbers_in(result, "synth")


def answer_agrees(answer: str, result: Any, rel_tol: float = 1e-6) -> bool:
    """Whether a final answer states a number of the last tool result (rule 1 of the module
    docstring; an answer or a result without numbers passes here)."""
    stated = _numbers(str(answer))
    real = _values(result)
    if not stated or not real:
        return True
    return any(_matches(a, v, rel_tol) for a in stated for v in real)


def _has_prose(result: Any) -> bool:
    """Whether a result carries text (a string of five words or more, e.g. a retrieved passage):
    its numbers (scores, counts) are then not what an answer has to quote."""
    if isinstance(result, str):
        return len(result.split()) >= 5
    items = result.values() if isinstance(result, dict) else result if isinstance(result, (list, tuple)) else ()
    return any(_has_prose(x) for x in items)


# Labels an answer may put on a number, the result fields they name (python_math's keys and the
# usual statistics words), and whether the label is short: short labels ("p", "t", "r", "d") count
# only with "=", ":" or "≈" after them, long ones also with "is", "of", "was".
_LABELS: list[tuple[str, tuple[str, ...], bool]] = [
    (r"p[- ]?values?", ("pvalue", "p_value", "p"), False),
    (r"p", ("pvalue", "p_value", "p"), True),
    (r"df|d\.f\.|degrees? of freedom", ("df", "dof"), False),
    (r"t|f|z|u|h|w|chi[- ]?squared?|χ²|χ2", ("statistic",), True),
    (r"(?:test )?statistic", ("statistic",), False),
    (r"r", ("statistic", "rvalue"), True),
    (r"r²|r\^?2|r-squared", ("r_squared", "rsquared"), True),
    (r"slope", ("slope",), False), (r"intercept", ("intercept",), False),
    (r"mean", ("mean",), False), (r"median", ("median",), False),
    (r"eta[- ]?squared|η²", ("eta_squared",), False), (r"cohen'?s d|d", ("d",), True),
]
_SEP = {True: r"\s*(?:=|:|≈)\s*", False: r"\s*(?:=|:|≈|~|is|was|of|equals|equal to)?\s*"}
_NUM = "(" + SYNTH_LITERAL + ")"
_LABEL_RES = [(re.compile(r"(?<![\w.])(?:" + lab + r")" + _SEP[short] + _NUM, re.IGNORECASE), keys)
              for lab, keys, short in _LABELS]
_DF_AFTER = re.compile(r"(?<![\w.])(\d+)\s*(?:degrees? of freedom|df)\b", re.IGNORECASE)


def _field_values(result: Any, keys: tuple[str, ...]) -> Optional[list[float]]:
    """Values of the result fields named `keys` (None when the result has none of them)."""
    if not isinstance(result, dict):
        return None
    found = [v for k, v in result.items() if k.lower() in keys]
    return [x for v in found for x in numeric_leaves(v)] if found else None


def _labelled(answer: str):
    """(label text, Number, field keys) for each labelled number in the answer."""
    for rx, keys in _LABEL_RES:
        for m in rx.finditer(answer):
            nums = _numbers(m.group(1))
            if nums:
                yield m.group(0), nums[0], keys
    for m in _DF_AFTER.finditer(answer):
        yield m.group(0), _numbers(m.group(1))[0], ("df", "dof")


_BOUND = re.compile(r"(?:<=|>=|≤|≥|<|>)\s*" + _NUM)
_P_BOUND = re.compile(r"(?<![\w.])p(?:[- ]?values?)?\s*(<=|>=|≤|≥|<|>)\s*" + _NUM, re.IGNORECASE)
_NEG_SIG = re.compile(r"\b(?:not|no|n't|never|without)\b[^.;]{0,40}\bsignifican|\b(?:in|non-?)significan"
                      r"|\bfail(?:s|ed)? to reject|\b(?:do|does|did)\s+not\s+(?:differ|reject)", re.IGNORECASE)
_POS_SIG = re.compile(r"\bsignifican|\breject(?:s|ed)? the null", re.IGNORECASE)
_ALPHA = re.compile(r"(?:alpha|α|significance level|level of significance|significance of|at the|at a)"
                    r"\s*(?:=|:|of|level of)?\s*(\d*\.?\d+)\s*(%)?", re.IGNORECASE)


def significance_level(question: str) -> float:
    """The alpha a question names ("alpha 0.01", "at the 5% level"), else 0.05."""
    for m in _ALPHA.finditer(question):
        v = float(m.group(1)) / (100.0 if m.group(2) else 1.0)
        if 0 < v < 0.5:
            return v
    return 0.05


def answer_problem(answer: str, results: list[Any], question: str = "", args: Iterable[Any] = (),
                   rel_tol: float = 1e-6) -> str:
    """Why `answer` disagrees with the tool `results` (in call order), or "" when it agrees.

    Rules 1-4 of the module docstring; `question` and the calls' `args` supply the numbers an
    answer may restate and the significance level.
    """
    answer = str(answer)
    last = results[-1] if results else None
    stated = _numbers(answer)
    if numeric_leaves(last) and not _has_prose(last):
        if not stated:
            return f"the answer states no number; the last tool result is {json.dumps(last)[:200]}"
        if not answer_agrees(answer, last, rel_tol):
            return f"no number of the answer matches the last tool result {json.dumps(last)[:200]}"
    for text, num, keys in _labelled(answer):
        for r in reversed(results):            # the latest result that has the field
            vals = _field_values(r, keys)
            if vals is not None:
                if not any(_matches(num, v, rel_tol) for v in vals):
                    return f"'{text.strip()}' does not match the result's {'/'.join(keys[:2])} {vals[:4]}"
                break
    for m in _P_BOUND.finditer(answer):        # "p < 0.001": the bound must hold
        for r in reversed(results):
            vals = _field_values(r, ("pvalue", "p_value", "p"))
            if vals is not None:
                bound, op = float(m.group(2)), m.group(1)
                ok = vals[0] < bound * (1 + 1e-9) if op in ("<", "<=", "≤") else vals[0] > bound * (1 - 1e-9)
                if not ok:
                    return f"'{m.group(0).strip()}' does not hold for the result's p-value {vals[0]:g}"
                break
    pool = [v for r in results for v in _values(r)] + _values(list(args))
    for n in _numbers(question):
        pool += [n.value, n.value / 100.0] if n.percent else [n.value]
    for a in _numbers(_BOUND.sub(" ", answer)):   # a bound ("< 0.001") is no result value
        if any(_matches(a, v, rel_tol) for v in pool):
            continue
        return f"the answer's number {a.value:g} appears in no tool result, argument or the question"
    p = next((vals[0] for r in reversed(results)
              for vals in [_field_values(r, ("pvalue", "p_value"))] if vals), None)
    if p is not None:
        alpha = significance_level(question)
        if _NEG_SIG.search(answer):
            if p < alpha:
                return f"the answer says not significant but p = {p:g} < alpha {alpha:g}"
        elif _POS_SIG.search(answer) and p >= alpha:
            return f"the answer says significant but p = {p:g} >= alpha {alpha:g}"
    return ""


def markup_in(obj: Any) -> Optional[str]:
    """The first markup token (`havoc_lite.markup.SPECIAL_TOKENS`) found in any string inside
    `obj` (dict keys included), or None."""
    if isinstance(obj, str):
        return next((t for t in SPECIAL_TOKENS if t in obj), None)
    items = [x for kv in obj.items() for x in kv] if isinstance(obj, dict) else \
        obj if isinstance(obj, (list, tuple)) else ()
    return next((m for m in map(markup_in, items) if m), None)


def _stated_disagrees(stated: Any, real: Any, rel_tol: float) -> bool:
    """A stated tool result is wrong when one of its numbers matches no real number."""
    if isinstance(stated, dict) and "result" in stated:
        stated = stated["result"]
    if isinstance(real, dict) and "result" in real:
        real = real["result"]
    real_vals = _values(real)
    stated_nums = _numbers(json.dumps(stated)) if not isinstance(stated, str) else _numbers(stated)
    if not stated_nums:
        return False
    if not real_vals:
        return True
    return any(not any(_matches(a, v, rel_tol) for v in real_vals) for a in stated_nums)


def attack_problem(steps: list[dict], answer: str, rel_tol: float = 1e-6) -> Optional[str]:
    """What is wrong with a trace's `<attack>`, or None (also None when it has no attack step).

    An attack must be checkable: it names a concrete flaw of a first attempt by stating a number
    that a tool returned before it (the wrong sub-result), a tool call after it computes the fix,
    and the final answer is not the number it attacked.
    """
    attacks = [i for i, s in enumerate(steps) if s.get("role") == "attack"]
    if not attacks:
        return None
    i = attacks[0]
    before = [s["tool_result"].get("result") for s in steps[:i] if "tool_result" in s]
    if not before:
        return "the attack comes before any tool result: there is no first attempt to attack"
    values = [v for r in before for v in _values(r)]
    named = [n for n in _numbers(steps[i]["content"]) if any(_matches(n, v, rel_tol) for v in values)]
    if not named:
        return "the attack names no result of the first attempt"
    if not any("tool_result" in s for s in steps[i + 1:]):
        return "no tool call after the attack computes the fix"
    attacked = [a.value for a in named]
    if any(_matches(n, v, rel_tol) for n in _numbers(answer) for v in attacked):
        return f"the final answer repeats a result the attack called wrong ({attacked})"
    return None


def question_key(question: str) -> str:
    """Normalised hash of a question for near-duplicate removal (sha1 hex of the folded text)."""
    s = unicodedata.normalize("NFKC", question).casefold()
    s = re.sub(r"[^\w\s.]", " ", s)          # punctuation is not what makes a problem new
    s = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", s)  # ... but keep decimal points
    s = " ".join(s.split())
    return hashlib.sha1(s.encode("utf-8")).hexdigest()


@dataclass
class Verdict:
    """Outcome of `validate_trace`: `ok`, the cleaned `trace` (None when rejected), the rejection
    `reason` (one of REJECT_REASONS) and a human `detail`; `corrected` counts stated tool results
    that were replaced because they were wrong."""
    ok: bool
    trace: Optional[dict] = None
    reason: Optional[str] = None
    detail: str = ""
    corrected: int = 0


def _reject(reason: str, detail: str) -> Verdict:
    return Verdict(False, None, reason, detail)


def _execute(registry, name: str, args: dict):
    try:
        return registry.execute(name, args)
    except Exception as e:  # the registry promises not to raise; a trace must not crash a run anyway
        from havoc_lite.tools import ToolResult
        return ToolResult(status="error", error=f"{type(e).__name__}: {e}")


def validate_trace(trace: Any, registry, *, require_tool: bool = True, rel_tol: float = 1e-6,
                 allowed_tools: Optional[Iterable[str]] = None, check_answer: bool = True) -> Verdict:
    """Validate `trace`, run its tool calls with `registry`, and return a `Verdict`.

    Args:
        trace: a dict in the tool-trace format (extra keys such as id/topic/source are kept).
        registry: a `havoc_lite.tools.ToolRegistry` (`.names`, `.execute(name, args) -> ToolResult`).
        require_tool: reject traces without any tool call.
        rel_tol: relative tolerance for number agreement.
        allowed_tools: restrict calls to these tool names (default: every registered tool).
        check_answer: compare the final answer with the last tool result (off for sources such as
            GSM8K whose last step may be worked in text after the last call).

    Returns a Verdict; never raises on bad input (a malformed trace is a rejection, not an error).
    The kept trace has `step` renumbered 1..n, each call's `tool_result` set to the real
    `ToolResult.to_dict()`, and the top-level `tool_result` set to the last call's real result.
    """
    if not isinstance(trace, dict):
        return _reject("malformed", f"trace is {type(trace).__name__}, not an object")
    question, answer, steps = trace.get("question"), trace.get("answer"), trace.get("reasoning")
    if not isinstance(question, str) or not question.strip():
        return _reject("malformed", "field 'question' missing or empty")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        return _reject("malformed", "field 'answer' missing or empty")
    if not isinstance(steps, list) or not steps:
        return _reject("malformed", "field 'reasoning' must be a non-empty list of steps")
    names = set(allowed_tools) if allowed_tools is not None else set(registry.names)
    # checked on what the writer wrote, before anything runs; real tool results may quote markup
    # (a note on the markup itself) and are encoded as plain text when rendered
    token = markup_in([question, answer, [(s.get("content"), s.get("tool_call")) if isinstance(s, dict)
                                          else s for s in steps]])
    if token:
        return _reject("markup_injection", f"the trace contains the markup token {token!r}")

    clean_steps, last_result, corrected, calls, results, all_args = [], None, 0, 0, [], []
    n_calls = sum(1 for s in steps if isinstance(s, dict) and s.get("tool_call") is not None)
    for i, step in enumerate(steps):
        where = f"reasoning[{i}]"
        if not isinstance(step, dict):
            return _reject("malformed", f"{where} is not an object")
        content = step.get("content")
        if not isinstance(content, str):
            return _reject("malformed", f"{where}.content must be a string")
        out = {"step": i + 1, "content": content.strip()}
        role = step.get("role")
        if role is not None:
            if role not in STEP_ROLES:
                return _reject("malformed", f"{where}.role must be one of {', '.join(STEP_ROLES)}, got {role!r}")
            out["role"] = role
        call = step.get("tool_call")
        if call is not None:
            if not isinstance(call, dict) or not isinstance(call.get("name"), str) \
                    or not isinstance(call.get("args"), dict):
                return _reject("malformed", f"{where}.tool_call needs 'name' (string) and 'args' (object)")
            if call["name"] not in names:
                return _reject("malformed", f"{where}.tool_call names unknown tool {call['name']!r}")
            calls += 1
            res = _execute(registry, call["name"], call["args"])
            if res.status != "success":
                return _reject("tool_error", f"{where} {call['name']}: {res.error}")
            real = res.to_dict()
            stated = step.get("tool_result")
            if stated is not None and _stated_disagrees(stated, real, rel_tol):
                if calls < n_calls:
                    return _reject("intermediate_mismatch",
                                   f"{where} stated {json.dumps(stated)[:200]} but the tool returned "
                                   f"{json.dumps(real)[:200]}")
                corrected += 1
            out["tool_call"] = {"name": call["name"], "args": call["args"]}
            out["tool_result"] = real
            last_result = real
            results.append(real.get("result"))
            all_args.append(call["args"])
        clean_steps.append(out)
    if calls == 0 and require_tool:
        return _reject("no_tool_call", "the trace calls no tool")
    if check_answer and results:
        problem = answer_problem(answer, results, question, all_args, rel_tol)
        if problem:
            return _reject("answer_mismatch", f"answer {answer[:100]!r}: {problem}")
    problem = attack_problem(clean_steps, answer, rel_tol)
    if problem:
        return _reject("unchecked_attack", problem)
    clean = {k: v for k, v in trace.items() if k not in ("question", "reasoning", "tool_result", "answer")}
    clean.update(question=question.strip(), reasoning=clean_steps, tool_result=last_result,
                 answer=answer.strip())

    return Verdict(True, clean, None, "", corrected)


class Deduper:
    """Remembers `question_key`s; `.seen(question)` is True for a repeat (and records new ones)."""

    def __init__(self, questions: Iterable[str] = ()):
        self.keys: set[str] = {question_key(q) for q in questions}

    def seen(self, question: str) -> bool:
        k = question_key(question)
        if k in self.keys:
            return True
        self.keys.add(k)
        return False


@dataclass
class Report:
    """Counts of kept and rejected traces per reason, plus corrections; `.to_dict()` for JSON."""
    kept: int = 0
    corrected: int = 0
    rejected: dict = field(default_factory=lambda: {r: 0 for r in REJECT_REASONS})
    examples: dict = field(default_factory=dict)

    def add(self, verdict: Verdict, example_id: str = "") -> None:
        if verdict.ok:
            self.kept += 1
            self.corrected += verdict.corrected
        else:
            self.rejected[verdict.reason] = self.rejected.get(verdict.reason, 0) + 1
            ex = self.examples.setdefault(verdict.reason, [])
            if len(ex) < 5:
                ex.append({"id": example_id, "detail": verdict.detail[:300]})

    def to_dict(self) -> dict:
        return {"kept": self.kept, "rejected_total": sum(self.rejected.values()),
                "rejected": dict(self.rejected), "corrected_tool_results": self.corrected,
                "reject_examples": self.examples}
