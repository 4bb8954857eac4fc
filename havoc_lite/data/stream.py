"""Counter-based sampling shared by every loader: a seeded per-epoch permutation strided across DDP
ranks, weight normalisation, and the resumable state base class.

Which item comes next depends only on (seed, epoch, position), never on a live RNG object, so the
state is a handful of ints, identical on every DDP rank (each rank takes every world_size-th item
of the same permutation, so ranks never share an item).
"""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import DataError

DEFAULT_DOMAIN_WEIGHTS = {"math": 0.25, "stats": 0.20, "engineering": 0.15, "general": 0.30, "code": 0.10}


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


def _check_state(state: dict, expected: dict, who: str) -> None:
    for k, v in expected.items():
        if state.get(k) != v:
            raise ValueError(f"{who}.load_state_dict: saved {k}={state.get(k)!r} but this loader has {v!r}")



class StreamLoader:
    """Base of the loaders: `self.streams` ({name: _EpochStream}) and `self.batch_idx` are the whole
    position; subclasses add their own fields to `state_dict()` and call `_load_streams`."""

    streams: dict
    batch_idx: int
    world_size: int

    def __iter__(self):
        while True:
            yield self.next_batch()

    def _stream_state(self) -> dict:
        return {"world_size": self.world_size, "batch_idx": self.batch_idx,
                "streams": {n: s.state() for n, s in self.streams.items()}}

    def _load_streams(self, state: dict) -> None:
        if state.get("world_size") != self.world_size:
            warnings.warn(f"{type(self).__name__}: resuming with world_size {self.world_size} from a state saved "
                          f"with {state.get('world_size')}; the stream continues but is not the same sequence")
        self.batch_idx = int(state["batch_idx"])
        for name, s in state["streams"].items():
            self.streams[name].load(s)
