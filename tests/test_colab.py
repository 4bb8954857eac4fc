"""Colab support outside the notebooks: Drive checkpoint copies (prune after verify, one extra
folder kept on Drive, a full Drive, `latest_model` verifying sums), the run history carried by the
checkpoint, Colab Secrets for W&B, the bf16 / fp16 choice per GPU, and the live monitor.

Colab itself is the fake `google.colab` in tests/fake_colab (Drive = a folder, Secrets = a dict)."""
from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import pytest
import torch

from havoc_lite import checkpoint as ckpt
from havoc_lite import colab
from havoc_lite.config import ModelConfig, TrainConfig
from havoc_lite.model import HavocModel
from havoc_lite.precision import native_bf16, resolve_dtype
from havoc_lite.train import Trainer
from test_train_loader import WindowLoader, pattern_tokens

FAKE_COLAB = Path(__file__).parent / "fake_colab"
SMALL = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, num_kv_heads=2, ffn_hidden_size=64,
             max_seq_len=64)


def _save(out, step, model, keep_last=1, staging=None):
    state = {"step": step, "tokens_seen": 10 * step, "data": {"pos": step}}
    return ckpt.save_checkpoint(out, step, model.state_dict(), model.config, state, {"loss": 1.0},
                                keep_last=keep_last, staging_dir=staging)


@pytest.fixture
def fake_colab(tmp_path, monkeypatch):
    """Colab mode: fake google.colab importable, Drive mounted at tmp/drive (My Drive = tmp/store)."""
    monkeypatch.syspath_prepend(str(FAKE_COLAB))
    for name in [m for m in sys.modules if m.startswith("google.colab")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setenv("HAVOC_DRIVE_ROOT", str(tmp_path / "drive"))
    monkeypatch.setenv("FAKE_COLAB_DRIVE", str(tmp_path / "store"))
    monkeypatch.setenv("FAKE_COLAB_LOG", str(tmp_path / "colab.log"))
    monkeypatch.setenv("FAKE_COLAB_SECRETS", str(tmp_path / "secrets.json"))
    monkeypatch.delenv("HAVOC_RUN_DIR", raising=False)
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("google.colab")]:   # leave no Colab behind
        del sys.modules[name]


def test_setup_mounts_drive_and_keeps_runs_apart_from_code(fake_colab, monkeypatch):
    assert colab.in_colab()
    run = colab.setup("exp1")
    assert run == fake_colab / "drive" / "MyDrive" / "havoc_lite" / "runs" / "exp1" and run.is_dir()
    assert (fake_colab / "store" / "havoc_lite" / "runs" / "exp1").is_dir()   # it is on "Drive"
    assert ckpt.is_drive_path(run)
    colab.setup("exp1")                                   # already mounted: not mounted twice
    colab.flush_drive()
    assert not (fake_colab / "drive" / "MyDrive").exists()  # unmounted
    assert (fake_colab / "colab.log").read_text().splitlines() == [
        f"mount {fake_colab / 'drive'}", "flush_and_unmount"]


def test_drive_keeps_previous_folder_until_next_save(fake_colab):
    colab.mount_drive()
    out = fake_colab / "drive" / "MyDrive" / "run"
    model = HavocModel(ModelConfig(**SMALL))
    for step in (1, 2, 3):
        _save(out, step, model, keep_last=1, staging="auto")
    # keep_last=1, but on Drive the previous folder stays: the newest may still be uploading
    assert sorted(p.name for p in ckpt.list_step_dirs(out)) == ["step_000002", "step_000003"]
    assert (out / "latest").read_text().strip() == "step_000003"
    # elsewhere keep_last=1 means one folder
    local = fake_colab / "local_run"
    for step in (1, 2):
        _save(local, step, model, keep_last=1, staging=fake_colab / "stage")
    assert [p.name for p in ckpt.list_step_dirs(local)] == ["step_000002"]


def test_copy_cut_off_mid_way_leaves_previous_checkpoint(fake_colab, monkeypatch):
    colab.mount_drive()
    out = fake_colab / "drive" / "MyDrive" / "run"
    model = HavocModel(ModelConfig(**SMALL))
    _save(out, 1, model, staging="auto")
    real_copy, calls = ckpt.shutil.copyfile, []

    def dying_copy(src, dst):   # the runtime dies after the first file of step 2 reached Drive
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt("runtime disconnected")
        return real_copy(src, dst)

    monkeypatch.setattr(ckpt.shutil, "copyfile", dying_copy)
    with pytest.raises(KeyboardInterrupt):
        _save(out, 2, model, staging="auto")
    monkeypatch.setattr(ckpt.shutil, "copyfile", real_copy)
    assert ckpt.find_resumable(out).name == "step_000001"
    assert colab.latest_model(out).name == "step_000001"


def test_full_drive_keeps_local_checkpoint_with_a_clear_message(fake_colab, monkeypatch, capsys):
    colab.mount_drive()
    out = fake_colab / "drive" / "MyDrive" / "run"
    model = HavocModel(ModelConfig(**SMALL))
    _save(out, 1, model, staging=fake_colab / "stage")
    real_copy = ckpt.shutil.copyfile

    def full(src, dst):
        if Path(dst).name == "train_state.pt":
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        return real_copy(src, dst)

    monkeypatch.setattr(ckpt.shutil, "copyfile", full)
    path = _save(out, 2, model, staging=fake_colab / "stage")
    err = capsys.readouterr().err
    assert "is full (Disk quota exceeded)" in err and str(path) in err
    assert path == fake_colab / "stage" / "step_000002"
    assert ckpt.verify_checkpoint(path)["step"] == 2                      # the local copy is whole
    assert sorted(p.name for p in out.iterdir()) == ["latest", "step_000001"]  # Drive untouched


def test_latest_model_skips_a_corrupted_newest_checkpoint(tmp_path):
    model = HavocModel(ModelConfig(**SMALL))
    for step in (1, 2):
        _save(tmp_path, step, model, keep_last=3)
    with open(tmp_path / "step_000002" / "model.safetensors", "r+b") as f:   # cut off by a disconnect
        f.truncate(100)
    with pytest.warns(UserWarning, match="step_000002"):
        assert colab.latest_model(tmp_path).name == "step_000001"
    assert colab.latest_model(tmp_path / "nothing") is None


def test_history_continues_across_resume(tmp_path):
    """The run's loss history is in the checkpoint: stop at step 3, resume, and the history equals
    the uninterrupted run's, step for step."""
    def cfg(out, stop=None):
        return TrainConfig(model="tiny", model_overrides=SMALL, batch_size=4, seq_len=16, max_steps=6,
                           warmup_steps=2, save_every=3, eval_every=0, out_dir=str(out), resume="auto",
                           wandb_mode="disabled", progress=False, stop_at_step=stop)

    def loader():
        return WindowLoader(pattern_tokens(4000), 16, 4, seed=1)

    full = Trainer(cfg(tmp_path / "full"), train_loader=loader())
    full.train()
    Trainer(cfg(tmp_path / "cut", stop=3), train_loader=loader()).train()
    resumed = Trainer(cfg(tmp_path / "cut"), train_loader=loader())
    assert resumed.history["step"] == [1, 2, 3]
    session = resumed.train()
    assert session["step"] == [4, 5, 6]                       # train() returns this session ...
    assert resumed.history["step"] == list(range(1, 7))       # ... the run's history has it all
    assert resumed.history["loss"] == full.history["loss"]    # bitwise, as resume is exact
    saved = ckpt.load_checkpoint(tmp_path / "cut" / "step_000006")[1]["history"]
    assert saved["loss"] == full.history["loss"]


def test_wandb_auto_reads_colab_secrets(fake_colab, monkeypatch):
    from havoc_lite.secrets import get_secret
    from havoc_lite.tracking import resolve_mode
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_mode("auto") == "disabled"
    (fake_colab / "secrets.json").write_text(json.dumps({"WANDB_API_KEY": "k" * 40}))
    assert get_secret("WANDB_API_KEY") == "k" * 40 and resolve_mode("auto") == "online"


@pytest.mark.parametrize("capability,emulated_ok,want", [
    ((7, 5), True, torch.float16),     # T4: torch says bf16 "supported" (emulated); fp16 + scaler
    ((8, 0), True, torch.bfloat16),    # A100
    ((8, 9), True, torch.bfloat16),    # L4
])
def test_autocast_dtype_per_gpu(monkeypatch, capability, emulated_ok, want):
    from havoc_lite.loading import inference_dtype

    def is_bf16_supported(including_emulation=True):
        return True if including_emulation else capability >= (8, 0)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    cuda = torch.device("cuda")
    assert resolve_dtype("auto", cuda) == want
    assert native_bf16(cuda) == (want == torch.bfloat16)
    assert inference_dtype("cuda") == {torch.float16: "float16", torch.bfloat16: "bfloat16"}[want]
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32 and inference_dtype("cpu") == "float32"


def test_live_monitor_plots_whole_history_and_samples_without_touching_rng(tmp_path, capsys):
    from havoc_lite.tokenizer import train_tokenizer
    tok = train_tokenizer(["the cat sat on the mat. " * 40, "a dog ran to the log. " * 40], tmp_path / "tok",
                          vocab_size=300)
    cfg = TrainConfig(model="tiny", model_overrides=dict(SMALL, vocab_size=tok.vocab_size), batch_size=4,
                      seq_len=16, max_steps=4, warmup_steps=1, save_every=4, eval_every=0,
                      out_dir=str(tmp_path / "run"), wandb_mode="disabled", progress=False, resume="none")
    plain = Trainer(cfg, train_loader=WindowLoader(pattern_tokens(4000), 16, 4, seed=1)).train()
    mon = colab.LiveMonitor("t", plot_every=2, sample_every=2, tokenizer=tok,
                            prompt_ids=tok.encode("the cat", bos=True), max_new_tokens=5)
    cfg.out_dir = str(tmp_path / "run2")
    watched = Trainer(cfg, train_loader=WindowLoader(pattern_tokens(4000), 16, 4, seed=1)).train(on_step=mon)
    assert watched["loss"] == plain["loss"]          # sampling changed nothing in training
    assert [s for s, _ in mon.samples] == [2, 4] and all(isinstance(t, str) for _, t in mon.samples)
    out = capsys.readouterr().out
    assert "t: step 4/4" in out and "ETA" in out and "sample @ step 4" in out


def test_qlora_only_when_the_planner_says_lora_does_not_fit(monkeypatch):
    from havoc_lite import memory

    class Props:
        total_memory = 16 * 2**30          # a T4

    assert colab.choose_quantize("Qwen/Qwen2.5-1.5B-Instruct", "yes") == "nf4"
    assert colab.choose_quantize("Qwen/Qwen2.5-1.5B-Instruct", "no") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert colab.choose_quantize("Qwen/Qwen2.5-1.5B-Instruct") is None     # no CUDA: bitsandbytes cannot run
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=0: Props())
    for base, shape in colab.PRETRAINED_BASES.items():
        lora = memory.plan(shape, "sft", "16", 4, 1024, grad_checkpointing=True, lora_r=16, suggest=False)
        assert colab.choose_quantize(base) == (None if lora.fits else "nf4"), base
    assert colab.choose_quantize("HuggingFaceTB/SmolLM2-1.7B-Instruct") is None    # 6.9 GiB on a T4
    assert colab.choose_quantize("HuggingFaceTB/SmolLM2-1.7B-Instruct", seq_len=8192) == "nf4"
    assert colab.choose_quantize("some/unknown-model") is None


def test_lora_config_takes_the_base_and_its_own_tokenizer(tmp_path):
    cfg = colab.lora_config(tmp_path, colab.sizes(True), "some/base", [tmp_path / "a.jsonl"], r=8)
    cfg.validate()
    assert (cfg.init_from, cfg.tokenizer, cfg.lora_r, cfg.lora_alpha) == ("some/base", None, 8, 16.0)
    assert cfg.out_dir == str(tmp_path / "lora") and cfg.resume == "auto" and cfg.quantize is None
