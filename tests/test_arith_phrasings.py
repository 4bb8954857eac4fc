"""The varied-phrasing grammar (synth.arith_phrasings): its traces pass validation, and neither of its
families writes a sentence shape of the held-out problems (eval.arith_heldout), nor does the
training family write a validation shape. The shapes are derived from arith_heldout's own
generator, so copying a held-out sentence into the grammar fails here."""
import difflib
import functools
import random
import re

import pytest

from havoc_lite.eval.arith_heldout import NUM_KINDS, PEOPLE, heldout_problem
from havoc_lite.tools import default_registry
from synth.arith_phrasings import (NAMES, TRAIN, VALIDATION, generate_phrasings, phrasing_problem,
                                   phrasing_rows)
from synth.validation import validate_trace

ALL_NAMES = sorted(set(NAMES) | set(PEOPLE), key=len, reverse=True)
_NAME_RE = re.compile(r"\b(?:" + "|".join(ALL_NAMES) + r")\b")


def skeleton(text: str) -> str:
    """Numbers -> N and people's names -> P: what is left is the sentence shape."""
    return _NAME_RE.sub("P", re.sub(r"-?\d+", "N", text))


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.?!;])\s+", text.strip()) if s]


def shape_pattern(sentence_shape: str) -> re.Pattern:
    """A regex matching any sentence of this shape: N = any integer, P = any capitalised name,
    everything else literal (case and spacing folded)."""
    pieces = re.split(r"\b([NP])\b", sentence_shape)   # literal, placeholder, literal, ...
    body = "".join({"N": r"-?\d+", "P": r"[A-Z][a-z]+"}[x] if i % 2 else re.escape(x).replace(r"\ ", r"\s+")
                   for i, x in enumerate(pieces))
    return re.compile(body, re.IGNORECASE)


def shapes_of(problems) -> set[str]:
    return {skeleton(s) for q in problems for s in sentences(q)}


def heldout_questions(n_per_kind: int = 80) -> list[str]:
    """Held-out questions from every kind, both number ranges: enough draws to hit each of a
    kind's wordings (at most 3 per kind) with overwhelming probability."""
    rng = random.Random(0)
    return [heldout_problem(rng, kind, small)[0] for kind in range(NUM_KINDS) for small in (False, True)
            for _ in range(n_per_kind)]


def family_questions(family: str, n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [phrasing_problem(rng, family)[0] for _ in range(n)]


@pytest.fixture(scope="module")
def heldout_shapes():
    shapes = shapes_of(heldout_questions())
    # every kind's question sentence is there, e.g. kind 1's three wordings
    assert {"Subtract N from N.", "What is N minus N?", "How much greater is N than N?"} <= shapes
    return shapes


def _leaks(questions, shapes) -> list[tuple[str, str]]:
    patterns = [(s, shape_pattern(s)) for s in shapes]
    return [(q, s) for q in questions for s, pat in patterns if pat.search(q)]


def _closest(question_shape: str) -> float:
    """The highest difflib ratio between a question's skeleton and a held-out story problem's."""
    return max(difflib.SequenceMatcher(None, question_shape, h).ratio() for h in _heldout_stories())


@functools.lru_cache(maxsize=1)
def _heldout_stories() -> tuple[str, ...]:
    return tuple(sorted({skeleton(q) for q in heldout_questions(20) if len(q) > 60}))


def test_the_shape_check_catches_a_copied_heldout_sentence(heldout_shapes):
    # the check itself can fail: a held-out question (new numbers and name) inside a longer one is caught
    rng = random.Random(7)
    copied = "Tom has 4 cards. " + heldout_problem(rng, 6)[0]
    assert _leaks([copied], heldout_shapes)
    assert _leaks(["Subtract 17 from 400."], heldout_shapes)
    assert not _leaks(["Take 17 away from 400."], heldout_shapes)
    # a held-out story with its nouns swapped is caught by the closeness check
    assert _closest(skeleton("A shop sold 40 cakes on Friday and 52 cakes on Saturday. "
                             "How many cakes did it sell over the two days?")) >= 0.7


def test_training_family_writes_no_heldout_or_validation_sentence(heldout_shapes):
    train = family_questions("train", 4000)
    assert not _leaks(train, heldout_shapes)
    assert not _leaks(train, shapes_of(family_questions("validation", 800, seed=1)))
    # and story problems are not near-copies with a few words swapped (short bare requests
    # share their grammar with any other, so the shape patterns alone judge those)
    for q in sorted({skeleton(q) for q in train if len(q) > 60}):
        assert _closest(q) < 0.7, q


def test_the_nine_offline_templates_write_no_heldout_or_validation_sentence(heldout_shapes):
    # the pretrained demo trains on them too (--train-data mixed)
    from synth.offline import generate_offline
    offline = [t["question"] for t in generate_offline("arithmetic", 3000, seed=0)]
    assert not _leaks(offline, heldout_shapes)
    assert not _leaks(offline, shapes_of(family_questions("validation", 800, seed=1)))
    for q in sorted({skeleton(q) for q in offline if len(q) > 60}):
        assert _closest(q) < 0.7, q


def test_validation_family_writes_no_heldout_sentence(heldout_shapes):
    assert not _leaks(family_questions("validation", 800), heldout_shapes)


def test_training_family_varies_its_shapes():
    shapes = {skeleton(q) for q in family_questions("train", 3000)}
    # far more sentence shapes than synth.offline's nine templates
    assert len(TRAIN) >= 20 and len(shapes) >= 10 * len(TRAIN)


def test_traces_pass_validation_reproduce_and_hold_one_or_two_steps():
    registry = default_registry()
    traces = generate_phrasings(300, seed=3)
    assert traces == generate_phrasings(300, seed=3)
    assert len({t["question"] for t in traces}) == 300
    steps = {len(t["reasoning"]) for t in traces}
    assert steps == {1, 2}
    for t in traces:
        assert validate_trace(t, registry).ok and t["phrasing"] == "varied"
        last = t["reasoning"][-1]["tool_call"]["args"]["expression"]
        assert float(t["answer"]) == registry.execute("calculator", {"expression": last}).result


def test_validation_rows_are_answered_by_their_steps():
    rows = phrasing_rows(3 * len(VALIDATION))
    assert rows == phrasing_rows(3 * len(VALIDATION)) and len({r["question"] for r in rows}) == len(rows)
    registry = default_registry()
    rng = random.Random(5)
    for _ in range(50):
        q, steps, answer = phrasing_problem(rng, "validation")
        assert registry.execute("calculator", {"expression": steps[-1][1]}).result == answer


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="family"):
        generate_phrasings(3, family="heldout")
    with pytest.raises(ValueError, match="positive"):
        generate_phrasings(0)
    with pytest.raises(ValueError, match="n must be"):
        phrasing_rows(0)
