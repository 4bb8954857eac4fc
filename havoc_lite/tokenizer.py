"""Tokenizer: sentencepiece BPE/unigram with byte fallback, our special tokens and chat rendering.

`train_tokenizer` trains a sentencepiece model on a bounded random sample of lines (reservoir
sampling, so a 10 GB corpus never sits in memory) with settings that keep text lossless:
identity normalisation, whitespace kept as is, no dummy prefix, digits split, byte fallback for
anything unseen. Every markup token of docs/architecture.md is a sentencepiece *control symbol*: one id that
ordinary text can never produce, so a user typing "<tool>" gets ordinary pieces, and only
`encode(..., allow_special=True)` (used for assistant turns and engine-written markup) maps the
string to its id.

`HavocTokenizer.render_chat` turns a conversation into ids plus a loss mask (1 = train on this
token) following docs/architecture.md: loss on the assistant's tokens and its closing <|end|>, never on
<tool_result>…</tool_result>, which the engine writes at inference time.
"""
from __future__ import annotations

import io
import json
import logging
import os
import random
import re
import time
from pathlib import Path
from typing import Iterable, Sequence, Union

import sentencepiece as spm

from .markup import ASSISTANT, CONTROL_SYMBOLS, END, ROLES, SPECIAL_TOKENS, UNK, assistant_mask, chat_token

log = logging.getLogger(__name__)


# sentencepiece writes spaces as U+2581 and turns every U+2581 back into a space when decoding,
# so a literal U+2581 in the input would come back as " ". We encode it as its three UTF-8 byte
# pieces instead; byte pieces decode to the literal character.
_SPACE_MARK = "\u2581"

Inputs = Union[str, os.PathLike, Iterable]


def _reservoir_lines(texts: Iterable[str], k: int, max_chars: int, seed: int) -> tuple[list[str], int]:
    """Uniform random sample of at most k non-empty lines (Vitter 1985, "Algorithm R").

    Lines longer than `max_chars` are cut into pieces of `max_chars` characters, since
    sentencepiece silently skips sentences above its max_sentence_length. Returns (sample, number
    of lines seen). Memory: O(k) lines, whatever the corpus size.
    """
    rng = random.Random(seed)
    sample: list[str] = []
    seen = 0
    for text in texts:
        for line in text.split("\n"):
            for start in range(0, len(line), max_chars):
                piece = line[start:start + max_chars]
                if not piece.strip():
                    continue
                if len(sample) < k:
                    sample.append(piece)
                else:
                    j = rng.randint(0, seen)
                    if j < k:
                        sample[j] = piece
                seen += 1
    return sample, seen


def _input_texts(inputs: Inputs) -> Iterable[str]:
    """Texts from a path (file or folder), a list of paths, or an iterable of strings."""
    from .data import iter_text_blocks  # data.py owns file reading (formats, errors, streaming)

    def is_path(x) -> bool:
        return isinstance(x, os.PathLike) or (isinstance(x, str) and len(x) < 4096
                                              and "\n" not in x and os.path.exists(x))

    if isinstance(inputs, (str, os.PathLike)):
        if not os.path.exists(inputs):
            raise FileNotFoundError(f"train_tokenizer: input {os.fspath(inputs)!r} is not a file or folder")
        paths = [inputs]
    elif isinstance(inputs, (list, tuple)) and inputs and all(is_path(x) for x in inputs):
        paths = list(inputs)
    else:
        return (t for t in inputs)
    return (block for p in paths for block, _ in iter_text_blocks(p, any_text=True))


def train_tokenizer(inputs: Inputs, output_dir: Union[str, os.PathLike], vocab_size: int = 70000,
                    model_type: str = "bpe", *, input_sentence_size: int = 2_000_000,
                    max_sentence_chars: int = 4000, character_coverage: float = 0.9999,
                    seed: int = 0, num_threads: int | None = None, hard_vocab_limit: bool = False,
                    **sentencepiece_options) -> "HavocTokenizer":
    """Train a sentencepiece tokenizer with the special tokens of docs/architecture.md and save it.

    Args:
        inputs: a `.txt` / `.jsonl` file, a folder of them (recursive), a list of such paths, or an
            iterable of text strings (each a document). JSONL records contribute every string
            value (so GSM8K, chat and trace files work as well as `{"text"}`).
        output_dir: gets `tokenizer.model`, `tokenizer.vocab`, `special_tokens.json`.
        vocab_size: number of ids including the 24 special tokens and 256 byte pieces. With
            `hard_vocab_limit=False` (default) it is an upper bound: on a small corpus the
            trainer may stop earlier, and a warning says how many pieces it made.
        model_type: "bpe" (Sennrich et al. 2016) or "unigram" (Kudo 2018).
        input_sentence_size: lines kept by reservoir sampling; bounds memory (≈ this × line
            length in bytes).
        max_sentence_chars: longer lines are cut into pieces of this many characters.
        character_coverage: fraction of characters covered by pieces; the rest go through byte
            fallback.
        **sentencepiece_options: passed on to `SentencePieceTrainer.train` (overrides ours).

    Returns:
        the trained `HavocTokenizer`.

    Raises:
        ValueError: empty corpus, unknown model_type, or a vocab_size sentencepiece cannot reach
            (message says why); data errors from reading files (naming file and line).
    """
    if model_type not in ("bpe", "unigram"):
        raise ValueError(f"train_tokenizer: model_type must be 'bpe' or 'unigram', got {model_type!r}")
    minimum = len(SPECIAL_TOKENS) + 256 + 1
    if vocab_size < minimum:
        raise ValueError(f"train_tokenizer: vocab_size={vocab_size} is below the minimum {minimum} "
                         f"({len(SPECIAL_TOKENS)} special tokens + 256 byte pieces + 1)")
    t0 = time.perf_counter()
    lines, seen = _reservoir_lines(_input_texts(inputs), input_sentence_size, max_sentence_chars, seed)
    if not lines:
        raise ValueError("train_tokenizer: the corpus has no non-empty line of text")
    options = dict(
        model_type=model_type, vocab_size=vocab_size,
        bos_id=0, eos_id=1, pad_id=2, unk_id=3,
        bos_piece=SPECIAL_TOKENS[0], eos_piece=SPECIAL_TOKENS[1], pad_piece=SPECIAL_TOKENS[2],
        unk_piece=SPECIAL_TOKENS[3], control_symbols=CONTROL_SYMBOLS,
        byte_fallback=True, split_digits=True, character_coverage=character_coverage,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        # No dummy prefix: text encoded in pieces (around special tokens, in streamed blocks)
        # then concatenates to exactly the ids of the whole, and decoding adds no space.
        add_dummy_prefix=False, allow_whitespace_only_pieces=True,
        hard_vocab_limit=hard_vocab_limit, input_sentence_size=0, shuffle_input_sentence=False,
        max_sentence_length=4 * max_sentence_chars + 16, seed_sentencepiece_size=1_000_000,
        num_threads=num_threads or os.cpu_count() or 1, minloglevel=2,
    )
    options.update(sentencepiece_options)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, **options)
    except RuntimeError as e:
        raise ValueError(f"train_tokenizer: sentencepiece could not train a {model_type} model with "
                         f"vocab_size={vocab_size} on {len(lines)} lines: {e}") from e
    tok = HavocTokenizer(model.getvalue())
    if tok.vocab_size < vocab_size:
        log.warning("train_tokenizer: the corpus only supports %d pieces (asked for %d)",
                    tok.vocab_size, vocab_size)
    tok.save(output_dir)
    log.info("train_tokenizer: %s vocab %d from %d of %d lines in %.1f s", model_type,
             tok.vocab_size, len(lines), seen, time.perf_counter() - t0)
    return tok


class BatchCodec:
    """What every tokenizer backend shares, given its `encode`, `decode`, `vocab_size` and
    `source`: `encode_batch` / `decode_batch`, `len()` and the repr."""

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, source={self.source!r})"

    def encode_batch(self, texts: Sequence[str], **kwargs) -> list[list[int]]:
        """`encode` for each text (same keyword arguments)."""
        return [self.encode(t, **kwargs) for t in texts]

    def decode_batch(self, batch: Sequence[Sequence[int]], **kwargs) -> list[str]:
        """`decode` for each id list (same keyword arguments)."""
        return [self.decode(ids, **kwargs) for ids in batch]


class HavocTokenizer(BatchCodec):
    """A sentencepiece model plus the markup of docs/architecture.md.

    Build with `HavocTokenizer.load(dir_or_model_file)` or `train_tokenizer(...)`. Ids are Python
    ints; `vocab_size` is the number of pieces (the model's embedding needs at least that many
    rows). Attributes `bos_id eos_id pad_id unk_id end_id assistant_id` and `special_ids`
    (token string -> id) are fixed by `SPECIAL_TOKENS` (position == id).

    Raises:
        ValueError: the model lacks a special token, has it at another id, or as an ordinary
            piece (ordinary text could then produce it). The message names the tokens.
    """

    def __init__(self, model_proto: bytes, source: str = "<memory>"):
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self._model_proto = model_proto
        self.source = source
        n = self.sp.get_piece_size()
        missing = [t for t in SPECIAL_TOKENS if self.sp.piece_to_id(t) == self.sp.unk_id() and t != UNK]
        if missing:
            raise ValueError(f"tokenizer {source}: missing special tokens {missing}; train it with "
                             "havoc_lite.tokenizer.train_tokenizer")
        wrong = [(t, self.sp.piece_to_id(t)) for i, t in enumerate(SPECIAL_TOKENS) if self.sp.piece_to_id(t) != i]
        if wrong:
            raise ValueError(f"tokenizer {source}: special tokens at unexpected ids {wrong}; "
                             "SPECIAL_TOKENS position must equal id")
        ordinary = [t for i, t in enumerate(SPECIAL_TOKENS) if not (self.sp.is_control(i) or self.sp.is_unknown(i))]
        if ordinary:
            raise ValueError(f"tokenizer {source}: special tokens {ordinary} are ordinary pieces, so plain "
                             "text could produce them; they must be sentencepiece control symbols")
        self.vocab_size: int = n
        self.special_ids: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
        self._special_by_id = {i: t for t, i in self.special_ids.items()}
        self.bos_id, self.eos_id, self.pad_id, self.unk_id = 0, 1, 2, 3
        self.end_id = self.special_ids[END]
        self.assistant_id = self.special_ids[ASSISTANT]
        self._role_ids = {r: self.special_ids[chat_token(r)] for r in ROLES}
        self._space_mark_ids = [self.sp.piece_to_id(f"<0x{b:02X}>") for b in _SPACE_MARK.encode()]
        newline_in_pieces = any("\n" in self.sp.id_to_piece(i) for i in range(n) if not self.sp.is_byte(i))
        self._newline_id = None if newline_in_pieces else self.sp.piece_to_id("<0x0A>")
        # Longest first, so no token can shadow a longer one that starts with it.
        self._special_re = re.compile("|".join(re.escape(t) for t in sorted(SPECIAL_TOKENS, key=len, reverse=True)))

    # --- files ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "HavocTokenizer":
        """Load from a folder holding `tokenizer.model` or from the `.model` file itself.

        Raises FileNotFoundError (naming the path) or ValueError (see class docstring).
        """
        path = Path(path)
        model_file = path / "tokenizer.model" if path.is_dir() else path
        if not model_file.is_file():
            raise FileNotFoundError(f"HavocTokenizer.load: no tokenizer model at {model_file}")
        return cls(model_file.read_bytes(), source=str(model_file))

    def save(self, output_dir: Union[str, os.PathLike]) -> Path:
        """Write `tokenizer.model`, `tokenizer.vocab` (piece<TAB>score) and `special_tokens.json`."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "tokenizer.model").write_bytes(self._model_proto)
        with open(out / "tokenizer.vocab", "w", encoding="utf-8") as f:
            for i in range(self.vocab_size):
                f.write(f"{self.sp.id_to_piece(i)}\t{self.sp.get_score(i)}\n")
        meta = {"vocab_size": self.vocab_size, "special_tokens": self.special_ids}
        (out / "special_tokens.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")
        return out

    # --- encoding ------------------------------------------------------------------------------
    def _encode_ordinary(self, text: str) -> list[int]:
        # Long text: encode line by line in one batched call (3x faster than one long string).
        # Identical ids, because "\n" is not in any piece of the vocab (checked at load): it is
        # always its own byte piece, so no piece can span a line break.
        if self._newline_id is None or len(text) < 1024 or "\n" not in text:
            return self._encode_line(text)
        lines = text.split("\n")
        batch = iter(self.sp.encode([ln for ln in lines if _SPACE_MARK not in ln]))
        ids: list[int] = []
        for i, line in enumerate(lines):
            if i:
                ids.append(self._newline_id)
            ids.extend(next(batch) if _SPACE_MARK not in line else self._encode_line(line))
        return ids

    def _encode_line(self, text: str) -> list[int]:
        if _SPACE_MARK not in text:
            return self.sp.encode(text)
        ids: list[int] = []
        for i, part in enumerate(text.split(_SPACE_MARK)):
            if i:
                ids.extend(self._space_mark_ids)
            if part:
                ids.extend(self.sp.encode(part))
        return ids

    def encode(self, text: str, allow_special: bool = False, bos: bool = False, eos: bool = False) -> list[int]:
        """Text -> ids. Lossless: `decode(encode(s, allow_special=a), ) == s` for any str s.

        With `allow_special=True` the strings of `SPECIAL_TOKENS` map to their single ids; with
        False (the default, for anything a user typed) they are encoded as ordinary text.
        `bos`/`eos` add <|bos|> first / <|eos|> last.
        """
        if not isinstance(text, str):
            raise TypeError(f"HavocTokenizer.encode expects str, got {type(text).__name__}")
        ids = [self.bos_id] if bos else []
        if allow_special:
            pos = 0
            for m in self._special_re.finditer(text):
                if m.start() > pos:
                    ids.extend(self._encode_ordinary(text[pos:m.start()]))
                ids.append(self.special_ids[m.group()])
                pos = m.end()
            if pos < len(text):
                ids.extend(self._encode_ordinary(text[pos:]))
        else:
            ids.extend(self._encode_ordinary(text))
        if eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """Ids -> text. Special ids become their strings (or nothing with `skip_special`).

        Raises ValueError naming an id outside [0, vocab_size).
        """
        out: list[str] = []
        run: list[int] = []
        for i in ids:
            i = int(i)
            if i in self._special_by_id:
                if run:
                    out.append(self.sp.decode(run))
                    run = []
                if not skip_special:
                    out.append(self._special_by_id[i])
            elif 0 <= i < self.vocab_size:
                run.append(i)
            else:
                raise ValueError(f"HavocTokenizer.decode: id {i} is outside the vocab (size {self.vocab_size})")
        if run:
            out.append(self.sp.decode(run))
        return "".join(out)

    def token_id(self, token: str) -> int:
        """Id of a special token or any single piece. Raises ValueError naming it if absent."""
        if token in self.special_ids:
            return self.special_ids[token]
        i = self.sp.piece_to_id(token)
        if i == self.unk_id:
            raise ValueError(f"HavocTokenizer.token_id: {token!r} is not a token of this vocab")
        return i

    def id_to_piece(self, i: int) -> str:
        """The sentencepiece piece string of id i (U+2581 for spaces, <0xNN> for bytes)."""
        return self.sp.id_to_piece(int(i))

    # --- chat ----------------------------------------------------------------------------------
    def _render(self, messages: Sequence[dict], generation_prompt: bool) -> tuple[list[int], list[int]]:
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
            raise ValueError(f"render_chat: messages must be a list of {{'role', 'content'}} dicts, "
                             f"got {type(messages).__name__}")
        ids, mask = [self.bos_id], [0]
        for n, msg in enumerate(messages):
            if not isinstance(msg, dict):
                raise ValueError(f"render_chat: message {n} is a {type(msg).__name__}, not a dict")
            role = msg.get("role")
            if role not in ROLES:
                raise ValueError(f"render_chat: message {n} has role {role!r}; expected one of {ROLES}")
            if "content" not in msg or not isinstance(msg["content"], str):
                raise ValueError(f"render_chat: message {n} ({role}) has no string 'content'")
            ids.append(self._role_ids[role])
            mask.append(0)
            if role == "assistant":
                body = self.encode(msg["content"], allow_special=True)
                ids += body + [self.end_id]
                mask += assistant_mask(body, self.special_ids) + [1]
            else:
                body = self.encode(msg["content"], allow_special=False)
                ids += body + [self.end_id]
                mask += [0] * (len(body) + 1)
        if generation_prompt:
            ids.append(self.assistant_id)
            mask.append(0)
        else:
            ids.append(self.eos_id)
            mask.append(0)
        return ids, mask

    def render_chat(self, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
        """Conversation -> (ids, loss_mask), both of length T.

        Layout: `<|bos|>` then per message `<|role|>content<|end|>`, then `<|eos|>`. The mask is
        1 on assistant tokens and each assistant's closing <|end|>, 0 elsewhere, including
        <tool_result>, its JSON and </tool_result>. Assistant content is encoded with
        allow_special=True (it carries markup), system/user content with allow_special=False.

        Raises:
            ValueError: naming the message index, for an unknown role or a missing/non-str content.
        """
        return self._render(messages, generation_prompt=False)

    def render_prompt(self, messages: Sequence[dict]) -> list[int]:
        """Ids for generation: the rendered messages (no <|eos|>) followed by `<|assistant|>`."""
        return self._render(messages, generation_prompt=True)[0]


def load_tokenizer(path: Union[str, os.PathLike], token: str | None = None):
    """Load the tokenizer at `path`, picking the backend from the files present.

    - a folder with `tokenizer.json` or `havoc_tokenizer.json`, a `.gguf` file, or a hub id
      ("owner/name", not an existing path): `hf_tokenizer.HFTokenizer` (a pretrained model's own
      tokenizer with our markup added; `token` for gated hub models);
    - a folder with `tokenizer.model` and no Hugging Face file, or with our `tokenizer.model` +
      `special_tokens.json` and only a `tokenizer_config.json` beside them (`export.to_hf_llama`
      writes ours so), or a `.model` file: `HavocTokenizer`;
    - any other folder with `tokenizer_config.json` (a SentencePiece-only Hugging Face model too):
      `HFTokenizer`.

    Raises:
        FileNotFoundError: naming `path` and the files looked for.
        ValueError: as the chosen backend's loader.
    """
    from .hf_tokenizer import HF_FILES, HFTokenizer
    p = Path(path)
    if p.is_dir():
        hf_files = [f for f in HF_FILES if (p / f).is_file()]
        ours = (p / "tokenizer.model").is_file() and (p / "special_tokens.json").is_file()
        if ours and set(hf_files) <= {"tokenizer_config.json"}:
            return HavocTokenizer.load(p)   # ours, as exported to a Hugging Face folder
        if hf_files:
            return HFTokenizer.load(p)
        if (p / "tokenizer.model").is_file():
            return HavocTokenizer.load(p)
        raise FileNotFoundError(f"load_tokenizer: {p} holds no tokenizer.model (ours) and no "
                                "tokenizer.json / tokenizer_config.json (Hugging Face)")
    if p.suffix.lower() == ".gguf":
        return HFTokenizer.from_pretrained(p, token=token)
    if p.is_file():
        return HavocTokenizer.load(p)
    if not p.is_absolute() and str(path).count("/") == 1 and not str(path).startswith("."):
        return HFTokenizer.from_pretrained(str(path), token=token)
    raise FileNotFoundError(f"load_tokenizer: no such file or folder {p}")
