"""synth/traps.py: the training and held-out trap families are disjoint, every trace of both is
verified (tool calls re-run, the attack checked), and `strip_roles` keeps a direct solution."""
import re

import pytest

from havoc_lite.data import render_trace
from havoc_lite.tools import default_registry
from synth.offline import ITEMS, NAMES, generate_offline
from synth.traps import CORDS, FILMS, HELDOUT_TRAPS, TRAIN_TRAPS, strip_roles
from synth.validation import validate_trace


def _shape_ngrams(question: str, n: int = 4) -> set:
    """Word 4-grams of a question with its names, objects and numbers blanked: its sentence shape."""
    for word in NAMES + ITEMS + FILMS + CORDS:
        question = re.sub(rf"\b{word}\b", "X", question)
    words = re.sub(r"\d+", "#", question).replace(".", " .").replace("?", " ?").replace(",", " ,").split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


@pytest.fixture(scope="module")
def families():
    train = generate_offline("arithmetic_traps", 300, seed=0)
    heldout = generate_offline("arithmetic_traps", 200, seed=0, split="test", phrasing="heldout")
    return train, heldout


def test_families_are_disjoint_in_kind_and_sentence_shape(families):
    """No trap kind in both, and no four-word stretch of a held-out question (names, objects and
    numbers blanked) occurs in a training question, trap or plain arithmetic."""
    assert not {k for k, _ in TRAIN_TRAPS} & {k for k, _ in HELDOUT_TRAPS}
    train, heldout = families
    plain = generate_offline("arithmetic", 500, seed=0)
    seen = set().union(*(_shape_ngrams(t["question"]) for t in train + plain))
    for t in heldout:
        assert not _shape_ngrams(t["question"]) & seen, t["question"]
    # and the blanking is not so coarse that it hides everything: the held-out shapes differ
    # among themselves (one per kind)
    assert len({frozenset(_shape_ngrams(t["question"])) for t in heldout[:60]}) >= len(HELDOUT_TRAPS) - 1


def test_every_heldout_trace_is_a_checked_trap(families):
    """Each held-out trace has the four sections, a first attempt whose result the attack names,
    and an answer that differs from it; every call re-runs to its stated result."""
    registry = default_registry()
    _, heldout = families
    assert {t["phrasing"] for t in heldout} == {"heldout"}
    for t in heldout:
        text = render_trace(t)
        for tag in ("advocate", "attack", "pragmatist", "verify"):
            assert text.count(f"<{tag}>") == 1
        first = t["reasoning"][0]["tool_result"]["result"]
        attack = next(s for s in t["reasoning"] if s.get("role") == "attack")
        assert re.sub(r"\.0$", "", str(first)) in attack["content"] and float(t["answer"]) != float(first)
        assert validate_trace(t, registry).ok
    # the last call computes the answer
    for t in heldout:
        last = [s for s in t["reasoning"] if "tool_call" in s][-1]
        value = registry.execute("calculator", last["tool_call"]["args"]).result
        assert float(t["answer"]) == pytest.approx(value)


def test_heldout_family_covers_every_kind():
    """Each held-out kind is drawn (the question words that only that kind uses appear)."""
    questions = [t["question"] for t in generate_offline("arithmetic_traps", 80, seed=3, split="test",
                                                         phrasing="heldout")]
    for cue in ("hours", "centimetres", "counting both", "percent raise"):
        assert any(cue in q for q in questions), cue


def test_heldout_traps_are_for_evaluation_only():
    with pytest.raises(ValueError, match="use --split test"):
        generate_offline("arithmetic_traps", 5, phrasing="heldout")


def test_strip_roles_solves_directly_with_the_same_answer(families):
    """No section tag is left, no call is the first attempt's wrong one, every call re-runs, and
    the answer is the roles trace's answer."""
    registry = default_registry()
    train, _ = families
    for t in train:
        plain = strip_roles(t)
        text = render_trace(plain)
        assert not re.search(r"<(advocate|attack|pragmatist|verify)>", text)
        assert plain["answer"] == t["answer"]
        calls = [s["tool_call"]["args"]["expression"] for s in plain["reasoning"]]
        first = t["reasoning"][0]["tool_call"]["args"]["expression"]
        assert (first in calls) == ("times as many" in t["question"])   # kept only where the fix uses it
        assert [s["step"] for s in plain["reasoning"]] == list(range(1, len(plain["reasoning"]) + 1))
        assert validate_trace(plain, registry).ok
    # the "times as many" trap keeps the other's share, which the fix adds to (a right sub-result)
    share = next(t for t in train if "times as many" in t["question"])
    assert len(strip_roles(share)["reasoning"]) == 2
    gave = next(t for t in train if "handed" in t["question"])
    assert len(strip_roles(gave)["reasoning"]) == 1


def test_strip_roles_needs_a_fix_to_keep():
    t = generate_offline("arithmetic", 1, seed=0)[0]
    with pytest.raises(ValueError, match="no <pragmatist>"):
        strip_roles(t)
