"""Answer extraction and numeric normalisation for math benchmarks.

Two extractors, as lm-evaluation-harness reports for GSM8K (tasks/gsm8k/gsm8k-cot.yaml):
- strict: the answer must sit in a marked place: our `<answer>N</answer>`, GSM8K's `#### N`, or
  chain-of-thought's "The answer is N." (the first such mark wins, like the harness's
  `group_select: 0`);
- flexible: the last number anywhere in the text (the harness's "flexible-extract",
  `group_select: -1`).
Both return a normalised string (`numbers.normalize_number`), so "$1,200.00" and "1200" compare
equal; numbers are found with the "gsm8k" grammar of `havoc_lite.numbers` ("$", loose commas).
"""
from __future__ import annotations

import re
from typing import Optional

from ..markup import ANSWER, section_bodies
from ..numbers import GSM8K_LITERAL as NUMBER
from ..numbers import find_literals, normalize_number

_HASHES_RE = re.compile(r"####\s*(" + NUMBER + ")")
_THE_ANSWER_IS_RE = re.compile(r"[Tt]he (?:final )?answer is:?\s*(" + NUMBER + ")")


def _first_number(text: str) -> Optional[str]:
    found = find_literals(text, "gsm8k")
    return normalize_number(found[0]) if found else None


def extract_strict(text: str) -> Optional[str]:
    """The answer in a marked place, normalised; None when no mark holds a number.

    Order: `<answer>…</answer>` (its first number, so units like "18 dollars" are fine), then
    `#### N`, then "The answer is N".
    """
    for body in section_bodies(text, ANSWER):
        n = _first_number(body)
        if n is not None:
            return n
    for pattern in (_HASHES_RE, _THE_ANSWER_IS_RE):
        m = pattern.search(text)
        if m:
            n = normalize_number(m.group(1))
            if n is not None:
                return n
    return None


def extract_flexible(text: str) -> Optional[str]:
    """The last number in `text`, normalised; None if there is none."""
    for literal in reversed(find_literals(text, "gsm8k")):
        n = normalize_number(literal)
        if n is not None:
            return n
    return None


def extract_gold(answer: str) -> str:
    """The gold answer of a GSM8K `answer` field (the number after `####`), normalised.

    A bare number (a tool trace's `answer`) is accepted too.

    Raises:
        ValueError: the field holds no `#### N` and is not itself a number.
    """
    m = _HASHES_RE.search(answer)
    n = normalize_number(m.group(1)) if m else normalize_number(answer)
    if n is None:
        n = extract_strict(answer)
    if n is None:
        raise ValueError(f"GSM8K answer field has no '#### N' and is not a number: {answer[-80:]!r}")
    return n
