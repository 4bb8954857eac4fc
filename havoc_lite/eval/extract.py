"""Answer extraction and numeric normalisation for math benchmarks.

Two extractors, as lm-evaluation-harness reports for GSM8K (tasks/gsm8k/gsm8k-cot.yaml):
- strict: the answer must sit in a marked place: our `<answer>N</answer>`, GSM8K's `#### N`, or
  chain-of-thought's "The answer is N." (the first such mark wins, like the harness's
  `group_select: 0`);
- flexible: the last number anywhere in the text (the harness's "flexible-extract",
  `group_select: -1`).
Both return a normalised string (`normalize_number`), so "$1,200.00" and "1200" compare equal.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Optional

# A number as people write it: optional sign and `$`, digits with thousands commas, decimals.
NUMBER = r"-?\$?\s?(?:\d[\d,]*(?:\.\d+)?|\.\d+)"
_NUMBER_RE = re.compile(NUMBER)
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_HASHES_RE = re.compile(r"####\s*(" + NUMBER + ")")
_THE_ANSWER_IS_RE = re.compile(r"[Tt]he (?:final )?answer is:?\s*(" + NUMBER + ")")


def normalize_number(text: str) -> Optional[str]:
    """Canonical string of a written number, or None if `text` holds no number.

    Drops `$`, thousands commas, spaces, a trailing `%` or `.`, and trailing zeros after the
    decimal point: "1,200" -> "1200", "$10.0" -> "10", "12.50%" -> "12.5", "-0" -> "0".
    Exact (decimal, not float), so 0.1 + 0.2 style rounding never enters.
    """
    s = text.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip("%").rstrip(".")
    if not s:
        return None
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    out = format(d.normalize(), "f")
    if "." in out:
        out = out.rstrip("0").rstrip(".")
    return "0" if out in ("-0", "") else out


def _first_number(text: str) -> Optional[str]:
    m = _NUMBER_RE.search(text)
    return normalize_number(m.group(0)) if m else None


def extract_strict(text: str) -> Optional[str]:
    """The answer in a marked place, normalised; None when no mark holds a number.

    Order: `<answer>…</answer>` (its first number, so units like "18 dollars" are fine), then
    `#### N`, then "The answer is N".
    """
    for m in _ANSWER_TAG_RE.finditer(text):
        n = _first_number(m.group(1))
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
    for m in reversed(list(_NUMBER_RE.finditer(text))):
        n = normalize_number(m.group(0))
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


def numbers_match(pred: Optional[str], gold: Optional[str], rel_tol: float = 0.0) -> bool:
    """True when two normalised numbers are equal; with `rel_tol` > 0, when
    |pred - gold| <= rel_tol * max(1, |gold|) (for tool results rounded to 10 significant digits)."""
    if pred is None or gold is None:
        return False
    if pred == gold:
        return True
    if rel_tol <= 0:
        return False
    try:
        p, g = Decimal(pred), Decimal(gold)
    except InvalidOperation:
        return False
    return abs(p - g) <= Decimal(str(rel_tol)) * max(Decimal(1), abs(g))
