"""havoc_lite: a small PyTorch kit for training reasoning language models that call tools.

The public names load lazily, so `import havoc_lite` stays cheap and a missing optional piece
only fails when it is used.
"""
from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "ModelConfig": "config", "PRESETS": "config", "TrainConfig": "config",
    "HavocModel": "model",
    "HavocTokenizer": "tokenizer", "train_tokenizer": "tokenizer", "SPECIAL_TOKENS": "markup",
    "load_tokenizer": "tokenizer", "HFTokenizer": "hf_tokenizer",
    "Trainer": "train",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'havoc_lite' has no attribute {name!r}")
