"""Trainer: schedule, optimizer groups, determinism, exact resume, skipped non-finite steps, CLI."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from havoc_lite.checkpoint import load_checkpoint
from havoc_lite.config import TrainConfig
from havoc_lite.model import HavocModel
from havoc_lite.optim import lr_at, param_groups
from havoc_lite.train import Trainer, TrainingDiverged, parse_args
from test_train_loader import WindowLoader, pattern_tokens

SMALL = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, num_kv_heads=2, ffn_hidden_size=64,
             max_seq_len=64)



def make_cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(model="tiny", model_overrides=SMALL, batch_size=4, seq_len=16, max_steps=8,
                warmup_steps=2, lr=3e-3, min_lr=3e-4, save_every=4, eval_every=0, out_dir=str(tmp_path / "run"),
                resume="auto", wandb_mode="disabled", progress=False, seed=7)
    base.update(kw)
    return TrainConfig(**base)


def run(cfg, tokens=None, **kw):
    tokens = pattern_tokens(4000) if tokens is None else tokens
    trainer = Trainer(cfg, train_loader=WindowLoader(tokens, cfg.seq_len, cfg.batch_size, seed=11), **kw)
    return trainer, trainer.train()


def test_lr_schedule_warmup_then_cosine_to_min():
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.1 + 0.5 * 0.9)  # half way: cos(pi/2) = 0
    assert lr_at(110, cfg) == pytest.approx(0.1)
    assert lr_at(500, cfg) == pytest.approx(0.1)


def test_no_weight_decay_on_norms_and_embeddings():
    from havoc_lite.config import ModelConfig
    model = HavocModel(ModelConfig(**SMALL))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} == {
        n for n, p in model.named_parameters() if p.dim() == 1 or n == "embed_tokens.weight"}
    assert all(p.dim() == 2 and "embed" not in names[id(p)] for p in decay["params"])
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


def test_trainer_adamw_is_fused_on_the_cpu_and_matches_the_for_loop_version():
    """`make_optimizer` takes torch's fused kernel on the CPU (HF's Trainer default; 4.5x faster at
    50m) and makes the same updates as torch's for-loop AdamW, weight decay groups included."""
    import copy
    from havoc_lite.config import ModelConfig
    from havoc_lite.optim import make_optimizer
    torch.manual_seed(0)
    model = HavocModel(ModelConfig(**SMALL))
    ref_model, start = copy.deepcopy(model), copy.deepcopy(model)
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1)
    opt = make_optimizer(model, cfg, torch.device("cpu"))
    ref = torch.optim.AdamW(param_groups(ref_model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                            eps=cfg.eps, foreach=False)
    assert opt.defaults["fused"] and not ref.defaults["fused"]
    x = torch.randint(0, SMALL["vocab_size"], (2, 16), generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        for m, o in ((model, opt), (ref_model, ref)):
            m(x[:, :-1], targets=x[:, 1:]).backward()
            o.step()
            o.zero_grad()
    for (n, p), q in zip(model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)
    assert all((p - p0).abs().max() > 1e-3 for p, p0 in zip(model.parameters(), start.parameters()))


def test_same_seed_same_losses(tmp_path):
    _, h1 = run(make_cfg(tmp_path / "a", max_steps=5))
    _, h2 = run(make_cfg(tmp_path / "b", max_steps=5))
    assert h1["loss"] == h2["loss"] and len(h1["loss"]) == 5


@pytest.mark.parametrize("neftune", [0.0, 5.0])
def test_resume_is_bitwise_identical_to_uninterrupted(tmp_path, neftune):
    # with NEFTune the embedding noise comes from the RNG state the checkpoint restores
    kw = dict(max_steps=8, save_every=4, grad_accum_steps=2, neftune_noise_alpha=neftune)
    trainer, full = run(make_cfg(tmp_path / "full", **kw))
    assert trainer.raw_model.neftune_noise_alpha == neftune
    _, first = run(make_cfg(tmp_path / "split", stop_at_step=4, **kw))
    assert first["stopped"] == "stop_at_step" and first["final_step"] == 4
    # A fresh Trainer (new model, new loader with a different seed) must pick up everything.
    cfg = make_cfg(tmp_path / "split", **kw)
    trainer = Trainer(cfg, train_loader=WindowLoader(pattern_tokens(4000), 16, 4, seed=12345))
    assert trainer.step == 4 and trainer.resumed_from.name == "step_000004"
    second = trainer.train()
    assert first["loss"] + second["loss"] == full["loss"]          # every step, bitwise
    assert first["lr"] + second["lr"] == full["lr"]
    assert second["tokens_seen"] == full["tokens_seen"] == 8 * 2 * 4 * 16
    a = load_file(str(tmp_path / "full/run/step_000008/model.safetensors"))
    b = load_file(str(tmp_path / "split/run/step_000008/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    _, sa, _ = load_checkpoint(tmp_path / "full/run/step_000008")
    _, sb, _ = load_checkpoint(tmp_path / "split/run/step_000008")
    for k, st in sa["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg_sq"], sb["optimizer"]["state"][k]["exp_avg_sq"])


def test_compiled_training_follows_eager_and_resumes(tmp_path):
    """`compile: true` (the model under torch.compile, as `bench --compile` times it): the same
    losses as eager to fp32 rounding, checkpoints keyed by HavocModel names (no `_orig_mod.`), and a
    compiled run resumed from its checkpoint ends on the uninterrupted compiled run's weights."""
    kw = dict(max_steps=6, save_every=3)
    _, eager = run(make_cfg(tmp_path / "eager", **kw))
    _, full = run(make_cfg(tmp_path / "full", compile=True, **kw))
    assert full["loss"] == pytest.approx(eager["loss"], rel=1e-4, abs=1e-5)
    _, first = run(make_cfg(tmp_path / "split", compile=True, stop_at_step=3, **kw))
    _, second = run(make_cfg(tmp_path / "split", compile=True, **kw))
    assert first["loss"] + second["loss"] == pytest.approx(full["loss"], rel=1e-5)
    a = load_file(str(tmp_path / "full/run/step_000006/model.safetensors"))
    b = load_file(str(tmp_path / "split/run/step_000006/model.safetensors"))
    assert a.keys() == load_file(str(tmp_path / "eager/run/step_000006/model.safetensors")).keys()
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)


def test_tiny_model_learns_and_eval_reports_perplexity(tmp_path):
    tokens = pattern_tokens(8000)
    cfg = make_cfg(tmp_path, max_steps=150, batch_size=8, seq_len=32, eval_every=75, eval_batches=2,
                   save_every=150, warmup_steps=5, lr=1e-2, min_lr=1e-3)
    eval_loader = WindowLoader(pattern_tokens(8000, seed=0), 32, 8, seed=99)
    _, hist = run(cfg, tokens, eval_loader=eval_loader)
    assert hist["loss"][0] > 3.5                      # ~ln(61) at start
    assert hist["eval_step"] == [75, 150]
    assert hist["eval_loss"][-1] < 1.0                # the 12-token cycle is learned
    assert hist["eval_ppl"][-1] == pytest.approx(math.exp(hist["eval_loss"][-1]))
    assert all(math.isfinite(g) and g > 0 for g in hist["grad_norm"])


class PoisonedModel(HavocModel):
    """Returns NaN logits for the next `poison` forwards."""
    poison = 0

    def forward(self, *a, **kw):
        out = super().forward(*a, **kw)
        if self.poison > 0:
            self.poison -= 1
            return out * float("nan")
        return out


def test_non_finite_steps_are_skipped_then_training_goes_on(tmp_path):
    from havoc_lite.config import ModelConfig
    torch.manual_seed(0)
    model = PoisonedModel(ModelConfig(**SMALL))
    cfg = make_cfg(tmp_path, max_steps=3, save_every=100, max_bad_steps=3)
    trainer = Trainer(cfg, model=model, train_loader=WindowLoader(pattern_tokens(4000), 16, 4, seed=1))
    trainer.train_step()
    trainer.step = 1
    after_good_step = {k: v.clone() for k, v in model.state_dict().items()}
    model.poison = 2                                   # steps 2 and 3 produce NaN logits
    hist = trainer.train()
    assert hist["skipped_steps"] == 2 and hist["step"] == [] and hist["final_step"] == 3
    assert all(torch.equal(after_good_step[k], v) for k, v in model.state_dict().items())
    cfg.max_steps = 5                                  # training goes on normally afterwards
    hist = trainer.train()
    assert hist["step"] == [4, 5] and all(math.isfinite(x) for x in hist["loss"])
    assert not all(torch.equal(after_good_step[k], v) for k, v in model.state_dict().items())


def test_consecutive_non_finite_steps_stop_with_a_good_checkpoint(tmp_path):
    from havoc_lite.config import ModelConfig
    model = PoisonedModel(ModelConfig(**SMALL))
    cfg = make_cfg(tmp_path, max_steps=20, save_every=100, max_bad_steps=3)
    trainer = Trainer(cfg, model=model, train_loader=WindowLoader(pattern_tokens(4000), 16, 4, seed=1))
    trainer.train_step()
    trainer.step = 1
    good = {k: v.clone() for k, v in model.state_dict().items()}
    model.poison = 10**6
    with pytest.raises(TrainingDiverged, match="3 consecutive non-finite steps"):
        trainer.train()
    saved, state, _ = load_checkpoint(tmp_path / "run/step_000004")
    assert state["skipped_steps"] == 3
    assert all(torch.equal(saved[k], good[k]) for k in good if k in saved)


def test_cli_config_names_paths_and_errors(tmp_path):
    cfg = parse_args(["--config", "pretrain_50m", "--max-steps", "2000", "--resume", "auto",
                      "--batch-size", "4", "--grad-accum-steps", "3", "--seq-len", "64",
                      "--lr", "1e-3", "--out-dir", str(tmp_path)])
    assert (cfg.model, cfg.max_steps, cfg.batch_size, cfg.grad_accum_steps, cfg.seq_len, cfg.lr,
            cfg.out_dir) == ("50m", 2000, 4, 3, 64, 1e-3, str(tmp_path))
    assert cfg.warmup_steps == TrainConfig.load("pretrain_50m").warmup_steps  # YAML kept elsewhere
    y = tmp_path / "mine.yaml"
    y.write_text("phase: sft\nmodel: tiny\nmax_steps: 3\n")
    assert parse_args(["--config", str(y)]).phase == "sft"
    y.write_text("phase: sft\nmax_stepz: 3\n")
    with pytest.raises(ValueError, match=r"mine.yaml.*max_stepz"):
        TrainConfig.load(y)
    with pytest.raises(FileNotFoundError, match="pretrain_tiny"):
        TrainConfig.load("no_such_config")
    with pytest.raises(ValueError, match="grad_accum_steps"):
        TrainConfig(grad_accum_steps=0)


def test_cli_runs_end_to_end(tmp_path, capsys):
    """`python -m havoc_lite.train` (in-process) on the bundled YAMLs + real data when available."""
    from havoc_lite.config import CONFIGS_DIR
    for p in CONFIGS_DIR.glob("*.yaml"):
        TrainConfig.load(p)  # every shipped config validates
    with pytest.raises(ValueError, match="train_data"):
        Trainer(make_cfg(tmp_path, train_data=None))
    # The CLI turns a bad config or missing data into one line and exit code 2, not a traceback.
    from havoc_lite.train import main
    assert main(["--config", "no_such_config"]) == 2
    assert "no_such_config" in capsys.readouterr().err
