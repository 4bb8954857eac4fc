"""Numeric precision on the device: which autocast dtype a run uses, and TF32.

A T4 reports bf16 as supported although it only emulates it, several times slower than fp16;
`native_bf16` asks for hardware bf16, so a T4 gets fp16 + GradScaler (the Trainer adds it).
"""
from __future__ import annotations

import contextlib

import torch


def native_bf16(device: torch.device) -> bool:
    """True when `device` is a CUDA GPU that computes bf16 in hardware (compute capability >= 8.0:
    A100, L4, H100, RTX 30xx/40xx). `torch.cuda.is_bf16_supported()` alone also says True on a T4
    (7.5), where bf16 is emulated and several times slower than fp16, so it is asked with
    `including_emulation=False` (torch >= 2.3) and the capability is checked as well."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    if torch.cuda.get_device_capability(index)[0] < 8:
        return False
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.3 has no including_emulation (and counted no emulation then)
        return torch.cuda.is_bf16_supported()


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Autocast dtype: "auto" -> bf16 on a GPU with native bf16 (`native_bf16`), fp16 on other
    CUDA GPUs (a T4; the Trainer adds a GradScaler), fp32 on CPU / MPS."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if native_bf16(device) else torch.float16
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """A fresh autocast context in `dtype` on `device`; a no-op context for float32 (no autocast)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def enable_tf32() -> None:
    """Let fp32 matmuls and convolutions use TF32 tensor cores (Ampere and newer; ignored
    elsewhere). What autocast leaves in fp32 (the loss, norms, an fp32 run) gets ~8x the matmul
    throughput at 10-bit mantissa precision, the trade-off PyTorch documents under "TensorFloat-32
    (TF32) on Ampere (and later) devices"."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
