"""The markup module: token ids, section state on ids vs `parse`, and that no other code spells a tag."""
import ast
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from havoc_lite import markup
from havoc_lite.markup import (SECTION_TAGS, SPECIAL_TOKENS, close_tag, open_sections, open_tag, parse,
                               section_bodies, tag_ids, wrap)

ROOT = Path(__file__).resolve().parents[1]


def test_special_token_ids_are_fixed():
    # checkpoints and tokenizers on disk depend on these ids: appending is fine, reordering is not
    assert SPECIAL_TOKENS[:8] == ["<|bos|>", "<|eos|>", "<|pad|>", "<unk>",
                                  "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    assert SPECIAL_TOKENS[8:14] == ["<reason>", "</reason>", "<tool>", "</tool>", "<tool_result>", "</tool_result>"]
    assert SPECIAL_TOKENS[-2:] == ["<answer>", "</answer>"] and len(SPECIAL_TOKENS) == 24
    assert markup.MARKUP_TOKENS == SPECIAL_TOKENS[8:]
    ids = tag_ids(SPECIAL_TOKENS.index)
    assert ids[11] == (True, "tool") and ids[22] == (False, "answer") and len(ids) == 16


def test_wrap_and_section_bodies():
    text = "x " + wrap("answer", "18 dollars") + " y " + wrap("answer", "19") + "<answer>open"
    assert section_bodies(text, "answer") == ["18 dollars", "19"]
    assert parse(text).get("answer") == ["18 dollars", "19", "open"]   # parse also keeps the unclosed one


events = st.lists(st.tuples(st.booleans(), st.sampled_from(SECTION_TAGS)), max_size=12)


@settings(max_examples=200, deadline=None)
@given(events)
def test_open_sections_on_ids_agrees_with_parse_on_text(tags):
    """The forcer's state over token ids and `parse` over the same turn as text follow one rule."""
    text = "".join((close_tag(n) if closing else open_tag(n)) + "x" for closing, n in tags)
    opened, current = open_sections(tags)
    parsed = parse(text)
    assert opened == set(parsed.tags)
    at_end = [p for p in parsed.problems if p.endswith("at end of text")]
    assert at_end == ([f"unclosed {open_tag(current)} at end of text"] if current else [])


def _code_strings(path: Path):
    """String constants of a module that are not documentation (a string standing alone as a
    statement: docstrings, field docs); f-string parts included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(n.value) for n in ast.walk(tree)
                  if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_code_outside_markup_spells_a_tag():
    """Changing a tag's spelling is a change to markup.py alone (docstrings and tests may quote)."""
    found = []
    for path in sorted([*ROOT.glob("havoc_lite/**/*.py"), *ROOT.glob("synth/**/*.py"), *ROOT.glob("scripts/*.py")]):
        if path.name == "markup.py" and path.parent.name == "havoc_lite":
            continue
        for line, value in _code_strings(path):
            hits = [t for t in SPECIAL_TOKENS if t in value]
            if hits:
                found.append(f"{path.relative_to(ROOT)}:{line} {hits}")
    assert not found, found
