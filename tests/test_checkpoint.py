"""Checkpoints: atomic layout, sha256 verification, fallback, keep-last, Drive staging, and a
training process SIGKILLed in the middle of a save."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from havoc_lite import checkpoint as ckpt
from havoc_lite.config import ModelConfig
from havoc_lite.model import HavocModel

SMALL = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, num_kv_heads=2, ffn_hidden_size=64,
             max_seq_len=64)
TESTS = Path(__file__).parent


def save(out, step, model, keep_last=3, staging=None, loss=1.0):
    state = {"step": step, "tokens_seen": 10 * step, "rng": {"torch": torch.get_rng_state()},
             "data": {"pos": step}, "wandb_run_id": None}
    return ckpt.save_checkpoint(out, step, model.state_dict(), model.config, state, {"loss": loss},
                                keep_last=keep_last, staging_dir=staging)


def test_layout_latest_and_weights_only_loading(tmp_path):
    model = HavocModel(ModelConfig(**SMALL))
    path = save(tmp_path, 5, model)
    assert path == tmp_path / "step_000005"
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "meta.json", "model.safetensors",
                                                      "train_state.pt"]
    assert (tmp_path / "latest").read_text().strip() == "step_000005"
    meta = json.loads((path / "meta.json").read_text())
    assert meta["step"] == 5 and meta["loss"] == 1.0 and set(meta["files"]) == set(ckpt.FILES)
    assert torch.load(path / "train_state.pt", weights_only=True)["data"] == {"pos": 5}
    loaded = HavocModel.from_pretrained(path)  # a step folder is a model folder
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    assert not list(tmp_path.glob("*.tmp"))


def test_keep_last_and_resume_fallback_on_flipped_byte(tmp_path):
    model = HavocModel(ModelConfig(**SMALL))
    for step in (1, 2, 3, 4):
        save(tmp_path, step, model, keep_last=2)
    assert sorted(p.name for p in ckpt.list_step_dirs(tmp_path)) == ["step_000003", "step_000004"]
    assert ckpt.find_resumable(tmp_path).name == "step_000004"
    f = tmp_path / "step_000004" / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"step_000004.*model.safetensors does not match"):
        assert ckpt.find_resumable(tmp_path).name == "step_000003"
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors"):
        ckpt.resolve_resume(str(tmp_path / "step_000004"), tmp_path)
    (tmp_path / "step_000003" / "train_state.pt").unlink()
    with pytest.warns(UserWarning):
        assert ckpt.find_resumable(tmp_path) is None
    assert ckpt.resolve_resume("none", tmp_path) is None
    with pytest.raises(FileNotFoundError):
        ckpt.resolve_resume(str(tmp_path / "nope"), tmp_path)


def test_staged_save_for_drive_lands_verified(tmp_path):
    model = HavocModel(ModelConfig(**SMALL))
    drive, staging = tmp_path / "drive" / "run", tmp_path / "local"
    path = save(drive, 7, model, staging=staging)
    assert ckpt.verify_checkpoint(path)["step"] == 7
    assert (drive / "latest").read_text().strip() == "step_000007"
    assert not list(staging.iterdir())  # the local copy is cleaned up once the Drive copy verifies
    assert ckpt.is_drive_path("/content/drive/MyDrive/run") and not ckpt.is_drive_path(tmp_path)


CHILD = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from test_train_loader import WindowLoader, pattern_tokens
    from havoc_lite.config import TrainConfig
    from havoc_lite.train import Trainer
    cfg = TrainConfig(model="tiny", model_overrides={small!r}, batch_size=4, seq_len=16, max_steps=8,
                      warmup_steps=2, lr=3e-3, save_every=2, keep_last=3, eval_every=0, out_dir={out!r},
                      resume="auto", wandb_mode="disabled", progress=False, seed=7)
    h = Trainer(cfg, train_loader=WindowLoader(pattern_tokens(4000), 16, 4, seed=11)).train()
    print("LOSSES", h["loss"])
""")


def run_child(out: Path, env_extra=None) -> subprocess.Popen:
    env = dict(os.environ, **(env_extra or {}))
    code = CHILD.format(tests=str(TESTS), small=SMALL, out=str(out))
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigkill_during_save_then_resume_finishes_from_last_complete(tmp_path):
    out = tmp_path / "run"
    clean = run_child(tmp_path / "clean")                 # the same run, never interrupted (in parallel)
    child = run_child(out, {ckpt.PAUSE_ENV: "60@6"})   # hang inside the save of step 6
    partial = out / "step_000006.tmp" / "model.safetensors"
    deadline = time.time() + 120
    while not partial.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert partial.exists(), child.communicate()[1][-2000:]
    child.send_signal(signal.SIGKILL)
    child.communicate()                                 # reaps it and closes its pipes
    assert (out / "latest").read_text().strip() == "step_000004"
    assert ckpt.find_resumable(out).name == "step_000004"

    resumed = run_child(out)
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr[-2000:]
    assert "resumed from" in stdout and "step_000004" in stdout
    assert not (out / "step_000006.tmp").exists()       # the stale partial save was swept
    assert (out / "latest").read_text().strip() == "step_000008"

    c_out, c_err = clean.communicate(timeout=120)
    assert clean.returncode == 0, c_err[-2000:]
    losses_clean = eval(c_out.split("LOSSES", 1)[1])
    losses_resumed = eval(stdout.split("LOSSES", 1)[1])
    assert losses_resumed == losses_clean[4:]
    a = ckpt.load_checkpoint(out / "step_000008")[0]
    b = ckpt.load_checkpoint(tmp_path / "clean" / "step_000008")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
