"""Arithmetic word problems in many phrasings: calculator traces for tool SFT of a pretrained model.

`synth.offline`'s nine arithmetic templates are nine sentence shapes; a pretrained model tuned on
them fits the shapes and then picks the wrong operation on a sentence it has not seen ("Subtract
B from A" -> A+B). This grammar writes one- and two-step problems whose wording varies: verbs of
gaining and losing, question first or last, "how many more / fewer", "the difference between",
comparisons ("B more than"), totals over groups and days (containers, shelves, tables, teams),
rows times columns and areas, temperatures rising and falling, change from a payment, rates,
halves and doubles, bare requests, numbers from 2 to four digits. Each problem comes with the calculator
steps that solve it and a sentence per step that says why that operation.

Two disjoint families:
- "train": what the tuned model is taught (`generate_phrasings`, verified traces);
- "validation": a few other shapes to choose settings on (`phrasing_rows(..., "validation")`), so
  that the held-out problems of `havoc_lite.eval.arith_heldout` never steer a choice.
Neither family writes a sentence shape of `eval.arith_heldout`; tests/test_arith_phrasings.py
checks it with a pattern built from each held-out sentence.

`generate_phrasings(n, seed)` returns traces in `synth.offline`'s record format (topic
"arithmetic", phrasing "varied"), each step's calculator call really run and the whole trace
passed through `synth.validation.validate_trace` before it is kept.
"""
from __future__ import annotations

import random
from typing import Callable, Literal, Optional

from .offline import _fmt, _Run
from .validation import Deduper, validate_trace

Family = Literal["train", "validation"]
Problem = tuple[str, list[tuple[str, str]], int]   # question, [(why, calculator expression)], answer

NAMES = ["Tom", "Anna", "Ben", "Lily", "Sam", "Mia", "Leo", "Emma", "Max", "Zoe", "Jack", "Ava", "Noah",
         "Ella", "Omar", "Sara", "Ravi", "Nina", "Luis", "Kate", "Yusuf", "Grace", "Tariq", "Rosa"]
ITEMS = ["stickers", "marbles", "stamps", "shells", "coins", "cards", "beads", "pebbles", "buttons",
         "crayons", "badges", "postcards", "acorns", "ribbons", "comics", "keychains"]
CONTAINERS = ["boxes", "bags", "jars", "crates", "tins", "baskets", "folders", "trays"]
THINGS = {"notebook": "notebooks", "lamp": "lamps", "scarf": "scarves", "backpack": "backpacks",
          "kettle": "kettles", "board game": "board games", "umbrella": "umbrellas", "helmet": "helmets"}
DAYS = [("Saturday", "Sunday"), ("Thursday", "Friday"), ("the first week", "the second week"),
        ("the morning", "the afternoon"), ("March", "April")]
GAIN = [("finds", "found"), ("is given", "was given"), ("buys", "bought"), ("wins", "won"),
        ("collects", "collected"), ("receives", "received"), ("picks up", "picked up")]
LOSS = [("gives away", "gave away"), ("loses", "lost"), ("sells", "sold"), ("donates", "donated"),
        ("trades away", "traded away"), ("hands out", "handed out")]


def _num(rng: random.Random, big: Optional[bool] = None) -> int:
    """A small (2..60) or a large (100..2500) operand; large ones teach the model to copy digits."""
    big = rng.random() < 0.5 if big is None else big
    return rng.randint(100, 2500) if big else rng.randint(2, 60)


def _order(rng: random.Random, facts: str, question: str, question_first: str) -> str:
    """Facts then question, or (a third of the time) the question first, then the facts."""
    return f"{question_first} {facts}" if rng.random() < 0.33 else f"{facts} {question}"


# --- the training family --------------------------------------------------------------------------
def _gain(rng) -> Problem:
    p, x = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = _num(rng), _num(rng)
    g, gp = rng.choice(GAIN)
    facts = rng.choice([f"{p} has {a} {x}, and then {p} {g} {b} more.",
                        f"{p} owned {a} {x}. Later {p} {gp} another {b}.",
                        f"After {p} {gp} {b} {x}, they joined the {a} {x} {p} already had."])
    q = rng.choice([f"How many {x} does {p} have now?", f"What is {p}'s new total?",
                    f"How many {x} does {p} end up with?"])
    first = rng.choice([f"How many {x} does {p} have in the end?", f"Work out {p}'s total number of {x}."])
    return _order(rng, facts, q, first), [(f"Getting {b} more adds them to the {a}.", f"{a}+{b}")], a + b


def _loss(rng) -> Problem:
    p, q2, x = *rng.sample(NAMES, 2), rng.choice(ITEMS)
    b, extra = _num(rng), _num(rng)
    a = b + extra
    l, lp = rng.choice(LOSS)
    facts = rng.choice([f"{p} started with {a} {x} and {lp} {b} of them.",
                        f"{p} {l} {b} of {p}'s {a} {x}.",
                        f"Out of {a} {x}, {p} {lp} {b} to {q2}."])
    q = rng.choice([f"How many {x} are left?", f"How many does {p} still have?", f"What number of {x} remains?"])
    first = rng.choice([f"How many {x} does {p} keep?", f"Find how many {x} {p} has left."])
    return _order(rng, facts, q, first), [(f"The {b} that went away come out of the {a}.", f"{a}-{b}")], a - b


def _compare(rng) -> Problem:
    p, q2, x = *rng.sample(NAMES, 2), rng.choice(ITEMS)
    b, extra = _num(rng), _num(rng)
    a = b + extra
    facts = f"{p} has {a} {x} and {q2} has {b}."
    q = rng.choice([f"How many more {x} does {p} have than {q2}?", f"How many fewer {x} does {q2} have than {p}?",
                    f"What is the gap between their numbers of {x}?"])
    first = rng.choice([f"By how many {x} does {p} lead {q2}?", f"How many {x} separate {q2} from {p}?"])
    return (_order(rng, facts, q, first),
            [(f"The difference is the larger {a} minus the smaller {b}.", f"{a}-{b}")], a - b)


def _bare_add(rng) -> Problem:
    a, b = _num(rng), _num(rng)
    q = rng.choice([f"Add {a} to {b}.", f"What is the total of {a} and {b}?", f"Increase {a} by {b}.",
                    f"What number is {b} more than {a}?", f"Work out {a} added to {b}.",
                    f"{a} and {b} together make how much?", f"What do {a} and {b} add up to?"])
    return q, [(f"This asks for {a} and {b} added.", f"{a}+{b}")], a + b


def _bare_sub(rng) -> Problem:
    b, extra = _num(rng), _num(rng)
    a = b + extra
    q = rng.choice([f"What is the difference between {a} and {b}?", f"By how much does {a} exceed {b}?",
                    f"Take {b} away from {a}.", f"Reduce {a} by {b}.", f"What is {b} less than {a}?",
                    f"Decrease {a} by {b}. What do you get?", f"{a} is how much more than {b}?",
                    f"What is left when {b} is removed from {a}?", f"From {a}, deduct {b}."])
    return q, [(f"The larger number {a} minus {b}.", f"{a}-{b}")], a - b


def _bare_mul(rng) -> Problem:
    a, b = rng.randint(3, 99), rng.randint(3, 99)
    q = rng.choice([f"What is {a} multiplied by {b}?", f"How much is {a} groups of {b}?",
                    f"Work out {a} x {b}.", f"What do you get if you multiply {a} and {b} together?",
                    f"Find {a} lots of {b}.", f"{a} times {b} equals what?"])
    return q, [(f"This is {a} multiplied by {b}.", f"{a}*{b}")], a * b


def _bare_div(rng) -> Problem:
    k, q_ = rng.randint(2, 40), rng.randint(2, 90)
    t = k * q_
    q = rng.choice([f"How many times does {k} go into {t}?", f"Work out {t} shared equally by {k}.",
                    f"Find the quotient when {t} is divided by {k}.", f"What is {t} over {k}?",
                    f"If {t} is cut into pieces of size {k}, how many pieces are there?",
                    f"{t} divided into {k} equal groups gives how many in each group?"])
    return q, [(f"This is {t} divided by {k}.", f"{t}/{k}")], q_


def _groups(rng) -> Problem:
    p, x, box = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(CONTAINERS)
    c, b = rng.randint(2, 60), rng.randint(2, 80)
    facts = rng.choice([f"There are {c} {box} with {b} {x} in each.", f"Each of {p}'s {c} {box} holds {b} {x}.",
                        f"{p} fills {c} {box}, putting {b} {x} into every one."])
    q = rng.choice([f"How many {x} are there in total?", f"How many {x} is that altogether?",
                    f"How many {x} are in the {box}?"])
    first = f"How many {x} are packed altogether?"
    return _order(rng, facts, q, first), [(f"{c} {box} of {b} each is {c} times {b}.", f"{c}*{b}")], c * b


EACH = [("shelves", "books", "holds", "hold"), ("tables", "guests", "seats", "seat"),
        ("teams", "players", "has", "have"), ("vans", "parcels", "carries", "carry"),
        ("floors", "offices", "has", "have"), ("packs", "pencils", "contains", "contain"),
        ("trays", "cupcakes", "holds", "hold"), ("classes", "students", "has", "have"),
        ("boats", "rowers", "carries", "carry"), ("cabins", "beds", "has", "have")]


def _each(rng) -> Problem:
    """One product where the groups are not containers of the item lists (shelves of books, tables
    of guests, teams of players): the model must multiply whatever the story counts, and stop."""
    c, b = rng.randint(3, 60), rng.randint(3, 60)
    groups, things, verb, verb_plural = rng.choice(EACH)
    q = rng.choice([f"There are {c} {groups}, and every one of them {verb} {b} {things}. How many {things} is that?",
                    f"Each of the {c} {groups} {verb} {b} {things}. Count the {things} in all.",
                    f"How many {things} are there if {c} {groups} each {verb_plural} {b}?",
                    f"Suppose there are {c} {groups}. If one {verb} {b} {things}, how many {things} are there altogether?"])
    return q, [(f"{c} {groups} with {b} {things} each is {c} times {b}.", f"{c}*{b}")], c * b


def _grid(rng) -> Problem:
    """Rows times columns, and lengths times widths for an area."""
    r, c = rng.randint(3, 60), rng.randint(3, 60)
    q, why = rng.choice([
        (f"An orchard is planted in {r} rows, each row with {c} trees. How many trees grow in the orchard?", "rows"),
        (f"A wall is {r} bricks high and {c} bricks long. How many bricks make up the wall?", "layers"),
        (f"A patio is {r} feet long and {c} feet wide. How many square feet of paving does it need?", "feet"),
        (f"How many squares does a board with {r} rows and {c} columns of squares have?", "rows"),
        (f"Cars park in {r} lanes of {c} spaces on one level. How many cars fit on the level?", "lanes")])
    return q, [(f"{r} {why} by {c} is {r} times {c}.", f"{r}*{c}")], r * c


def _rate(rng) -> Problem:
    p = rng.choice(NAMES)
    r, h = rng.randint(4, 90), rng.randint(2, 40)
    facts, q, unit = rng.choice([
        (f"{p} earns {r} dollars per hour and works {h} hours.", f"How much does {p} earn?", "dollars"),
        (f"A printer makes {r} pages every minute.", f"How many pages does it print in {h} minutes?", "pages"),
        (f"A pump moves {r} litres of water each minute.", f"How many litres does it move in {h} minutes?", "litres"),
        (f"{p} reads {r} pages a day.", f"How many pages will {p} read in {h} days?", "pages"),
        (f"A cyclist covers {r} miles each day of a tour.", f"How far does the cyclist ride in {h} days?", "miles")])
    return f"{facts} {q}", [(f"{r} {unit} for each of {h} units of time is {r} times {h}.", f"{r}*{h}")], r * h


def _scale(rng) -> Problem:
    p, q2, x = *rng.sample(NAMES, 2), rng.choice(ITEMS)
    a = _num(rng)
    k, word, verb = rng.choice([(2, "twice", "doubled"), (3, "three times", "tripled"),
                                (4, "four times", "quadrupled")])
    q = rng.choice([f"{q2} has {word} as many {x} as {p}, who has {a}. How many {x} does {q2} have?",
                    f"{p} had {a} {x} and then {verb} the collection. How many {x} does {p} have now?"])
    return q, [(f"{word.capitalize()} as many as {a} is {a} times {k}.", f"{a}*{k}")], a * k


def _share(rng) -> Problem:
    p, x = rng.choice(NAMES), rng.choice(ITEMS)
    k, each = rng.randint(2, 25), rng.randint(2, 80)
    t = k * each
    q = rng.choice([f"{p} shares {t} {x} equally among {k} friends. How many does each friend get?",
                    f"{t} {x} are split evenly into {k} piles. How many {x} are in each pile?",
                    f"If {k} children divide {t} {x} fairly, how many {x} does each child receive?",
                    f"How many {x} does each of {k} teams get when {t} {x} are handed out equally?",
                    f"{k} friends split a bill of {t} dollars evenly. How much does each pay?"])
    return q, [(f"Sharing {t} equally {k} ways is {t} divided by {k}.", f"{t}/{k}")], each


def _fit(rng) -> Problem:
    x = rng.choice(ITEMS)
    k, n = rng.randint(2, 30), rng.randint(2, 60)
    t = k * n
    q = rng.choice([f"{t} {x} are put in bags of {k}. How many bags are used?",
                    f"A van carries {k} people. How many full vans carry {t} people?",
                    f"How many rows of {k} can be made from {t} chairs?",
                    f"Each page of an album holds {k} {x}. How many pages do {t} {x} fill?",
                    f"A bakery boxes {t} muffins, {k} to a box. How many boxes does it use?",
                    f"{t} apples are packed into crates that take {k} apples apiece. How many crates are filled?",
                    f"A printer binds {t} pages into booklets of {k} pages. How many booklets come out?"])
    return q, [(f"Groups of {k} out of {t} is {t} divided by {k}.", f"{t}/{k}")], n


def _change_one(rng) -> Problem:
    p, thing = rng.choice(NAMES), rng.choice(sorted(THINGS))
    paid = rng.choice([20, 50, 100, 200, 500])
    c = rng.randint(2, paid - 1)
    q = rng.choice([f"{p} pays for a {c}-dollar {thing} with {paid} dollars. How much change should {p} receive?",
                    f"A {thing} costs {c} dollars and {p} hands over {paid} dollars. What change comes back?",
                    f"How much change does {p} get from {paid} dollars after buying a {thing} priced at {c} dollars?"])
    return q, [(f"The change is what was paid, {paid}, minus the price {c}.", f"{paid}-{c}")], paid - c


def _days(rng) -> Problem:
    p = rng.choice(NAMES)
    d1, d2 = rng.choice(DAYS)
    a, b = _num(rng), _num(rng)
    what = rng.choice([("read", "pages"), ("picked", "strawberries"), ("ran", "laps"), ("baked", "muffins"),
                       ("earned", "dollars"), ("planted", "tulips")])
    verb, x = what
    q = rng.choice([f"{p} {verb} {a} {x} in {d1} and {b} {x} in {d2}. How many {x} did {p} {verb if verb != 'ran' else 'run'} in all?",
                    f"In {d1} a club {verb} {a} {x}; in {d2} it {verb} {b}. What was the club's combined total?",
                    f"How many {x} altogether? {p} {verb} {a} of them in {d1} and {b} in {d2}."])
    return q, [(f"The total over both periods is {a} plus {b}.", f"{a}+{b}")], a + b


def _need(rng) -> Problem:
    p, x = rng.choice(NAMES), rng.choice(ITEMS)
    b, extra = _num(rng), _num(rng)
    a = b + extra
    q = rng.choice([f"{p} needs {a} {x} and has {b} so far. How many more does {p} need?",
                    f"How many more {x} must {p} get to reach {a}, if {p} has {b} now?",
                    f"A goal is {a} {x}. {p} has collected {b}. How many are still missing?"])
    return q, [(f"What is missing is the goal {a} minus the {b} held.", f"{a}-{b}")], a - b


def _temperature(rng) -> Problem:
    t, u = rng.randint(-10, 30), rng.randint(2, 35)
    if rng.random() < 0.5:   # a rise: the start may be below zero, and rising still adds
        t = rng.randint(-20, 25)
        q = rng.choice([f"The temperature was {t} degrees this morning and rose by {u} degrees by the afternoon. How warm is it in the afternoon?",
                        f"A pond's water was at {t} degrees, and the sun warmed it by {u} degrees. What is the water's temperature now?",
                        f"What does the thermometer show after going up {u} degrees from {t} degrees?"])
        return q, [(f"A rise of {u} from {t}.", f"{t}+{u}")], t + u
    q = rng.choice([f"The thermometer read {t} degrees at noon and dropped {u} degrees by night. What did it read at night?",
                    f"A freezer was at {t} degrees and was cooled by another {u} degrees. What is its temperature now?"])
    return q, [(f"A drop of {u} from {t}.", f"{t}-{u}")], t - u


def _three_people(rng) -> Problem:
    p, q2, r, = rng.sample(NAMES, 3)
    x = rng.choice(ITEMS)
    a, b, c = _num(rng), _num(rng), _num(rng)
    q = rng.choice([f"{p} has {a} {x}, {q2} has {b} and {r} has {c}. How many {x} do the three have together?",
                    f"What is the total number of {x} if {p} owns {a}, {q2} owns {b} and {r} owns {c}?"])
    return q, [(f"First {p}'s {a} plus {q2}'s {b}.", f"{a}+{b}"),
               (f"Then add {r}'s {c}.", f"{a + b}+{c}")], a + b + c


def _gain_loss(rng) -> Problem:
    p, x = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = _num(rng), _num(rng)
    c = rng.randint(1, a + b - 1)
    g, gp = rng.choice(GAIN)
    l, lp = rng.choice(LOSS)
    if rng.random() < 0.5:
        q = rng.choice([f"{p} had {a} {x}, {gp} {b} more and then {lp} {c}. How many {x} does {p} have now?",
                        f"How many {x} does {p} own at the end? {p} started with {a}, {gp} {b}, then {lp} {c}."])
        return q, [(f"Gaining {b} brings {a} up.", f"{a}+{b}"), (f"Then {c} go away.", f"{a + b}-{c}")], a + b - c
    a = a + c
    q = rng.choice([f"{p} had {a} {x} and {lp} {c}. Then {p} {gp} {b}. How many {x} does {p} have?",
                    f"Starting from {a} {x}, {p} {lp} {c} and afterwards {gp} {b}. What is the count now?"])
    return q, [(f"First {c} go away from {a}.", f"{a}-{c}"), (f"Then {b} are gained.", f"{a - c}+{b}")], a - c + b


def _groups_plus(rng) -> Problem:
    p, x, box = rng.choice(NAMES), rng.choice(ITEMS), rng.choice(CONTAINERS)
    c, b, e = rng.randint(2, 30), rng.randint(2, 50), _num(rng)
    if rng.random() < 0.5:
        q = rng.choice([f"{p} buys {c} {box} of {b} {x} and already had {e}. How many {x} does {p} have?",
                        f"There are {c} rows of {b} chairs plus {e} extra chairs by the wall. How many chairs are there?",
                        f"At a wedding, {c} tables seat {b} guests each and {e} waiters serve them. How many people are in the hall?",
                        f"A choir of {c} rows with {b} singers per row performs, and {e} musicians play along. How many performers are there?"])
        return q, [(f"{c} groups of {b} is {c} times {b}.", f"{c}*{b}"), (f"Add the {e} others.", f"{c * b}+{e}")], c * b + e
    e = rng.randint(1, c * b - 1)
    q = rng.choice([f"{p} packs {c} {box} with {b} {x} each, then removes {e}. How many {x} are still packed?",
                    f"A hall had {c} rows of {b} seats, but {e} seats are broken. How many seats can be used?",
                    f"{p} earns {b} dollars a day for {c} days and then pays {e} dollars for a bike. How many dollars are left?"])
    return q, [(f"{c} groups of {b} is {c} times {b}.", f"{c}*{b}"), (f"Take away the {e}.", f"{c * b}-{e}")], c * b - e


def _buy_change(rng) -> Problem:
    p, things = rng.choice(NAMES), THINGS[rng.choice(sorted(THINGS))]
    n, c = rng.randint(2, 15), rng.randint(2, 40)
    paid = next(v for v in (50, 100, 200, 500, 1000) if v > n * c)
    q = rng.choice([f"{p} buys {n} {things} at {c} dollars each and hands over {paid} dollars. How many dollars does {p} get in change?",
                    f"{p} had {paid} dollars and bought {n} {things} costing {c} dollars each. How much money does {p} have left?",
                    f"What change does {p} receive from {paid} dollars for {n} {things} priced {c} dollars apiece?"])
    return q, [(f"{n} at {c} dollars each costs {n} times {c}.", f"{n}*{c}"),
               (f"What is left of the {paid} dollars.", f"{paid}-{n * c}")], paid - n * c


def _sum_times(rng) -> Problem:
    p = rng.choice(NAMES)
    a, b, d = rng.randint(5, 60), rng.randint(5, 60), rng.randint(2, 30)
    q = rng.choice([f"Each day {p} walks {a} minutes in the morning and {b} minutes in the evening. How many minutes does {p} walk in {d} days?",
                    f"A ticket costs {a} dollars for an adult and {b} dollars for a child. What do {d} adult-and-child pairs pay?"])
    return q, [(f"One day or pair is {a} plus {b}.", f"{a}+{b}"), (f"Times {d}.", f"{a + b}*{d}")], (a + b) * d


def _share_then(rng) -> Problem:
    p, x = rng.choice(NAMES), rng.choice(ITEMS)
    k, each, e = rng.randint(2, 20), rng.randint(2, 60), rng.randint(1, 40)
    t = k * each
    q = rng.choice([f"{t} {x} are split equally into {k} bags, and {p} adds {e} more to one bag. How many {x} are in that bag now?",
                    f"{p} divides {t} {x} evenly among {k} friends and gives the first friend {e} extra. How many does the first friend have?"])
    return q, [(f"An equal share is {t} divided by {k}.", f"{t}/{k}"), (f"Plus the {e} extra.", f"{each}+{e}")], each + e


def _relative(rng) -> Problem:
    p, q2, x = *rng.sample(NAMES, 2), rng.choice(ITEMS)
    a, b = _num(rng), _num(rng)
    if rng.random() < 0.5:
        q = rng.choice([f"{p} has {a} {x}. {q2} has {b} more than {p}. How many {x} do they have together?",
                        f"{q2} owns {b} more {x} than {p}, and {p} owns {a}. What is their combined number of {x}?"])
        return q, [(f"{q2} has {a} plus {b}.", f"{a}+{b}"), (f"Together: {a} plus {a + b}.", f"{a}+{a + b}")], 2 * a + b
    a = a + b
    q = rng.choice([f"{p} has {a} {x}. {q2} has {b} fewer than {p}. How many {x} does {q2} have?",
                    f"{q2} owns {b} {x} less than {p}, who owns {a}. How many does {q2} own?"])
    return q, [(f"{b} fewer than {a} is {a} minus {b}.", f"{a}-{b}")], a - b


def _half(rng) -> Problem:
    p, q2, x = *rng.sample(NAMES, 2), rng.choice(ITEMS)
    h = _num(rng)
    t = 2 * h
    q = rng.choice([f"{p} has {t} {x} and gives half of them to {q2}. How many does {q2} get?",
                    f"Half of the {t} {x} in a drawer are red. How many red {x} are there?"])
    return q, [(f"Half of {t} is {t} divided by 2.", f"{t}/2")], h


TRAIN: list[Callable[[random.Random], Problem]] = [
    _gain, _loss, _compare, _bare_add, _bare_sub, _bare_mul, _bare_div, _groups, _each, _grid, _rate, _scale,
    _share, _fit,
    _change_one, _days, _need, _temperature, _three_people, _gain_loss, _groups_plus, _buy_change, _sum_times,
    _share_then, _relative, _half]


# --- the validation family: other contexts and sentences, to choose settings on ----------------------
def _v_parking(rng) -> Problem:
    a, b = rng.randint(150, 900), rng.randint(20, 140)
    return (f"In a parking lot there are {a} cars. Then {b} of them drive away. How many cars remain parked?",
            [(f"{b} leave from {a}.", f"{a}-{b}")], a - b)


def _v_tank(rng) -> Problem:
    a, b, c = rng.randint(200, 2000), rng.randint(50, 500), rng.randint(20, 190)
    return (f"A water tank holds {a} litres. Someone pours in {b} litres, then {c} litres are drained. "
            "How many litres are in the tank?",
            [(f"{a} plus the {b} poured in.", f"{a}+{b}"), (f"Minus the {c} drained.", f"{a + b}-{c}")], a + b - c)


def _v_teams(rng) -> Problem:
    n, s, e = rng.randint(3, 20), rng.randint(5, 25), rng.randint(2, 30)
    return (f"{n} teams with {s} players on each team meet at a tournament along with {e} referees. "
            "How many people are at the tournament?",
            [(f"{n} teams of {s}.", f"{n}*{s}"), (f"And the {e} referees.", f"{n * s}+{e}")], n * s + e)


def _v_seeds(rng) -> Problem:
    k, each = rng.randint(4, 30), rng.randint(10, 60)
    return (f"A gardener plants {k * each} seeds in {k} rows, with the same number in every row. "
            "How many seeds go in one row?",
            [(f"{k * each} over {k} rows.", f"{k * each}/{k}")], each)


def _v_smaller(rng) -> Problem:
    a, b = rng.randint(400, 3000), rng.randint(100, 399)
    return f"Which number is {b} smaller than {a}?", [(f"{a} less {b}.", f"{a}-{b}")], a - b


def _v_savings(rng) -> Problem:
    p = rng.choice(NAMES)
    s, w = rng.randint(5, 40), rng.randint(4, 30)
    c = rng.randint(1, s * w - 1)
    return (f"{p} saves {s} dollars every week for {w} weeks, then spends {c} dollars on a gift. "
            "How much of the savings is left?",
            [(f"{s} a week for {w} weeks.", f"{s}*{w}"), (f"Less the {c} spent.", f"{s * w}-{c}")], s * w - c)


def _v_tiles(rng) -> Problem:
    r, c = rng.randint(12, 80), rng.randint(12, 80)
    return (f"A floor is covered by {r} rows of tiles with {c} tiles in every row. How many tiles cover the floor?",
            [(f"{r} rows of {c}.", f"{r}*{c}")], r * c)


def _v_visitors(rng) -> Problem:
    a, b = rng.randint(200, 900), rng.randint(200, 900)
    return (f"A museum welcomed {a} visitors before lunch and {b} visitors after lunch. "
            "What was the number of visitors that day?",
            [(f"{a} and {b} together.", f"{a}+{b}")], a + b)


VALIDATION: list[Callable[[random.Random], Problem]] = [
    _v_parking, _v_tank, _v_teams, _v_seeds, _v_smaller, _v_savings, _v_tiles, _v_visitors]
FAMILIES: dict[str, list[Callable[[random.Random], Problem]]] = {"train": TRAIN, "validation": VALIDATION}


def phrasing_problem(rng: random.Random, family: Family = "train") -> Problem:
    """One problem of `family` ("train" or "validation"), its template drawn uniformly.

    Returns (question, steps, answer): `steps` are (why, calculator expression) pairs in order;
    the last expression evaluates to `answer` (an int). Raises ValueError for an unknown family.
    """
    if family not in FAMILIES:
        raise ValueError(f"arith_phrasings: family must be one of {', '.join(FAMILIES)}, got {family!r}")
    return rng.choice(FAMILIES[family])(rng)


def generate_phrasings(n: int, seed: int = 0, family: Family = "train", registry=None,
                       max_draws: Optional[int] = None) -> list[dict]:
    """`n` verified calculator traces of distinct questions from `family`; the same (n, seed,
    family) gives the same traces.

    Returns `synth.offline` records `{"id": "phrasings-{family}-s{seed}-{k:06d}", "topic":
    "arithmetic", "source": "offline", "split": "train", "phrasing": "varied" (train) or
    "validation", "question", "reasoning", "tool_result", "answer"}`.
    Raises ValueError for n < 1, an unknown family, or too few distinct questions in `max_draws`;
    AssertionError when a template writes a trace that fails `validate_trace` (a template bug).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"arith_phrasings: n must be a positive integer, got {n!r}")
    if family not in FAMILIES:
        raise ValueError(f"arith_phrasings: family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if registry is None:
        from havoc_lite.tools import default_registry
        registry = default_registry()
    rng = random.Random(f"arith_phrasings:{family}:{seed}")
    seen, out = Deduper(), []
    for _ in range(max_draws or 50 * n + 1000):
        if len(out) == n:
            break
        question, steps, answer = phrasing_problem(rng, family)
        if seen.seen(question):
            continue
        run = _Run(registry)
        for why, expression in steps:
            result = run(why, "calculator", {"expression": expression})
        if result != answer:
            raise AssertionError(f"arith_phrasings: {question!r}: calculator gives {result}, template {answer}")
        trace = {"id": f"phrasings-{family}-s{seed}-{len(out):06d}", "topic": "arithmetic", "source": "offline",
                 "split": "train", "phrasing": "varied" if family == "train" else family, "question": question,
                 "reasoning": run.steps, "answer": _fmt(result)}
        verdict = validate_trace(trace, registry)
        if not verdict.ok:
            raise AssertionError(f"arith_phrasings: a template made a trace that fails verification: "
                                 f"{verdict.reason}: {verdict.detail}")
        out.append(verdict.trace)
    if len(out) < n:
        raise ValueError(f"arith_phrasings: only {len(out)} distinct {family} questions (asked for {n})")
    return out


def phrasing_rows(n: int, seed: int = 4321, family: Family = "validation") -> list[dict]:
    """`n` distinct problems of `family` as GSM8K-shaped eval rows {"id", "question", "answer":
    "#### N", "gold"} for `havoc_lite.eval.gsm8k.evaluate_gsm8k`; templates cycle in order.
    Raises ValueError for n < 1 or an unknown family."""
    from havoc_lite.eval.arith_heldout import question_rows
    if n < 1:
        raise ValueError(f"arith_phrasings: n must be >= 1, got {n}")
    if family not in FAMILIES:
        raise ValueError(f"arith_phrasings: family must be one of {', '.join(FAMILIES)}, got {family!r}")
    rng, templates = random.Random(f"arith_phrasings:rows:{family}:{seed}"), FAMILIES[family]
    return question_rows(lambda i: templates[i % len(templates)](rng), n, family)
