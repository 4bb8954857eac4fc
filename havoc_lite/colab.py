"""Helpers the notebooks call, so that no logic lives only in a notebook.

    from havoc_lite import colab
    run = colab.setup("main")                # MyDrive/havoc_lite/runs/main in Colab, ./checkpoints/main elsewhere
    sz = colab.sizes(SMOKE)                  # tiny CPU sizes or the A100 sizes
    tok = colab.ensure_tokenizer(run, sz)    # 01 writes it; later notebooks load it (or, in smoke
                                             # mode, train a small one when it is missing)

The run folder is how the notebooks chain (each writes what the next one reads):

    <run>/tokenizer/                   01  sentencepiece model + special tokens
    <run>/data/traces/<topic>.jsonl    02  verified tool traces (offline generators, GSM8K)
    <run>/data/claude/<topic>.jsonl    02  traces from Claude (when ANTHROPIC_API_KEY is set)
    <run>/data/pretrain_text/, shards/ 03  text by domain and its token shards
    <run>/pretrain/  step_XXXXXX/ latest   03  checkpoints (resume: re-run the cell)
    <run>/sft/, <run>/polish/          04  SFT on tool traces, then the polish pass
    <run>/eval/, <run>/raft/           05  GSM8K results, RAFT cycles, success criteria

`ensure_*` functions return what a notebook needs: read from the run folder when an earlier
notebook made it, else (when `create` is true, the default in smoke mode) made cheaply with the
package's own functions, else a FileNotFoundError naming the notebook to run first.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

from .config import TrainConfig
from .sizes import A100, NOTEBOOK_CPU, Sizes

ASSETS = Path(__file__).parent / "assets"


# --- set-up -----------------------------------------------------------------------------------
def in_colab() -> bool:
    """True inside a Google Colab runtime (the `google.colab` module exists)."""
    import importlib.util
    try:
        return importlib.util.find_spec("google.colab") is not None
    except ModuleNotFoundError:   # no `google` package at all
        return False


def drive_root() -> Path:
    """Where Google Drive is mounted: /content/drive, or $HAVOC_DRIVE_ROOT (another mount point;
    the tests' fake Drive). `checkpoint.is_drive_path` reads the same variable."""
    return Path(os.environ.get("HAVOC_DRIVE_ROOT", "/content/drive"))


def mount_drive() -> Optional[Path]:
    """In Colab, mount Google Drive (once; a mounted Drive is left as it is) and return the
    "My Drive" folder; elsewhere None."""
    if not in_colab():
        return None
    root = drive_root()
    if not (root / "MyDrive").is_dir():
        from google.colab import drive  # type: ignore[import-not-found]
        drive.mount(str(root))
    return root / "MyDrive"


def flush_drive() -> None:
    """In Colab, write every pending change to Drive and unmount it (`drive.flush_and_unmount`), so
    nothing a training cell saved is lost if the runtime goes next; `setup()` or `mount_drive()`
    mounts it again. Elsewhere (or when Drive is not mounted) nothing happens."""
    if in_colab() and (drive_root() / "MyDrive").is_dir():
        from google.colab import drive  # type: ignore[import-not-found]
        drive.flush_and_unmount()


def setup(run_name: str = "main", run_dir: Optional[str] = None) -> Path:
    """The run folder, created: `run_dir`, else $HAVOC_RUN_DIR, else in Colab
    `MyDrive/havoc_lite/runs/<run_name>` (Drive is mounted first, so checkpoints survive a
    disconnect; the code lives apart, e.g. a wheel in `MyDrive/havoc_lite/`), else
    `./checkpoints/<run_name>`. Prints the torch version, the device and its memory."""
    import torch
    if run_dir is None:
        run_dir = os.environ.get("HAVOC_RUN_DIR")
    my_drive = mount_drive()
    if run_dir is None and my_drive is not None:
        run_dir = str(my_drive / "havoc_lite" / "runs" / run_name)
    run = Path(run_dir if run_dir is not None else Path("checkpoints") / run_name).absolute()
    run.mkdir(parents=True, exist_ok=True)
    dev = device()
    gpu = ""
    if dev == "cuda":
        props = torch.cuda.get_device_properties(0)
        gpu = (f" ({props.name}, {props.total_memory / 2**30:.1f} GiB, compute capability "
               f"{props.major}.{props.minor}, autocast {_amp_name()})")
    print(f"havoc_lite run folder: {run}\ntorch {torch.__version__}, device {dev}{gpu}")
    return run


def _amp_name() -> str:
    import torch
    from .precision import resolve_dtype
    return {torch.bfloat16: "bf16", torch.float16: "fp16 + GradScaler"}.get(
        resolve_dtype("auto", torch.device("cuda")), "fp32")


def check_runtime(sz: "Sizes") -> None:
    """Warn (one line) when full-size work is about to run on a CPU runtime: at A100 sizes the
    training cells would take days there. Smoke sizes are meant for a CPU."""
    if sz.preset != "tiny" and device() == "cpu":
        print(f"WARNING: the {sz.preset} sizes are meant for a GPU, but this runtime has none. In "
              "Colab: Runtime > Change runtime type > GPU (T4, L4 or A100), then run again; or set "
              "HAVOC_SMOKE=1 for the tiny CPU sizes.")


def gpu_memory(label: str = "") -> dict:
    """Print and return the GPU memory now: allocated, reserved and peak allocated by torch, and the
    card's free / total (GiB, from `torch.cuda.mem_get_info`). On a CPU runtime it says so and
    returns {}."""
    import torch
    if not torch.cuda.is_available():
        print(f"GPU memory{' ' + label if label else ''}: no GPU on this runtime")
        return {}
    free, total = torch.cuda.mem_get_info()
    m = {"allocated_gib": torch.cuda.memory_allocated() / 2**30,
         "reserved_gib": torch.cuda.memory_reserved() / 2**30,
         "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
         "free_gib": free / 2**30, "total_gib": total / 2**30}
    print(f"GPU memory{' ' + label if label else ''}: " + ", ".join(
        f"{k[:-4].replace('_', ' ')} {v:.2f} GiB" for k, v in m.items()))
    return m


PLANNER_GPUS = (("T4", "t4-16"), ("L4", "l4-24"), ("A10", "a10-24"), ("V100", "v100-16"),
                ("H100", "h100-80"), ("H200", "h200-141"), ("L40S", "l40s-48"))


def planner_gpu() -> Optional[str]:
    """This runtime's GPU as a `memory.GPUS` name ("t4-16", "a100-40", ...), or None (CPU or an
    unknown card)."""
    import torch
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    if "A100" in name:
        return "a100-80" if torch.cuda.get_device_properties(0).total_memory > 50 * 2**30 else "a100-40"
    return next((key for tag, key in PLANNER_GPUS if tag in name), None)


def time_estimate(cfg, what: str = "this cell") -> str:
    """A one-line time estimate for a training `TrainConfig` on this runtime, printed and returned:
    6·N·tokens FLOPs at an assumed 40 % MFU on this GPU (`memory.train_hours`), an estimate, not a
    measurement; the live monitor then shows the measured ETA. On a CPU no figure is given."""
    from .config import ModelConfig
    from .memory import train_hours
    steps = cfg.max_steps
    tokens = steps * cfg.batch_size * cfg.grad_accum_steps * cfg.seq_len
    gpu = planner_gpu()
    if gpu is None:
        line = (f"{what}: {steps:,} steps, {tokens:,} tokens; no GPU estimate on this runtime "
                "(the live monitor shows the measured ETA)")
    else:
        model_cfg = cfg.model_config() if cfg.model else ModelConfig()
        minutes = 60 * train_hours(model_cfg, tokens, gpu)
        line = (f"{what}: {steps:,} steps, {tokens:,} tokens: about {minutes:.1f} min of compute on a "
                f"{gpu} at an assumed 40 % MFU, plus data loading, evaluation and checkpoint copies")
    print(line)
    return line


def device() -> str:
    """"cuda" when a GPU is there, else "mps" on Apple silicon, else "cpu"."""
    from .distributed import resolve_device
    return resolve_device("auto").type


def tools():
    """`tools.shared_registry()`: one per process, so its worker (scipy, sympy) starts once."""
    from .tools import shared_registry
    return shared_registry()


# --- sizes ------------------------------------------------------------------------------------
OFFLINE_TOPICS = ("arithmetic", "stats_tests", "algebra_calculus", "doe", "retrieval")


def sizes(smoke: bool) -> Sizes:
    """`sizes.NOTEBOOK_CPU` (every notebook on a CPU in minutes) or `sizes.A100` (one Colab A100,
    40 GB: the 50M preset, hours of training); a copy, so a notebook may change fields."""
    return replace(NOTEBOOK_CPU if smoke else A100)


# --- the run folder ---------------------------------------------------------------------------
def _need(path: Path, what: str, notebook: str) -> FileNotFoundError:
    return FileNotFoundError(f"{path}: no {what}; run notebooks/{notebook} first (or set "
                             "HAVOC_SMOKE=1 to make a small one here)")


def tokenizer_texts(run: Path, sz: Sizes) -> list[str]:
    """Texts the tokenizer learns from: bundled Tiny Shakespeare and GSM8K, rendered offline
    tool traces (so markup-heavy text is well covered), and the hub pretraining text if written."""
    from synth.offline import generate_offline
    from .data import render_trace
    traces = generate_offline("arithmetic", max(200, sz.offline_traces), seed=100, registry=tools())
    texts = [t["question"] + "\n" + render_trace(t) for t in traces]
    for line in open(ASSETS / "gsm8k_train_500.jsonl", encoding="utf-8"):
        g = json.loads(line)
        texts.append(g["question"] + "\n" + g["answer"])
    texts.append((ASSETS / "tinyshakespeare_200k.txt").read_text(encoding="utf-8"))
    hub = run / "data" / "pretrain_text" / "general" / "fineweb_edu.jsonl"
    if hub.is_file():
        texts += [json.loads(line)["text"] for line in open(hub, encoding="utf-8")]
    return texts


def ensure_tokenizer(run: Path, sz: Sizes, create: Optional[bool] = None, retrain: bool = False):
    """The run's `HavocTokenizer` (`<run>/tokenizer`), trained on `tokenizer_texts` when absent
    (or `retrain`) and `create` (default: smoke sizes only)."""
    from .tokenizer import HavocTokenizer, train_tokenizer
    folder = Path(run) / "tokenizer"
    if (folder / "tokenizer.model").is_file() and not retrain:
        return HavocTokenizer.load(folder)
    if not (create if create is not None else sz.preset == "tiny"):
        raise _need(folder, "tokenizer", "01_tokenizer.ipynb")
    return train_tokenizer(tokenizer_texts(Path(run), sz), folder, vocab_size=sz.vocab_size)


def write_offline_traces(run: Path, sz: Sizes, topics: Sequence[str] = OFFLINE_TOPICS,
                         seed: int = 0) -> dict[str, Path]:
    """`sz.offline_traces` verified traces per topic (synth.offline) plus all bundled GSM8K train
    problems as calculator traces, one JSONL per topic in `<run>/data/traces/`. Existing files
    are kept. Returns {topic: path}."""
    from synth.offline import generate_offline, write_jsonl
    from .data import gsm8k_to_trace
    out = Path(run) / "data" / "traces"
    paths = {}
    for topic in topics:
        path = out / f"{topic}.jsonl"
        if not path.is_file():
            write_jsonl(generate_offline(topic, sz.offline_traces, seed=seed, registry=tools()), path)
        paths[topic] = path
    path = out / "gsm8k.jsonl"
    if not path.is_file():
        gsm = [json.loads(line) for line in open(ASSETS / "gsm8k_train_500.jsonl", encoding="utf-8")]
        write_jsonl([gsm8k_to_trace(g) for g in gsm], path)
    paths["gsm8k"] = path
    return paths


def trace_files(run: Path, sz: Sizes, create: Optional[bool] = None) -> list[Path]:
    """Every trace JSONL of the run (`data/traces/` and `data/claude/`); written by
    `write_offline_traces` when there is none and `create` (default: smoke sizes)."""
    data = Path(run) / "data"
    files = sorted((data / "traces").glob("*.jsonl")) + sorted((data / "claude").glob("*.jsonl"))
    files = [f for f in files if not f.name.endswith((".ledger.jsonl",)) and f.stat().st_size]
    if files:
        return files
    if not (create if create is not None else sz.preset == "tiny"):
        raise _need(data / "traces", "tool traces", "02_synth_tool_traces.ipynb")
    return list(write_offline_traces(run, sz).values())


def write_general_text(run: Path, sz: Sizes) -> Path:
    """`<run>/data/pretrain_text/general/`: Tiny Shakespeare (bundled) and, at A100 sizes,
    `sz.pretrain_docs` FineWeb-Edu documents streamed from the hub (written to a temp file, then
    renamed, so an interrupted download is redone). Files already there are kept."""
    general = Path(run) / "data" / "pretrain_text" / "general"
    general.mkdir(parents=True, exist_ok=True)
    if not (general / "shakespeare.txt").is_file():
        shutil.copy(ASSETS / "tinyshakespeare_200k.txt", general / "shakespeare.txt")
    hub = general / "fineweb_edu.jsonl"
    if sz.pretrain_docs and not hub.is_file():
        import datasets
        from tqdm.auto import tqdm
        ds = datasets.load_dataset("HuggingFaceFW/fineweb-edu", "sample-10BT", split="train", streaming=True)
        tmp = hub.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for i, row in enumerate(tqdm(ds, total=sz.pretrain_docs, desc="fineweb-edu")):
                if i >= sz.pretrain_docs:
                    break
                f.write(json.dumps({"text": row["text"]}, ensure_ascii=False) + "\n")
        tmp.rename(hub)
    return general


def write_pretraining_text(run: Path, sz: Sizes) -> Path:
    """`<run>/data/pretrain_text/`: `write_general_text` (general) plus GSM8K train problems and
    the run's rendered tool traces (math). Files already there are kept."""
    from .data import render_trace
    raw = write_general_text(run, sz).parent
    (raw / "math").mkdir(parents=True, exist_ok=True)
    math = raw / "math" / "gsm8k_and_traces.jsonl"
    if not math.is_file():
        with open(math, "w", encoding="utf-8") as f:
            for line in open(ASSETS / "gsm8k_train_500.jsonl", encoding="utf-8"):
                g = json.loads(line)
                f.write(json.dumps({"text": g["question"] + "\n" + g["answer"]}) + "\n")
            for path in (Path(run) / "data" / "traces").glob("*.jsonl"):
                for line in open(path, encoding="utf-8"):
                    t = json.loads(line)
                    f.write(json.dumps({"text": t["question"] + "\n" + render_trace(t)}) + "\n")
    return raw


def ensure_shards(run: Path, sz: Sizes, tokenizer) -> dict:
    """Token shards of `write_pretraining_text` in `<run>/data/shards` (the index dict). A
    complete index for the same tokenizer and files is reused without work."""
    from .data import prepare_pretraining
    return prepare_pretraining(write_pretraining_text(run, sz), tokenizer, Path(run) / "data" / "shards")


def _config(name: str, run: Path, sz: Sizes, max_steps: int, **fields):
    """`configs/<name>.yaml` for `max_steps` (`TrainConfig.scaled_to`: a shorter warm-up), with the
    run's paths and the smoke mode's quiet settings; `fields` override."""
    cfg = TrainConfig.load(name).scaled_to(max_steps)
    base = dict(model=sz.preset, tokenizer=str(Path(run) / "tokenizer"), raw_data=None,
                eval_data=None, device="auto", resume="auto", wandb_mode="auto")
    if sz.preset == "tiny":   # CPU smoke: no W&B, quick evals, quiet logs
        base.update(wandb_mode="disabled", eval_batches=2, log_every=max(1, sz.save_every))
    return replace(cfg, **{**base, **fields})


def pretrain_config(run: Path, sz: Sizes, **fields):
    """`TrainConfig` for notebook 03: `sz.pretrain_config` with the run's paths,
    `out_dir=<run>/pretrain`, `resume="auto"` (re-running continues from `latest`)."""
    return _config(sz.pretrain_config, run, sz, sz.pretrain_steps, train_data=str(Path(run) / "data" / "shards"),
                   out_dir=str(Path(run) / "pretrain"), domain_weights={"general": 0.7, "math": 0.3},
                   save_every=sz.save_every, eval_every=0 if sz.preset == "tiny" else 250, **fields)


def latest_model(out_dir: Path) -> Optional[Path]:
    """The newest step folder of a checkpoint out_dir whose sha256 sums hold (as resume checks
    them: a folder cut off by a disconnect is skipped with a warning and an older one taken), a
    plain model folder given directly, or None."""
    from . import checkpoint as ckpt
    out_dir = Path(out_dir)
    if (out_dir / "model.safetensors").is_file():
        if (out_dir / "meta.json").is_file():
            ckpt.verify_checkpoint(out_dir)
        return out_dir
    return ckpt.find_resumable(out_dir)


def ensure_pretrained(run: Path, sz: Sizes, create: Optional[bool] = None) -> Path:
    """The pretrained model folder (`<run>/pretrain` latest); in smoke mode trained here when
    missing (tokenizer, shards and `sz.pretrain_steps` steps)."""
    found = latest_model(Path(run) / "pretrain")
    if found is not None:
        return found
    if not (create if create is not None else sz.preset == "tiny"):
        raise _need(Path(run) / "pretrain", "pretrained checkpoint", "03_pretrain.ipynb")
    from .train import Trainer
    tok = ensure_tokenizer(run, sz, create=True)
    ensure_shards(run, sz, tok)
    hist = Trainer(pretrain_config(run, sz, progress=False), tokenizer=tok).train()
    return Path(hist["checkpoint"])


def sft_config(run: Path, sz: Sizes, init_from: Path, train_files: Sequence[Path], **fields):
    """`TrainConfig` for SFT on tool traces (notebook 04): `sz.sft_config` with the run's paths."""
    n = sz.sft_steps
    return _config(sz.sft_config, run, sz, n, init_from=str(init_from),
                   train_data=",".join(str(p) for p in train_files), out_dir=str(Path(run) / "sft"),
                   save_every=max(1, min(250, n)), eval_every=max(1, min(250, n)), **fields)


def write_polish_data(run: Path, sz: Sizes) -> Path:
    """`<run>/data/polish.jsonl` of clean chat conversations: at A100 sizes `sz.polish_examples`
    from SlimOrca (hub) plus GSM8K chats; in smoke sizes the bundled GSM8K problems as chats."""
    from .data import load_hub_sft, record_to_messages
    path = Path(run) / "data" / "polish.jsonl"
    if path.is_file():
        return path
    chats = [record_to_messages(json.loads(line), "gsm8k", where=f"gsm8k line {i}")
             for i, line in enumerate(open(ASSETS / "gsm8k_train_500.jsonl", encoding="utf-8"), 1)]
    chats = chats[:sz.polish_examples]
    if sz.preset != "tiny":
        chats += load_hub_sft("slimorca", limit=sz.polish_examples)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in chats),
                   encoding="utf-8")
    tmp.rename(path)
    return path


def polish_config(run: Path, sz: Sizes, init_from: Path, **fields):
    """`TrainConfig` for the polish pass (notebook 04): low lr, short, on `write_polish_data`."""
    n = sz.polish_steps
    return _config(sz.polish_config, run, sz, n, model=sz.preset, init_from=str(init_from),
                   train_data=str(write_polish_data(run, sz)), out_dir=str(Path(run) / "polish"),
                   seq_len=sz.sft_seq_len, save_every=n, eval_every=n, warmup_steps=max(1, n // 10), **fields)


def ensure_chat_model(run: Path, sz: Sizes, create: Optional[bool] = None) -> Path:
    """The model to evaluate: `<run>/polish`, else `<run>/sft` (latest); in smoke mode a short SFT
    from `ensure_pretrained` when neither exists."""
    for sub in ("polish", "sft"):
        found = latest_model(Path(run) / sub)
        if found is not None:
            return found
    if not (create if create is not None else sz.preset == "tiny"):
        raise _need(Path(run) / "sft", "SFT checkpoint", "04_sft.ipynb")
    from .train import Trainer
    init = ensure_pretrained(run, sz, create=True)
    cfg = sft_config(run, sz, init, trace_files(run, sz, create=True), progress=False)
    return Path(Trainer(cfg).train()["checkpoint"])


def latest_raft_model(raft_dir: Path) -> Optional[Path]:
    """The weights of the last finished RAFT cycle in `raft_dir` (`cycle_NN/` with a stats.json
    and a checkpoint that verifies), or None when no cycle trained anything."""
    cycles = sorted(Path(raft_dir).glob("cycle_[0-9][0-9]"), reverse=True)
    for cycle in cycles:
        if (cycle / "stats.json").is_file():
            found = latest_model(cycle)
            if found is not None:
                return found
    return None


def headline(summary: dict) -> dict:
    """The headline figures of an `evaluate_gsm8k` summary as one flat dict (accuracy and pass@k per
    answer check, tool use rate), for a before / after table."""
    m, out = summary["metrics"], {}
    for name, v in m.items():
        if isinstance(v, dict) and "accuracy" in v:
            for col in ["accuracy"] + [f"pass@{k}" for k in summary["k"]]:
                if col in v:
                    out[f"{name} {col}"] = v[col]
    out["tool use rate"] = m["tools"]["use_rate"]
    return out


def load_model(folder: Path, tokenizer_dir: Optional[Path] = None):
    """(HavocModel in eval mode, HavocTokenizer) for a model folder or checkpoint out_dir; the
    tokenizer is looked up next to it unless given (`loading.load_model_and_tokenizer`)."""
    from .loading import load_model_and_tokenizer
    model, tok, _ = load_model_and_tokenizer(str(folder), str(tokenizer_dir) if tokenizer_dir else None)
    return model, tok


from .colab_pretrained import (PRETRAINED_BASES, choose_quantize, load_pretrained_route_model, lora_config, merge_and_export, pretrained_base)  # noqa: E402,F401

# What a notebook shows (plots, tables, the live training view, the PRIME widget) lives in
# colab_display; the notebooks reach it through this module, their one entry point.
from .colab_display import (LiveMonitor, history_frame, memory_frame, plot_history,  # noqa: E402,F401
                            prime_demo, prime_frame)
