"""A pretrained model's own tokenizer (Hugging Face) behind the `HavocTokenizer` interface.

A pretrained base comes with its tokenizer and chat template, and an Instruct model has learned
that template; so `HFTokenizer` keeps both and only adds our markup (`<reason>`, `<tool>`,
`<tool_result>`, `<answer>`, the adversarial roles, `<verify>`, … = `markup.MARKUP_TOKENS`) as
*special* added tokens: one id each, appended after the base vocabulary (so the model's embedding
and head grow by that many rows: `HavocModel.resize_token_embeddings(len(tok))`).

Two rules keep the markup trustworthy, as in `HavocTokenizer`:
- text a user or a tool wrote is encoded with `split_special_tokens=True`, so "<tool>" or
  "<|im_start|>" typed by a user become ordinary pieces, never the control ids;
- only assistant turns and engine-written markup use `allow_special=True`.

Our role tags (`<|system|>`, `<|user|>`, `<|assistant|>`, `<|end|>`) are not added: a conversation
is rendered by the model's own chat template (`apply_chat_template`: ChatML `<|im_start|>role …
<|im_end|>` for SmolLM2 and Qwen, `<|start_header_id|>role<|end_header_id|> … <|eot_id|>` for
Llama-3), and `end_id` is that template's end-of-turn token. `render_chat` gives the loss mask:
1 on the assistant's content and its end-of-turn token, 0 on the template's own text, on system
and user turns, and inside `<tool_result>…</tool_result>` (the engine writes those).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
from pathlib import Path
from typing import Optional, Sequence, Union

from .markup import MARKUP_TOKENS, ROLES, assistant_mask
from .tokenizer import BatchCodec

PathLike = Union[str, os.PathLike]
META_FILE = "havoc_tokenizer.json"   # written by save(): backend, vocab size, identity hash
HF_FILES = ("tokenizer.json", "tokenizer_config.json", META_FILE)

# Private-use characters: no real message contains them, and a chat template copies them through
# untouched, so they mark where each message's content lands in the rendered text.
_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"


class HFTokenizer(BatchCodec):
    """A transformers tokenizer plus our markup, with `HavocTokenizer`'s interface.

    Build with `HFTokenizer.from_pretrained(src)` (a Hugging Face folder, a hub id or a `.gguf`
    file), `HFTokenizer.load(dir)` (a folder written by `save`), or `HFTokenizer(hf_tokenizer)`.

    Attributes:
        hf: the underlying transformers tokenizer (markup tokens added).
        vocab_size: `len(hf)`, base vocabulary plus every added token; the model needs at least
            that many embedding rows.
        special_ids: token string -> id for our markup and for the base's special tokens
            (`<|im_start|>`, `<|im_end|>`, …).
        bos_id: the base's BOS id, or None when it has none (Qwen2).
        eos_id, pad_id: the base's EOS; its PAD, else EOS.
        end_id: the chat template's end-of-turn token (`<|im_end|>`, `<|eot_id|>`), found by
            rendering a probe conversation; the base's EOS when the template has none.

    Raises:
        ValueError: the tokenizer has no chat template, no EOS, or a markup token that exists in
            its vocabulary as an ordinary piece (ordinary text could then produce it).
    """

    def __init__(self, hf, source: str = "<memory>"):
        from tokenizers import AddedToken
        self.hf, self.source = hf, source
        if not getattr(hf, "chat_template", None):
            raise ValueError(f"tokenizer {source}: it has no chat template, so conversations cannot be "
                             "rendered the way the model was trained; use an Instruct/chat model's tokenizer")
        if hf.eos_token_id is None:
            raise ValueError(f"tokenizer {source}: it has no eos_token")
        vocab = hf.get_vocab()
        added = hf.added_tokens_decoder
        ordinary = [t for t in MARKUP_TOKENS if t in vocab and not getattr(added.get(vocab[t]), "special", False)]
        if ordinary:
            raise ValueError(f"tokenizer {source}: markup tokens {ordinary} are ordinary pieces of its vocab, "
                             "so plain text could produce them")
        new = [AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)
               for t in MARKUP_TOKENS if t not in vocab]
        if new:
            # keep the base's own extra special tokens (the keyword was renamed in transformers 5)
            keep = ("replace_extra_special_tokens" if "replace_extra_special_tokens" in
                    inspect.signature(hf.add_special_tokens).parameters else "replace_additional_special_tokens")
            hf.add_special_tokens({"additional_special_tokens": new}, **{keep: False})
        self.vocab_size: int = len(hf)
        self.special_ids: dict[str, int] = {t.content: i for i, t in hf.added_tokens_decoder.items() if t.special}
        self._special_by_id = {i: t for t, i in self.special_ids.items()}
        self.bos_id: Optional[int] = hf.bos_token_id
        self.eos_id: int = hf.eos_token_id
        self.pad_id: int = hf.pad_token_id if hf.pad_token_id is not None else hf.eos_token_id
        self.unk_id: Optional[int] = hf.unk_token_id
        # Longest first, so no token can shadow a longer one that starts with it.
        self._template_special_re = re.compile("|".join(
            re.escape(t) for t in sorted(self.special_ids, key=len, reverse=True)))
        self._trims = self._template_trims()
        self.end_id: int = self._find_end_id()
        self.assistant_id = None   # no single <|assistant|> token: the template's header is text

    # --- loading and saving ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, src: PathLike, token: Optional[str] = None) -> "HFTokenizer":
        """The tokenizer of a Hugging Face folder, a hub id ("HuggingFaceTB/SmolLM2-135M-Instruct")
        or a `.gguf` file (read by transformers' GGUF loader, which needs the `gguf` package),
        with our markup added.

        Args:
            token: a Hugging Face token for gated hub models; default `get_secret("HF_TOKEN")`.

        Raises:
            FileNotFoundError: a local path that does not exist, or a folder without tokenizer files.
            ValueError: one line naming `src`, for a hub id that cannot be loaded (unknown, gated
                without a token, offline) or a file transformers cannot read; and as the class.
        """
        from transformers import AutoTokenizer
        path = Path(src)
        try:
            if path.suffix.lower() == ".gguf":
                if not path.is_file():
                    raise FileNotFoundError(f"HFTokenizer.from_pretrained: no such GGUF file {path}")
                hf = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            elif path.is_dir():
                if not any((path / f).is_file() for f in HF_FILES):
                    raise FileNotFoundError(f"HFTokenizer.from_pretrained: {path} holds no "
                                            "tokenizer.json or tokenizer_config.json")
                hf = AutoTokenizer.from_pretrained(str(path))
            elif os.path.isabs(src) or str(src).startswith(".") or str(src).count("/") != 1:
                raise FileNotFoundError(f"HFTokenizer.from_pretrained: {src} is neither a local folder, "
                                        "a .gguf file nor a hub id (owner/name)")
            else:
                from .secrets import get_secret
                hf = AutoTokenizer.from_pretrained(str(src), token=token or get_secret("HF_TOKEN"))
        except (OSError, ValueError, KeyError) as e:
            if isinstance(e, FileNotFoundError) and str(e).startswith("HFTokenizer"):
                raise
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"HFTokenizer.from_pretrained: cannot load a tokenizer from {src}: {why}") from e
        return cls(hf, source=str(src))

    @classmethod
    def load(cls, path: PathLike) -> "HFTokenizer":
        """Load a folder written by `save` (or any Hugging Face tokenizer folder).

        Raises:
            FileNotFoundError: no tokenizer files in `path`.
            ValueError: `havoc_tokenizer.json` records another vocabulary than the files hold (the
                folder was mixed up or edited), naming the folder.
        """
        path = Path(path)
        tok = cls.from_pretrained(path)
        meta_file = path / META_FILE
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            if meta.get("sha256") != tok.identity:
                raise ValueError(f"tokenizer {path}: its vocabulary does not match {META_FILE} "
                                 f"(sha256 {tok.identity[:12]} != {str(meta.get('sha256'))[:12]}); "
                                 "the tokenizer files were replaced or edited")
        return tok

    def save(self, output_dir: PathLike) -> Path:
        """Write the Hugging Face files (`tokenizer.json`, `tokenizer_config.json`, chat template)
        and `havoc_tokenizer.json` (backend, vocab_size, end_id, identity sha256)."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.hf.save_pretrained(str(out))
        meta = {"backend": "hf", "vocab_size": self.vocab_size, "end_id": self.end_id,
                "sha256": self.identity, "markup": {t: self.special_ids[t] for t in MARKUP_TOKENS}}
        (out / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return out

    @property
    def identity(self) -> str:
        """sha256 of the vocabulary (every token string and its id, added tokens included): equal
        for two tokenizers exactly when they map every token to the same id."""
        if getattr(self, "_identity", None) is None or self._identity[0] != self.vocab_size:
            vocab = sorted(self.hf.get_vocab().items(), key=lambda kv: kv[1])
            digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()
            self._identity = (self.vocab_size, digest)
        return self._identity[1]

    def check_model(self, model_vocab_size: int, expected_sha256: Optional[str] = None,
                    where: str = "model") -> None:
        """Refuse a model this tokenizer does not fit.

        Raises:
            ValueError (one line): the tokenizer has more ids than the model's `vocab_size` (rows
                of its embedding; more rows than ids is fine, e.g. Qwen pads to a multiple of 64),
                or `expected_sha256` (the identity recorded with the model) differs.
        """
        if self.vocab_size > model_vocab_size:
            raise ValueError(f"{where}: the tokenizer {self.source} has {self.vocab_size} ids but the model's "
                             f"vocab_size is {model_vocab_size}; resize the model with "
                             f"resize_token_embeddings({self.vocab_size}) or use its own tokenizer")
        if expected_sha256 is not None and expected_sha256 != self.identity:
            raise ValueError(f"{where}: the tokenizer {self.source} is not the one the model was trained with "
                             f"(vocab sha256 {self.identity[:12]} != {expected_sha256[:12]})")

    # --- encoding ----------------------------------------------------------------------------------
    def encode(self, text: str, allow_special: bool = False, bos: bool = False, eos: bool = False) -> list[int]:
        """Text -> ids (no BOS/EOS unless asked).

        With `allow_special=False` (the default, for anything a user or a tool wrote) special-token
        strings are encoded as ordinary text; with True they map to their single ids. `bos` adds
        the base's BOS first (nothing when it has none), `eos` its EOS last.
        """
        if not isinstance(text, str):
            raise TypeError(f"HFTokenizer.encode expects str, got {type(text).__name__}")
        ids = [self.bos_id] if bos and self.bos_id is not None else []
        if text:
            ids += self.hf.encode(text, add_special_tokens=False, split_special_tokens=not allow_special)
        if eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """Ids -> text; special ids become their strings (nothing with `skip_special`).

        Raises ValueError naming an id outside [0, vocab_size).
        """
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"HFTokenizer.decode: id {bad[0]} is outside the vocab (size {self.vocab_size})")
        return self.hf.decode(ids, skip_special_tokens=skip_special, clean_up_tokenization_spaces=False)

    def token_id(self, token: str) -> int:
        """Id of a special token or any single piece. Raises ValueError naming it if absent."""
        if token in self.special_ids:
            return self.special_ids[token]
        i = self.hf.convert_tokens_to_ids(token)
        if i is None or (i == self.unk_id and token != self.hf.unk_token):
            raise ValueError(f"HFTokenizer.token_id: {token!r} is not a token of this vocab")
        return int(i)

    def id_to_piece(self, i: int) -> str:
        """The vocabulary string of id i (byte-level BPE writes a space as 'Ġ')."""
        return self.hf.convert_ids_to_tokens(int(i))

    # --- chat --------------------------------------------------------------------------------------
    def _template(self, messages: Sequence[dict], generation_prompt: bool) -> str:
        return self.hf.apply_chat_template(list(messages), tokenize=False,
                                           add_generation_prompt=generation_prompt)

    def _template_trims(self) -> bool:
        """Whether the chat template strips a message's surrounding whitespace (Llama-3's
        `content | trim`), so the content we insert is stripped the same way."""
        mark = f"{_MARK_OPEN}0{_MARK_CLOSE}"
        text = self._template([{"role": "user", "content": f" {mark} "}], generation_prompt=False)
        return f" {mark} " not in text

    def _find_end_id(self) -> int:
        """The first special token the template writes after an assistant message's content."""
        msgs = [{"role": "user", "content": "1"}, {"role": "assistant", "content": f"{_MARK_OPEN}{_MARK_CLOSE}"}]
        text = self._template(msgs, generation_prompt=False)
        after = text.split(f"{_MARK_OPEN}{_MARK_CLOSE}", 1)[-1]
        for i in self.hf.encode(after, add_special_tokens=False):
            if i in self._special_by_id:
                return i
        return self.eos_id

    def _render(self, messages: Sequence[dict], generation_prompt: bool) -> tuple[list[int], list[int]]:
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
            raise ValueError(f"render_chat: messages must be a list of {{'role', 'content'}} dicts, "
                             f"got {type(messages).__name__}")
        for n, msg in enumerate(messages):
            if not isinstance(msg, dict):
                raise ValueError(f"render_chat: message {n} is a {type(msg).__name__}, not a dict")
            if msg.get("role") not in ROLES:
                raise ValueError(f"render_chat: message {n} has role {msg.get('role')!r}; expected one of {ROLES}")
            if not isinstance(msg.get("content"), str):
                raise ValueError(f"render_chat: message {n} ({msg['role']}) has no string 'content'")
        # Render with a marker in place of each content, so we know where every message lands
        # (a user may type the template's own tokens; they must stay text).
        marks = [f"{_MARK_OPEN}{n}{_MARK_CLOSE}" for n in range(len(messages))]
        text = self._template([{"role": m["role"], "content": mk} for m, mk in zip(messages, marks)],
                              generation_prompt)
        for n, mk in enumerate(marks):
            if text.count(mk) != 1:
                raise ValueError(f"render_chat: the chat template of {self.source} does not place message "
                                 f"{n} exactly once; it cannot be masked")
        # Cut the rendering at the template's special tokens. A tokenizer never merges across a
        # special token, so encoding piece by piece gives apply_chat_template's ids, while each
        # piece chooses how its content treats special-token strings.
        ids, mask = [], []
        after_assistant = False   # the next special token may be the end of an assistant turn
        pos = 0
        for m in list(self._template_special_re.finditer(text)) + [None]:
            piece = text[pos:m.start() if m else len(text)]
            if piece:
                piece_ids, piece_mask, last = self._encode_piece(piece, messages)
                ids += piece_ids
                mask += piece_mask
                after_assistant = last if last is not None else after_assistant
            if m is not None:
                tid = self.special_ids[m.group()]
                ids.append(tid)
                mask.append(1 if after_assistant and tid == self.end_id else 0)
                after_assistant = False
                pos = m.end()
        return ids, mask

    def _encode_piece(self, piece: str, messages: Sequence[dict]) -> tuple[list[int], list[int], Optional[bool]]:
        """Encode template text holding message markers (no special token of the template).

        Returns (ids, mask, whether the piece's last content is an assistant's, or None when it
        holds no content). Mask: 1 on tokens starting inside assistant content, except from
        <tool_result> through </tool_result>.
        """
        text, spans, k = "", [], 0    # spans: (start, end, role) of each content in `text`
        for mm in re.finditer(f"{_MARK_OPEN}(\\d+){_MARK_CLOSE}", piece):
            msg = messages[int(mm.group(1))]
            content = msg["content"].strip() if self._trims else msg["content"]
            text += piece[k:mm.start()]
            spans.append((len(text), len(text) + len(content), msg["role"]))
            text += content
            k = mm.end()
        text += piece[k:]
        if not spans:
            ids = self.encode(text)
            return ids, [0] * len(ids), None
        roles = {r == "assistant" for _, _, r in spans}
        if len(roles) > 1:   # user and assistant content with no special token between: one by one
            ids, mask, cut = [], [], 0
            for s, e, r in spans:
                for sub, is_content in ((text[cut:s], False), (text[s:e], True)):
                    if sub:
                        sub_ids = self.encode(sub, allow_special=is_content and r == "assistant")
                        ids += sub_ids
                        mask += assistant_mask(sub_ids, self.special_ids) if is_content and r == "assistant" else [0] * len(sub_ids)
                cut = e
            if cut < len(text):
                rest = self.encode(text[cut:])
                ids, mask = ids + rest, mask + [0] * len(rest)
            return ids, mask, spans[-1][2] == "assistant"
        assistant = roles.pop()
        enc = self.hf(text, add_special_tokens=False, split_special_tokens=not assistant,
                      return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        if not assistant:
            return ids, [0] * len(ids), False
        in_content = [any(s <= a < e for s, e, _ in spans) for a, _ in enc["offset_mapping"]]
        result = assistant_mask(ids, self.special_ids)
        return ids, [int(c and r) for c, r in zip(in_content, result)], True

    def render_chat(self, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
        """Conversation -> (ids, loss_mask), both of length T, rendered by the model's chat template.

        The mask is 1 on each assistant message's tokens and the end-of-turn token that closes it
        (`end_id`), 0 on the template's text (including a default system turn it adds), on
        system/user content, and on <tool_result>, its JSON and </tool_result>. Assistant content
        is encoded with allow_special=True (it carries markup), system/user content with
        allow_special=False. A template that trims content (Llama-3) gets trimmed content.

        Raises:
            ValueError: naming the message index, for an unknown role or a missing/non-str content.
        """
        return self._render(messages, generation_prompt=False)

    def render_prompt(self, messages: Sequence[dict]) -> list[int]:
        """Ids for generation: the rendered messages followed by the template's assistant header."""
        return self._render(messages, generation_prompt=True)[0]
