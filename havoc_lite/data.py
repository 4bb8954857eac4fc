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
import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import torch

from .errors import DataError  # bad input data; the message names the file and (1-based) line

log = logging.getLogger(__name__)

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


# --- pretraining shards -----------------------------------------------------------------------
DEFAULT_DOMAIN_WEIGHTS = {"math": 0.25, "stats": 0.20, "engineering": 0.15, "general": 0.30, "code": 0.10}
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
    from .tokenizer import HavocTokenizer
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


class _EpochStream:
    """Items 0..n-1 in a fresh seeded permutation each epoch; rank r of W takes positions r, r+W, …

    Every rank walks the same permutation in lockstep (an epoch ends for all ranks after
    n // W rounds), so ranks never see the same item within an epoch and the state (epoch,
    cursor) is the same on all ranks. `size_fn(epoch)` gives n for that epoch.
    """

    def __init__(self, size_fn, seed: int, tag: int, rank: int, world_size: int):
        self.size_fn, self.seed, self.tag, self.rank, self.world_size = size_fn, seed, tag, rank, world_size
        self.epoch, self.cursor = 0, 0
        self._cache: tuple[int, np.ndarray] | None = None

    def _perm(self) -> np.ndarray:
        if self._cache is None or self._cache[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.tag, self.epoch])
            self._cache = (self.epoch, rng.permutation(self.size_fn(self.epoch)))
        return self._cache[1]

    def next(self) -> int:
        while True:
            perm = self._perm()
            rounds = len(perm) // self.world_size
            if self.cursor < rounds:
                item = int(perm[self.cursor * self.world_size + self.rank])
                self.cursor += 1
                return item
            if rounds == 0:
                raise DataError(f"{len(perm)} items cannot be split across {self.world_size} ranks")
            self.epoch, self.cursor = self.epoch + 1, 0

    def state(self) -> list[int]:
        return [self.epoch, self.cursor]

    def load(self, state) -> None:
        self.epoch, self.cursor = int(state[0]), int(state[1])


def _resolve_weights(available: dict[str, int], weights: dict[str, float] | None, what: str) -> dict[str, float]:
    """Normalised weights over the available names (name -> size). Missing names are dropped and
    the rest renormalised, with a warning. Without weights: DEFAULT_DOMAIN_WEIGHTS if any of its
    domains is present, else proportional to size."""
    if weights is None:
        if any(d in available for d in DEFAULT_DOMAIN_WEIGHTS):
            weights = DEFAULT_DOMAIN_WEIGHTS
            extra = [d for d in available if d not in weights]
            if extra:
                warnings.warn(f"{what}: domains {extra} have no default weight and are not sampled; "
                              "pass domain_weights to include them")
        else:
            weights = {d: float(n) for d, n in available.items()}
    bad = {d: w for d, w in weights.items() if not (isinstance(w, (int, float)) and w >= 0)}
    if bad:
        raise ValueError(f"{what}: weights must be non-negative numbers, got {bad}")
    missing = [d for d, w in weights.items() if w > 0 and d not in available]
    kept = {d: float(w) for d, w in weights.items() if w > 0 and d in available}
    if not kept:
        raise DataError(f"{what}: none of the weighted domains {sorted(weights)} has data "
                        f"(available: {sorted(available)})")
    if missing:
        warnings.warn(f"{what}: no data for {missing}; renormalising the weights over {sorted(kept)}")
    total = sum(kept.values())
    return {d: w / total for d, w in kept.items()}


class PretrainLoader:
    """Batches of `seq_len + 1`-token windows sampled from prepared shards with domain weights.

    Each domain's shards are cut into non-overlapping windows on a grid whose offset (0…seq_len)
    is redrawn every epoch, so repeated epochs see shifted windows. Each row first draws a domain
    (probabilities = the normalised `domain_weights`, default DEFAULT_DOMAIN_WEIGHTS; missing
    domains are dropped and the rest renormalised with a warning), then takes that domain's next
    window in a seeded per-epoch permutation, strided across DDP ranks (disjoint).

    `next_batch() -> (x, y)`: LongTensors [batch_size, seq_len]; y[:, t] is the token after
    x[:, t] in the text (no -100 in pretraining; documents are separated by <|eos|>). `state_dict()` holds only ints and is identical on all
    ranks; `load_state_dict` resumes the exact stream.

    Raises:
        FileNotFoundError: no index.json in shard_dir.
        DataError: no domain with a full window, or fewer windows than ranks.
    """

    def __init__(self, shard_dir: PathLike, seq_len: int, batch_size: int,
                 domain_weights: dict[str, float] | None = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"PretrainLoader: seq_len and batch_size must be >= 1, got {seq_len}, {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"PretrainLoader: rank {rank} is outside world_size {world_size}")
        self.shard_dir = Path(shard_dir)
        index_path = self.shard_dir / "index.json"
        if not index_path.is_file():
            raise FileNotFoundError(f"PretrainLoader: no index.json in {self.shard_dir} (run prepare_pretraining)")
        self.index = json.loads(index_path.read_text(encoding="utf-8"))
        if not self.index.get("complete"):
            warnings.warn(f"PretrainLoader: {index_path} is incomplete ({self.index.get('error', 'interrupted')});"
                          " using the shards written so far")
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.rank, self.world_size = rank, world_size
        dtype = np.dtype(self.index["dtype"])
        span = seq_len + 1
        self.shards: dict[str, list[np.ndarray]] = {}
        for d, info in self.index["domains"].items():
            maps = [np.memmap(self.shard_dir / s["file"], dtype=dtype, mode="r", shape=(s["tokens"],))
                    for s in info["shards"] if s["tokens"] >= 2 * span]  # >= 1 window at any offset
            if maps:
                self.shards[d] = maps
        short = [d for d in self.index["domains"] if d not in self.shards]
        if short:
            warnings.warn(f"PretrainLoader: domains {short} have no shard of {2 * span} tokens; skipped")
        sizes = {d: sum(len(m) for m in ms) for d, ms in self.shards.items()}
        self.weights = _resolve_weights(sizes, domain_weights, "PretrainLoader")
        self.domains = sorted(self.weights)
        self._p = np.array([self.weights[d] for d in self.domains])
        self._cum: dict = {}
        self.streams = {d: _EpochStream(lambda e, d=d: self._n_windows(d, e)[-1], seed, i, rank, world_size)
                        for i, d in enumerate(self.domains)}
        self.batch_idx = 0
        for d in self.domains:
            if self._n_windows(d, 0)[-1] < world_size:
                raise DataError(f"PretrainLoader: domain {d!r} has fewer windows than the {world_size} ranks")

    def _offset(self, d: str, epoch: int) -> int:
        if epoch == 0:
            return 0
        return int(np.random.default_rng([self.seed, self.domains.index(d), epoch, 1]).integers(0, self.seq_len + 1))

    def _n_windows(self, d: str, epoch: int) -> np.ndarray:
        """Cumulative window counts over the domain's shards for this epoch's grid offset."""
        key = (d, epoch)
        if key not in self._cum:
            off, span = self._offset(d, epoch), self.seq_len + 1
            self._cum[key] = np.cumsum([(len(m) - off) // span for m in self.shards[d]])
            if len(self._cum) > 4 * len(self.shards):
                self._cum.pop(next(iter(self._cum)))
        return self._cum[key]

    def _window(self, d: str, epoch: int, item: int) -> np.ndarray:
        cum = self._n_windows(d, epoch)
        s = int(np.searchsorted(cum, item, side="right"))
        local = item - (int(cum[s - 1]) if s else 0)
        start = self._offset(d, epoch) + local * (self.seq_len + 1)
        return np.asarray(self.shards[d][s][start:start + self.seq_len + 1], dtype=np.int64)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) LongTensors [batch_size, seq_len] on the CPU."""
        rng = np.random.default_rng([self.seed, 1 << 20, self.batch_idx])
        picks = rng.choice(len(self.domains), size=self.batch_size, p=self._p)
        rows = []
        for k in picks:
            d = self.domains[k]
            stream = self.streams[d]
            item = stream.next()
            rows.append(self._window(d, stream.epoch, item))
        self.batch_idx += 1
        batch = torch.from_numpy(np.stack(rows))
        return batch[:, :-1].contiguous(), batch[:, 1:].contiguous()

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        """Plain ints and strings: the position of the stream (same on every rank)."""
        return {"kind": "pretrain", "seed": self.seed, "seq_len": self.seq_len, "batch_size": self.batch_size,
                "world_size": self.world_size, "domains": list(self.domains), "batch_idx": self.batch_idx,
                "streams": {d: s.state() for d, s in self.streams.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()`. Raises ValueError naming a field that does not match."""
        _check_state(state, {"kind": "pretrain", "seed": self.seed, "seq_len": self.seq_len,
                             "batch_size": self.batch_size, "domains": list(self.domains)}, "PretrainLoader")
        self._load_common(state)

    def _load_common(self, state: dict) -> None:
        if state.get("world_size") != self.world_size:
            warnings.warn(f"{type(self).__name__}: resuming with world_size {self.world_size} from a state saved "
                          f"with {state.get('world_size')}; the stream continues but is not the same sequence")
        self.batch_idx = int(state["batch_idx"])
        for name, s in state["streams"].items():
            self.streams[name].load(s)


def _check_state(state: dict, expected: dict, who: str) -> None:
    for k, v in expected.items():
        if state.get(k) != v:
            raise ValueError(f"{who}.load_state_dict: saved {k}={state.get(k)!r} but this loader has {v!r}")


# --- SFT examples -----------------------------------------------------------------------------
# A conversation ("messages") is a list of {"role": "system"|"user"|"assistant", "content": str};
# every SFT source is turned into messages and rendered by HavocTokenizer.render_chat.
_GSM8K_CALL = re.compile(r"<<([^<>=]*)=([^<>]*)>>")


def _tool_result_json(value, where: str) -> str:
    """The JSON between <tool_result> tags: a ToolResult-shaped dict as is, any other value as a
    success result (ToolResult.to_json, so the text matches what the engine writes)."""
    from .tools import ToolResult
    if isinstance(value, dict) and value.get("status") in ("success", "error"):
        if value["status"] == "success":
            return ToolResult("success", result=value.get("result")).to_json()
        return ToolResult("error", error=str(value.get("error", ""))).to_json()
    if isinstance(value, dict) and "status" in value:
        raise DataError(f"{where}: tool_result status must be 'success' or 'error', got {value['status']!r}")
    return ToolResult("success", result=value).to_json()


def render_trace(trace: dict, where: str = "trace") -> str:
    """The assistant turn of a tool trace (the ONE renderer PRIME, synth and eval rely on).

    For each reasoning step: `<reason>{content}</reason>` (or `<advocate>`, `<attack>`,
    `<pragmatist>`, `<verify>` when the step has that `role`: PRIME's sections), then if it has a `tool_call`
    `<tool>{format_call(name, args)}</tool><tool_result>{json}</tool_result>` using the step's
    own `tool_result`, else (for the last call only) the trace's top-level `tool_result`. Ends
    with `<answer>{answer}</answer>`.

    Raises:
        DataError: naming `where` and the step, for a missing field or a call without a result.
    """
    from .tools import format_call
    if not isinstance(trace, dict):
        raise DataError(f"{where}: a tool trace must be a JSON object")
    steps = trace.get("reasoning")
    if not isinstance(steps, list):
        raise DataError(f"{where}: tool trace needs a list 'reasoning'")
    if "answer" not in trace or trace["answer"] is None:
        raise DataError(f"{where}: tool trace has no 'answer'")
    calls = [i for i, st in enumerate(steps) if isinstance(st, dict) and st.get("tool_call") is not None]
    parts = []
    for i, st in enumerate(steps):
        if not isinstance(st, dict) or not isinstance(st.get("content"), str):
            raise DataError(f"{where}: reasoning step {i} needs a string 'content'")
        tag = st.get("role") or "reason"
        if tag not in ("reason", "advocate", "attack", "pragmatist", "verify"):
            raise DataError(f"{where}: reasoning step {i} has role {tag!r}; one of advocate, attack, "
                            "pragmatist, verify (or none for <reason>)")
        parts.append(f"<{tag}>{st['content']}</{tag}>")
        call = st.get("tool_call")
        if call is None:
            continue
        if not (isinstance(call, dict) and isinstance(call.get("name"), str) and isinstance(call.get("args", {}), dict)):
            raise DataError(f"{where}: reasoning step {i} tool_call needs a string 'name' and a dict 'args'")
        if "tool_result" in st:
            result = st["tool_result"]
        elif i == calls[-1] and "tool_result" in trace:
            result = trace["tool_result"]
        else:
            raise DataError(f"{where}: reasoning step {i} calls {call['name']!r} but has no tool_result")
        parts.append(f"<tool>{format_call(call['name'], call.get('args', {}))}</tool>"
                     f"<tool_result>{_tool_result_json(result, f'{where} step {i}')}</tool_result>")
    parts.append(f"<answer>{trace['answer']}</answer>")
    return "".join(parts)


def trace_to_messages(trace: dict, system: str | None = None, where: str = "trace") -> list[dict]:
    """A tool trace -> [system?, user(question), assistant(render_trace)]. Raises DataError."""
    if not isinstance(trace, dict) or not isinstance(trace.get("question"), str):
        raise DataError(f"{where}: tool trace needs a string 'question'")
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": trace["question"]},
                   {"role": "assistant", "content": render_trace(trace, where)}]


def _annotated_number(text: str):
    """'24' -> 24, '0.2' -> 0.2, '1,000' -> 1000; calculator formatting (int when integral,
    else 10 significant digits); None if not a number."""
    from .tools.calculator import format_number
    text = text.strip().replace(",", "")
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    try:
        return format_number(value)
    except ValueError:  # ToolError on inf / nan
        return None


def gsm8k_to_trace(example: dict, where: str = "gsm8k") -> dict:
    """GSM8K {"question", "answer"} -> tool trace.

    Each `<<48/2=24>>` annotation becomes a calculator call `{"expression": "48/2"}` whose
    tool_result is `{"status": "success", "result": 24}` (the annotated value, int when
    integral); the text before it is that step's reasoning, the text after the last one a final
    step, and `#### 72` the answer "72". An annotation whose value is not a number is dropped
    (GSM8K repeats the value right after it).

    Raises:
        DataError: naming `where`, for a missing question/answer or no `####` line.
    """
    q, a = example.get("question"), example.get("answer")
    if not isinstance(q, str) or not isinstance(a, str):
        raise DataError(f"{where}: GSM8K record needs string 'question' and 'answer'")
    solution, sep, final = a.rpartition("####")
    if not sep:
        raise DataError(f"{where}: GSM8K answer has no '#### <answer>' line")
    steps, text, pos = [], "", 0
    for m in _GSM8K_CALL.finditer(solution):
        text += solution[pos:m.start()]
        pos = m.end()
        expr, value = m.group(1).strip(), _annotated_number(m.group(2))
        if not expr or value is None:
            continue
        result = {"status": "success", "result": value}
        steps.append({"step": len(steps) + 1, "content": text.strip(),
                      "tool_call": {"name": "calculator", "args": {"expression": expr}}, "tool_result": result})
        text = ""
    text += solution[pos:]
    if text.strip():
        steps.append({"step": len(steps) + 1, "content": text.strip()})
    calls = [s for s in steps if "tool_call" in s]
    trace = {"question": q, "reasoning": steps, "answer": final.strip()}
    if calls:
        trace["tool_result"] = calls[-1]["tool_result"]
    return trace


SFT_KINDS = ("prompt_completion", "chat", "trace", "gsm8k", "text")


def detect_kind(record: dict) -> str | None:
    """Which DESIGN.md JSONL kind a record is, from its fields; None if none fits."""
    if "messages" in record:
        return "chat"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    if "reasoning" in record and "question" in record:
        return "trace"
    if "question" in record and "answer" in record:
        return "gsm8k"
    if "text" in record:
        return "text"
    return None


def record_to_messages(record: dict, kind: str = "auto", where: str = "record") -> list[dict]:
    """One JSONL record of any SFT kind -> messages.

    prompt/completion -> user + assistant; chat -> its messages (roles and content checked);
    tool trace -> `trace_to_messages`; GSM8K -> `gsm8k_to_trace` then `trace_to_messages`;
    plain text -> one assistant message (loss on all of it).

    Raises:
        DataError: naming `where`, for an unknown kind or a missing / mistyped field.
    """
    if kind == "auto":
        kind = detect_kind(record)
        if kind is None:
            raise DataError(f"{where}: cannot tell the record kind from its fields {sorted(record)}; expected "
                            "messages | prompt+completion | question+reasoning | question+answer | text")
    if kind == "prompt_completion":
        p, c = record.get("prompt"), record.get("completion")
        if not isinstance(p, str) or not isinstance(c, str):
            raise DataError(f"{where}: prompt/completion record needs string 'prompt' and 'completion'")
        msgs = [{"role": "user", "content": p}, {"role": "assistant", "content": c}]
        if isinstance(record.get("system"), str):
            msgs.insert(0, {"role": "system", "content": record["system"]})
        return msgs
    if kind == "chat":
        msgs = record.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f"{where}: chat record needs a non-empty list 'messages'")
        out = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                    or not isinstance(m.get("content"), str):
                raise DataError(f"{where}: message {i} needs role system|user|assistant and string content")
            out.append({"role": m["role"], "content": m["content"]})
        return out
    if kind == "trace":
        return trace_to_messages(record, where=where)
    if kind == "gsm8k":
        return trace_to_messages(gsm8k_to_trace(record, where), where=where)
    if kind == "text":
        if not isinstance(record.get("text"), str):
            raise DataError(f"{where}: text record needs a string 'text'")
        return [{"role": "assistant", "content": record["text"]}]
    raise DataError(f"{where}: unknown kind {kind!r}; expected 'auto' or one of {SFT_KINDS}")


def load_jsonl_examples(path: PathLike, kind: str = "auto") -> list[list[dict]]:
    """Every record of a JSONL file (or folder of them) as messages (see `record_to_messages`).

    Raises DataError naming file and line for bad JSON, bad UTF-8, or a bad record; an empty
    file is a DataError too.
    """
    examples = []
    for f in list_data_files(path):
        for lineno, obj in iter_jsonl(f):
            examples.append(record_to_messages(obj, kind, where=f"{f}:{lineno}"))
    if not examples:
        raise DataError(f"load_jsonl_examples: no record in {path}")
    return examples


# --- Hugging Face Hub SFT sets ----------------------------------------------------------------
# name -> (hub id, config, default split). Column names are those of the published data sets.
HUB_DATASETS = {
    "openmathinstruct2": ("nvidia/OpenMathInstruct-2", None, "train"),
    "slimorca": ("Open-Orca/SlimOrca", None, "train"),
    "cot_collection": ("kaist-ai/CoT-Collection", None, "train"),
    "gsm8k": ("openai/gsm8k", "main", "train"),
}
_SLIMORCA_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}


def _hub_name(name: str) -> str:
    key = name.lower().split("/")[-1].replace("-", "").replace("_", "")
    for k in HUB_DATASETS:
        if k.replace("_", "") == key:
            return k
    raise ValueError(f"unknown hub SFT data set {name!r}; known: {sorted(HUB_DATASETS)} "
                     f"({', '.join(v[0] for v in HUB_DATASETS.values())})")


def hub_record_to_messages(name: str, record: dict, where: str = "record") -> list[dict]:
    """Map one row of a hub data set onto messages.

    - OpenMathInstruct-2 (problem, generated_solution, expected_answer): user problem; assistant
      `<reason>solution</reason><answer>expected_answer</answer>`.
    - SlimOrca (conversations: [{from: system|human|gpt, value}]): the conversation.
    - CoT-Collection (source, rationale, target): user source; assistant
      `<reason>rationale</reason><answer>target</answer>`.
    - GSM8K (question, answer): `gsm8k_to_trace` -> `trace_to_messages`.

    Raises DataError naming `where` and the missing column.
    """
    name = _hub_name(name)

    def col(key):
        value = record.get(key)
        if not isinstance(value, str):
            raise DataError(f"{where}: {name} row needs a string column {key!r} (columns: {sorted(record)})")
        return value

    if name == "openmathinstruct2":
        return [{"role": "user", "content": col("problem")},
                {"role": "assistant", "content": f"<reason>{col('generated_solution')}</reason>"
                                                 f"<answer>{col('expected_answer')}</answer>"}]
    if name == "cot_collection":
        return [{"role": "user", "content": col("source")},
                {"role": "assistant", "content": f"<reason>{col('rationale')}</reason><answer>{col('target')}</answer>"}]
    if name == "slimorca":
        conv = record.get("conversations")
        if not isinstance(conv, list) or not conv:
            raise DataError(f"{where}: slimorca row needs a list column 'conversations'")
        msgs = []
        for i, turn in enumerate(conv):
            role = _SLIMORCA_ROLES.get(turn.get("from")) if isinstance(turn, dict) else None
            if role is None or not isinstance(turn.get("value"), str):
                raise DataError(f"{where}: slimorca turn {i} needs from system|human|gpt and a string value")
            msgs.append({"role": role, "content": turn["value"]})
        return msgs
    return record_to_messages(record, "gsm8k", where)


def load_hub_sft(name: str, split: str | None = None, *, limit: int | None = None,
                 data_files=None, **load_kwargs) -> list[list[dict]]:
    """Load a hub SFT data set by name through `datasets` and map it onto messages.

    `name`: "openmathinstruct2" | "slimorca" | "cot_collection" | "gsm8k" (or the hub id).
    `data_files`: read local JSON/JSONL with the same columns instead of the hub (tests, offline).
    `limit`: keep the first rows only (streams, so a 14M-row set is not downloaded whole).

    Raises ValueError for an unknown name, DataError (naming the row) for a bad row.
    """
    import datasets
    key = _hub_name(name)
    hub_id, config, default_split = HUB_DATASETS[key]
    if data_files is not None:
        ds = datasets.load_dataset("json", data_files=data_files, split="train", **load_kwargs)
        source = str(data_files)
    else:
        load_kwargs.setdefault("streaming", limit is not None)
        ds = datasets.load_dataset(hub_id, config, split=split or default_split, **load_kwargs)
        source = hub_id
    out = []
    for i, row in enumerate(ds):
        if limit is not None and i >= limit:
            break
        out.append(hub_record_to_messages(key, row, where=f"{source} row {i}"))
    return out


# --- SFT mixture and loader -------------------------------------------------------------------
# Svend's mixture table: share of SFT examples drawn from each kind of source.
SFT_MIXTURES = {
    "base": {"reasoning": 0.60, "code": 0.20, "general": 0.20},
    "tools": {"reasoning": 0.30, "tool_use": 0.50, "code": 0.15, "general": 0.05},
}


class SFTMixture:
    """Weighted SFT sources: `SFTMixture({name: (examples, weight)}, seed=0)`.

    `examples` is a list of messages; weights are relative (normalised here). A source with no
    examples is dropped and the weights renormalised, with a warning. Use
    `SFTMixture.from_preset("tools", {"reasoning": ex, "tool_use": ex2, ...})` for the table in
    `SFT_MIXTURES`.

    Raises:
        ValueError: no source with examples, or a negative / non-numeric weight.
    """

    def __init__(self, sources: dict[str, tuple[list, float]], seed: int = 0):
        if not sources:
            raise ValueError("SFTMixture: no sources")
        for name, pair in sources.items():
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise ValueError(f"SFTMixture: source {name!r} must be (examples, weight)")
        sizes = {n: len(ex) for n, (ex, _) in sources.items() if len(ex)}
        self.weights = _resolve_weights(sizes, {n: w for n, (_, w) in sources.items()}, "SFTMixture")
        self.names = sorted(self.weights)
        self.sources = {n: sources[n][0] for n in self.names}
        self.seed = seed

    @classmethod
    def from_preset(cls, preset: str, examples: dict[str, list], seed: int = 0) -> "SFTMixture":
        """Weights from `SFT_MIXTURES[preset]`; `examples` maps the same source names to lists."""
        if preset not in SFT_MIXTURES:
            raise ValueError(f"SFTMixture: unknown preset {preset!r}; known: {sorted(SFT_MIXTURES)}")
        weights = SFT_MIXTURES[preset]
        extra = sorted(set(examples) - set(weights))
        if extra:
            raise ValueError(f"SFTMixture preset {preset!r} has no weight for sources {extra}; "
                             f"its sources are {sorted(weights)}")
        return cls({n: (examples.get(n, []), w) for n, w in weights.items()}, seed)

    def __len__(self) -> int:
        return sum(len(v) for v in self.sources.values())


def clip_messages(messages: list[dict], max_chars: int) -> tuple[list[dict], bool]:
    """(messages, clipped): the conversation cut to its first `max_chars` characters of content
    (later messages dropped, the one crossing the limit cut), so rendering a 50 MB record costs as
    much as rendering `max_chars` characters. `messages` itself is not changed.

    Why the tokens the loader keeps do not change: SFTLoader keeps seq_len + 1 tokens and clips at
    64 characters per kept token, while a token covers at most the longest piece of the vocab
    (16 characters in sentencepiece's default) and words are tokenised separately, so the cut lies
    far beyond the last kept token. Only a single "word" longer than that (no whitespace for
    thousands of characters) may tokenise differently near its start; it is cut either way.
    """
    total, out = 0, []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, str):
            out.append(m)            # render_chat reports it, naming the message
            continue
        if total + len(content) > max_chars:
            out.append({**m, "content": content[:max(max_chars - total, 0)]})
            return out, True
        total += len(content)
        out.append(m)
    return out, False


CHARS_PER_TOKEN_BOUND = 64     # see clip_messages
DROP_CHECK_SAMPLE = 2000       # examples per source measured at start for the dropped share


class SFTLoader:
    """Batches of rendered conversations: one example per row, right-padded, loss on assistant tokens.

    Each row draws a source (mixture weights; a plain list is one source), then the source's next
    example in a seeded per-epoch permutation strided across DDP ranks (disjoint). The example is
    clipped (`clip_messages`) and rendered with `tokenizer.render_chat`; one longer than
    `seq_len + 1` tokens is cut to `seq_len + 1` and counted (`num_truncated`); one left with no
    assistant token after the cut (its prompt fills the window) is DROPPED and counted
    (`num_skipped`). Rows never share an example, so there is no attention or loss across examples.

    Dropped share: at construction up to DROP_CHECK_SAMPLE examples of each source (all of a small
    source, else a seeded sample) are rendered once; how many would be cut and dropped is logged,
    and more than `max_drop_fraction` dropped is an error, so a run does not silently train on
    the few short examples that fit.

    `next_batch() -> (x, y)`: LongTensors [batch_size, T], T = seq_len if `pad_to_seq_len`
    else the longest row of the batch. x is padded with <|pad|>; y[:, t] is x's next token where
    that token has loss mask 1, else -100 (prompt, tool results, padding).
    `padding_efficiency` = real tokens / (rows * T) over all batches so far.

    Raises:
        DataError: fewer examples in a source than ranks; more than `max_drop_fraction` of a
            source's examples dropped for length (the message says how many, why, and what to
            change). ValueError for bad sizes.
    """

    def __init__(self, examples, tokenizer, seq_len: int, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, pad_to_seq_len: bool = False, max_drop_fraction: float = 0.2):
        if seq_len < 2 or batch_size < 1:
            raise ValueError(f"SFTLoader: need seq_len >= 2 and batch_size >= 1, got {seq_len}, {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"SFTLoader: rank {rank} is outside world_size {world_size}")
        if not 0 <= max_drop_fraction <= 1:
            raise ValueError(f"SFTLoader: max_drop_fraction must be in [0, 1], got {max_drop_fraction}")
        self.mixture = examples if isinstance(examples, SFTMixture) else SFTMixture({"sft": (list(examples), 1.0)})
        self.tokenizer, self.seq_len, self.batch_size, self.seed = tokenizer, seq_len, batch_size, seed
        self.rank, self.world_size, self.pad_to_seq_len = rank, world_size, pad_to_seq_len
        self.max_drop_fraction = max_drop_fraction
        self.names = self.mixture.names
        self._p = np.array([self.mixture.weights[n] for n in self.names])
        self.streams = {n: _EpochStream(lambda e, k=len(self.mixture.sources[n]): k, seed, i, rank, world_size)
                        for i, n in enumerate(self.names)}
        for n in self.names:
            if len(self.mixture.sources[n]) < world_size:
                raise DataError(f"SFTLoader: source {n!r} has {len(self.mixture.sources[n])} examples, "
                                f"fewer than the {world_size} ranks")
        self.batch_idx = 0
        self.num_examples = self.num_truncated = self.num_skipped = 0
        self.real_tokens = self.total_slots = 0
        self.length_report = {n: self._check_lengths(n) for n in self.names}

    def _render(self, messages: list[dict]) -> tuple[list[int], list[int], bool]:
        """(ids, mask, cut) of one example, at most seq_len + 1 tokens; `cut` when it was longer."""
        clipped, was_clipped = clip_messages(messages, CHARS_PER_TOKEN_BOUND * (self.seq_len + 1))
        ids, mask = self.tokenizer.render_chat(clipped)
        cut = was_clipped or len(ids) > self.seq_len + 1
        return ids[:self.seq_len + 1], mask[:self.seq_len + 1], cut

    def _check_lengths(self, source: str) -> dict:
        """Render a sample of `source` once: how many examples are cut and dropped (logged);
        DataError when the dropped share is above max_drop_fraction."""
        examples = self.mixture.sources[source]
        n = len(examples)
        idx = (range(n) if n <= DROP_CHECK_SAMPLE else
               np.random.default_rng([self.seed, 1 << 22]).choice(n, DROP_CHECK_SAMPLE, replace=False))
        cut = dropped = 0
        for i in idx:
            _, mask, was_cut = self._render(examples[int(i)])
            cut += was_cut
            dropped += not any(mask[1:])
        checked = len(idx)
        report = {"checked": checked, "truncated": cut, "dropped": dropped}
        where = f"SFTLoader: source {source!r}" + (f" (a sample of {checked} of {n})" if checked < n else "")
        if cut:
            log.warning("%s: %d of %d examples are longer than seq_len+1=%d tokens (%d truncated there, "
                        "their tail gets no loss; %d dropped, their prompt fills the window before any "
                        "assistant token)", where, cut, checked, self.seq_len + 1, cut - dropped, dropped)
        if dropped > self.max_drop_fraction * checked:
            raise DataError(f"{where}: {dropped} of {checked} examples ({dropped / checked:.0%}) would be "
                            f"dropped because their prompt alone fills seq_len={self.seq_len} tokens, more "
                            f"than max_drop_fraction={self.max_drop_fraction:g}; raise seq_len, shorten "
                            "the prompts, or raise max_drop_fraction")
        return report

    def _row(self, source: str) -> tuple[list[int], list[int]]:
        stream = self.streams[source]
        for _ in range(1000):
            ids, mask, cut = self._render(self.mixture.sources[source][stream.next()])
            self.num_examples += 1
            self.num_truncated += cut
            if any(mask[1:]):
                return ids, mask
            self.num_skipped += 1
            if self.num_skipped in (1, 10) or self.num_skipped % 100 == 0:
                log.warning("SFTLoader: %d of %d examples drawn so far were dropped: no assistant token "
                            "within seq_len+1=%d tokens", self.num_skipped, self.num_examples, self.seq_len + 1)
        raise DataError(f"SFTLoader: 1000 examples in a row from {source!r} have no assistant token "
                        f"within seq_len={self.seq_len}")

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) LongTensors [batch_size, T] on the CPU (see class docstring)."""
        rng = np.random.default_rng([self.seed, 1 << 21, self.batch_idx])
        picks = rng.choice(len(self.names), size=self.batch_size, p=self._p)
        rows = [self._row(self.names[k]) for k in picks]
        self.batch_idx += 1
        T = self.seq_len if self.pad_to_seq_len else max(len(ids) - 1 for ids, _ in rows)
        x = torch.full((self.batch_size, T), self.tokenizer.pad_id, dtype=torch.long)
        y = torch.full((self.batch_size, T), -100, dtype=torch.long)
        for b, (ids, mask) in enumerate(rows):
            n = len(ids) - 1
            t = torch.tensor(ids, dtype=torch.long)
            x[b, :n] = t[:-1]
            y[b, :n] = torch.where(torch.tensor(mask[1:], dtype=torch.bool), t[1:], -100)
            self.real_tokens += n
        self.total_slots += self.batch_size * T
        return x, y

    @property
    def padding_efficiency(self) -> float:
        """Fraction of the batch slots holding real (non-pad) tokens, over all batches so far."""
        return self.real_tokens / self.total_slots if self.total_slots else float("nan")

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        """Plain ints and strings: the position of the stream (same on every rank) and the counters."""
        return {"kind": "sft", "seed": self.seed, "seq_len": self.seq_len, "batch_size": self.batch_size,
                "world_size": self.world_size, "sources": {n: len(self.mixture.sources[n]) for n in self.names},
                "batch_idx": self.batch_idx, "streams": {n: s.state() for n, s in self.streams.items()},
                "counters": [self.num_examples, self.num_truncated, self.num_skipped, self.real_tokens,
                             self.total_slots]}

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()`. Raises ValueError naming a field that does not match."""
        _check_state(state, {"kind": "sft", "seed": self.seed, "seq_len": self.seq_len, "batch_size": self.batch_size,
                             "sources": {n: len(self.mixture.sources[n]) for n in self.names}}, "SFTLoader")
        PretrainLoader._load_common(self, state)
        (self.num_examples, self.num_truncated, self.num_skipped, self.real_tokens,
         self.total_slots) = (int(v) for v in state["counters"])
