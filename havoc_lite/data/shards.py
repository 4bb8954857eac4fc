"""Pretraining token shards: a folder of domain sub-folders tokenised into uint16/uint32 memmaps
plus `index.json` (resumable, streamed, optionally in a process pool)."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from ..errors import DataError
from .readers import JSONL_SUFFIXES, TEXT_SUFFIXES, PathLike, iter_text_blocks, list_data_files

log = logging.getLogger(__name__)

INDEX_FORMAT = "havoc_lite.shards/v1"


def _token_dtype(vocab_size: int):
    return np.uint16 if vocab_size < 65536 else np.uint32


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _domain_files(data_dir: Path) -> dict[str, list[Path]]:
    """{domain: files}: each sub-folder is a domain; files lying directly in data_dir go to "general"."""
    domains: dict[str, list[Path]] = {}
    for child in sorted(data_dir.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            files = list_data_files(child)
            if files:
                domains.setdefault(child.name, []).extend(files)
        elif child.suffix.lower() in TEXT_SUFFIXES + JSONL_SUFFIXES:
            domains.setdefault("general", []).append(child)
    return domains


_WORKER_TOK = None


def _worker_init(model_proto: bytes) -> None:
    global _WORKER_TOK
    from ..tokenizer import HavocTokenizer
    _WORKER_TOK = HavocTokenizer(model_proto)


def _worker_encode(text: str) -> np.ndarray:
    return np.asarray(_WORKER_TOK.encode(text), dtype=np.uint32)  # an array pickles ~10x faster than a list


class _ShardWriter:
    """Appends tokens for one domain and writes `shard_NNNNN.bin` files of `shard_tokens` tokens.

    A shard is written to a temp name and renamed, so every shard file on disk is complete.
    """

    def __init__(self, out_dir: Path, domain: str, dtype, shard_tokens: int, on_shard):
        self.dir = out_dir / domain
        self.dir.mkdir(parents=True, exist_ok=True)
        self.domain, self.dtype, self.shard_tokens, self.on_shard = domain, dtype, shard_tokens, on_shard
        self.parts: list[np.ndarray] = []
        self.buffered = 0
        self.count = 0

    def add(self, ids) -> None:
        arr = np.asarray(ids, dtype=self.dtype)
        self.parts.append(arr)
        self.buffered += len(arr)
        while self.buffered >= self.shard_tokens:
            flat = np.concatenate(self.parts)
            self._write(flat[:self.shard_tokens])
            rest = flat[self.shard_tokens:]
            self.parts, self.buffered = ([rest] if len(rest) else []), len(rest)

    def flush(self) -> None:
        if self.buffered:
            self._write(np.concatenate(self.parts))
        self.parts, self.buffered = [], 0

    def _write(self, arr: np.ndarray) -> None:
        name = f"shard_{self.count:05d}.bin"
        tmp = self.dir / (name + ".tmp")
        arr.tofile(tmp)
        os.replace(tmp, self.dir / name)
        self.count += 1
        self.on_shard(self.domain, f"{self.domain}/{name}", len(arr))


def prepare_pretraining(data_dir: PathLike, tokenizer, out_dir: PathLike, *, shard_tokens: int = 1 << 26,
                        num_workers: int | None = None, block_chars: int = 1 << 20,
                        overwrite: bool = False) -> dict:
    """Tokenise a folder of domain sub-folders into token shards plus `index.json`.

    Each sub-folder of `data_dir` is a domain (math, stats, engineering, general, code, or any
    name); files lying directly in `data_dir` count as "general". Files are `.txt`/`.md` (one
    document each) or JSONL `{"text": …}` (one document a line), read as a stream. Every document
    is followed by <|eos|>. Shards are raw little-endian arrays (`uint16` when the vocab has
    fewer than 65,536 ids, else `uint32`) of at most `shard_tokens` tokens at
    `out_dir/<domain>/shard_NNNNN.bin`, read back with `np.memmap`.

    `index.json` = {"format", "dtype", "vocab_size", "eos_id", "tokenizer_sha256", "complete",
    "sources", "domains": {name: {"tokens", "documents", "bytes", "files", "shards": [{"file",
    "tokens"}]}}, "total_tokens", "seconds", "mb_per_s"}. It is rewritten after every shard, so
    when an error stops the run the shards already written stay listed and valid
    (`"complete": false`, `"error": why`); the error is then raised. A complete index for the
    same tokenizer and the same source files (names and sizes) is returned as is, without work,
    unless `overwrite`.

    Args:
        num_workers: processes tokenising in parallel (multiprocessing pool); None = CPUs - 1 when
            there are more than 2 CPUs and the corpus is over 32 MB, else 0 (in-process).
        block_chars: characters per unit of work (bounds memory: ~ 8 * num_workers blocks).

    Returns:
        the index dict.

    Raises:
        DataError: naming file and line for a malformed JSONL line, a record without "text", a
            non-UTF-8 file; or an empty corpus.
        FileNotFoundError: data_dir does not exist.
    """
    import hashlib
    import multiprocessing as mp

    from tqdm.auto import tqdm

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"prepare_pretraining: no such folder {data_dir}")
    domains = _domain_files(data_dir)
    if not domains:
        raise DataError(f"prepare_pretraining: {data_dir} holds no .txt/.md/.jsonl file")
    sources = {str(f.relative_to(data_dir)): f.stat().st_size for fs in domains.values() for f in fs}
    total_bytes = sum(sources.values())
    tok_sha = hashlib.sha256(tokenizer._model_proto).hexdigest()
    index_path = out_dir / "index.json"
    if index_path.exists() and not overwrite:
        try:
            old = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = {}
        if old.get("complete") and old.get("tokenizer_sha256") == tok_sha and old.get("sources") == sources:
            log.info("prepare_pretraining: %s is up to date (%d tokens)", out_dir, old["total_tokens"])
            return old
    out_dir.mkdir(parents=True, exist_ok=True)
    for old_shard in out_dir.glob("*/shard_*.bin"):  # a stale shard must never be read as new data
        old_shard.unlink()

    dtype = _token_dtype(tokenizer.vocab_size)
    index = {"format": INDEX_FORMAT, "dtype": np.dtype(dtype).name, "vocab_size": tokenizer.vocab_size,
             "eos_id": tokenizer.eos_id, "tokenizer_sha256": tok_sha, "complete": False,
             "sources": sources,
             "domains": {d: {"tokens": 0, "documents": 0, "bytes": 0, "files": len(fs), "shards": []}
                         for d, fs in domains.items()},
             "total_tokens": 0}

    def on_shard(domain: str, file: str, n: int) -> None:
        index["domains"][domain]["shards"].append({"file": file, "tokens": n})
        index["domains"][domain]["tokens"] += n
        index["total_tokens"] += n
        _write_json_atomic(index_path, index)

    if num_workers is None:  # the main process reads and writes, so a pool needs spare cores to help
        cpus = os.cpu_count() or 1
        num_workers = cpus - 1 if cpus > 2 and total_bytes > 32 * 2**20 else 0
    # fork where the OS has it: workers only run sentencepiece, and spawn would re-run a user's
    # script that lacks an `if __name__ == "__main__":` guard.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ctx.Pool(num_workers, _worker_init, (tokenizer._model_proto,)) if num_workers else None
    encode = (lambda texts: pool.map(_worker_encode, texts)) if pool else (lambda texts: [tokenizer.encode(t) for t in texts])
    window = max(1, 8 * num_workers)
    t0 = time.perf_counter()
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenising")
    writer = None
    done_bytes = 0
    try:
        for domain, files in domains.items():
            stats = index["domains"][domain]
            writer = _ShardWriter(out_dir, domain, dtype, shard_tokens, on_shard)
            pending: list[tuple[str, bool]] = []

            doc_tokens = 0  # tokens of the current document so far: an empty one gets no <|eos|>

            def drain() -> None:
                nonlocal doc_tokens
                for (text, ends), ids in zip(pending, encode([t for t, _ in pending])):
                    doc_tokens += len(ids)
                    if ends and doc_tokens:
                        ids = np.append(np.asarray(ids, dtype=np.int64), tokenizer.eos_id)
                        stats["documents"] += 1
                    if ends:
                        doc_tokens = 0
                    writer.add(ids)
                    stats["bytes"] += len(text.encode("utf-8"))
                pending.clear()

            for f in files:
                for item in iter_text_blocks(f, block_chars=block_chars):
                    pending.append(item)
                    if len(pending) >= window:
                        drain()
                drain()
                done_bytes += sources[str(f.relative_to(data_dir))]
                bar.n = done_bytes  # JSONL syntax is not text: keep the bar on file bytes
                bar.refresh()
            writer.flush()
            writer = None
        if index["total_tokens"] == 0:
            raise DataError(f"prepare_pretraining: the corpus in {data_dir} is empty (0 tokens)")
    except BaseException as e:
        if writer is not None:
            writer.flush()  # tokens of whole blocks read before the bad line are kept
        index["error"] = str(e)
        _write_json_atomic(index_path, index)
        raise
    finally:
        bar.close()
        if pool:
            pool.terminate()
    seconds = time.perf_counter() - t0
    index.update(complete=True, seconds=round(seconds, 3),
                 mb_per_s=round(total_bytes / 1e6 / max(seconds, 1e-9), 3))
    _write_json_atomic(index_path, index)
    log.info("prepare_pretraining: %d tokens from %.1f MB in %.1f s (%.2f MB/s)", index["total_tokens"],
             total_bytes / 1e6, seconds, index["mb_per_s"])
    return index
