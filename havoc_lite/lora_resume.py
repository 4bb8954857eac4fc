"""May this run resume that LoRA checkpoint? The same adapter settings, on the same base.

A LoRA checkpoint holds only the adapters (and their AdamW state); its meta.json records the
settings (`r`, `alpha`, `dropout`, `targets`, `quantize`, the trained token rows) and the base's
source and sha256 fingerprint (`lora.base_fingerprint`). Resuming it with other settings, onto
another base, or mixing it with a full-model run would silently train something else, so the
Trainer refuses, in one line that gives the flags which would resume it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from .errors import ResumeError


class LoraResumeError(ResumeError):
    """A checkpoint whose LoRA settings or base model differ from this run's (one line)."""


def precheck(cfg) -> None:
    """Refuse a LoRA mismatch before a (possibly large) base is loaded, from the meta.json of the
    checkpoint `cfg.resume` points at (`latest`; not verified yet: the Trainer's load checks
    everything again, `check` with `full=True`). A missing or unreadable meta.json passes here.

    Raises: LoraResumeError."""
    if cfg.resume in ("none", "", None):
        return
    root = Path(cfg.out_dir if cfg.resume == "auto" else cfg.resume)
    try:
        folder = root if (root / "meta.json").is_file() else root / (root / "latest").read_text().strip()
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return
    if isinstance(meta, dict):
        check(folder, meta, cfg.lora_settings(), cfg.lora_r, full=False)


def check(folder: Path, meta: dict[str, Any], mine: Optional[dict[str, Any]], lora_r: int,
          full: bool = True) -> None:
    """Refuse a checkpoint (`folder`, its `meta`) whose LoRA settings or base differ from `mine`
    (this run's: `lora_settings` plus, with `full`, "base" and "train_tokens"; None for a
    full-model run). `full=False` skips what is known only once the base is loaded (its
    fingerprint and the added token rows).

    Raises: LoraResumeError naming the folder, what differs, and the flags that would resume it."""
    saved = meta.get("lora")
    if saved is None and mine is None:
        return
    if saved is None:
        raise LoraResumeError(f"{folder}: a full-model checkpoint, but this run trains LoRA adapters "
                              f"(lora_r={lora_r}); resume it with lora_r 0 or use another out_dir")
    flags = (f"--init-from {saved['base']['source']} --lora-r {saved['r']} --lora-alpha {saved['alpha']:g} "
             f"--lora-dropout {saved['dropout']:g} --lora-targets {','.join(saved['targets'])}"
             + (f" --quantize {saved['quantize']}" if saved.get("quantize") else ""))
    if mine is None:
        raise LoraResumeError(f"{folder}: holds LoRA adapters only; resume it with its settings ({flags}) "
                              "or use another out_dir")
    diffs = []
    for key in ("r", "alpha", "dropout", "targets", "quantize") + (("train_tokens",) if full else ()):
        if saved.get(key) != mine.get(key):
            a, b = mine.get(key), saved.get(key)
            if key == "train_tokens":
                a, b = f"{len(a)} ids", f"{len(b or [])} ids"
            diffs.append(f"{key} {a} != {b}")
    if diffs:
        raise LoraResumeError(f"{folder}: this run's LoRA settings differ from the checkpoint's "
                              f"({'; '.join(diffs)}); resume with {flags}")
    if full and saved["base"]["sha256"] != mine["base"]["sha256"]:
        raise LoraResumeError(f"{folder}: the adapters were trained on another base ({saved['base']['source']}, "
                              f"sha256 {saved['base']['sha256'][:12]}), not on init_from={mine['base']['source']} "
                              f"(sha256 {mine['base']['sha256'][:12]})")
