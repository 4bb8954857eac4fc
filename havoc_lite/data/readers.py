"""Reading data files: the ONE JSONL reader of the kit (data loaders, eval and synth use it), text
files streamed in blocks, and folders of both. Every error names the file and (1-based) line.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Union

from ..errors import DataError

PathLike = Union[str, os.PathLike]

TEXT_SUFFIXES = (".txt", ".text", ".md")
JSONL_SUFFIXES = (".jsonl",)




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


def iter_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file, streamed; DataError names file and line of
    invalid UTF-8."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})") from None


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file, streamed.

    Raises DataError naming file and line for invalid UTF-8, invalid JSON or a non-object line.
    """
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg}, column {e.colno})") from None
        except RecursionError:
            raise DataError(f"{path}:{lineno}: JSON nested too deeply to read") from None
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
        for _, line in iter_lines(f):
            buf.append(line)
            size += len(line)
            if size >= block_chars:
                yield "".join(buf), False
                buf, size = [], 0
        yield "".join(buf), True



def read_jsonl(path: PathLike) -> list[dict]:
    """Every object of a JSONL file, in order (blank lines skipped).

    Raises:
        FileNotFoundError: no such file.
        DataError: naming file and line, for invalid UTF-8, invalid JSON or a non-object line.
    """
    return [obj for _, obj in iter_jsonl(path)]
