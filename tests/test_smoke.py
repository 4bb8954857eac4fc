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
    monkeypatch.setattr(smoke, "QUICK", dataclasses.replace(smoke.QUICK, pretrain_steps=2, n_train_traces=100))
    out = tmp_path / "smoke"
    assert smoke.main(["--quick", "--out", str(out), "--device", "cpu"]) == 1
    results = json.loads((out / "results.json").read_text())
    assert list(results["stages"]) == ["tokenizer", "pretrain"] and results["passed"] is False
    assert results["stages"]["tokenizer"]["passed"] and not results["stages"]["pretrain"]["passed"]
    assert results["stages"]["pretrain"]["loss_last"] > results["stages"]["pretrain"]["loss_first"] - 0.5
