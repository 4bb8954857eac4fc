"""Held-out arithmetic word problems, phrased unlike any training template.

The offline calculator traces (`synth.offline._arithmetic`) are one family of sentences: "{name}
has {a} {items} and buys {b} more. How many …", numbers below ~60. A model that only memorised
that family scores zero here. These problems use other contexts (money, distance, school, farms,
libraries, geometry, temperatures), other verbs and question forms, bare arithmetic requests
("Find the product of 37 and 46."), and larger numbers (up to four digits), so a small model
cannot do them in its head but can with a calculator. One or two operations each; every answer
is an integer (divisions are exact).

`heldout_problem(rng, kind, small)` is one problem with the calculator steps that solve it;
`synth.offline.generate_offline("arithmetic", ..., phrasing="heldout")` turns them into verified
tool traces, with `small=True` drawing numbers in the training templates' range (so that a
held-out score differs from an in-template one by the phrasing alone).

`heldout_arithmetic(n, seed)` returns GSM8K-shaped rows (`id`, `question`, `answer` = "#### N",
`gold`) for `eval.gsm8k.evaluate_gsm8k(examples=…)`.
"""
from __future__ import annotations

import random
from typing import Callable

from .gsm8k import extract_gold

PEOPLE = ["Priya", "Mateo", "Chen", "Fatima", "Olga", "Kwame", "Hiro", "Ingrid", "Diego", "Amara"]


def _small_range(lo: int, hi: int) -> tuple[int, int]:
    """A range a tenth as large, at least 2..3 (the training templates draw 2..60)."""
    lo_s = max(2, lo // 10) if lo > 0 else lo // 10
    return lo_s, max(lo_s + 1, hi // 10, 3)


def heldout_problem(rng: random.Random, kind: int, small: bool = False) -> tuple[str, list[tuple[str, str]], int]:
    """One held-out problem of `kind` (0..NUM_KINDS-1).

    Returns (question, steps, answer): `steps` are (reasoning sentence, calculator expression)
    pairs, in order, whose last expression evaluates to `answer` (an int). `small` draws every
    number from a range a tenth as large (`_small_range`); for a given seed the draws are the
    same sequence either way.
    """
    def r(lo, hi):
        return rng.randint(*_small_range(lo, hi)) if small else rng.randint(lo, hi)

    p = rng.choice(PEOPLE)
    if kind == 0:
        a, b = r(120, 980), r(120, 980)
        return (rng.choice([f"What is {a} plus {b}?", f"Find the sum of {a} and {b}.", f"Compute {a} + {b}."]),
                [(f"Add {a} and {b}.", f"{a}+{b}")], a + b)
    if kind == 1:
        a, b = r(500, 2000), r(100, 499)
        return (rng.choice([f"Subtract {b} from {a}.", f"What is {a} minus {b}?",
                            f"How much greater is {a} than {b}?"]),
                [(f"Take {b} from {a}.", f"{a}-{b}")], a - b)
    if kind == 2:
        a, b = r(13, 99), r(13, 99)
        return (rng.choice([f"What is the product of {a} and {b}?", f"Multiply {a} by {b}.",
                            f"Calculate {a} times {b}."]),
                [(f"Multiply {a} by {b}.", f"{a}*{b}")], a * b)
    if kind == 3:
        b, q = r(6, 40), r(12, 90)
        return (rng.choice([f"Divide {b * q} by {b}.", f"What is {b * q} divided by {b}?",
                            f"What do you get when {b * q} is split into {b} equal parts?"]),
                [(f"Divide {b * q} by {b}.", f"{b * q}/{b}")], q)
    if kind == 4:
        a, b = r(150, 600), r(150, 600)
        return (f"A bakery sold {a} loaves of bread on Monday and {b} loaves on Tuesday. "
                "How many loaves did it sell over the two days?",
                [(f"Monday's {a} plus Tuesday's {b}.", f"{a}+{b}")], a + b)
    if kind == 5:
        s, h = r(45, 120), r(3, 14)
        return (f"A train runs at {s} kilometres per hour for {h} hours without stopping. "
                "How many kilometres does it cover?",
                [(f"Distance is {s} km per hour times {h} hours.", f"{s}*{h}")], s * h)
    if kind == 6:
        m, s = r(300, 1500), r(40, 299)
        m = max(m, s + 1) if small else m
        return (f"{p} had {m} dollars in a savings account and paid {s} dollars for a new jacket. "
                "How much money remains in the account?",
                [(f"The {s} dollars paid come out of the {m}.", f"{m}-{s}")], m - s)
    if kind == 7:
        c, s = r(8, 40), r(18, 35)
        return (f"A school has {c} classrooms and every classroom seats {s} pupils. "
                "What is the total number of seats?",
                [(f"{c} classrooms times {s} seats.", f"{c}*{s}")], c * s)
    if kind == 8:
        per, n = rng.choice([6, 10, 12, 15, 24]), r(15, 80)
        return (f"A farmer packs {per * n} eggs into cartons that hold {per} eggs each. "
                "How many cartons can the farmer fill?",
                [(f"{per * n} eggs over {per} per carton.", f"{per * n}/{per}")], n)
    if kind == 9:
        a, b, c = r(800, 3000), r(100, 700), r(50, 500)
        return (f"A library owned {a} books. It received a donation of {b} books and later "
                f"lent out {c} of them. How many books are still on its shelves?",
                [(f"The donation brings {a} up by {b}.", f"{a}+{b}"),
                 (f"Lending {c} leaves the rest.", f"{a + b}-{c}")], a + b - c)
    if kind == 10:
        n, s, e = r(4, 15), r(30, 60), r(10, 99)
        return (f"{n} buses each carry {s} passengers to a stadium, and another {e} fans arrive "
                "on foot. How many fans reach the stadium altogether?",
                [(f"The buses bring {n} times {s}.", f"{n}*{s}"),
                 (f"Add the {e} on foot.", f"{n * s}+{e}")], n * s + e)
    if kind == 11:
        w, l = r(12, 95), r(12, 95)
        return (f"A rectangular garden measures {w} metres by {l} metres. "
                "What is its area in square metres?",
                [(f"Area is {w} times {l}.", f"{w}*{l}")], w * l)
    if kind == 12:
        t, u = r(-15, 20), r(11, 35)
        return (f"At dawn the temperature was {t} degrees. By midday it had climbed {u} degrees. "
                "What was the midday temperature?",
                [(f"Start at {t} and climb {u}.", f"{t}+{u}")], t + u)
    # kind 13: price per unit, then change from a note
    price, n = r(3, 25), r(4, 19)
    note = rng.choice([500, 1000]) if price * n < 500 else 1000
    note = note // 10 if small else note
    return ((f"Pens cost {price} dollars each. {p} buys {n} pens and pays with a {note}-dollar note. "
             f"How much change does {p} get back?"),
            [(f"{n} pens at {price} dollars cost this much.", f"{n}*{price}"),
             (f"The change from {note} dollars.", f"{note}-{price * n}")], note - price * n)


NUM_KINDS = 14


def heldout_arithmetic(n: int = 200, seed: int = 1234) -> list[dict]:
    """`n` distinct problems, cycling through the 14 kinds, reproducible for a seed.

    Returns rows {"id", "question", "answer": "#### N", "gold"} (gold normalised as GSM8K's).
    Raises ValueError for n < 1.
    """
    if n < 1:
        raise ValueError(f"heldout_arithmetic: n must be >= 1, got {n}")
    rng = random.Random(seed)
    return question_rows(lambda i: heldout_problem(rng, i % NUM_KINDS), n, "arith")


def question_rows(make: Callable[[int], tuple], n: int, prefix: str) -> list[dict]:
    """`n` GSM8K-shaped eval rows {"id": "<prefix>-<i>", "question", "answer": "#### N", "gold"} from
    `make(i) -> (question, _, value)` for the i-th row; a question already made is drawn again.
    Shared by the held-out set and `synth.arith_phrasings`' training and validation families."""
    rows, seen = [], set()
    while len(rows) < n:
        question, _, value = make(len(rows))
        if question in seen:
            continue
        seen.add(question)
        rows.append({"id": f"{prefix}-{len(rows)}", "question": question, "answer": f"#### {value}",
                     "gold": extract_gold(f"#### {value}")})
    return rows
