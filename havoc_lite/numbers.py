"""Numbers in text and in tool results: finding literals, reading them, and deciding when two agree.

The one home of the number rules that PRIME's checks (`prime.checks`), the synthetic-trace
validation (`synth.validation`), answer extraction and graders (`eval.extract`, `eval.graders`)
share. Three parts:

1. **Literals.** `find_numbers(text, grammar)` returns every number written in `text` as a
   `Number` (its text, value, precision and percent flag). Three grammars, because three callers
   read three kinds of text and each reading is pinned by its own tests:

   | grammar    | reads                                   | differs in                                  |
   | ---------- | --------------------------------------- | ------------------------------------------- |
   | `"prime"`  | a model's `<answer>`, a user's prompt   | "−3" (U+2212, pretrained models write it);  |
   |            |                                         | "2x3", "v1.2.3" are no numbers; "12%" glued |
   | `"synth"`  | Claude-written traces (statistics)      | ".05" (p-values), "35 %" with a space       |
   | `"gsm8k"`  | GSM8K outputs (answer extraction)       | "$1,200", "$ 5", loose commas "1,2": what   |
   |            |                                         | people write for money; "35 - 2" reads 2    |

2. **Values.** `numbers_in(value)`: every number inside a JSON-like tool result (numeric leaves
   and literals inside strings); `numeric_leaves(value)`: only the JSON numbers.
   `normalize_number(text)`: the canonical decimal string of a written number ("$1,200.00" ->
   "1200").

3. **Matching.** `states_value(a, x)`: the written number `a` states the value `x`: exact
   (relative tolerance) or `x` rounded to the precision `a` was written with ("0.35" for 0.3466),
   "a%" also as a/100. `normalized_equal(pred, gold)`: two normalized strings, exactly or within a
   relative tolerance (graders). `same_value(a, b)`: a re-run tool result gives the same number.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Optional

Grammar = Literal["prime", "synth", "gsm8k"]

# A number written as digits: thousands groups "1,234" or plain digits, decimals, exponent.
# "[1,2,3]" is three numbers because ",2" is not a three-digit group.
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+|\d+)"
# The body of a `synth` literal (sign, digits or ".5", exponent); embeddable in larger patterns
# (labelled numbers such as "p = 0.03", bounds such as "< 0.001").
SYNTH_LITERAL = r"-?(?:" + _DIGITS + r"(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
# A GSM8K answer as people write it: optional sign and "$", digits with any commas, decimals.
# A space may follow "$" ("$ 5"), never the sign: in "35 - 2" the minus is subtraction, and the
# number is 2 (as lm-evaluation-harness's gsm8k-cot regex reads it).
GSM8K_LITERAL = r"-?(?:\$\s?)?(?:\d[\d,]*(?:\.\d+)?|\.\d+)"

_FINDERS: dict[str, re.Pattern] = {
    # sign (ASCII or U+2212) not after a word char or bracket, so "10-5" is 10 and 5; no digits
    # glued after the number ("2x3", "1.2.3" are not numbers); a percent sign right after it.
    "prime": re.compile(r"(?:(?<![\w)\]])[-−])?(?<![\w.])" + _DIGITS
                        + r"(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.]*\d)%?"),
    # not after a letter, digit, dot or bracket ("3-4" is 3 and 4); ".05" and "35 %" are read.
    "synth": re.compile(r"(?<![\w.)\]])" + SYNTH_LITERAL + r"(?:\s?%)?"),
    "gsm8k": re.compile(GSM8K_LITERAL),
}


@dataclass(frozen=True)
class Number:
    """A number read from text.

    text: the literal as written ("1,234.50", "35%"); value: its float (1234.5, 35.0; the percent
    sign is not applied); half_ulp: half a unit in its last written digit ("1,234.50" -> 0.005,
    "24" -> 0.5, "3.4e-05" -> 5e-07), the precision it states; percent: written with "%".
    """
    text: str
    value: float
    half_ulp: float
    percent: bool = False


def parse_number(literal: str) -> Optional[Number]:
    """A `Number` from one literal ("1,234.5", "−3", "$12", "35 %", "1.5e-3"), or None when it is
    no finite number. Commas, "$" and spaces are dropped, U+2212 is a minus sign."""
    percent = literal.rstrip().endswith("%")
    s = literal.strip().rstrip("%").replace(",", "").replace("$", "").replace(" ", "").replace("−", "-")
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    value = float(d)
    if not d.is_finite() or not math.isfinite(value):
        return None
    exponent = d.as_tuple().exponent   # "0e999" is a finite 0 whose last digit is beyond floats
    return Number(literal, value, 0.5 * 10.0 ** exponent if exponent < 308 else math.inf, percent)


def find_literals(text: str, grammar: Grammar) -> list[str]:
    """Every number literal in `text` as written, in order, found with `grammar` (module
    docstring's table): ['48', '1,234.5', '-3', '12%']."""
    return [m.group(0) for m in _FINDERS[grammar].finditer(text)]


def find_numbers(text: str, grammar: Grammar) -> list[Number]:
    """Every number in `text`, in order, read with `grammar` (module docstring's table).
    Literals that are no finite number ("1e999") are left out."""
    found = (parse_number(s) for s in find_literals(text, grammar))
    return [n for n in found if n is not None]


def numbers_in(value: Any, grammar: Grammar) -> list[float]:
    """Every finite number in a JSON-like value: numeric leaves anywhere in nested dicts and
    lists, and literals inside strings (a symbolic result "x = 3", a passage), read with
    `grammar`. Booleans and None are no numbers."""
    if isinstance(value, str):
        return [n.value for n in find_numbers(value, grammar)]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in numbers_in(v, grammar)]
    return numeric_leaves(value)


def numeric_leaves(value: Any) -> list[float]:
    """The finite JSON numbers of a value (nested dicts and lists), not digits inside strings."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, (int, float)):
        return [float(value)] if math.isfinite(value) else []
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return [v for x in items for v in numeric_leaves(x)]


def states_value(a: Number, x: float, *, rel_tol: float, whole_is_exact: bool = False,
                 zero_is_exact: bool = True, whole_rounding: bool = False) -> bool:
    """Whether the written number `a` states the value `x`.

    True when `a` is `x` within `rel_tol` (absolute 1e-12 near 0), or `x` rounded to the
    precision `a` was written with: |a - x| <= a.half_ulp ("p = 0.035" for 0.03466; "19" for
    19.3). A percent "a%" also tries a/100 (with half_ulp/100): "34.7%" states 0.347.

    Options, one per caller whose rule differs (kept so that neither changes behaviour):
        whole_is_exact: a literal without decimals ("24", "1.5e3") has no rounding tolerance
            (PRIME: "24" must not pass for a tool's 23.6; `whole_rounding` says what may).
        zero_is_exact: a written 0 ("0", "0.00") only matches a real 0 (synth: "0" never passes
            for 0.3); PRIME lets "0.00" state 0.003, which is what two decimals say.
        whole_rounding: a whole-number literal may also be `x` rounded, floored or ceiled, for
            |x| >= 1 (PRIME: "7 buses" for 6.2 buses needed).
    The rounding comparison allows float noise: |a - x| <= half_ulp * (1 + 1e-9) + 1e-12.
    """
    tol = 0.0 if whole_is_exact and a.half_ulp >= 0.5 else a.half_ulp
    targets = [(a.value, tol)] + ([(a.value / 100.0, tol / 100.0)] if a.percent else [])
    for value, t in targets:
        if math.isclose(value, x, rel_tol=rel_tol, abs_tol=1e-12):
            return True
        if (value != 0 or not zero_is_exact) and abs(value - x) <= t * (1 + 1e-9) + 1e-12:
            return True
        if whole_rounding and t == 0.0 and math.isfinite(x) and abs(x) >= 1 \
                and value in (round(x), math.floor(x), math.ceil(x)):
            return True
    return False


def same_value(a: float, b: float, rel_tol: float = 1e-9) -> bool:
    """Two computed numbers are the same result: within `rel_tol` (absolute 1e-12 near 0), or
    both NaN (a tool that returns NaN returns it again)."""
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))


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


def normalized_equal(pred: Optional[str], gold: Optional[str], rel_tol: float = 0.0) -> bool:
    """True when two `normalize_number` strings are equal; with `rel_tol` > 0, when
    |pred - gold| <= rel_tol * max(1, |gold|) (for tool results rounded to 10 significant digits).
    Decimal arithmetic; None or a non-number never matches."""
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
