"""The SFT mixture and loader: weighted sources, clipped and rendered conversations, one per row."""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..errors import DataError
from .stream import StreamLoader, _check_state, _EpochStream, _resolve_weights

log = logging.getLogger(__name__)

# The success criteria's mixture table: share of SFT examples drawn from each kind of source.
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


class SFTLoader(StreamLoader):
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
        self.real_tokens = self.total_slots = self.loss_tokens = 0
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

    def _example(self, source: str) -> tuple[int, list[int], list[int]]:
        """(item, ids, mask): the source's next example that keeps an assistant token."""
        stream = self.streams[source]
        for _ in range(1000):
            item = stream.next()
            ids, mask, cut = self._render(self.mixture.sources[source][item])
            self.num_examples += 1
            self.num_truncated += cut
            if any(mask[1:]):
                return item, ids, mask
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
        rows = [self._example(self.names[k])[1:] for k in picks]
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
        self.loss_tokens += int((y != -100).sum())
        return x, y

    @property
    def padding_efficiency(self) -> float:
        """Fraction of the batch slots holding real (non-pad) tokens, over all batches so far."""
        return self.real_tokens / self.total_slots if self.total_slots else float("nan")

    @property
    def loss_token_share(self) -> float:
        """Fraction of the batch slots whose target carries loss (y != -100), over all batches so far:
        the share of each step's compute that trains the model."""
        return self.loss_tokens / self.total_slots if self.total_slots else float("nan")

    def state_dict(self) -> dict:
        """Plain ints and strings: the position of the stream (same on every rank) and the counters."""
        return {"kind": "sft", "seed": self.seed, "seq_len": self.seq_len, "batch_size": self.batch_size,
                "sources": {n: len(self.mixture.sources[n]) for n in self.names}, **self._stream_state(),
                "counters": [self.num_examples, self.num_truncated, self.num_skipped, self.real_tokens,
                             self.total_slots, self.loss_tokens]}

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()`. Raises ValueError naming a field that does not match."""
        _check_state(state, {"kind": "sft", "seed": self.seed, "seq_len": self.seq_len, "batch_size": self.batch_size,
                             "sources": {n: len(self.mixture.sources[n]) for n in self.names}}, "SFTLoader")
        self._load_streams(state)
        counters = [int(v) for v in state["counters"]] + [0]   # states saved before loss_tokens have 5
        (self.num_examples, self.num_truncated, self.num_skipped, self.real_tokens,
         self.total_slots, self.loss_tokens) = counters[:6]

