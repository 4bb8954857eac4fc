"""Workspace: what PRIME knows about one problem, with a confidence for each item.

Three kinds of entry:
- facts: tool results (source "tool:<name>"). Confidence 1.0 when PRIME's checks re-ran the call and got
  the same result, 0.0 when it did not or the tool failed, 0.9 when it was not re-checked.
- constraints: statements in the prompt that bound the answer ("at most 10 runs", "must be an
  integer", "between 0 and 1"); taken as given, confidence 1.0.
- partial results: reasoning steps and the answer; the answer's confidence is 1.0 when the checks
  found it supported by the tool results, 0.3 when it did not, 0.5 when there was nothing to check.

`summarize()` gives the counts and a global confidence: the mean confidence of facts and partial
results (constraints are given, so they do not raise it), 0.0 for an empty workspace. This is a
bookkeeping heuristic, not a calibrated probability.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

# Phrases that state a bound or requirement. Each sentence with one becomes a constraint.
_CONSTRAINT_RE = re.compile(
    r"\b(must|should not|cannot|can't|at most|at least|no more than|no less than|not exceed|"
    r"fewer than|more than|less than|between|only|exactly|maximum|minimum|budget|limit|"
    r"integer|whole number|round(?:ed)? to)\b", re.IGNORECASE)
_SENTENCE_RE = re.compile(r"[^.!?\n]+[.!?]?")


@dataclass
class Entry:
    """One workspace item: `content` (text), `value` (a number or JSON value when there is one),
    `source` ("prompt", "tool:calculator", "reason", "answer"), `confidence` in [0, 1]."""

    content: str
    source: str
    confidence: float
    value: Any = None


@dataclass
class Workspace:
    """Facts, constraints and partial results of one PRIME run (see the module docstring)."""

    facts: list[Entry] = field(default_factory=list)
    constraints: list[Entry] = field(default_factory=list)
    partial_results: list[Entry] = field(default_factory=list)

    def add_fact(self, content: str, source: str, confidence: float = 0.9, value: Any = None) -> Entry:
        return self._add(self.facts, content, source, confidence, value)

    def add_constraint(self, content: str, source: str = "prompt", confidence: float = 1.0) -> Entry:
        return self._add(self.constraints, content, source, confidence, None)

    def add_partial(self, content: str, source: str, confidence: float = 0.5, value: Any = None) -> Entry:
        return self._add(self.partial_results, content, source, confidence, value)

    @staticmethod
    def _add(bucket: list, content: str, source: str, confidence: float, value: Any) -> Entry:
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"workspace confidence must be in [0, 1], got {confidence}")
        entry = Entry(content=content, source=source, confidence=float(confidence), value=value)
        bucket.append(entry)
        return entry

    def constraints_from_prompt(self, prompt: str) -> list[Entry]:
        """Add every sentence of `prompt` that states a bound or requirement (see `_CONSTRAINT_RE`)."""
        added = []
        for sentence in _SENTENCE_RE.findall(prompt):
            sentence = sentence.strip()
            if sentence and _CONSTRAINT_RE.search(sentence):
                added.append(self.add_constraint(sentence))
        return added

    def summarize(self) -> dict:
        """Counts and the global confidence: `{"facts", "constraints", "partial_results",
        "confidence"}`, confidence = mean over facts and partial results (0.0 if there are none)."""
        scored = [e.confidence for e in self.facts + self.partial_results]
        return {
            "facts": len(self.facts),
            "constraints": len(self.constraints),
            "partial_results": len(self.partial_results),
            "confidence": round(sum(scored) / len(scored), 4) if scored else 0.0,
        }

    def to_dict(self) -> dict:
        as_dicts = lambda entries: [vars(e).copy() for e in entries]  # noqa: E731
        return {"facts": as_dicts(self.facts), "constraints": as_dicts(self.constraints),
                "partial_results": as_dicts(self.partial_results), "summary": self.summarize()}


def build_workspace(prompt: str, parsed, verification=None) -> Workspace:
    """Fill a workspace from the prompt, a parsed assistant turn (`markup.Parsed`) and, when given,
    its `checks.CheckReport` (which sets the confidences, per the module docstring)."""
    ws = Workspace()
    ws.constraints_from_prompt(prompt)
    replay: dict[int, bool] = {}
    answer_ok: Optional[bool] = None
    if verification is not None:
        replay = verification.replayed
        check = verification.checks.get("answer_supported")
        if check is not None and not check.skipped:
            answer_ok = check.passed
    for call in parsed.tool_calls:
        if call.succeeded:
            conf = {True: 1.0, False: 0.0}.get(replay.get(call.step), 0.9)
            ws.add_fact(f"{call.name}({call.args}) = {call.result.get('result')!r}",
                        source=f"tool:{call.name}", confidence=conf, value=call.result.get("result"))
        else:
            why = (call.result or {}).get("error") or call.call_error or call.result_error or "no result"
            ws.add_fact(f"{call.name or 'tool call'} failed: {why}", source=f"tool:{call.name}",
                        confidence=0.0)
    for step in parsed.get("reason"):
        ws.add_partial(step, source="reason", confidence=0.5)
    if parsed.answer is not None:
        conf = {True: 1.0, False: 0.3, None: 0.5}[answer_ok]
        ws.add_partial(parsed.answer, source="answer", confidence=conf)
    return ws
