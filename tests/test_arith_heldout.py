"""Held-out arithmetic: distinct, reproducible, answers consistent with the stated numbers, and no
question shares a sentence skeleton with the offline calculator templates it must be unlike."""
import itertools
import re
from fractions import Fraction

from havoc_lite.eval.arith_heldout import NUM_KINDS, PEOPLE, heldout_arithmetic


def skeleton(question: str, words) -> str:
    """The sentence with numbers and the given names/items replaced by placeholders."""
    s = re.sub(r"-?\d+", "N", question)
    for w in sorted(words, key=len, reverse=True):
        s = s.replace(w, "X")
    return s


def test_distinct_reproducible_and_every_kind_present():
    rows = heldout_arithmetic(200, seed=3)
    assert len({r["question"] for r in rows}) == 200
    assert rows == heldout_arithmetic(200, seed=3)
    assert rows != heldout_arithmetic(200, seed=4)
    assert len({skeleton(r["question"], PEOPLE) for r in rows}) >= NUM_KINDS


def test_answers_follow_from_the_numbers_in_the_question():
    """Each gold is one or two +,-,*,/ operations over the question's own numbers (exact)."""
    ops = [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b,
           lambda a, b: a / b if b else None]
    for r in heldout_arithmetic(140, seed=0):
        nums = [Fraction(n) for n in re.findall(r"-?\d+", r["question"])]
        reach = set()
        for a, b in itertools.permutations(nums, 2):
            for f in ops:
                x = f(a, b)
                if x is None:
                    continue
                reach.add(x)
                for c in nums:
                    for g in ops:
                        for y in (g(x, c), g(c, x)):
                            if y is not None:
                                reach.add(y)
        assert Fraction(r["gold"]) in reach, r


def test_no_skeleton_in_common_with_the_training_templates():
    from synth.offline import ITEMS, NAMES, generate_offline
    train = generate_offline("arithmetic", 600, seed=0)
    words = list(NAMES) + list(ITEMS) + list(PEOPLE)
    seen = {skeleton(t["question"], words) for t in train}
    held = {skeleton(r["question"], words) for r in heldout_arithmetic(200)}
    assert len(seen) >= 9 and not (seen & held)
