"""`python -m havoc_lite.train` under user mistakes and faults (issue 16, items 2, 6, 9 and 10):
each is refused with one line and exit code 2, found before any compute, and nothing saved is
lost. Runs the real CLI in-process on a 1-layer SFT model (2 steps, a few seconds each)."""
from __future__ import annotations

import errno
import json
from importlib.resources import files
from pathlib import Path

import pytest
import torch

from havoc_lite import checkpoint as ckpt
from havoc_lite.train import main

ARCH = ["n_layers", "1", "d_model", "32", "n_heads", "2", "num_kv_heads", "1", "ffn_hidden_size", "64"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A JSONL of 40 prompt/completion pairs and two tokenizers of the same size trained on
    different text (Shakespeare vs GSM8K), so only their identity tells them apart."""
    from havoc_lite.tokenizer import train_tokenizer
    d = tmp_path_factory.mktemp("sft")
    rows = [{"prompt": f"What is {a} plus {a + 3}?", "completion": f"It is {2 * a + 3}."} for a in range(40)]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assets = files("havoc_lite") / "assets"
    shakespeare = (assets / "tinyshakespeare_200k.txt").read_text()[:40000]
    gsm = "\n".join(json.loads(line)["answer"] for line in
                    (assets / "gsm8k_train_500.jsonl").read_text().splitlines()[:300])
    a = train_tokenizer([shakespeare], d / "tok_a", vocab_size=400, hard_vocab_limit=True)
    b = train_tokenizer([gsm], d / "tok_b", vocab_size=400, hard_vocab_limit=True)
    assert a.vocab_size == b.vocab_size == 400
    return d


def cli(data: Path, out: Path, *extra: str, tok: str = "tok_a") -> list[str]:
    return ["--phase", "sft", "--model", "tiny", "--model-overrides", *ARCH, "--tokenizer", str(data / tok),
            "--train-data", str(data / "train.jsonl"), "--batch-size", "2", "--seq-len", "32",
            "--max-steps", "2", "--save-every", "2", "--eval-every", "0", "--warmup-steps", "1",
            "--out-dir", str(out), "--wandb-mode", "disabled", "--no-progress", *extra]


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("[train] error: "), err
    for n in needles:
        assert n in last, last
    return last


def test_resume_refuses_another_architecture_with_the_same_shapes(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(cli(data, out)) == 0
    # 4 heads of 8 and 2 KV heads of 8 have the very shapes of 2 heads of 16 and 1 KV head of 16
    same_shapes = ["--model-overrides", *ARCH, "n_heads", "4", "num_kv_heads", "2", "head_dim", "8",
                   "rope_theta", "500000.0"]
    assert main(cli(data, out, "--max-steps", "4", *same_shapes)) == 2
    one_line_error(capsys, "resume refused", "n_heads=2 (this run: 4)", "rope_theta")
    assert main(cli(data, out, "--max-steps", "4", "--model-overrides", *ARCH, "n_layers", "2")) == 2
    one_line_error(capsys, "resume refused", "n_layers=1 (this run: 2)")
    assert ckpt.find_resumable(out).name == "step_000002"      # nothing was touched


def test_resume_refuses_another_tokenizer_of_the_same_size(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(cli(data, out)) == 0
    assert main(cli(data, out, "--max-steps", "4", tok="tok_b")) == 2
    one_line_error(capsys, "resume refused", "another tokenizer")
    assert main(cli(data, out, "--max-steps", "4")) == 0        # its own tokenizer resumes


def test_every_checkpoint_corrupt_is_refused_unless_told_to_start_fresh(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(cli(data, out, "--max-steps", "4", "--keep-last", "2")) == 0
    for step in ckpt.list_step_dirs(out):
        f = step / "model.safetensors"
        f.write_bytes(f.read_bytes()[:-8])                     # truncated, as by a dead upload
    assert main(cli(data, out, "--max-steps", "6")) == 2
    one_line_error(capsys, "every checkpoint failed verification", "--resume none")
    assert main(cli(data, out, "--max-steps", "2", "--resume", "none")) == 0
    assert ckpt.find_resumable(out).name == "step_000002"


def test_resume_repairs_a_corrupt_latest(data, tmp_path):
    from havoc_lite.loading import resolve_model_dir
    out = tmp_path / "run"
    assert main(cli(data, out)) == 0
    (out / "latest").write_text("step_999999\n")               # names no folder
    with pytest.raises(FileNotFoundError):
        resolve_model_dir(out)
    with pytest.warns(UserWarning, match="latest"):
        assert main(cli(data, out)) == 0                       # resumes at its last step
    assert (out / "latest").read_text().strip() == "step_000002"
    assert resolve_model_dir(out) == out / "step_000002"


def test_corrupt_resume_folder_is_one_line(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(cli(data, out)) == 0
    f = out / "step_000002" / "train_state.pt"
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    assert main(cli(data, out, "--max-steps", "4", "--resume", str(out / "step_000002"))) == 2
    one_line_error(capsys, "train_state.pt does not match its sha256")


def test_unwritable_out_dir_is_found_at_start(data, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    assert main(cli(data, tmp_path / "a_file" / "run")) == 2
    one_line_error(capsys, "--out-dir", "not writable")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line(data, tmp_path, capsys):
    assert main(cli(data, tmp_path / "run", "--device", "cuda")) == 2
    one_line_error(capsys, "--device cuda")
    assert main(cli(data, tmp_path / "run", "--device", "tpu")) == 2
    one_line_error(capsys, "--device 'tpu'")
    assert not (tmp_path / "run").exists() or not ckpt.list_step_dirs(tmp_path / "run")


def test_full_disk_at_a_save_is_one_line_and_keeps_earlier_checkpoints(data, tmp_path, capsys,
                                                                        monkeypatch):
    out = tmp_path / "run"
    assert main(cli(data, out)) == 0
    real_save = ckpt.save_checkpoint

    def full(out_dir, step, *a, **k):                          # the disk fills at step 4's save
        if step == 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(Path(out_dir) / "step_000004.tmp"))
        return real_save(out_dir, step, *a, **k)
    monkeypatch.setattr(ckpt, "save_checkpoint", full)
    assert main(cli(data, out, "--max-steps", "4")) == 2
    one_line_error(capsys, "disk full", "step_000004.tmp", "intact")
    assert ckpt.find_resumable(out).name == "step_000002"
