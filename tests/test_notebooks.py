"""The Colab notebooks, executed top to bottom with nbclient in smoke mode (HAVOC_SMOKE=1) on CPU.

One chain runs 00 → 06 in one run folder (each reads what the previous wrote), then 05 runs alone
in an empty folder (it must make its tokenizer, traces, pretrained and SFT models itself).
Any cell error fails the test with the cell's traceback.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
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


def load(name: str, edits: tuple = ()):
    """A notebook with the (old, new) replacements `edits` applied to its cells' sources."""
    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
    for old, new in edits:
        for cell in nb.cells:
            cell.source = cell.source.replace(old, new)
    return nb


def execute(name: str, run_dir: Path, kernel: str, extra_env: dict | None = None,
            edits: tuple = ()) -> float:
    """Run one notebook in `run_dir` (cwd and run folder); returns seconds. Raises on a cell error.
    `extra_env` goes to the kernel's environment; `edits` are (old, new) replacements in the cells'
    sources (what a user does in a form, e.g. ticking a checkbox)."""
    nb = load(name, edits)
    env = {"HAVOC_SMOKE": "1", "HAVOC_RUN_DIR": str(run_dir), "WANDB_MODE": "disabled",
           "MPLBACKEND": "module://matplotlib_inline.backend_inline", **(extra_env or {})}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)   # the kernel inherits this process's environment
    t0 = time.perf_counter()
    try:
        # "immediate": once every cell has run, kill the kernel rather than wait for a graceful
        # exit (a CI run once spent minutes there after 04's last cell). A kernel that goes quiet
        # (a CI run once waited forever on a reply the idle kernel never sent, after 04's last
        # cells) is killed after `timeout` and the notebook run again from the top, as a user
        # re-runs after a disconnect: every notebook continues from what the first run saved.
        for attempt in (1, 2):
            try:
                nbclient.NotebookClient(nb, kernel_name=kernel, timeout=240, shutdown_kernel="immediate",
                                        resources={"metadata": {"path": str(run_dir)}}).execute()
                break
            except nbclient.exceptions.CellTimeoutError:
                if attempt == 2:
                    raise
                print(f"{name}: a cell got no reply within 240 s; the kernel is killed and the notebook run again")
                nb = load(name, edits)
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
        assert "colab.setup(RUN_NAME)" in code[0].source                # one set-up cell first
        assert 'os.environ.get("HAVOC_SMOKE") == "1"' in code[1].source  # then the parameters
        assert "#@param" in code[0].source and "#@param" in code[1].source  # Colab forms


class FakeAnthropicServer:
    """tests/synth_fake.Fake served over HTTP on localhost, so a notebook kernel's anthropic SDK
    reaches it through ANTHROPIC_BASE_URL (the batch results URL is pointed at it too)."""

    def __init__(self, fake):
        from http.server import BaseHTTPRequestHandler, HTTPServer
        from synth_fake import hx
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                request = hx.Request(self.command, outer.url + self.path, headers=dict(self.headers), content=body)
                response = fake(request)
                data = response.content.replace(b"https://api.anthropic.com", outer.url.encode())
                self.send_response(response.status_code)
                for k in ("content-type", "retry-after-ms"):
                    if k in response.headers:
                        self.send_header(k, response.headers[k])
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.timeout(900)
def test_notebooks_chain_in_smoke_mode(tmp_path, kernel, monkeypatch):
    """00 -> 05 in "Colab mode" (the fake google.colab: Drive mounted and flushed, the Anthropic key
    in Secrets), with Claude generation in 02 running in the kernel's event loop against a fake
    endpoint after the spend is confirmed."""
    from synth_fake import KEY, Fake, good_trace, message
    fake = Fake(lambda i, n: (200, message(good_trace(i))))
    server = FakeAnthropicServer(fake)
    (tmp_path / "secrets.json").write_text(json.dumps({"ANTHROPIC_API_KEY": KEY}))
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    colab_env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(FAKE_COLAB), os.environ.get("PYTHONPATH")])),
                 "HAVOC_DRIVE_ROOT": str(tmp_path / "drive"), "FAKE_COLAB_DRIVE": str(tmp_path / "store"),
                 "FAKE_COLAB_LOG": str(tmp_path / "colab.log"),
                 "FAKE_COLAB_SECRETS": str(tmp_path / "secrets.json"), "ANTHROPIC_BASE_URL": server.url}
    tick = (("CONFIRM_SPEND = False  #@param", "CONFIRM_SPEND = True  #@param"),)
    try:
        seconds = {name: round(execute(name, tmp_path, kernel, colab_env, tick), 1) for name in ORDER}
    finally:
        server.close()
    print("notebook seconds:", seconds, "total", round(sum(seconds.values()), 1))
    assert fake.keys == {KEY} and fake.batches                          # the key from Secrets, batches
    assert sum(1 for _ in open(tmp_path / "data" / "claude" / "arithmetic.jsonl")) >= 2   # kept traces
    executed = (tmp_path / "02_synth_tool_traces.executed.ipynb").read_text()
    assert KEY not in executed and "typical $" in executed
    assert (tmp_path / "colab.log").read_text().count("flush_and_unmount") == 3   # 03, 04, 05
    results = json.loads((tmp_path / "smoke" / "results.json").read_text())
    assert set(results["stages"]) >= {"tokenizer", "pretrain", "resume", "sft", "prime", "gsm8k"}
    assert results["stages"]["resume"]["passed"]
    assert (tmp_path / "tokenizer" / "tokenizer.model").is_file()
    assert len(list((tmp_path / "data" / "traces").glob("*.jsonl"))) == 6
    for sub in ("pretrain", "sft", "polish", "lora"):   # lora: 04's pretrained route (SmolLM2-135M GGUF)
        assert (tmp_path / sub / "latest").is_file(), sub
    assert (tmp_path / "lora_merged" / "config.json").is_file()
    assert (tmp_path / "eval" / "gsm8k_samples_lora_merged.jsonl").stat().st_size > 0
    for name in ("before_raft", "after_raft"):     # RAFT's model is evaluated again
        assert (tmp_path / "eval" / f"gsm8k_samples_{name}.jsonl").stat().st_size > 0
    assert (tmp_path / "raft" / "stats.json").is_file()
    assert (tmp_path / "grpo" / "latest").is_file() and (tmp_path / "grpo" / "stats.json").is_file()


@pytest.mark.timeout(600)
def test_eval_notebook_runs_on_its_own(tmp_path, kernel):
    execute("05_eval_gsm8k", tmp_path, kernel)
    for made in ("tokenizer/tokenizer.model", "pretrain/latest", "sft/latest",
                 "eval/gsm8k_samples_before_raft.jsonl", "eval/gsm8k_samples_after_raft.jsonl"):
        assert (tmp_path / made).is_file(), made


# --- Colab mode: a fresh runtime, a fake Drive, a disconnect ------------------------------------
FAKE_COLAB = Path(__file__).parent / "fake_colab"


def _fresh_colab_kernel(tmp: Path, env: dict) -> str:
    """A kernelspec (in tmp/jupyter, found through JUPYTER_PATH) whose kernel sees the fake
    google.colab and no installed havoc_lite (tests/fake_colab/fresh_kernel.py)."""
    spec = tmp / "jupyter" / "kernels" / "fresh_colab"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, str(FAKE_COLAB / "fresh_kernel.py"), "-f", "{connection_file}"],
        "display_name": "fresh Colab runtime (fake)", "language": "python", "env": env}))
    return "fresh_colab"


def _build_wheel(dest: Path) -> Path:
    """The kit as a wheel (no dependencies: the test venv has them), as a user puts it on Drive.
    Built from a copy, so setuptools' build/ and egg-info never land in the checkout."""
    root, src = Path(__file__).parents[1], dest.parent / "src_copy"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
    for name in ("havoc_lite", "synth"):
        shutil.copytree(root / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(dest), str(src)], check=True, cwd=src)
    shutil.rmtree(src)
    return next(dest.glob("havoc_lite-*.whl"))


@pytest.mark.timeout(600)
def test_pretrain_notebook_in_colab_survives_a_disconnect(tmp_path, monkeypatch):
    """Notebook 03 in "Colab mode": the set-up cell mounts the fake Drive and installs the kit from
    a wheel there; training is killed with the kernel in the middle of a checkpoint save (the
    runtime dies, its local disk is wiped); running the notebook again installs again, resumes from
    the last checkpoint on Drive and finishes, with the loss history of the whole run."""
    store, local = tmp_path / "store", tmp_path / "local"
    wheel = _build_wheel(store / "havoc_lite")
    for d in (store, local / "tmp", local / "site"):
        d.mkdir(parents=True, exist_ok=True)
    env = {"HAVOC_SMOKE": "1", "WANDB_MODE": "disabled", "MPLBACKEND": "module://matplotlib_inline.backend_inline",
           "HAVOC_DRIVE_ROOT": str(tmp_path / "drive"), "FAKE_COLAB_DRIVE": str(store),
           "FAKE_COLAB_LOG": str(tmp_path / "colab.log"), "TMPDIR": str(local / "tmp"),
           # the runtime's site-packages is local/site: pip installs there, offline, deps present
           "PIP_TARGET": str(local / "site"), "PIP_NO_DEPS": "1", "PIP_NO_INDEX": "1",
           "PYTHONPATH": os.pathsep.join([str(FAKE_COLAB), str(local / "site")]),
           # pause inside the final save (step 8) so the kernel can be killed there
           "HAVOC_LITE_SAVE_PAUSE_S": "120@8"}
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.delenv("HAVOC_RUN_DIR", raising=False)
    kernel = _fresh_colab_kernel(tmp_path, env)
    nb = nbformat.read(NB_DIR / "03_pretrain.ipynb", as_version=4)
    nb.cells[1].source = nb.cells[1].source.replace(
        'SOURCE = "MyDrive/havoc_lite/havoc_lite-0.1.0-py3-none-any.whl"',
        f'SOURCE = "MyDrive/havoc_lite/{wheel.name}"')
    run = store / "havoc_lite" / "runs" / "main"

    # 1. run until the kernel sits inside the step-8 save, then kill it (the runtime disconnects)
    client = nbclient.NotebookClient(nb, kernel_name=kernel, timeout=300, resources={"metadata": {"path": str(tmp_path)}})
    errors = []
    worker = threading.Thread(target=lambda: _run_catching(client, errors))
    worker.start()
    mid_save = local / "tmp" / "havoc_lite_staging" / "pretrain" / "step_000008.tmp" / "model.safetensors"
    deadline = time.time() + 300
    while not mid_save.is_file() and worker.is_alive() and time.time() < deadline:
        time.sleep(0.2)
    assert mid_save.is_file(), f"training never reached the step-8 save: {errors}"
    assert (local / "site" / "havoc_lite" / "__init__.py").is_file()   # installed from the wheel
    os.kill(client.km.provisioner.process.pid, signal.SIGKILL)
    worker.join(60)
    assert errors and "DeadKernel" in type(errors[0]).__name__, errors
    assert (run / "pretrain" / "latest").read_text().strip() == "step_000004"
    shutil.rmtree(local)                                        # a new runtime: local disk is empty
    (tmp_path / "drive" / "MyDrive").unlink()                   # ... and Drive is not mounted
    for d in (local / "tmp", local / "site"):
        d.mkdir(parents=True)

    # 2. run the whole notebook again: install again, resume from step 4, finish at step 8
    env.pop("HAVOC_LITE_SAVE_PAUSE_S")
    shutil.rmtree(tmp_path / "jupyter")
    _fresh_colab_kernel(tmp_path, env)
    nb2 = nbformat.read(NB_DIR / "03_pretrain.ipynb", as_version=4)
    nb2.cells[1].source = nb.cells[1].source
    nbclient.NotebookClient(nb2, kernel_name=kernel, timeout=300, shutdown_kernel="immediate",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    out = "".join(o.get("text", "") for c in nb2.cells if c.cell_type == "code" for o in c.outputs)
    assert "resumed from" in out and "step_000004 at step 4" in out, out[-2000:]
    assert (run / "pretrain" / "latest").read_text().strip() == "step_000008"
    assert "flush_and_unmount" in (tmp_path / "colab.log").read_text()
    assert str(tmp_path / "drive" / "MyDrive" / "havoc_lite" / "runs" / "main") in out


def _run_catching(client, errors: list) -> None:
    try:
        client.execute()
    except Exception as e:  # noqa: BLE001 - the killed kernel's error is what the test checks
        errors.append(e)
