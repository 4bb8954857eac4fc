"""W&B tracking in offline mode: history is written, and a resumed run continues the same run id."""
from __future__ import annotations

import re
import time

import pytest
import torch

from havoc_lite.checkpoint import load_checkpoint
from havoc_lite.config import TrainConfig
from havoc_lite.tracking import Tracker, resolve_mode
from havoc_lite.train import Trainer
from test_train_loader import WindowLoader, pattern_tokens

SMALL = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, num_kv_heads=2, ffn_hidden_size=64,
             max_seq_len=64)
# A history record in the .wandb protobuf log: items {key: "_step", value_json: "N"} then
# {key: "train/loss", value_json: "<float>"} (field 16 = b"\x82\x01", length-prefixed).
HISTORY = re.compile(rb"_step\x82\x01.(\d+)\n.\x12\ntrain/loss\x82\x01.([0-9.eE+-]+)", re.S)


def logged_losses(run_file, expected_steps: int) -> dict[int, float]:
    # wandb-core writes the file from its own process; finish() can return a moment before the
    # last records reach the disk, so wait for them (up to 20 s).
    deadline = time.time() + 20
    while True:
        found = {int(s): float(v) for s, v in HISTORY.findall(run_file.read_bytes())}
        if len(found) >= expected_steps or time.time() > deadline:
            return found
        time.sleep(0.2)


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


def _offline_run_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = TrainConfig(model="tiny", model_overrides=SMALL, batch_size=4, seq_len=16, max_steps=6,
                      warmup_steps=2, save_every=3, eval_every=0, log_every=1, out_dir=str(tmp_path / "run"),
                      resume="auto", wandb_mode="offline", progress=False, stop_at_step=3)

    first = Trainer(cfg, train_loader=WindowLoader(pattern_tokens(4000), 16, 4, seed=1))
    run_id = first.tracker.run_id
    h1 = first.train()
    assert load_checkpoint(tmp_path / "run" / "step_000003")[1]["wandb_run_id"] == run_id

    cfg.stop_at_step = None
    second = Trainer(cfg, train_loader=WindowLoader(pattern_tokens(4000), 16, 4, seed=1))
    assert second.tracker.run_id == run_id
    h2 = second.train()

    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(run_id) for r in runs)
    files = [next(r.glob(f"run-{run_id}.wandb")) for r in runs]
    assert logged_losses(files[0], 3) == pytest.approx(dict(zip(h1["step"], h1["loss"])))
    assert logged_losses(files[1], 3) == pytest.approx(dict(zip(h2["step"], h2["loss"])))
    assert h2["step"] == [4, 5, 6]
    for f in files:
        assert b"x" * 40 not in f.read_bytes()
