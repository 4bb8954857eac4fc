"""Weights & Biases logging that survives a Colab disconnect.

Modes: "disabled" (nothing is sent or written; the default when WANDB_API_KEY is not set),
"offline" (history written under WANDB_DIR, `wandb sync` uploads it later) and "online". The run
id is stored in the checkpoint's train_state, so a resumed run continues the same W&B run
(`wandb.init(id=..., resume="allow")`) instead of starting a new chart.

The API key comes from `secrets.get_secret("WANDB_API_KEY")` (Colab Secrets, then the
environment) and is handed to wandb in memory (`wandb.Settings(api_key=...)`); it is never printed
or written to disk here. Without it, wandb falls back to its own login file.
"""
from __future__ import annotations

import os
from typing import Any, Optional


def resolve_mode(mode: str = "auto") -> str:
    """"auto" -> "online" when a WANDB_API_KEY is found (Colab Secrets or the environment, see
    `secrets.get_secret`), else "disabled"; WANDB_MODE overrides auto."""
    from .secrets import get_secret
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE") in ("disabled", "offline", "online"):
        return os.environ["WANDB_MODE"]
    return "online" if get_secret("WANDB_API_KEY") else "disabled"


class Tracker:
    """Thin wrapper over a wandb run. `log(metrics, step)` and `finish()` are no-ops when disabled
    or on ranks other than 0.

    Args:
        mode: "auto" | "disabled" | "offline" | "online".
        project, run_name: W&B project and display name.
        config: run config (the TrainConfig dict) shown in the W&B UI.
        run_id: the id of a run to continue (from a checkpoint); None starts a new run.
        enabled: False on non-zero ranks.
        dir: where wandb writes its files (default: WANDB_DIR or the current folder).

    Attributes:
        run_id: the W&B run id (None when disabled) — store it in the checkpoint.
    """

    def __init__(self, mode: str = "auto", project: str = "havoc_lite", run_name: Optional[str] = None,
                 config: Optional[dict[str, Any]] = None, run_id: Optional[str] = None,
                 enabled: bool = True, dir: Optional[str] = None):
        self.mode = resolve_mode(mode) if enabled else "disabled"
        self.run = None
        self.run_id = run_id
        if self.mode == "disabled":
            return
        import wandb
        from .secrets import get_secret
        key = get_secret("WANDB_API_KEY") if self.mode == "online" else None
        settings = wandb.Settings(api_key=key) if key else None   # in memory only, never on disk
        self.run = wandb.init(project=project, name=run_name, config=config, id=run_id,
                              resume="allow", mode=self.mode, dir=dir or os.environ.get("WANDB_DIR"),
                              settings=settings)
        self.run_id = self.run.id

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Log scalars at an optimizer step (W&B drops steps <= the last logged one on resume)."""
        if self.run is not None:
            self.run.log(metrics, step=step)

    def summary(self, **values: Any) -> None:
        if self.run is not None:
            for k, v in values.items():
                self.run.summary[k] = v

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
