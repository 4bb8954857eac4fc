"""A run's pretrained start (`TrainConfig.init_from`): the base model, its tokenizer with our
markup, and the vocabulary rows the markup adds. Used by the Trainer, GRPO and merge."""
from __future__ import annotations

import json
from pathlib import Path

from .config import TrainConfig
from .model import HavocModel


def load_run_tokenizer(cfg: TrainConfig):
    """The run's tokenizer: `cfg.tokenizer` (ours or a Hugging Face one, by the files present), else
    the tokenizer saved beside an `init_from` that is one of our folders (a GRPO or SFT output),
    else the tokenizer of a pretrained `init_from` (`HFTokenizer`, markup added), else None.

    Raises:
        FileNotFoundError / ValueError: one line naming the path (from the loaders).
    """
    from .tokenizer import load_tokenizer
    if cfg.tokenizer:
        return load_tokenizer(cfg.tokenizer)
    if cfg.init_from and _is_own_model(cfg.init_from):
        try:   # our folders keep their tokenizer beside the weights (loading.load_model_and_tokenizer)
            return load_tokenizer(cfg.init_from)
        except FileNotFoundError:
            return None
    if cfg.init_from:
        from .hf_tokenizer import HFTokenizer
        return HFTokenizer.from_pretrained(cfg.init_from)
    return None


def _is_own_model(src: str) -> bool:
    from .hub import is_havoc_folder
    return Path(src).is_dir() and is_havoc_folder(Path(src))


def load_init_model(src: str) -> HavocModel:
    """`init_from` as a HavocModel through `hub.load_model` (hub id, Hugging Face folder, .gguf, ours).

    Raises:
        ValueError: one line: the source cannot be loaded (`hub.ModelLoadError`), or it is a LoRA
            step folder, which holds adapters only (merge it first).
    """
    from .hub import load_model
    meta = Path(src) / "meta.json"
    if meta.is_file():
        try:
            is_lora = "lora" in json.loads(meta.read_text())
        except ValueError:
            is_lora = False
        if is_lora:
            raise ValueError(f"init_from={src}: a LoRA checkpoint holds adapters only; merge it first "
                             f"(python -m havoc_lite.merge --run {src} --out MERGED_DIR) and start from MERGED_DIR")
    return load_model(src)


def fit_vocab(model: HavocModel, tokenizer) -> list[int]:
    """Grow `model`'s embedding (and head) to the tokenizer's size, new rows at the mean row
    (`HavocModel.resize_token_embeddings`), and return the ids whose rows LoRA must train: the rows
    just added plus a Hugging Face tokenizer's markup ids (which may land in a base's spare rows,
    e.g. Qwen's vocabulary padded to a multiple of 64)."""
    if tokenizer is None:
        return []
    old, n = model.config.vocab_size, len(tokenizer)
    ids = set(range(old, n))
    if n > old:
        model.resize_token_embeddings(n)
    if hasattr(tokenizer, "hf"):
        from .markup import MARKUP_TOKENS
        ids |= {tokenizer.special_ids[t] for t in MARKUP_TOKENS if t in tokenizer.special_ids}
    return sorted(ids)
