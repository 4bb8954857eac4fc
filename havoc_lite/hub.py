"""Load a model from wherever a user holds one: our own folder, a Hugging Face folder, a hub id, or a
llama.cpp / Ollama `.gguf` file.

    model = load_model("HuggingFaceTB/SmolLM2-135M-Instruct")      # hub id (downloaded, cached)
    model = load_model("/content/drive/MyDrive/qwen2.5-1.5b")      # HF folder (safetensors)
    model = load_model("smollm2.Q4_1.gguf")                        # dequantised to float32
    model = load_model("bartowski/Qwen2.5-1.5B-Instruct-GGUF/Qwen2.5-1.5B-Instruct-Q8_0.gguf")
    model = load_model("runs/sft/step_000600")                     # ours (HavocModel.save_pretrained)

Hub ids go through `huggingface_hub.snapshot_download` (its cache, resumable downloads), fetching
only config, safetensors and tokenizer files; `owner/name/file.gguf` fetches that one file
(`hf_hub_download`); the token comes from the argument, else
`get_secret("HF_TOKEN")` (Colab Secrets, then the environment). Every failure a user can cause (an
unknown or gated repo, no network, a truncated GGUF, a folder without weights, an unsupported
architecture) raises `ModelLoadError`: one line naming the source. Nothing on disk is written
except the hub cache.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError

from .model import HavocModel

# what a model folder needs from a hub repo (no *.bin / *.pt: weights never load through pickle)
HUB_PATTERNS = ["config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
                "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_GGUF = re.compile(r"^([A-Za-z0-9][\w.-]*/[\w.-]+)/(.+\.gguf)$", re.IGNORECASE)


class ModelLoadError(ValueError):
    """A model source that cannot be loaded; `str(e)` is one line naming the source and the cause."""


def is_hub_id(src: str) -> bool:
    """`owner/name` with Hugging Face's allowed characters (and not an existing local path)."""
    return bool(_HUB_ID.match(src)) and not Path(src).exists() and ".." not in src


def resolve_source(src: str | Path, token: Optional[str] = None) -> Path:
    """A local folder or `.gguf` file for `src`, downloading a hub id first.

    Args:
        src: a folder, a `.gguf` file, or a hub id `owner/name`.
        token: Hugging Face token for gated/private repos; default `get_secret("HF_TOKEN")`.
    Raises:
        ModelLoadError: no such path; a file that is not `.gguf`; an unknown, gated or unreachable
            hub repo (one line, naming `src`).
    """
    path = Path(src).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(f"{src}: a model file must be .gguf (or pass the model's folder)")
        return path
    gguf_file = _HUB_GGUF.match(str(src))
    if gguf_file and ".." not in str(src):
        return _download(gguf_file.group(1), token, filename=gguf_file.group(2))
    if not is_hub_id(str(src)):
        raise ModelLoadError(f"{src}: no such file or folder, and not a Hugging Face hub id "
                             "(owner/name, or owner/name/file.gguf)")
    return _download(str(src), token)


def _download(repo_id: str, token: Optional[str], filename: Optional[str] = None) -> Path:
    """snapshot_download of a model folder, or hf_hub_download of one `filename`."""
    import huggingface_hub
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)
    from .secrets import get_secret
    token = token or get_secret("HF_TOKEN")
    try:
        if filename is not None:
            return Path(huggingface_hub.hf_hub_download(repo_id, filename, token=token))
        return Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, token=token))
    except GatedRepoError:                        # a subclass of RepositoryNotFoundError: first
        how = "your token has not been granted access" if token else "set HF_TOKEN (Colab Secrets or env)"
        raise ModelLoadError(f"{repo_id}: gated model on the Hugging Face hub; accept its licence on "
                             f"huggingface.co/{repo_id} and {how}") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"{repo_id}: no such model on the Hugging Face hub (or it is private"
                             f"{'' if token else '; no HF_TOKEN set'})") from None
    except RevisionNotFoundError:
        raise ModelLoadError(f"{repo_id}: revision not found on the Hugging Face hub") from None
    except LocalEntryNotFoundError:               # a subclass of EntryNotFoundError: first
        raise ModelLoadError(f"{repo_id}: cannot reach the Hugging Face hub and the model is not "
                             "in the local cache") from None
    except EntryNotFoundError:
        raise ModelLoadError(f"{repo_id}: the repo has no file {filename!r}") from None
    except (HfHubHTTPError, OSError) as e:
        raise ModelLoadError(f"{repo_id}: download failed ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None


def is_havoc_folder(path: Path) -> bool:
    """A folder written by `HavocModel.save_pretrained` (our config.json has `d_model`)."""
    try:
        return "d_model" in json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False


def load_model(src: str | Path, device: str | torch.device = "cpu", dtype: Optional[torch.dtype] = None,
               token: Optional[str] = None) -> HavocModel:
    """Load `src` (our folder, or a training out_dir whose `latest` names a step folder; a HF
    Llama/SmolLM2/Qwen2 folder; a hub id; or a `.gguf` file).

    Args:
        device: where the weights go.
        dtype: cast to this dtype; default keeps the stored one (float32 for GGUF).
        token: Hugging Face token for a gated hub id (default: `get_secret("HF_TOKEN")`).
    Returns:
        a HavocModel in eval mode.
    Raises:
        ModelLoadError: one line naming `src` and the cause (see `resolve_source`, plus missing or
            corrupt weights and unsupported architectures, whose field is named).
    """
    from .export import from_hf_llama
    from .gguf_import import load_gguf
    path = resolve_source(src, token)
    latest = path / "latest"
    if path.is_dir() and not (path / "config.json").is_file() and latest.is_file():
        path = path / latest.read_text().strip()      # a training run's out_dir: its newest step
    try:
        if path.is_file():
            model = load_gguf(path, device=device, dtype=dtype)
        elif not (path / "config.json").is_file():
            raise ModelLoadError(f"{src}: no config.json in this folder (expected a model folder; "
                                 "for a hub repo of GGUF files name one: owner/name/file.gguf)")
        elif is_havoc_folder(path):
            model = HavocModel._load_own(path, device=device, dtype=dtype)
        else:
            model = from_hf_llama(path, device=device, dtype=dtype)
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError, SafetensorError) as e:   # SafetensorError: truncated file
        raise ModelLoadError(_one_line(src, e)) from e
    return model.eval()


def _one_line(src, e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg if str(src) in msg else f"{src}: {msg}"
