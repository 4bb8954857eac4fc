"""Arithmetic problems with a planted trap, worked through PRIME's sections (calculator).

Each template writes a question a hasty reader gets wrong, then a trace: a first attempt (a plain
step with a real calculator call) that falls into the trap, `<advocate>` stating what it did,
`<attack>` naming the flaw and the wrong result, `<pragmatist>` recomputing with the calculator and
`<verify>` checking the fix against the question. `synth.validation.attack_problem` checks every
attack (it names a result of the first attempt, a call after it computes the fix, and the answer is
not the attacked number).

Two families, disjoint by construction (`tests/test_traps.py` checks it on their output):
- TRAIN_TRAPS: the training family (`synth.offline` topic "arithmetic_traps", `split` train/test):
  items given away and some handed back, change from a note for several items at one price, a
  "times as many" asked for the total.
- HELDOUT_TRAPS: for evaluation only (`phrasing="heldout"`): other kinds of trap in other sentence
  shapes: a unit mix-up (hours and minutes, metres and centimetres), an off-by-one count (pages
  "from ... to ..., both included"), and a percentage taken of the wrong base (the wage before a
  rise). A model that scores on these has learnt to look for a trap, not three sentences.

A template takes `(rng, run)` (`synth.offline._Run`: `run(content, tool, args, role=None)` runs a
call and records the step, `run.say(content, role)` a step without a call) and returns
`(question, answer)`.
"""
from __future__ import annotations

import random
import re

from havoc_lite.markup import PRAGMATIST, open_tag

from .offline import ITEMS, NAMES, _fmt


# --- the training family --------------------------------------------------------------------------
def _given_back(rng: random.Random, run, name: str, other: str, item: str) -> tuple[str, object]:
    """Given away, then some returned: a hasty reader adds everything."""
    a, b = rng.randint(20, 60), rng.randint(3, 15)
    c = rng.randint(1, b - 1)
    q = (f"{name} had {a} {item}. {name} gave {b} of them to {other}, and {other} later handed "
         f"{c} back. How many {item} does {name} have now?")
    wrong = run(f"Put the numbers together: {a}, {b} and {c}.", "calculator", {"expression": f"{a}+{b}+{c}"})
    run.say(f"The first attempt adds all three numbers and gets {wrong}.", "advocate")
    run.say(f"That is wrong: the {b} {item} were given away, so they must be subtracted; {wrong} "
            f"is more than {name} ever had.", "attack")
    r = run(f"Subtract the {b} given away and add the {c} handed back.", "calculator",
            {"expression": f"{a}-{b}+{c}"}, role="pragmatist")
    run.say(f"{r} is below {a} because more left than came back, as the story says.", "verify")
    return q, r


def _unit_price(rng: random.Random, run, name: str, other: str, item: str) -> tuple[str, object]:
    """A price per item: a hasty reader takes the note minus one price."""
    price, n = rng.randint(2, 9), rng.randint(3, 9)
    note = 50 if price * n < 50 else 100
    q = (f"{name} buys {n} {item} at {price} dollars each and pays with a {note}-dollar note. "
         f"How much change does {name} get?")
    wrong = run(f"Take the price from the {note} dollars.", "calculator", {"expression": f"{note}-{price}"})
    run.say(f"The first attempt takes one price from the note and gets {wrong}.", "advocate")
    run.say(f"That is wrong: {price} dollars is the price of one of the {n} {item}, so {wrong} "
            f"ignores the other {n - 1}.", "attack")
    r = run(f"The {n} {item} cost {n} times {price} dollars; the change is the {note} dollars minus "
            "that.", "calculator", {"expression": f"{note}-{n}*{price}"}, role="pragmatist")
    run.say(f"{r} plus the {n * price} paid makes the {note}-dollar note.", "verify")
    return q, r


def _one_share(rng: random.Random, run, name: str, other: str, item: str) -> tuple[str, object]:
    """"Times as many", asked for the total: a hasty reader gives one share."""
    a, c = rng.randint(3, 20), rng.randint(2, 5)
    q = (f"{name} has {a} {item} and {other} has {c} times as many. "
         f"How many {item} do the two of them have altogether?")
    wrong = run(f"{other} has {c} times {a}.", "calculator", {"expression": f"{c}*{a}"})
    run.say(f"The first attempt answers with {other}'s {wrong}.", "advocate")
    run.say(f"That is wrong: {wrong} is only {other}'s share; the question asks for both of them.",
            "attack")
    r = run(f"Add {name}'s {a} to {other}'s {wrong}.", "calculator", {"expression": f"{a}+{wrong}"},
            role="pragmatist")
    run.say(f"{r} is {c + 1} times {a}, one share for {name} and {c} for {other}.", "verify")
    return q, r


# --- the held-out family (evaluation only) --------------------------------------------------------
FILMS = ["film", "concert", "play", "lecture", "match", "workshop"]
CORDS = ["rope", "ribbon", "cable", "hose", "string", "wire"]


def _hours_minutes(rng: random.Random, run, name: str, other: str, item: str) -> tuple[str, object]:
    """A unit mix-up: hours and minutes added as if they were one unit."""
    event = rng.choice(FILMS)
    h, m = rng.randint(1, 4), rng.randint(5, 55)
    q = (f"The {event} that {name} is planning runs for {h} hours, and {other} wants {m} more "
         f"minutes added at the end. In minutes, what will its length be?")
    wrong = run(f"Add the {h} to the {m}.", "calculator", {"expression": f"{h}+{m}"})
    run.say(f"The first attempt adds {h} and {m} and gets {wrong}.", "advocate")
    run.say(f"That is wrong: {h} counts hours and {m} counts minutes, so {wrong} adds two different "
            "units; the hours must become minutes first.", "attack")
    r = run(f"{h} hours are {h} times 60 minutes; add the {m} extra minutes.", "calculator",
            {"expression": f"{h}*60+{m}"}, role="pragmatist")
    run.say(f"{r} minutes is {h} full hours of 60 minutes and {m} minutes more.", "verify")
    return q, r


def _metres_centimetres(rng: random.Random, run, name: str, other: str, item: str) -> tuple[str, object]:
    """A unit mix-up: centimetres taken from a length in metres."""
    cord = rng.choice(CORDS)
    metres, cm = rng.randint(2, 9), rng.randint(11, 95)
    q = (f"A {cord} measures {metres} metres from end to end. If {name} snips {cm} centimetres off "
         f"it, what length remains, in centimetres?")
    wrong = run(f"Take the {cm} from the {metres}.", "calculator", {"expression": f"{metres}-{cm}"})
    run.say(f"The first attempt subtracts {cm} from {metres} and gets {wrong}.", "advocate")
    run.say(f"That is wrong: {wrong} takes centimetres from metres; a length cannot be negative, and "
            f"the {metres} metres are {metres} times 100 centimetres.", "attack")
    r = run(f"Turn the {metres} metres into centimetres and take off the {cm} cut.", "calculator",
            {"expression": f"{metres}*100-{cm}"}, role="pragmatist")
    run.say(f"{r} centimetres plus the {cm} cut off is {metres * 100}, the whole {cord}.", "verify")
    return q, r


def _inclusive_count(rng: random.Random, run, name: str, other: str, item: str) -> tuple[str, object]:
    """An off-by-one count: the pages from a to b, both included, are b - a + 1."""
    a = rng.randint(5, 120)
    b = a + rng.randint(4, 60)
    q = (f"Over the weekend {name} read every page of a novel from page {a} through page {b}, "
         f"counting both of those pages. What is the number of pages {name} read?")
    wrong = run(f"The difference between page {b} and page {a}.", "calculator", {"expression": f"{b}-{a}"})
    run.say(f"The first attempt subtracts {a} from {b} and gets {wrong}.", "advocate")
    run.say(f"That is wrong: {wrong} counts the steps between the two pages and leaves out page {a} "
            "itself, which was read too.", "attack")
    r = run(f"Count from page {a} to page {b} with both ends: the difference plus one.", "calculator",
            {"expression": f"{b}-{a}+1"}, role="pragmatist")
    run.say(f"With pages {a} to {a + 2} as a check, the rule gives 3 pages, which is right; here {r}.",
            "verify")
    return q, r


def _percent_base(rng: random.Random, run, name: str, other: str, item: str) -> tuple[str, object]:
    """A percentage of the wrong base: the wage before a p % rise is after / (1 + p/100), not
    after minus p % of after."""
    p = rng.choice([10, 20, 25, 50])
    before = rng.randint(5, 40) * 20
    after = before * (100 + p) // 100
    q = (f"Since a {p} percent raise, the weekly pay of {name} is {after} dollars. "
         f"Before that raise, what did {name} earn per week?")
    wrong = _fmt(run(f"Take {p} percent of {after} away from {after}.", "calculator",
                     {"expression": f"{after}-{after}*{p}/100"}))
    run.say(f"The first attempt removes {p} percent of {after} and gets {wrong}.", "advocate")
    run.say(f"That is wrong: the {p} percent was taken of the old pay, not of {after}, so {wrong} "
            "removes too much.", "attack")
    r = _fmt(run(f"The new pay is {100 + p} percent of the old one; divide by that.", "calculator",
                 {"expression": f"{after}*100/{100 + p}"}, role="pragmatist"))
    run.say(f"{r} plus {p} percent of {r} gives back {after}.", "verify")
    return q, r


TRAIN_TRAPS = (("given_back", _given_back), ("unit_price", _unit_price), ("one_share", _one_share))
HELDOUT_TRAPS = (("hours_minutes", _hours_minutes), ("metres_centimetres", _metres_centimetres),
                 ("inclusive_count", _inclusive_count), ("percent_base", _percent_base))


def _draw(family, rng: random.Random, run) -> tuple[str, str]:
    name, other = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    _, make = family[rng.randrange(len(family))]
    question, answer = make(rng, run, name, other, item)
    return question, _fmt(answer)


def train_trap(rng: random.Random, run) -> tuple[str, str]:
    """One problem of the training family (topic "arithmetic_traps")."""
    return _draw(TRAIN_TRAPS, rng, run)


def heldout_trap(rng: random.Random, run) -> tuple[str, str]:
    """One problem of the held-out family (evaluation only)."""
    return _draw(HELDOUT_TRAPS, rng, run)


def strip_roles(trace: dict) -> dict:
    """The same problem without PRIME's sections, for the no-roles comparison: the trace solves it
    directly. The <advocate>, <attack> and <verify> steps are dropped; the <pragmatist>'s
    recomputation stays as an ordinary reasoning step with its calculator call; a first-attempt
    step stays only when the fix uses its result (the "times as many" trap: the other's share is a
    right sub-result, the trap is stopping there), so no kept call uses a number from nowhere.

    Raises ValueError for a trace without a <pragmatist> step with a calculator call.
    """
    steps = trace["reasoning"]
    fix = next((i for i, s in enumerate(steps) if s.get("role") == "pragmatist" and "tool_call" in s), None)
    if fix is None:
        raise ValueError(f"trace {trace.get('id', '?')}: no {open_tag(PRAGMATIST)} calculator step to keep")
    used = set(re.findall(r"\d+(?:\.\d+)?", steps[fix]["tool_call"]["args"]["expression"]))
    kept = [s for s in steps[:fix] if "tool_result" in s and _fmt(s["tool_result"].get("result")) in used]
    kept += [s for s in steps[fix:] if s.get("role") not in ("advocate", "attack", "verify")]
    kept = [{**{k: v for k, v in s.items() if k != "role"}, "step": i + 1} for i, s in enumerate(kept)]
    return {**trace, "reasoning": kept}
