"""The pretraining loader: weighted domain mix over prepared shards, resumable exactly."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .readers import PathLike
from .stream import StreamLoader, _check_state, _EpochStream, _resolve_weights


class PretrainLoader(StreamLoader):
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

    def state_dict(self) -> dict:
        """Plain ints and strings: the position of the stream (same on every rank)."""
        return {"kind": "pretrain", "seed": self.seed, "seq_len": self.seq_len, "batch_size": self.batch_size,
                "domains": list(self.domains), **self._stream_state()}

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()`. Raises ValueError naming a field that does not match."""
        _check_state(state, {"kind": "pretrain", "seed": self.seed, "seq_len": self.seq_len,
                             "batch_size": self.batch_size, "domains": list(self.domains)}, "PretrainLoader")
        self._load_streams(state)
