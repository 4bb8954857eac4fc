"""Packed SFT: several whole examples per row, best-fit, with positions that restart per example.

One example per padded row wastes most of a step on padding when examples are short next to
`seq_len` (in the smoke run's SFT, 70 % of the slots). Packing fills each row with examples, and
`HavocModel.forward(x, positions=pos)` keeps attention inside each example (a block-diagonal causal
mask) with RoPE positions restarting at 0, so a packed example trains exactly as it would alone
(tested: its logits equal those of the example run by itself).

Best fit, as nanochat's SFT loader and TRL's `pack_dataset(strategy="bfd")` do: rendered examples
wait in a buffer of `buffer_size`; each row takes the longest waiting example that still fits its
free space, again and again, until none fits; the rest of the row is padding (no loss). The buffer
is refilled from the mixture after every pick. An example is never split across rows.
"""
from __future__ import annotations

import numpy as np
import torch

from .sft import SFTLoader
from .stream import _check_state


class PackedSFTLoader(SFTLoader):
    """`SFTLoader` with best-fit packing: same sources, mixture, rendering, truncation, drop check
    and DDP striding, but rows hold several examples.

    `next_batch() -> (x, y, positions)`: LongTensors [batch_size, T], T = seq_len if
    `pad_to_seq_len` else the longest packed row. x/y as in SFTLoader; `positions` restart at 0 at
    the first token of each example (the padding tail is a block of its own), which is what
    `HavocModel.forward(x, positions=positions)` reads as example boundaries.

    Each example drawn picks its source from the mixture weights with a counter-based RNG (seed,
    draw number), so the state is ints: the streams, the draw count and the (source, item) keys of
    the examples waiting in the buffer (re-rendered on resume). `loss_token_share` and
    `padding_efficiency` report how full the rows are.

    Raises:
        as SFTLoader; ValueError for buffer_size < 1.
    """

    def __init__(self, examples, tokenizer, seq_len: int, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, pad_to_seq_len: bool = False, max_drop_fraction: float = 0.2,
                 buffer_size: int | None = None):
        super().__init__(examples, tokenizer, seq_len, batch_size, seed=seed, rank=rank,
                         world_size=world_size, pad_to_seq_len=pad_to_seq_len,
                         max_drop_fraction=max_drop_fraction)
        # never more than one epoch waiting (a small set would otherwise sit in the buffer twice)
        per_rank = len(self.mixture) // world_size
        self.buffer_size = buffer_size if buffer_size is not None else min(max(64, 4 * batch_size), per_rank)
        if self.buffer_size < 1:
            raise ValueError(f"PackedSFTLoader: buffer_size must be >= 1, got {self.buffer_size}")
        self.num_draws = 0
        self.buffer: list[tuple[int, int, list[int], list[int]]] = []   # (source index, item, ids, mask)

    def _draw(self) -> tuple[int, int, list[int], list[int]]:
        rng = np.random.default_rng([self.seed, 1 << 23, self.num_draws])
        self.num_draws += 1
        k = int(rng.choice(len(self.names), p=self._p))
        return (k, *self._example(self.names[k]))

    def _pack_row(self) -> list[tuple[list[int], list[int]]]:
        row, room = [], self.seq_len            # an example of n tokens fills n - 1 (x, y) slots
        while room > 0:
            while len(self.buffer) < self.buffer_size:
                self.buffer.append(self._draw())
            fits = [i for i, e in enumerate(self.buffer) if len(e[2]) - 1 <= room]
            if not fits:
                break
            best = max(fits, key=lambda i: len(self.buffer[i][2]))   # first of the longest: deterministic
            _, _, ids, mask = self.buffer.pop(best)
            row.append((ids, mask))
            room -= len(ids) - 1
        return row

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, y, positions) LongTensors [batch_size, T] on the CPU (see class docstring)."""
        rows = [self._pack_row() for _ in range(self.batch_size)]
        self.batch_idx += 1
        used = [sum(len(ids) - 1 for ids, _ in row) for row in rows]
        T = self.seq_len if self.pad_to_seq_len else max(used)
        x = torch.full((self.batch_size, T), self.tokenizer.pad_id, dtype=torch.long)
        y = torch.full((self.batch_size, T), -100, dtype=torch.long)
        pos = torch.zeros((self.batch_size, T), dtype=torch.long)
        for b, row in enumerate(rows):
            s = 0
            for ids, mask in row:
                n = len(ids) - 1
                t = torch.tensor(ids, dtype=torch.long)
                x[b, s:s + n] = t[:-1]
                y[b, s:s + n] = torch.where(torch.tensor(mask[1:], dtype=torch.bool), t[1:], -100)
                pos[b, s:s + n] = torch.arange(n)
                s += n
            pos[b, s:] = torch.arange(T - s)    # the padding tail: a block of its own, no loss
            self.real_tokens += s
        self.total_slots += self.batch_size * T
        self.loss_tokens += int((y != -100).sum())
        return x, y, pos

    def state_dict(self) -> dict:
        """SFTLoader's state plus the draw count and the keys of the buffered examples."""
        state = super().state_dict()
        state.update(kind="sft_packed", buffer_size=self.buffer_size, num_draws=self.num_draws,
                     buffer=[[k, item] for k, item, _, _ in self.buffer])
        return state

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()`; the buffered examples are rendered again. Raises ValueError
        naming a field that does not match."""
        _check_state(state, {"kind": "sft_packed", "buffer_size": self.buffer_size}, "PackedSFTLoader")
        super().load_state_dict({**state, "kind": "sft"})
        self.num_draws = int(state["num_draws"])
        self.buffer = []
        for k, item in state["buffer"]:
            ids, mask, _ = self._render(self.mixture.sources[self.names[k]][item])
            self.buffer.append((k, item, ids, mask))
