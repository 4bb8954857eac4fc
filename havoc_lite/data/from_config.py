"""The loaders a `TrainConfig` asks for: pretraining shards, or SFT/polish examples (one file, a
weighted mixture of sources, packed or padded), with a held-out split when no eval data is given."""
from __future__ import annotations

import random
from pathlib import Path

from ..config import TrainConfig


def build_loaders(cfg: TrainConfig, tokenizer, rank: int = 0, world_size: int = 1):
    """(train_loader, eval_loader or None) from the config's data paths via `havoc_lite.data`.

    pretrain: `train_data` is a shard folder (`prepare_pretraining` output; built from `raw_data`
    first if it is missing), `eval_data` an optional held-out shard folder. sft/polish:
    `train_data` is one or more comma-separated JSONL files; without `eval_data`, a seeded
    `eval_fraction` of the examples is held out. With `sft_sources` ({name: files}) the examples
    are drawn from a `data.SFTMixture` weighted by `sft_weights` or the `sft_mixture` table
    (the brief's base 60/20/20, tools 30/50/15/5), `eval_fraction` held out of each source.

    Raises:
        ValueError: `train_data` (or a tokenizer for sft/polish) is not set.
    """
    from .. import data
    if not cfg.train_data and not (cfg.phase != "pretrain" and cfg.sft_sources):
        raise ValueError(f"TrainConfig.train_data is not set (phase {cfg.phase}); pass --train-data "
                         "or give the Trainer a train_loader")
    if cfg.phase == "pretrain":
        shard_dir = Path(cfg.train_data)
        if cfg.raw_data and not (shard_dir.is_dir() and any(shard_dir.iterdir())):
            if tokenizer is None:
                raise ValueError("TrainConfig.raw_data needs a tokenizer (--tokenizer) to build shards")
            data.prepare_pretraining(cfg.raw_data, tokenizer, shard_dir)

        def loader(path, seed):
            return data.PretrainLoader(path, cfg.seq_len, cfg.batch_size, domain_weights=cfg.domain_weights,
                                       seed=seed, rank=rank, world_size=world_size)
        return loader(shard_dir, cfg.seed), (loader(cfg.eval_data, cfg.seed + 1) if cfg.eval_data else None)

    if tokenizer is None:
        raise ValueError(f"phase {cfg.phase} renders conversations and needs a tokenizer (--tokenizer)")

    def load(paths: str) -> list:
        return [ex for p in paths.split(",") for ex in data.load_jsonl_examples(p.strip())]

    def hold_out(examples: list, seed: int) -> tuple[list, list]:
        if cfg.eval_data or cfg.eval_fraction <= 0 or len(examples) < 2:
            return examples, []
        order = list(range(len(examples)))
        random.Random(seed).shuffle(order)
        n_eval = max(1, int(round(cfg.eval_fraction * len(examples))))
        return [examples[i] for i in order[n_eval:]], [examples[i] for i in order[:n_eval]]

    held_out = load(cfg.eval_data) if cfg.eval_data else []
    if cfg.sft_sources:
        sources = {}
        for name, paths in cfg.sft_sources.items():
            sources[name], extra = hold_out(load(paths), cfg.seed)
            held_out += extra
        if cfg.sft_weights:
            examples = data.SFTMixture({n: (ex, cfg.sft_weights.get(n, 0.0)) for n, ex in sources.items()},
                                       seed=cfg.seed)
        elif cfg.sft_mixture:
            examples = data.SFTMixture.from_preset(cfg.sft_mixture, sources, seed=cfg.seed)
        else:
            raise ValueError("TrainConfig.sft_sources needs sft_mixture (a data.SFT_MIXTURES name) or "
                             "sft_weights")
    else:
        examples, extra = hold_out(load(cfg.train_data), cfg.seed)
        held_out += extra

    def loader(exs, seed, max_drop):
        kind = data.PackedSFTLoader if cfg.packing else data.SFTLoader
        return kind(exs, tokenizer, cfg.seq_len, cfg.batch_size, seed=seed, rank=rank,
                    world_size=world_size, max_drop_fraction=max_drop)
    # Only the training set is held to max_drop_fraction; a held-out set of a few examples would
    # trip it by chance, and its drops are logged all the same.
    return (loader(examples, cfg.seed, cfg.max_drop_fraction),
            loader(held_out, cfg.seed + 1, 1.0) if held_out else None)
