"""Loading a trained model for inference: the folder a checkpoint names, the tokenizer beside it,
the weights dtype for the device.

Every inference entry point (eval, chat, RAFT, GRPO, the Colab helpers) goes through
`load_model_and_tokenizer`, so a checkpoint folder means the same thing everywhere. Checkpoint
writing and verification live in checkpoint.py; pretrained sources (hub ids, GGUF) in hub.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def resolve_model_dir(path: str | Path) -> Path:
    """A model folder, following `<out_dir>/latest` to the newest step folder.

    Raises FileNotFoundError naming the path when neither is there."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    latest = path / "latest"
    if latest.is_file():
        step = path / latest.read_text().strip()
        if (step / "model.safetensors").is_file():
            return step
    raise FileNotFoundError(f"{path}: no model.safetensors and no `latest` naming a step folder")


def inference_dtype(device: str) -> str:
    """Weights dtype for generation on `device`: "bfloat16" on a GPU with native bf16 (compute
    capability >= 8.0, `precision.native_bf16`), "float16" on older CUDA GPUs (a T4 emulates bf16,
    several times slower), "float32" on CPU and MPS."""
    import torch
    from .precision import native_bf16
    dev = torch.device(device)
    if dev.type != "cuda":
        return "float32"
    return "bfloat16" if native_bf16(dev) else "float16"


def load_model_and_tokenizer(model: str, tokenizer: Optional[str] = None, device: str = "auto",
                             dtype: Optional[str] = None):
    """(HavocModel in eval mode, tokenizer, model_dir) from a model folder / checkpoint dir.

    The tokenizer is ours (`HavocTokenizer`) or a pretrained base's with our markup
    (`HFTokenizer`), whichever the folder holds (`tokenizer.load_tokenizer`).

    Args:
        model: a folder with model.safetensors + config.json, or a run's out_dir (its `latest`).
        tokenizer: tokenizer folder or .model file; default: the model folder, then its parent.
        device: "auto" | "cpu" | "cuda[:i]" | "mps".
        dtype: "float32" | "bfloat16" | "float16"; default `inference_dtype(device)`.

    Raises:
        ConfigError: a device this machine does not have.
        FileNotFoundError: no model folder, or no tokenizer in any candidate place.
        CheckpointError: the step folder's sha256 sums do not match, or the weights do not load.
    """
    import torch
    from . import checkpoint as ckpt
    from .distributed import resolve_device
    from .model import HavocModel
    from .tokenizer import load_tokenizer
    dev = resolve_device(device)        # ConfigError for a device this machine does not have
    device = dev.type if device == "auto" else str(dev)
    if dtype is None:
        dtype = inference_dtype(device)
    model_dir = resolve_model_dir(model)
    candidates = [Path(tokenizer)] if tokenizer else [model_dir, model_dir.parent, Path(model)]
    tok, errors = None, []
    for c in candidates:
        try:
            tok = load_tokenizer(c)
            break
        except (FileNotFoundError, ValueError, OSError) as e:
            errors.append(f"{c}: {e}")
    if tok is None:
        raise FileNotFoundError("no tokenizer found (pass --tokenizer): " + "; ".join(errors))
    if (model_dir / "meta.json").is_file():   # a checkpoint step folder: its sums say if it is whole
        ckpt.verify_checkpoint(model_dir)
    from safetensors import SafetensorError
    try:
        net = HavocModel.from_pretrained(model_dir, device=device, dtype=getattr(torch, dtype)).eval()
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError) as e:
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise ckpt.CheckpointError(f"{model_dir}: cannot load the model ({type(e).__name__}: {first}); "
                                   "is model.safetensors truncated, or from another config.json?") from e
    return net, tok, model_dir
