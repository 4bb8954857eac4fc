"""Tokenizer: lossless round trip, special tokens as single control ids, chat loss masks."""
import io
import json
import re
from pathlib import Path

import pytest
import sentencepiece as spm
from hypothesis import given, settings, strategies as st

from havoc_lite.markup import SPECIAL_TOKENS
from havoc_lite.tokenizer import HavocTokenizer, train_tokenizer

ASSETS = Path(__file__).resolve().parents[1] / "havoc_lite" / "assets"
CORPUS = [ASSETS / "tinyshakespeare_200k.txt", ASSETS / "gsm8k_train_500.jsonl"]


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(CORPUS, out, vocab_size=1024)
    return out


@pytest.fixture(scope="session")
def tok(tok_dir):
    return HavocTokenizer.load(tok_dir)


def test_files_written_and_ids_fixed(tok_dir, tok):
    assert {p.name for p in tok_dir.iterdir()} >= {"tokenizer.model", "tokenizer.vocab", "special_tokens.json"}
    meta = json.loads((tok_dir / "special_tokens.json").read_text())
    assert meta["special_tokens"] == {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2)
    assert tok.token_id("</tool>") == SPECIAL_TOKENS.index("</tool>") == 11
    assert tok.end_id == 7 and tok.assistant_id == 6
    assert tok.vocab_size == 1024
    assert len((tok_dir / "tokenizer.vocab").read_text(encoding="utf-8").splitlines()) == 1024
    with pytest.raises(ValueError, match="not-a-piece"):
        tok.token_id("not-a-piece")


def test_each_special_token_is_one_id_and_never_ordinary(tok):
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.encode(t, allow_special=True) == [i]
        plain = tok.encode(t)  # as user text: ordinary pieces, no special id at all
        assert len(plain) > 1 and not set(plain) & set(range(len(SPECIAL_TOKENS)))
        assert tok.decode(plain) == t
    text = "x<tool>{}</tool>y"
    assert tok.encode(text, allow_special=True).count(tok.token_id("<tool>")) == 1
    assert tok.token_id("<tool>") not in tok.encode(text)


@settings(max_examples=300, deadline=None)
@given(st.text(), st.booleans())
def test_round_trip_arbitrary_unicode(tok, s, allow_special):
    assert tok.decode(tok.encode(s, allow_special=allow_special)) == s


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(SPECIAL_TOKENS + ["\u2581", " ", "\n", "  "]), st.text(max_size=8))))
def test_round_trip_with_markup(tok, parts):
    s = "".join(parts)
    ids = tok.encode(s, allow_special=True)
    assert tok.decode(ids) == s
    specials = re.compile("|".join(re.escape(t) for t in sorted(SPECIAL_TOKENS, key=len, reverse=True)))
    assert tok.decode(ids, skip_special=True) == specials.sub("", s)
    assert sum(i < len(SPECIAL_TOKENS) for i in ids) == len(specials.findall(s))


def test_text_is_compressed_and_digits_split(tok):
    text = (ASSETS / "tinyshakespeare_200k.txt").read_text()[:5000]
    assert len(tok.encode(text)) < 0.5 * len(text)
    ids = tok.encode("12345")
    assert len(ids) == 5 and tok.decode_batch([[i] for i in ids]) == list("12345")
    assert tok.encode("ab", bos=True, eos=True)[0] == 0 and tok.encode("ab", eos=True)[-1] == 1
    with pytest.raises(ValueError, match="outside the vocab"):
        tok.decode([tok.vocab_size])


def test_render_chat_masks_multi_turn_with_tools(tok):
    call = '{"tool": "calculator", "args": {"expression": "48/2"}}'
    result = '{"status": "success", "result": 24}'
    a1 = f"<reason>Half of 48.</reason><tool>{call}</tool><tool_result>{result}</tool_result><answer>24</answer>"
    msgs = [{"role": "system", "content": "You solve math."},
            {"role": "user", "content": "What is 48/2? <tool>not a call</tool>"},
            {"role": "assistant", "content": a1},
            {"role": "user", "content": "And doubled?"},
            {"role": "assistant", "content": "<answer>48</answer>"}]
    ids, mask = tok.render_chat(msgs)
    S = tok.special_ids
    E = lambda s: tok.encode(s)  # noqa: E731
    expected = (
        [(S["<|bos|>"], 0), (S["<|system|>"], 0)] + [(i, 0) for i in E("You solve math.")] + [(S["<|end|>"], 0)]
        + [(S["<|user|>"], 0)] + [(i, 0) for i in E("What is 48/2? <tool>not a call</tool>")] + [(S["<|end|>"], 0)]
        + [(S["<|assistant|>"], 0), (S["<reason>"], 1)] + [(i, 1) for i in E("Half of 48.")]
        + [(S["</reason>"], 1), (S["<tool>"], 1)] + [(i, 1) for i in E(call)] + [(S["</tool>"], 1)]
        + [(S["<tool_result>"], 0)] + [(i, 0) for i in E(result)] + [(S["</tool_result>"], 0)]
        + [(S["<answer>"], 1)] + [(i, 1) for i in E("24")] + [(S["</answer>"], 1), (S["<|end|>"], 1)]
        + [(S["<|user|>"], 0)] + [(i, 0) for i in E("And doubled?")] + [(S["<|end|>"], 0)]
        + [(S["<|assistant|>"], 0), (S["<answer>"], 1)] + [(i, 1) for i in E("48")]
        + [(S["</answer>"], 1), (S["<|end|>"], 1), (S["<|eos|>"], 0)]
    )
    assert list(zip(ids, mask)) == expected
    # The user's literal "<tool>" stayed text: only the assistant's call produced the id.
    assert ids.count(S["<tool>"]) == 1
    prompt = tok.render_prompt(msgs[:2])
    assert prompt == ids[:len(prompt) - 1] + [tok.assistant_id]


@pytest.mark.parametrize("messages, match", [
    ([{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}], "message 1 has role 'robot'"),
    ([{"role": "user"}], "message 0 .*content"),
    ([{"role": "assistant", "content": None}], "message 0 .*content"),
    (["hello"], "message 0 is a str"),
])
def test_render_chat_errors_name_message(tok, messages, match):
    with pytest.raises(ValueError, match=match):
        tok.render_chat(messages)


def test_model_missing_special_tokens_is_clear_error(tmp_path):
    lines = (ASSETS / "tinyshakespeare_200k.txt").read_text().splitlines()[:2000]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, vocab_size=400,
                                   control_symbols=["<|system|>"], minloglevel=2)
    (tmp_path / "tokenizer.model").write_bytes(model.getvalue())
    with pytest.raises(ValueError, match=r"missing special tokens.*<\|user\|>.*</answer>"):
        HavocTokenizer.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        HavocTokenizer.load(tmp_path / "nope")


def test_unigram_small_corpus_and_bad_arguments(tmp_path):
    docs = ["the cat sat on the mat", "a dog ate 12 bones", "<tool> is plain text here"] * 50
    tok = train_tokenizer(docs, tmp_path / "u", vocab_size=5000, model_type="unigram")
    assert len(SPECIAL_TOKENS) + 256 < tok.vocab_size < 5000  # soft limit on a tiny corpus
    assert tok.decode(tok.encode("the dog sat\u2581")) == "the dog sat\u2581"
    with pytest.raises(ValueError, match="model_type"):
        train_tokenizer(docs, tmp_path / "x", vocab_size=1000, model_type="wordpiece")
    with pytest.raises(ValueError, match="no non-empty line"):
        train_tokenizer(["", "  \n "], tmp_path / "y", vocab_size=1000)
    with pytest.raises(ValueError, match="minimum"):
        train_tokenizer(docs, tmp_path / "z", vocab_size=100)


def test_long_text_batched_by_lines_equals_whole_string_encoding(tok):
    text = (ASSETS / "tinyshakespeare_200k.txt").read_text()[:20000] + "\n\u2581 odd\n\nend"
    ids = tok.encode(text)
    head = text[:text.rindex("\n", 0, 20000)]  # whole lines, so the prefix's ids are a prefix of ids
    assert ids[:len(tok.sp.encode(head))] == tok.sp.encode(head)  # same ids as sentencepiece on the whole
    assert tok.decode(ids) == text
