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


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019), the fused CUDA kernel on GPU."""
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                             betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                             fused=device.type == "cuda" or None)
