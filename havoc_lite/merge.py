"""Fold a LoRA run's adapters into its base and write a Hugging Face model folder.

    python -m havoc_lite.merge --run runs/lora --out runs/lora_merged
    python -m havoc_lite.merge --run runs/lora/step_000600 --out merged --dtype bfloat16

The step folder (the newest one that verifies, or the one named) holds only the adapters; its
meta.json names the base (`init_from`) and its sha256 fingerprint. The base is loaded again with
`hub.load_model` in full precision (a QLoRA run's adapters are merged into the unquantised base, as
the QLoRA paper's authors do), grown by the tokenizer's markup rows, checked against the
fingerprint, and the adapters are merged by peft (W + alpha/r · B·A). The result is written with
`export.to_hf_llama` (a Llama folder, or Qwen2 for a biased base) plus the run's tokenizer, so
transformers, vLLM and llama.cpp's converter read it.

Bad input (no LoRA checkpoint, a base that is not the one the adapters were trained on, an `--out`
folder that is not empty) is one line on stderr and exit code 2; nothing on disk is touched. The
folder is written as `<out>.tmp` and renamed at the end.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Optional

import torch

DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def merge_run(run: str | Path, out: str | Path, base: Optional[str] = None, dtype: str = "auto",
              force: bool = False) -> Path:
    """Merge the adapters of a LoRA run's checkpoint into its base and write a HF folder at `out`.

    Args:
        run: a run's out_dir (its newest verified step is used) or one step folder.
        base: load this base instead of the one meta.json names (e.g. the same model moved to
            another path); its fingerprint must still match.
        dtype: weights of the written folder: "auto" (the base's stored dtype), "float32",
            "bfloat16" or "float16". The merge itself is computed in float32.
        force: replace a non-empty `out`.
    Returns:
        the written folder.
    Raises:
        FileNotFoundError: no such run or no verified checkpoint in it.
        ValueError: one line: not a LoRA checkpoint, a base with another fingerprint, an `out`
            that is not empty, an unknown dtype.
    """
    from . import checkpoint as ckpt
    from .config import TrainConfig
    from .export import to_hf_llama
    from .lora import apply_lora, base_fingerprint, load_lora_state_dict, merge_lora
    from .init_from import fit_vocab, load_init_model, load_run_tokenizer

    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    run, out = Path(run), Path(out)
    folder = ckpt.resolve_resume(str(run), run)
    if folder is None:
        raise FileNotFoundError(f"--run {run}: no verified step_* checkpoint")
    adapters, _, meta = ckpt.load_checkpoint(folder)
    lora = meta.get("lora")
    if not lora:
        raise ValueError(f"{folder}: not a LoRA checkpoint (a full checkpoint is already a model folder: "
                         "export.to_hf_llama writes it as a Hugging Face folder)")
    if out.exists() and any(out.iterdir()) and not force:
        raise ValueError(f"--out {out}: folder exists and is not empty (pass --force to replace it)")

    cfg = TrainConfig.from_dict({**meta["train_config"], "init_from": base or lora["base"]["source"],
                                 "quantize": None}, source=str(folder / "meta.json"))
    tokenizer = load_run_tokenizer(cfg)
    model = load_init_model(cfg.init_from)
    stored = next(model.parameters()).dtype
    fit_vocab(model, tokenizer)
    if base_fingerprint(model) != lora["base"]["sha256"]:
        raise ValueError(f"{folder}: the adapters were trained on another base than {cfg.init_from} "
                         f"(sha256 {lora['base']['sha256'][:12]} expected); pass the right one with --base")
    model.float()
    apply_lora(model, r=lora["r"], alpha=lora["alpha"], dropout=0.0, targets=lora["targets"],
               train_tokens=lora["train_tokens"])
    load_lora_state_dict(model, adapters, source=str(folder))
    merge_lora(model).eval()

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf_tokenizer = hasattr(tokenizer, "hf")
    to_hf_llama(model, tmp, tokenizer=None if hf_tokenizer else tokenizer, dtype=DTYPES[dtype] or stored)
    if hf_tokenizer:
        tokenizer.save(tmp)                           # its own HF files, chat template and markup
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m havoc_lite.merge", description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a LoRA run's out_dir, or one of its step folders")
    ap.add_argument("--out", required=True, help="folder to write the merged Hugging Face model into")
    ap.add_argument("--base", default=None, help="the base model, if not where meta.json says it was")
    ap.add_argument("--dtype", default="auto", choices=sorted(DTYPES))
    ap.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    args = ap.parse_args(argv)
    try:
        out = merge_run(args.run, args.out, base=args.base, dtype=args.dtype, force=args.force)
    except (FileNotFoundError, ValueError) as e:
        print(f"[merge] error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(f"[merge] wrote {out} (Hugging Face folder: config.json, model.safetensors, tokenizer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
