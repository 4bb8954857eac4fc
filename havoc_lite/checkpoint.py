"""Atomic, verified checkpoints (layout in docs/architecture.md).

```
<out_dir>/step_000500/  model.safetensors  config.json  train_state.pt  meta.json
<out_dir>/latest        the name of the newest complete step folder
```
A save writes `step_X.tmp/`, fsyncs every file, records its sha256 in `meta.json`, renames the
folder to `step_X` and only then points `latest` at it (temp file + rename) and removes folders
beyond `keep_last`. A crash at any moment therefore leaves either the old set of checkpoints or
the old set plus one complete new one; a stale `*.tmp` folder is swept at the next save.

Google Drive mounts (`/content/drive/...`) cache writes locally and upload later, so a
disconnected runtime can leave a file missing or truncated there. With a `staging_dir`, the
checkpoint is written and verified on local disk first and then copied to `out_dir` with the same
tmp-folder + rename steps, and verified again. Resume always re-checks the sha256 sums.
A verified copy on a Drive mount is only verified against Drive's local cache, which uploads in
the background; so on Drive the previous step folder is kept one save longer than `keep_last`
asks (with keep_last=1, a runtime that dies during a copy or its upload still leaves the previous
checkpoint to resume from). A full Drive (ENOSPC / EDQUOT) is reported in one message and the
checkpoint stays on local disk; training goes on.

Weights are safetensors (no pickle); `train_state.pt` holds only tensors and plain Python types and
loads with `torch.load(..., weights_only=True)`.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

from .config import ModelConfig
from .errors import HavocError, ResumeError

STEP_RE = re.compile(r"^step_(\d+)$")
FILES = ("model.safetensors", "config.json", "train_state.pt")
DRIVE_PREFIXES = ("/content/drive", "/gdrive")
# Another Drive mount point (e.g. the tests' fake Drive, or a Drive mounted elsewhere).
DRIVE_ROOT_ENV = "HAVOC_DRIVE_ROOT"
# "Disk full" and "quota exceeded": what a full Google Drive raises through its mount.
FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# Test hook: "SECONDS" or "SECONDS@STEP" to sleep inside a save after model.safetensors is written
# (lets a test kill the process mid-save). Never set in normal use.
PAUSE_ENV = "HAVOC_LITE_SAVE_PAUSE_S"
# ModelConfig fields a resumed run may change: none of them changes what the weights mean
# (dropout is off at inference, initializer_range acts only at init, RoPE has no learned positions).
RESUME_FREE_FIELDS = ("dropout", "initializer_range", "max_seq_len")


class CheckpointError(HavocError, RuntimeError):
    """A checkpoint folder is missing files or its sha256 sums do not hold (a user-facing error:
    the command lines print it as one line and exit 2)."""


def check_writable(folder: str | Path, what: str = "--out-dir") -> Path:
    """Create `folder` if needed and prove it writable by writing and removing a small file, so a
    run learns at start, not at its first save after the compute, that it cannot save.

    Raises:
        HavocError: one line naming `what`, the folder and the reason (permission, read-only file
            system, a file in the way, disk full).
    """
    folder = Path(folder)
    probe = folder / f".write_test_{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        raise HavocError(f"{what} {folder} is not writable ({e.strerror or e}); "
                         "choose another folder") from None
    return folder


def tokenizer_identity(tokenizer: Any) -> Optional[str]:
    """sha256 naming a tokenizer's vocabulary: `tokenizer.identity` when it has one (HFTokenizer),
    else the sha256 of its sentencepiece model file (HavocTokenizer); None when neither exists."""
    ident = getattr(tokenizer, "identity", None)
    if isinstance(ident, str):
        return ident
    proto = getattr(tokenizer, "_model_proto", None)
    if isinstance(proto, (bytes, bytearray)):
        return hashlib.sha256(proto).hexdigest()
    return None


def check_resumable(folder: str | Path, model_config: ModelConfig,
                    tokenizer_sha256: Optional[str] = None) -> None:
    """Refuse to resume `folder` into a run with another model or tokenizer.

    Tensor shapes can match while the model differs (8 heads of 16 instead of 4 of 32, another
    rope_theta), and two tokenizers can share a vocab size: either way the run would go on and
    train nonsense. So the checkpoint's config.json must equal the run's ModelConfig field for
    field, and the tokenizer sha256 recorded in meta.json (when both sides have one) must equal
    the run's.

    Raises:
        ResumeError: one line naming the folder and the fields (or the tokenizer) that differ.
    """
    folder = Path(folder)
    try:
        saved = ModelConfig.load_json(folder / "config.json").to_dict()
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{folder}: config.json unreadable ({e})") from None
    run = model_config.to_dict()
    diff = [f"{k}={saved.get(k)!r} (this run: {run.get(k)!r})" for k in sorted(set(saved) | set(run))
            if saved.get(k) != run.get(k) and k not in RESUME_FREE_FIELDS]
    if diff:
        raise ResumeError(f"resume refused: {folder} holds another model: " + ", ".join(diff)
                          + ". Use the checkpoint's model settings, or --resume none / another "
                          "--out-dir to start a new run")
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        meta = {}
    saved_tok = meta.get("tokenizer_sha256")
    if saved_tok and tokenizer_sha256 and saved_tok != tokenizer_sha256:
        raise ResumeError(f"resume refused: {folder} was trained with another tokenizer (sha256 "
                          f"{saved_tok[:12]}, this run's {tokenizer_sha256[:12]}). Pass the "
                          "checkpoint's tokenizer, or --resume none / another --out-dir")


def repair_latest(out_dir: str | Path, folder: str | Path) -> bool:
    """Point `<out_dir>/latest` at `folder` (a verified step folder inside out_dir) when it is
    missing or names anything else, so tools that follow `latest` (eval, chat) find the
    checkpoint a run resumed from. Returns True when it was rewritten."""
    out_dir, folder = Path(out_dir), Path(folder)
    if folder.parent.resolve() != out_dir.resolve():
        return False
    latest = out_dir / "latest"
    try:
        if latest.read_text().strip() == folder.name:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    tmp = out_dir / "latest.tmp"
    tmp.write_text(folder.name + "\n")
    _fsync_file(tmp)
    os.replace(tmp, latest)
    _fsync_dir(out_dir)
    return True


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    # Makes a rename durable; not possible on every filesystem/OS (e.g. Windows), so best effort.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _test_pause(step: int) -> None:
    """Sleep inside a save when PAUSE_ENV is "SECONDS" or "SECONDS@STEP" (this step only)."""
    spec = os.environ.get(PAUSE_ENV, "")
    if not spec:
        return
    seconds, _, at = spec.partition("@")
    if not at or int(at) == step:
        time.sleep(float(seconds))


def is_drive_path(path: str | Path) -> bool:
    """True for a Google Drive mount in Colab (or under $HAVOC_DRIVE_ROOT), where writes should be
    staged on local disk. The path is checked as given and with links resolved."""
    roots = DRIVE_PREFIXES + ((os.environ[DRIVE_ROOT_ENV],) if os.environ.get(DRIVE_ROOT_ENV) else ())
    roots = tuple(os.path.abspath(r) for r in roots)
    return any(p.startswith(roots) for p in (os.path.abspath(path), str(Path(path).resolve())))


def _write_model_files(folder: Path, model_state: dict[str, torch.Tensor], model_config: ModelConfig) -> None:
    """model.safetensors + config.json as `HavocModel.save_pretrained` writes them (tied head once)."""
    from safetensors.torch import save_file
    state = {k: v.detach().contiguous().cpu() for k, v in model_state.items()}
    if model_config.tie_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    model_config.save_json(folder / "config.json")


def _finish_folder(tmp: Path, final: Path, out_dir: Path, keep_last: int) -> None:
    """fsync + rename tmp -> final, point `latest` at it, then prune old step folders."""
    _fsync_dir(tmp)
    if final.exists():  # re-saving the same step (e.g. a final save right after a periodic one)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(out_dir)
    latest_tmp = out_dir / "latest.tmp"
    latest_tmp.write_text(final.name + "\n")
    _fsync_file(latest_tmp)
    os.replace(latest_tmp, out_dir / "latest")
    _fsync_dir(out_dir)
    # Prune only folders older than the new one: after a resume from an older checkpoint, newer
    # (possibly corrupted) folders are overwritten as training reaches their step again.
    older = sorted((p for p in list_step_dirs(out_dir) if _step_of(p) < _step_of(final)),
                   key=_step_of, reverse=True)
    for old in older[max(keep_last - 1, 0):]:
        shutil.rmtree(old, ignore_errors=True)


def _sweep_tmp(out_dir: Path) -> None:
    for p in out_dir.glob("step_*.tmp"):
        shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(out_dir: str | Path, step: int, model_state: dict[str, torch.Tensor],
                    model_config: ModelConfig, train_state: dict[str, Any],
                    meta: Optional[dict[str, Any]] = None, keep_last: int = 3,
                    staging_dir: Optional[str | Path] = None) -> Path:
    """Write `<out_dir>/step_{step:06d}/` atomically and return its path.

    Args:
        model_state: full (unsharded) model state dict; tensors are copied to CPU.
        model_config: written as config.json, so the folder is a `HavocModel.from_pretrained` folder.
        train_state: optimizer, step, RNG states, data position, ... (tensors and plain types only;
            it must load with `torch.load(weights_only=True)`).
        meta: extra JSON-able fields for meta.json (step, loss, train config); `files` (sha256 of each
            file) is added here.
        keep_last: step folders to keep (older ones are removed after the new one is complete).
        staging_dir: write and verify here first, then copy to `out_dir` (for Google Drive);
            "auto" stages in the system temp folder only when `out_dir` is on a Drive mount.

    Returns:
        The new step folder: in `out_dir`, or, when a staged copy found `out_dir` full (ENOSPC /
        EDQUOT), in `staging_dir` (a message on stderr says so; nothing in `out_dir` changed).

    Raises:
        CheckpointError: the staged copy or the copy in `out_dir` fails verification.
        OSError: the disk is full or not writable (the previous checkpoints are untouched).
    """
    out_dir = Path(out_dir)
    if staging_dir == "auto":
        staging_dir = (Path(os.environ.get("TMPDIR", "/tmp")) / "havoc_lite_staging" / out_dir.name
                       if is_drive_path(out_dir) else None)
    target = Path(staging_dir) if staging_dir is not None else out_dir
    target.mkdir(parents=True, exist_ok=True)
    _sweep_tmp(target)
    name = step_dir_name(step)
    tmp = target / f"{name}.tmp"
    tmp.mkdir()

    _write_model_files(tmp, model_state, model_config)
    _test_pause(step)
    torch.save(train_state, tmp / "train_state.pt")
    for f in FILES:
        _fsync_file(tmp / f)
    meta = dict(meta or {}, step=step, files={f: sha256_file(tmp / f) for f in FILES})
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    _fsync_file(tmp / "meta.json")

    if staging_dir is None:
        _finish_folder(tmp, out_dir / name, out_dir, keep_last)
        return out_dir / name

    # Staged: verify locally, copy into out_dir/<name>.tmp, verify the copy, then rename there.
    verify_checkpoint(tmp)
    mib = sum((tmp / f).stat().st_size for f in FILES) / 2**20
    # A copy to Drive can take minutes with no progress bar moving: say what is happening.
    print(f"[checkpoint] copying {name} ({mib:,.0f} MiB) to {out_dir} ...", flush=True)
    t0 = time.perf_counter()
    remote_tmp = out_dir / f"{name}.tmp"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _sweep_tmp(out_dir)
        remote_tmp.mkdir()
        for f in (*FILES, "meta.json"):
            shutil.copyfile(tmp / f, remote_tmp / f)
            _fsync_file(remote_tmp / f)
    except OSError as e:
        if e.errno not in FULL_ERRNOS:
            raise
        shutil.rmtree(remote_tmp, ignore_errors=True)
        local = target / name
        if local.exists():
            shutil.rmtree(local)
        os.replace(tmp, local)
        print(f"[checkpoint] {out_dir} is full ({e.strerror}): {name} was not copied there and is "
              f"kept on local disk at {local} (gone when the runtime ends; resume from it with "
              f"--resume {local}). Free space on Drive; the next save tries again.",
              file=sys.stderr, flush=True)
        return local
    verify_checkpoint(remote_tmp)
    # On Drive the copy was verified against the local cache while the upload may still run: keep
    # the previous folder too until the next save (it is the one a dead runtime resumes from).
    _finish_folder(remote_tmp, out_dir / name, out_dir, keep_last + 1 if is_drive_path(out_dir) else keep_last)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"[checkpoint] {name} copied and verified in {time.perf_counter() - t0:.1f} s", flush=True)
    return out_dir / name


def _step_of(path: Path) -> int:
    return int(STEP_RE.match(path.name).group(1))


def list_step_dirs(out_dir: str | Path) -> list[Path]:
    """Complete-looking `step_N` folders in `out_dir` (no `.tmp`), unsorted."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    return [p for p in out_dir.iterdir() if p.is_dir() and STEP_RE.match(p.name)]


def verify_checkpoint(folder: str | Path) -> dict[str, Any]:
    """Check every file against the sha256 in meta.json and return meta.

    Raises:
        CheckpointError: meta.json missing/unreadable, a file missing, or a sum that does not match
            (the message names the folder and the file).
    """
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        sums = meta["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{folder}: meta.json missing or unreadable ({e})") from e
    for f in FILES:
        if not (folder / f).is_file():
            raise CheckpointError(f"{folder}: {f} is missing")
        if f not in sums or sha256_file(folder / f) != sums[f]:
            raise CheckpointError(f"{folder}: {f} does not match its sha256 in meta.json "
                                  "(truncated or corrupted)")
    return meta


def find_resumable(out_dir: str | Path) -> Optional[Path]:
    """The newest step folder in `out_dir` whose checksums hold, or None if there is none.

    Folders are tried newest first; one that fails verification is skipped with a warning naming
    it and the reason (so a half-synced or corrupted newest checkpoint falls back to an older one).
    """
    for folder in sorted(list_step_dirs(out_dir), key=_step_of, reverse=True):
        try:
            verify_checkpoint(folder)
            return folder
        except CheckpointError as e:
            warnings.warn(f"skipping checkpoint: {e}", stacklevel=2)
    return None


def resolve_resume(resume: str, out_dir: str | Path) -> Optional[Path]:
    """Turn `--resume auto|none|PATH` into a verified step folder (or None to start fresh).

    PATH may be a step folder or an out_dir (then its newest valid folder is taken).

    With "auto", an out_dir whose step folders ALL fail verification is refused rather than
    silently restarted from step 0 (which would later overwrite them).

    Raises:
        FileNotFoundError: PATH does not exist or holds no valid checkpoint.
        CheckpointError: PATH is a step folder whose sums do not hold, or ("auto") every step
            folder in out_dir is corrupt.
    """
    if resume in ("none", "", None):
        return None
    if resume == "auto":
        found = find_resumable(out_dir)
        if found is None and list_step_dirs(out_dir):
            names = ", ".join(sorted(p.name for p in list_step_dirs(out_dir)))
            raise CheckpointError(f"{out_dir}: every checkpoint failed verification ({names}); "
                                  "pass --resume none to start fresh there, or another --out-dir")
        return found
    path = Path(resume)
    if not path.exists():
        raise FileNotFoundError(f"--resume {resume}: no such folder")
    if (path / "meta.json").exists():
        verify_checkpoint(path)
        return path
    found = find_resumable(path)
    if found is None:
        raise FileNotFoundError(f"--resume {resume}: no valid step_* checkpoint in this folder")
    return found


def load_checkpoint(folder: str | Path, map_location: str | torch.device = "cpu",
                    verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(model_state, train_state, meta) of a step folder; weights from safetensors, the train state
    with `weights_only=True`. The tied LM head is restored as an alias of the embedding. The weights
    of a LoRA run (meta.json has "lora") are its adapter tensors only.

    Raises:
        CheckpointError: with `verify`, when the sums do not hold.
    """
    from safetensors.torch import load_file
    folder = Path(folder)
    meta = verify_checkpoint(folder) if verify else json.loads((folder / "meta.json").read_text())
    model_state = load_file(str(folder / "model.safetensors"), device=str(map_location))
    cfg = ModelConfig.load_json(folder / "config.json")
    if cfg.tie_embeddings and "lm_head.weight" not in model_state and "embed_tokens.weight" in model_state:
        model_state["lm_head.weight"] = model_state["embed_tokens.weight"]
    train_state = torch.load(folder / "train_state.pt", map_location=map_location, weights_only=True)
    return model_state, train_state, meta
