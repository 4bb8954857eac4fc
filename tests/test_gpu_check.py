"""scripts/gpu_check.py in its --cpu-smoke form, so the GPU check cannot rot while no GPU runs it."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from havoc_lite import memory
from havoc_lite.config import PRESETS

SCRIPT = Path(__file__).parents[1] / "scripts" / "gpu_check.py"


def test_gpu_check_cpu_smoke_runs_every_part(tmp_path):
    out = tmp_path / "gpu.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--json", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = {r["run"].split(" (")[0]: r for r in json.loads(out.read_text())["results"]}
    train = res["train tiny"]
    assert train["tokens_per_s"] > 0 and 0 < train["mfu"] < 1 and train["dtype"] == "float32"
    gen = res["engine generation + tools"]
    # every row closed its calculator call, the engine ran it, and the result is the right product
    assert gen["tool_calls"] == gen["batch"] == gen["tool_ok"] == gen["first_call_right"]
    lora = res["LoRA SFT tiny base"]
    assert 0 < lora["trainable"] < lora["params"]                  # LoRA trains the adapters only
    assert "parts passed" in proc.stdout


def test_gpu_check_batch_is_what_the_planner_fits():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gc)
    for gpu in ("t4-16", "a100-40", "h200-141"):
        b = gc.pick_batch(PRESETS["1b"], 2048, gpu, 8)
        assert b == 1 or memory.plan(PRESETS["1b"], "pretrain", gpu, b, 2048, suggest=False).fits
        assert b == 8 or not memory.plan(PRESETS["1b"], "pretrain", gpu, 2 * b, 2048, suggest=False).fits


def test_gpu_check_decode_run_on_the_cpu():
    """The GPU check's eager-against-compiled decode part (GPU only in the script), run here at a
    toy size so that it cannot rot: both paths generate, and they pick the same greedy tokens."""
    import torch
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gc)
    r = gc.decode_run(torch.device("cpu"), "tiny", batch=2, new_tokens=8, prompt_len=5,
                      overrides=dict(n_layers=2, vocab_size=256, max_seq_len=64))
    assert r["dtype"] == "float32" and r["rows_with_same_tokens"] == "2/2"
    assert r["eager_tokens_per_s"] > 0 and r["compiled_tokens_per_s"] > 0 and r["compile_s"] > 0
