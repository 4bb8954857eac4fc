"""Data: reading text corpora, pretraining token shards, SFT examples and their batch loaders.

Every loader follows one protocol: `next_batch() -> (x, y)`, LongTensors [B, T] with y the
aligned targets (y[:, t] is the token after x[:, t], -100 = no loss), plus `state_dict()` /
`load_state_dict()` so a resumed run sees exactly the batches it would have seen.

Sampling is counter-based: which item comes next depends only on (seed, epoch, position), never
on a live RNG object, so the state is a handful of ints, identical on every DDP rank (each rank
takes every world_size-th item of the same permutation, so ranks never share an item).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]

TEXT_SUFFIXES = (".txt", ".text", ".md")
JSONL_SUFFIXES = (".jsonl",)


class DataError(ValueError):
    """Bad input data. The message names the file and (1-based) line."""


# --- reading ----------------------------------------------------------------------------------
def list_data_files(path: PathLike) -> list[Path]:
    """The .txt/.text/.md/.jsonl files at `path` (a file, or a folder searched recursively), sorted.

    Raises FileNotFoundError naming the path if it does not exist.
    """
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"no such file or folder: {p}")
    return sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES + JSONL_SUFFIXES
                  and not any(part.startswith(".") for part in f.relative_to(p).parts))


def _strings(obj) -> Iterator[str]:
    """Every string value inside a JSON object, depth first (dict values, list items)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file, streamed.

    Raises DataError naming file and line for invalid UTF-8, invalid JSON or a non-object line.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def iter_text_blocks(path: PathLike, block_chars: int = 1 << 20, any_text: bool = False
                     ) -> Iterator[tuple[str, bool]]:
    """Stream the documents of a file or folder as (text block, ends_document) pairs.

    A `.txt`/`.text`/`.md` file is one document, yielded in blocks of about `block_chars`
    characters cut after a newline (memory stays bounded for any file size). A `.jsonl` line is
    one document: its "text" field, or with `any_text=True` all its string values joined by
    newlines (for tokenizer training on GSM8K, chat or trace files).

    Raises:
        DataError: naming file and line, for invalid UTF-8, bad JSON, or a JSONL record without
            a string "text" (when any_text is False).
        FileNotFoundError: no such path.
    """
    for f in list_data_files(path):
        if f.suffix.lower() in JSONL_SUFFIXES:
            for lineno, obj in iter_jsonl(f):
                if any_text:
                    text = "\n".join(_strings(obj))
                else:
                    text = obj.get("text")
                    if not isinstance(text, str):
                        raise DataError(f"{f}:{lineno}: JSONL record has no string field 'text' "
                                        f"(keys: {sorted(obj)})")
                yield text, True
            continue
        buf: list[str] = []
        size = 0
        with open(f, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{f}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
                buf.append(line)
                size += len(line)
                if size >= block_chars:
                    yield "".join(buf), False
                    buf, size = [], 0
        yield "".join(buf), True
