"""Held-out arithmetic word problems, phrased unlike any training template.

The offline calculator traces (`synth.offline._arithmetic`) are one family of sentences: "{name}
has {a} {items} and buys {b} more. How many …", numbers below ~60. A model that only memorised
that family scores zero here. These problems use other contexts (money, distance, school, farms,
libraries, geometry, temperatures), other verbs and question forms, bare arithmetic requests
("Find the product of 37 and 46."), and larger numbers (up to four digits), so a small model
cannot do them in its head but can with a calculator. One or two operations each; every answer
is an integer (divisions are exact).

`heldout_arithmetic(n, seed)` returns GSM8K-shaped rows (`id`, `question`, `answer` = "#### N",
`gold`) for `eval.gsm8k.evaluate_gsm8k(examples=…)`.
"""
from __future__ import annotations

import random

from .gsm8k import extract_gold

PEOPLE = ["Priya", "Mateo", "Chen", "Fatima", "Olga", "Kwame", "Hiro", "Ingrid", "Diego", "Amara"]


def _problem(rng: random.Random, kind: int) -> tuple[str, int]:
    r = rng.randint
    p = rng.choice(PEOPLE)
    if kind == 0:
        a, b = r(120, 980), r(120, 980)
        return rng.choice([f"What is {a} plus {b}?", f"Find the sum of {a} and {b}.",
                           f"Compute {a} + {b}."]), a + b
    if kind == 1:
        a, b = r(500, 2000), r(100, 499)
        return rng.choice([f"Subtract {b} from {a}.", f"What is {a} minus {b}?",
                           f"How much greater is {a} than {b}?"]), a - b
    if kind == 2:
        a, b = r(13, 99), r(13, 99)
        return rng.choice([f"What is the product of {a} and {b}?", f"Multiply {a} by {b}.",
                           f"Calculate {a} times {b}."]), a * b
    if kind == 3:
        b, q = r(6, 40), r(12, 90)
        return rng.choice([f"Divide {b * q} by {b}.", f"What is {b * q} divided by {b}?",
                           f"What do you get when {b * q} is split into {b} equal parts?"]), q
    if kind == 4:
        a, b = r(150, 600), r(150, 600)
        return (f"A bakery sold {a} loaves of bread on Monday and {b} loaves on Tuesday. "
                "How many loaves did it sell over the two days?"), a + b
    if kind == 5:
        s, h = r(45, 120), r(3, 14)
        return (f"A train runs at {s} kilometres per hour for {h} hours without stopping. "
                "How many kilometres does it cover?"), s * h
    if kind == 6:
        m, s = r(300, 1500), r(40, 299)
        return (f"{p} had {m} dollars in a savings account and paid {s} dollars for a new jacket. "
                "How much money remains in the account?"), m - s
    if kind == 7:
        c, s = r(8, 40), r(18, 35)
        return (f"A school has {c} classrooms and every classroom seats {s} pupils. "
                "What is the total number of seats?"), c * s
    if kind == 8:
        per, n = rng.choice([6, 10, 12, 15, 24]), r(15, 80)
        return (f"A farmer packs {per * n} eggs into cartons that hold {per} eggs each. "
                "How many cartons can the farmer fill?"), n
    if kind == 9:
        a, b, c = r(800, 3000), r(100, 700), r(50, 500)
        return (f"A library owned {a} books. It received a donation of {b} books and later "
                f"lent out {c} of them. How many books are still on its shelves?"), a + b - c
    if kind == 10:
        n, s, e = r(4, 15), r(30, 60), r(10, 99)
        return (f"{n} buses each carry {s} passengers to a stadium, and another {e} fans arrive "
                "on foot. How many fans reach the stadium altogether?"), n * s + e
    if kind == 11:
        w, l = r(12, 95), r(12, 95)
        return (f"A rectangular garden measures {w} metres by {l} metres. "
                "What is its area in square metres?"), w * l
    if kind == 12:
        t, u = r(-15, 20), r(11, 35)
        return (f"At dawn the temperature was {t} degrees. By midday it had climbed {u} degrees. "
                "What was the midday temperature?"), t + u
    # kind 13: price per unit, then change from a note
    price, n = r(3, 25), r(4, 19)
    note = rng.choice([500, 1000]) if price * n < 500 else 1000
    return (f"Pens cost {price} dollars each. {p} buys {n} pens and pays with a {note}-dollar note. "
            "How much change does {p} get back?").replace("{p}", p), note - price * n


NUM_KINDS = 14


def heldout_arithmetic(n: int = 200, seed: int = 1234) -> list[dict]:
    """`n` distinct problems, cycling through the 14 kinds, reproducible for a seed.

    Returns rows {"id", "question", "answer": "#### N", "gold"} (gold normalised as GSM8K's).
    Raises ValueError for n < 1.
    """
    if n < 1:
        raise ValueError(f"heldout_arithmetic: n must be >= 1, got {n}")
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        question, value = _problem(rng, len(rows) % NUM_KINDS)
        if question in seen:
            continue
        seen.add(question)
        rows.append({"id": f"arith-{len(rows)}", "question": question, "answer": f"#### {value}",
                     "gold": extract_gold(f"#### {value}")})
    return rows
