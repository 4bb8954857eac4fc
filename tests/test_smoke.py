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
