"""W&B tracking in offline mode: history is written, and a resumed run continues the same run id."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from havoc_lite.checkpoint import load_checkpoint
from havoc_lite.config import TrainConfig
from havoc_lite.tracking import Tracker, resolve_mode
from havoc_lite.train import Trainer
from test_train_loader import WindowLoader, pattern_tokens

SMALL = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, num_kv_heads=2, ffn_hidden_size=64,
             max_seq_len=64)


def test_mode_resolution(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert resolve_mode("auto") == "disabled"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online" and resolve_mode("offline") == "offline"
    assert Tracker("online", enabled=False).run is None  # non-zero ranks never log


def test_offline_history_written_and_resume_reuses_run_id(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _offline_run_and_resume(tmp_path, monkeypatch)
    finally:
        torch.set_num_threads(threads)


def _spy_on_wandb(trainer) -> dict:
    """Record what wandb's public `Run.log` receives and the run's directory (the .wandb file
    itself is wandb-core's private format, written later from another process)."""
    run, seen = trainer.tracker.run, {"logged": {}, "dir": trainer.tracker.run.dir}
    log = run.log

    def spy(data, step=None, **kw):
        if "train/loss" in data:
            seen["logged"][step] = data["train/loss"]
        return log(data, step=step, **kw)
    run.log = spy
    return seen


def _offline_run_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = TrainConfig(model="tiny", model_overrides=SMALL, batch_size=4, seq_len=16, max_steps=6,
                      warmup_steps=2, save_every=3, eval_every=0, log_every=1, out_dir=str(tmp_path / "run"),
                      resume="auto", wandb_mode="offline", progress=False, stop_at_step=3)

    first = Trainer(cfg, train_loader=WindowLoader(pattern_tokens(4000), 16, 4, seed=1))
    run_id = first.tracker.run_id
    seen1 = _spy_on_wandb(first)
    h1 = first.train()
    assert load_checkpoint(tmp_path / "run" / "step_000003")[1]["wandb_run_id"] == run_id

    cfg.stop_at_step = None
    second = Trainer(cfg, train_loader=WindowLoader(pattern_tokens(4000), 16, 4, seed=1))
    assert second.tracker.run_id == run_id and second.tracker.run.id == run_id
    seen2 = _spy_on_wandb(second)
    h2 = second.train()

    # wandb received every step's loss once, at its optimizer step, and continued after the resume
    assert seen1["logged"] == pytest.approx(dict(zip(h1["step"], h1["loss"]))) and h1["step"] == [1, 2, 3]
    assert seen2["logged"] == pytest.approx(dict(zip(h2["step"], h2["loss"]))) and h2["step"] == [4, 5, 6]
    # the final checkpoint's history (our own record, what plots read) holds the whole run
    history = load_checkpoint(tmp_path / "run" / "step_000006")[1]["history"]
    assert history["step"] == [1, 2, 3, 4, 5, 6]
    assert history["loss"] == pytest.approx(h1["loss"] + h2["loss"])
    # two offline sessions of the same run, each in its own folder for `wandb sync`
    # (folder names are wandb's: two sessions in the same second get a "-1" suffix)
    runs = [Path(seen["dir"]).parent for seen in (seen1, seen2)]
    assert runs[0] != runs[1] and all(r.parent == tmp_path / "wandb" and run_id in r.name for r in runs)
    assert all(any(r.glob("*.wandb")) for r in runs)      # the log `wandb sync` uploads
