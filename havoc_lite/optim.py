"""The learning-rate schedule and the optimizer every training loop here uses (Trainer, RAFT's SFT).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from .config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warm-up from lr/warmup_steps to
    `lr` over `warmup_steps`, then cosine decay to `min_lr` at `max_steps` (Loshchilov & Hutter
    2017, "SGDR"; the GPT-3 / Chinchilla recipe). A pure function of the step, so a checkpoint
    saves no scheduler state: resuming at `step` resumes the schedule."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = max(cfg.max_steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / decay_steps, 1.0)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: matrices decay; 1-D params (norm weights, biases) and embeddings do not
    (as in GPT-2/nanoGPT and Llama training). The tied LM head is the embedding, so it does not."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() < 2 or "embed" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


# Devices with torch's fused AdamW kernel. Elsewhere torch falls back to its for-loop version.
_FUSED_DEVICES = ("cpu", "cuda", "mps", "xpu")


def adamw(params, device: torch.device, **kwargs) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) over `params` (tensors or param groups), with torch's fused
    kernel on `device` where it has one, as Hugging Face's Trainer defaults to ("adamw_torch_fused").

    Why fused on the CPU too: left to its default there, torch runs AdamW as a Python loop of ~10
    tensor ops per parameter, each with its own temporaries. At 50m (51.8M parameters, 1 thread) a
    step took 0.27 s that way and 0.07 s fused (`python scripts/adamw_step.py`), ~12 % of a
    training step at batch 4 x 128. `kwargs` go to `torch.optim.AdamW` (lr, betas, eps,
    weight_decay)."""
    return torch.optim.AdamW(params, fused=torch.device(device).type in _FUSED_DEVICES or None, **kwargs)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """The Trainer's AdamW: decay on matrices only (`param_groups`), fused where torch can (`adamw`)."""
    return adamw(param_groups(model, cfg.weight_decay), device, lr=cfg.lr,
                 betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
