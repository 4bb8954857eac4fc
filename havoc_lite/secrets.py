"""API keys and tokens: Colab Secrets first, then the environment.

In Colab, keys live in the Secrets panel and are read with `google.colab.userdata.get`; they are
not environment variables. Elsewhere (a laptop, CI, a terminal) they are. Every place in the kit
that needs `ANTHROPIC_API_KEY`, `WANDB_API_KEY` or `HF_TOKEN` asks `get_secret`, so both work.
A secret's value is never printed, logged or written to disk by the kit.
"""
from __future__ import annotations

import os
from typing import Optional


def _colab_secret(name: str) -> Optional[str]:
    try:
        from google.colab import userdata  # only importable inside a Colab runtime
    except ImportError:
        return None
    try:
        return userdata.get(name)
    except Exception:  # noqa: BLE001 - SecretNotFoundError / NotebookAccessError: not granted or not set
        return None


def get_secret(name: str) -> Optional[str]:
    """The value of secret `name` (e.g. "HF_TOKEN"), or None when it is set nowhere.

    Looks in Colab Secrets (`google.colab.userdata.get`) first, then in `os.environ`. Empty or
    whitespace-only values count as unset. Never raises.
    """
    for value in (_colab_secret(name), os.environ.get(name)):
        if value and value.strip():
            return value.strip()
    return None
