"""The Colab notebooks, executed top to bottom with nbclient in smoke mode (HAVOC_SMOKE=1) on CPU.

One chain runs 00 → 06 in one run folder (each reads what the previous wrote), then 05 runs alone
in an empty folder (it must make its tokenizer, traces, pretrained and SFT models itself).
Any cell error fails the test with the cell's traceback.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NB_DIR = Path(__file__).parents[1] / "notebooks"
ORDER = ["00_smoke_local", "01_tokenizer", "02_synth_tool_traces", "03_pretrain", "04_sft", "05_eval_gsm8k", "06_rl"]


@pytest.fixture(scope="module")
def kernel():
    """The `python3` kernel spec, installed into this venv's prefix when missing (fresh venv)."""
    from jupyter_client.kernelspec import KernelSpecManager
    if "python3" not in KernelSpecManager().find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix"], check=True)
    return "python3"


def execute(name: str, run_dir: Path, kernel: str) -> float:
    """Run one notebook in `run_dir` (cwd and run folder); returns seconds. Raises on a cell error."""
    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
    env = {"HAVOC_SMOKE": "1", "HAVOC_RUN_DIR": str(run_dir), "WANDB_MODE": "disabled",
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)   # the kernel inherits this process's environment
    t0 = time.perf_counter()
    try:
        # "immediate": once every cell has run, kill the kernel rather than wait for a graceful
        # exit (a CI run once spent minutes there after 04's last cell).
        nbclient.NotebookClient(nb, kernel_name=kernel, timeout=400, shutdown_kernel="immediate",
                                resources={"metadata": {"path": str(run_dir)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        nbformat.write(nb, run_dir / f"{name}.executed.ipynb")   # for a look after a failure
    return time.perf_counter() - t0


def test_notebooks_are_built_from_build_py(tmp_path):
    """The committed .ipynb are exactly what build.py writes: no outputs, no execution counts."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("notebooks_build", NB_DIR / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    written = build.build(tmp_path)
    assert sorted(p.stem for p in written) == ORDER
    for p in written:
        assert p.read_text() == (NB_DIR / p.name).read_text(), f"{p.name}: run python notebooks/build.py"
        nb = nbformat.read(p, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code)
        assert "colab.setup()" in code[0].source                       # one set-up cell first
        assert 'os.environ.get("HAVOC_SMOKE") == "1"' in code[1].source  # then the parameters


@pytest.mark.timeout(900)
def test_notebooks_chain_in_smoke_mode(tmp_path, kernel):
    seconds = {name: round(execute(name, tmp_path, kernel), 1) for name in ORDER}
    print("notebook seconds:", seconds, "total", round(sum(seconds.values()), 1))
    results = json.loads((tmp_path / "smoke" / "results.json").read_text())
    assert set(results["stages"]) >= {"tokenizer", "pretrain", "resume", "sft", "prime", "gsm8k"}
    assert results["stages"]["resume"]["passed"]
    assert (tmp_path / "tokenizer" / "tokenizer.model").is_file()
    assert len(list((tmp_path / "data" / "traces").glob("*.jsonl"))) == 6
    for sub in ("pretrain", "sft", "polish"):
        assert (tmp_path / sub / "latest").is_file(), sub
    assert (tmp_path / "eval" / "gsm8k_samples.jsonl").stat().st_size > 0
    assert (tmp_path / "raft" / "stats.json").is_file()
    assert (tmp_path / "grpo" / "latest").is_file() and (tmp_path / "grpo" / "stats.json").is_file()


@pytest.mark.timeout(600)
def test_eval_notebook_runs_on_its_own(tmp_path, kernel):
    execute("05_eval_gsm8k", tmp_path, kernel)
    for made in ("tokenizer/tokenizer.model", "pretrain/latest", "sft/latest", "eval/gsm8k_samples.jsonl"):
        assert (tmp_path / made).is_file(), made
