"""Markdown tables from the memory planner (`memory.plan`): every preset on 24/40/80 GB cards
(`python -m havoc_lite.memory --all`) and which pretrained bases fit LoRA / QLoRA SFT on a T4, an
L4 and an A100-40 (`--lora-table`). Estimates, not measurements; the README shows both tables."""
from __future__ import annotations

from typing import Optional

from .catalog import PRETRAINED
from .config import PRESETS
from .memory import CONTEXT_OVERHEAD, GiB, gpu_capacity, lora_parameters, plan


def table(gpus: tuple[str, ...] = ("rtx4090-24", "a100-40", "a100-80"), phase: str = "pretrain",
          batch_size: int = 1, seq_len: Optional[int] = None) -> str:
    """Markdown table: per preset, training totals (with / without checkpointing) and bf16
    inference, fits or not, on each GPU."""
    head = "| preset | params | train GiB (no ckpt / ckpt) | infer GiB | " + " | ".join(gpus) + " |"
    rows = [head, "|" + "---|" * (4 + len(gpus))]
    for name, cfg in PRESETS.items():
        s = seq_len or cfg.max_seq_len
        plain = plan(name, phase, gpus[0], batch_size, s, suggest=False)
        ck = plan(name, phase, gpus[0], batch_size, s, grad_checkpointing=True, suggest=False)
        inf = plan(name, "inference", gpus[0], batch_size, s, suggest=False)
        cells = []
        for g in gpus:
            cap = gpu_capacity(g) - CONTEXT_OVERHEAD
            if plain.total <= cap:
                cells.append("train")
            elif ck.total <= cap:
                cells.append("train w/ ckpt")
            elif inf.total <= cap:
                cn = next((n for n in (2, 4, 8, 16, 32) if
                           plan(name, phase, g, batch_size, s, True, n, suggest=False).fits), None)
                cells.append(f"infer only; FSDP x{cn} to train" if cn else "infer only")
            else:
                cells.append("no")
        n = cfg.num_parameters()
        size = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
        rows.append(f"| {name} | {size} | {plain.total / GiB:.1f} / "
                    f"{ck.total / GiB:.1f} | {inf.total / GiB:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + (f"\n\nbatch {batch_size} x each preset's max_seq_len, bf16 autocast, AdamW; "
                              "usable = capacity - 1 GiB.")


def lora_table(gpus: tuple[str, ...] = ("t4-16", "l4-24", "a100-40"), batch_size: int = 4,
               seq_len: int = 1024, lora_r: int = 16, new_tokens: int = 16) -> str:
    """Markdown table: which pretrained bases fit LoRA SFT on each GPU, per base the GiB of full
    SFT, LoRA and QLoRA (bf16, batch_size x seq_len, r on all seven projections, with / without
    gradient checkpointing), and per GPU the cheapest way that fits: "LoRA", "LoRA w/ ckpt",
    "QLoRA", "QLoRA w/ ckpt" or "no"."""
    head = ("| base | params | adapters (r=%d) | full SFT GiB | LoRA GiB (ckpt) | QLoRA GiB (ckpt) | "
            % lora_r + " | ".join(gpus) + " |")
    rows = [head, "|" + "---|" * (6 + len(gpus))]
    for name, cfg in PRETRAINED.items():
        def tot(**kw) -> float:
            return plan(cfg, "sft", gpus[0], batch_size, seq_len, suggest=False, new_tokens=new_tokens,
                        **kw).total / GiB
        full = tot()
        lora, lora_ck = tot(lora_r=lora_r), tot(lora_r=lora_r, grad_checkpointing=True)
        q, q_ck = (tot(lora_r=lora_r, quantize="nf4"),
                   tot(lora_r=lora_r, quantize="nf4", grad_checkpointing=True))
        cells = []
        for g in gpus:
            cap = (gpu_capacity(g) - CONTEXT_OVERHEAD) / GiB
            cells.append(next((label for label, v in (("LoRA", lora), ("LoRA w/ ckpt", lora_ck), ("QLoRA", q),
                                                      ("QLoRA w/ ckpt", q_ck)) if v <= cap), "no"))
        n = cfg.num_parameters()
        size = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"
        rows.append(f"| {name} | {size} | {lora_parameters(cfg, lora_r, new_tokens=new_tokens) / 1e6:.1f}M | "
                    f"{full:.1f} | {lora:.1f} ({lora_ck:.1f}) | {q:.1f} ({q_ck:.1f}) | " + " | ".join(cells) + " |")
    return "\n".join(rows) + (f"\n\nSFT, batch {batch_size} x {seq_len} tokens, bf16 autocast, LoRA r={lora_r} "
                              f"on q,k,v,o,gate,up,down (+{new_tokens} trainable token rows), dropout 0.05; "
                              "usable = capacity - 1 GiB. A T4 has no bf16: fp16 is the same size.")
