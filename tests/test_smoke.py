"""The main job, `python -m havoc_lite.smoke --quick`, end to end in a fresh process."""
import json
import subprocess
import sys


def test_smoke_quick_runs_every_stage(tmp_path):
    out = tmp_path / "smoke"
    proc = subprocess.run([sys.executable, "-m", "havoc_lite.smoke", "--quick", "--out", str(out),
                           "--device", "cpu"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    stages = results["stages"]
    assert list(stages) == ["tokenizer", "pretrain", "resume", "sft", "prime", "gsm8k", "report"]
    assert all(s["passed"] for s in stages.values())
    # The resumed run continued exactly where the uninterrupted one was (bitwise on CPU).
    assert stages["resume"]["max_abs_loss_diff"] == 0.0
    assert stages["pretrain"]["loss_last"] < stages["pretrain"]["loss_first"]
    assert stages["sft"]["loss_last"] < stages["sft"]["loss_first"]
    assert (out / "loss_curve.png").stat().st_size > 1000
    prime = stages["prime"]
    # both sets scored in full, and the denied-tool figure is kept apart, labelled as such
    assert prime["in_template"]["scored"] == prime["problems"]["in_template"] == 12
    assert prime["heldout"]["scored"] == prime["problems"]["heldout"] == 12
    assert "denied_tool_in_template" in prime and stages["gsm8k"]["scored"] == 4


def test_a_stage_that_misses_its_criterion_fails_the_run(tmp_path, monkeypatch):
    """Two pretraining steps cannot lower the loss by 0.5 nats: the pretrain stage fails, the
    stages after it do not run, results.json says so, and the exit code is 1."""
    import dataclasses
    from havoc_lite import smoke
    monkeypatch.setattr(smoke, "SMOKE_QUICK", dataclasses.replace(smoke.SMOKE_QUICK, pretrain_steps=2, offline_traces=100))
    out = tmp_path / "smoke"
    assert smoke.main(["--quick", "--out", str(out), "--device", "cpu"]) == 1
    results = json.loads((out / "results.json").read_text())
    assert list(results["stages"]) == ["tokenizer", "pretrain"] and results["passed"] is False
    assert results["stages"]["tokenizer"]["passed"] and not results["stages"]["pretrain"]["passed"]
    assert results["stages"]["pretrain"]["loss_last"] > results["stages"]["pretrain"]["loss_first"] - 0.5


HYPER = ("model", "batch_size", "grad_accum_steps", "seq_len", "lr", "min_lr", "weight_decay", "grad_clip",
         "packing", "dtype", "eval_fraction", "domain_weights")


def test_one_set_of_smoke_hyperparameters(tmp_path):
    """The smoke run, the ablation's no-tool arm, the notebooks' smoke mode and the RAFT/GRPO demos'
    brief SFT all train with configs/pretrain_smoke.yaml and sft_smoke.yaml: only paths and step
    counts differ. A shortened run keeps every hyperparameter and a proportional warm-up."""
    import re
    import shlex
    from pathlib import Path
    from havoc_lite import colab
    from havoc_lite.config import TrainConfig
    from havoc_lite.sizes import SMOKE_QUICK, SMOKE_RUN
    from havoc_lite.smoke import Smoke, SmokeArgs
    from havoc_lite.train import parse_args
    pre, sft = TrainConfig.load("pretrain_smoke"), TrainConfig.load("sft_smoke")
    same = lambda a, b: {k: (getattr(a, k), getattr(b, k)) for k in HYPER if getattr(a, k) != getattr(b, k)}  # noqa: E731
    assert (pre.max_steps, sft.max_steps) == (SMOKE_RUN.pretrain_steps, SMOKE_RUN.sft_steps)
    smoke = Smoke(SmokeArgs(out=str(tmp_path / "s")))
    assert not same(smoke.pretrain_config(), pre) and not same(smoke.train_config("sft_smoke", 60), sft)
    short = sft.scaled_to(SMOKE_QUICK.sft_steps)
    assert (short.max_steps, short.warmup_steps) == (60, 6) and not same(short, sft)
    assert sft.scaled_to(600).warmup_steps == sft.warmup_steps
    run, sz = tmp_path / "run", colab.sizes(True)
    from havoc_lite.sizes import Sizes
    assert type(smoke.sizes) is type(sz) is type(colab.sizes(False)) is Sizes     # one set of sizes
    nb_sft = colab.sft_config(run, sz, tmp_path / "init", [tmp_path / "t.jsonl"])
    nb_pre = colab.pretrain_config(run, sz)
    assert not same(nb_sft, sft)
    assert same(nb_pre, pre) == {"domain_weights": ({"general": 0.7, "math": 0.3}, {"general": 0.2, "math": 0.8})}
    for script in ("raft_demo.sh", "grpo_demo.sh"):
        text = Path(__file__).parents[1].joinpath("scripts", script).read_text()
        cmd = re.search(r"python -m havoc_lite\.train (.*?--no-progress)", text, re.S).group(1)
        args = [a for a in shlex.split(cmd.replace("\\\n", " ")) if a]
        cfg = parse_args([a.replace("$run", str(tmp_path)).replace("$stop", "400") for a in args])
        assert not same(cfg, sft), script
        assert (cfg.max_steps, cfg.stop_at_step, cfg.warmup_steps) == (600, 400, sft.warmup_steps)
