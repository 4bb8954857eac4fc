"""A small loader following the data protocol (`next_batch`, `state_dict`, `load_state_dict`), used
by the trainer, checkpoint, tracking and distributed tests, and checked here."""
from __future__ import annotations

import torch


def pattern_tokens(n: int = 20000, vocab: int = 64, period: int = 12, seed: int = 0) -> torch.Tensor:
    """A learnable stream: a fixed random cycle of `period` tokens with 5% noise tokens."""
    g = torch.Generator().manual_seed(seed)
    cycle = torch.randint(3, vocab, (period,), generator=g)
    tokens = cycle.repeat(n // period + 1)[:n].clone()
    noise = torch.rand(n, generator=g) < 0.05
    tokens[noise] = torch.randint(3, vocab, (int(noise.sum()),), generator=g)
    return tokens


class WindowLoader:
    """Random windows of a 1-D token tensor. Every rank draws the same global batch of
    batch_size · world_size windows and keeps its own slice, so one process with world_size · B rows
    sees exactly what all ranks see together."""

    def __init__(self, tokens: torch.Tensor, seq_len: int, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.tokens, self.seq_len, self.batch_size = tokens, seq_len, batch_size
        self.rank, self.world_size = rank, world_size
        self.gen = torch.Generator().manual_seed(seed)
        self.batches = 0

    def next_batch(self):
        n = self.batch_size * self.world_size
        starts = torch.randint(0, len(self.tokens) - self.seq_len - 1, (n,), generator=self.gen)
        starts = starts[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        x = torch.stack([self.tokens[s:s + self.seq_len] for s in starts.tolist()])
        y = torch.stack([self.tokens[s + 1:s + 1 + self.seq_len] for s in starts.tolist()])
        self.batches += 1
        return x, y

    def state_dict(self):
        return {"rng": self.gen.get_state(), "batches": self.batches}

    def load_state_dict(self, d):
        self.gen.set_state(d["rng"])
        self.batches = int(d["batches"])


def test_window_loader_resumes_exactly():
    tokens = pattern_tokens(2000)
    a = WindowLoader(tokens, 16, 4, seed=3)
    a.next_batch()
    state = a.state_dict()
    expected = [a.next_batch() for _ in range(3)]
    b = WindowLoader(tokens, 16, 4, seed=99)
    b.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(expected, (b.next_batch() for _ in range(3))):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(expected[0][0][:, 1:], expected[0][1][:, :-1])  # aligned targets


def test_window_loader_ranks_partition_the_global_batch():
    tokens = pattern_tokens(2000)
    whole = WindowLoader(tokens, 8, 4, seed=1).next_batch()[0]
    parts = [WindowLoader(tokens, 8, 2, seed=1, rank=r, world_size=2).next_batch()[0] for r in range(2)]
    assert torch.equal(torch.cat(parts), whole)
