"""`GrpoConfig`: every setting of a GRPO run (`python -m havoc_lite.rl`), loaded from
`havoc_lite/configs/rl/*.yaml` or a path, validated at start (one-line errors)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass
class GrpoConfig:
    """Options of one GRPO run (`python -m havoc_lite.rl`, or a YAML in havoc_lite/configs/rl/).

    Units: a step samples prompts_per_step · group_size answers and makes ppo_epochs · minibatches
    optimizer updates; `max_steps` counts RL steps, so the run samples max_steps · prompts_per_step ·
    group_size answers in all. `lr` is AdamW's peak rate after `warmup_steps` of linear warm-up
    (then constant).
    """
    checkpoint: str = ""
    """starting model folder (or an out_dir with `latest`)"""
    tokenizer: Optional[str] = None
    prompts: str = ""
    """prompts JSONL (question / messages / prompt, plus what the grader needs)"""
    eval_prompts: Optional[str] = None
    """held-out prompts JSONL, scored greedily (pass@1) at the start, every eval_every steps and at the end"""
    grader: str = "tool"
    """gsm8k | tool | pytest"""
    system: Optional[str] = None
    """system turn for 'question' prompts (default: none)"""
    limit: Optional[int] = None
    group_size: int = 8
    """G: answers sampled per prompt"""
    prompts_per_step: int = 8
    max_steps: int = 50
    stop_at_step: Optional[int] = None
    """stop here as if the runtime died (for resume tests)"""
    temperature: float = 1.0
    top_p: Optional[float] = None
    max_new_tokens: int = 128
    """length cap of an answer (engine-written tokens included)"""
    gen_batch_size: int = 64
    compile_decode: bool = False
    """sample with the engine's decode step under torch.compile (`engine.generate(compile=True)`)"""
    train_batch_size: int = 16
    """sequences per forward/backward (gradients accumulate over a minibatch)"""
    lr: float = 1e-4
    warmup_steps: int = 0
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    ppo_epochs: int = 1
    """passes over each step's samples (>1 makes the ratio clip matter)"""
    minibatches: int = 1
    """optimizer updates per pass"""
    clip_eps: float = 0.2
    kl_coef: float = 0.0
    """β of the k3 KL penalty against the frozen starting model (0: off, no reference kept)"""
    scale_rewards: bool = True
    """divide by the group's std (GRPO); False only centres (Dr. GRPO)"""
    skip_zero_variance: float = 0.0
    """probability of skipping a prompt whose last group got all-equal rewards (no gradient), so a fixed
    budget of samples goes to prompts that still teach (GRESO, Zheng et al. 2025); 0: off"""
    format_weight: float = 0.0
    """weight of the format reward (an <answer>, every tool call parsed, a clean stop), added to the correctness reward"""
    length_penalty: float = 0.0
    """reward minus length_penalty · sampled tokens / max_new_tokens"""
    lora_r: int = 0
    """> 0: train LoRA adapters of this rank instead of the full model (havoc_lite.lora)"""
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    """0 by default: adapter dropout would make the trained policy differ from the sampling one"""
    lora_targets: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    eval_every: int = 0
    eval_batch_size: int = 64
    save_every: int = 10
    keep_last: int = 2
    log_every: int = 1
    out_dir: str = "checkpoints/grpo"
    staging_dir: Optional[str] = None
    resume: str = "auto"
    """auto | none | a step folder"""
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    """autocast of sampling and training: auto (bf16 on a GPU with native bf16, else float32) |
    float32 | bfloat16 (also on a CPU with bf16 matmuls). Trainable weights and AdamW stay float32;
    a LoRA run's frozen base is stored in this dtype. No float16: it needs loss scaling (a T4 runs float32)"""
    wandb_mode: str = "auto"
    """auto (online iff WANDB_API_KEY) | disabled | offline | online"""
    wandb_project: str = "havoc_lite"
    wandb_run_name: Optional[str] = None

    def validate(self, source: str = "GrpoConfig") -> None:
        """Raises ValueError naming the field (and `source`) for a value outside its range."""
        if not (isinstance(self.group_size, int) and self.group_size >= 2):
            raise ValueError(f"{source}: group_size must be an int >= 2 (a group of one has no "
                             f"baseline), got {self.group_size!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and 0 < self.lr < 1):
            raise ValueError(f"{source}: lr must be in (0, 1), got {self.lr!r}")
        for name in ("prompts_per_step", "max_steps", "max_new_tokens", "gen_batch_size",
                     "train_batch_size", "ppo_epochs", "minibatches", "save_every", "keep_last",
                     "log_every", "eval_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{source}: {name} must be a positive int, got {v!r}")
        if self.minibatches > self.prompts_per_step * self.group_size:
            raise ValueError(f"{source}: minibatches={self.minibatches} exceeds the "
                             f"{self.prompts_per_step * self.group_size} samples of a step")
        if not self.temperature > 0:
            raise ValueError(f"{source}: temperature must be > 0 for RL sampling, got {self.temperature}")
        for name in ("clip_eps", "kl_coef", "format_weight", "length_penalty", "weight_decay",
                     "grad_clip", "warmup_steps", "eval_every", "lora_r"):
            if getattr(self, name) < 0:
                raise ValueError(f"{source}: {name} must be >= 0, got {getattr(self, name)!r}")
        if not (isinstance(self.skip_zero_variance, (int, float)) and 0 <= self.skip_zero_variance < 1):
            raise ValueError(f"{source}: skip_zero_variance must be in [0, 1) (1 could skip every prompt "
                             f"forever), got {self.skip_zero_variance!r}")
        if self.grader not in ("gsm8k", "tool", "pytest"):
            raise ValueError(f"{source}: grader={self.grader!r}; choose gsm8k | tool | pytest")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"{source}: dtype={self.dtype!r}; choose auto | float32 | bfloat16 (float16 "
                             "would need loss scaling, which GRPO does not do)")
        if self.stop_at_step is not None and self.stop_at_step <= 0:
            raise ValueError(f"{source}: stop_at_step must be positive, got {self.stop_at_step}")

    @classmethod
    def load(cls, name_or_path: str | Path) -> "GrpoConfig":
        """A YAML by name in havoc_lite/configs/rl/ (`grpo_tiny`) or a path. Raises FileNotFoundError
        or ValueError naming the file and the unknown field."""
        from .config import CONFIGS_DIR, check_fields, read_yaml_config
        path, data = read_yaml_config(name_or_path, CONFIGS_DIR / "rl", "GrpoConfig")
        check_fields(cls, data, str(path))
        cfg = cls(**data)
        cfg.validate(str(path))
        return cfg
