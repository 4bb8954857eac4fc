"""Model configuration and the named presets.

`ModelConfig` holds the shape of a Llama-style decoder with the field's standard names. It
round-trips through JSON (the `config.json` of a model folder) and YAML (the `configs/` folder).
`ModelConfig.num_parameters()` counts weights from the shape alone, so the planner and the README
can talk about a 13B model without building one.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import yaml


def check_fields(cls, data: dict[str, Any], source: str) -> None:
    """Raise ValueError naming `source` and any key of `data` that is not a field of dataclass `cls`."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")


LLAMA3_ROPE_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def check_rope_scaling(scaling: dict[str, Any], source: str) -> None:
    """Raise ValueError (naming `source`) unless `scaling` is a complete Llama-3 RoPE-scaling dict.

    Hugging Face spells the type `rope_type` (older configs: `type`); `default` means no scaling
    and is accepted too. Every other type (linear, dynamic, yarn, longrope, ...) is refused.
    """
    if not isinstance(scaling, dict):
        raise ValueError(f"{source}: rope_scaling must be a dict or null, got {scaling!r}")
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "default":
        return
    if kind != "llama3":
        raise ValueError(f"{source}: rope_scaling type {kind!r} is not supported (only 'llama3' or 'default')")
    missing = [k for k in LLAMA3_ROPE_KEYS if scaling.get(k) is None]
    if missing:
        raise ValueError(f"{source}: rope_scaling of type 'llama3' lacks {missing}")


@dataclass
class ModelConfig:
    """Shape of a `HavocModel`.

    Fields use Llama / Hugging Face names: `d_model` is the hidden size, `num_kv_heads` the number
    of key/value heads for grouped-query attention (Ainslie et al. 2023, "GQA"), `head_dim` the
    per-head width (defaults to d_model // n_heads), `ffn_hidden_size` the SwiGLU inner width
    (Shazeer 2020), `rope_theta` the RoPE base (Su et al. 2021), `rope_scaling` an optional
    Hugging Face RoPE-scaling dict (only `{"rope_type": "llama3", "factor", "low_freq_factor",
    "high_freq_factor", "original_max_position_embeddings"}`, Llama 3.1+), `attention_bias` adds a
    bias to the q/k/v projections (Qwen2). Special ids default to the order
    of `tokenizer.SPECIAL_TOKENS` (<|bos|>=0, <|eos|>=1, <|pad|>=2) and are overwritten from the
    tokenizer when a model is built for one.

    Raises:
        ValueError: on a field that cannot describe a model (n_heads not divisible by
            num_kv_heads, non-positive sizes, dropout outside [0, 1)). The message names the field.
    """

    vocab_size: int = 4096
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    num_kv_heads: int = 2
    head_dim: Optional[int] = None
    ffn_hidden_size: int = 352
    max_seq_len: int = 512
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    dropout: float = 0.0
    tie_embeddings: bool = True
    initializer_range: float = 0.02
    attention_bias: bool = False
    rope_scaling: Optional[dict[str, Any]] = None
    bos_id: int = 0
    eos_id: int = 1
    pad_id: int = 2

    def __post_init__(self) -> None:
        if self.head_dim is None:
            if self.d_model % self.n_heads != 0:
                raise ValueError(
                    f"ModelConfig: d_model={self.d_model} is not divisible by n_heads={self.n_heads};"
                    " set head_dim explicitly")
            self.head_dim = self.d_model // self.n_heads
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "num_kv_heads", "head_dim",
                     "ffn_hidden_size", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if self.n_heads % self.num_kv_heads != 0:
            raise ValueError(
                f"ModelConfig: n_heads={self.n_heads} is not divisible by num_kv_heads="
                f"{self.num_kv_heads} (grouped-query attention shares each KV head among "
                "n_heads // num_kv_heads query heads)")
        if self.head_dim % 2 != 0:
            raise ValueError(f"ModelConfig.head_dim={self.head_dim} must be even for RoPE")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.rope_scaling is not None:
            check_rope_scaling(self.rope_scaling, "ModelConfig.rope_scaling")
        for name in ("bos_id", "eos_id", "pad_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)} is outside the vocab "
                                 f"(vocab_size={self.vocab_size})")

    # --- counting -----------------------------------------------------------------------------
    def num_parameters(self, include_embeddings: bool = True) -> int:
        """Number of weights of the model this config builds (exact, Llama / Qwen2 layout).

        Per layer: q/o projections 2·d·(h·hd), k/v projections 2·d·(kv·hd), SwiGLU 3·d·ffn, two
        RMSNorm weights 2·d, and with `attention_bias` the q/k/v biases (h + 2·kv)·hd. Plus the
        final norm d, the embedding V·d and, when untied, an LM head V·d.
        """
        d, hd = self.d_model, self.head_dim
        attn = 2 * d * self.n_heads * hd + 2 * d * self.num_kv_heads * hd
        if self.attention_bias:
            attn += (self.n_heads + 2 * self.num_kv_heads) * hd
        per_layer = attn + 3 * d * self.ffn_hidden_size + 2 * d
        n = self.n_layers * per_layer + d
        if include_embeddings:
            n += self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return n

    # --- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "ModelConfig":
        """Build from a dict; unknown keys are an error naming them and `source`."""
        check_fields(cls, data, source)
        return cls(**data)

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load_json(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        return cls.from_dict(data, source=str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        """A copy of `PRESETS[name]` with `overrides` applied (e.g. vocab_size from a tokenizer)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)


# Presets. `tiny` is for CPU smoke runs; `7b` is the HAVOC-7B spec; `13b` follows Llama-2-13B
# with 8 KV heads; `1b` and `3b-verifier` sit between, with 64- and 128-wide heads. `3b-verifier` is
# the reward model's size (`reward_model.py`): the preset keeps the name users know it by.
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(vocab_size=4096, d_model=128, n_layers=4, n_heads=4, num_kv_heads=2,
                        ffn_hidden_size=352, max_seq_len=512),
    "50m": ModelConfig(vocab_size=32000, d_model=512, n_layers=12, n_heads=8, num_kv_heads=4,
                       ffn_hidden_size=1408, max_seq_len=1024),
    "1b": ModelConfig(vocab_size=70000, d_model=2048, n_layers=20, n_heads=32, num_kv_heads=8,
                      ffn_hidden_size=5632, max_seq_len=2048),
    "3b-verifier": ModelConfig(vocab_size=70000, d_model=3072, n_layers=26, n_heads=24,
                               num_kv_heads=8, head_dim=128, ffn_hidden_size=8192,
                               max_seq_len=4096),
    "7b": ModelConfig(vocab_size=70000, d_model=4096, n_layers=32, n_heads=32, num_kv_heads=8,
                      head_dim=128, ffn_hidden_size=11008, max_seq_len=4096),
    "13b": ModelConfig(vocab_size=70000, d_model=5120, n_layers=40, n_heads=40, num_kv_heads=8,
                       head_dim=128, ffn_hidden_size=13824, max_seq_len=4096),
}


# --- training ---------------------------------------------------------------------------------
TRAIN_PHASES = ("pretrain", "sft", "polish")
CONFIGS_DIR = Path(__file__).parent / "configs"


def read_yaml_config(name_or_path: str | Path, folder: Path, kind: str) -> tuple[Path, dict[str, Any]]:
    """(path, mapping) of a YAML config given by path or by name in `folder` (`"sft_tiny"`).

    Raises:
        FileNotFoundError: neither a file nor a known name (lists the known names).
        ValueError: invalid YAML, or not a mapping of `kind` fields (names the file).
    """
    path = Path(name_or_path)
    if not path.is_file():
        path = folder / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise FileNotFoundError(f"config {str(name_or_path)!r} is neither a YAML file nor one of {known}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of {kind} fields, got {type(data).__name__}")
    return path, data


@dataclass
class TrainConfig:
    """Everything one training run needs; YAML files in `havoc_lite/configs/` fill it, and the
    `python -m havoc_lite.train` command line overrides single fields (`--max-steps 2000`).

    Units: `batch_size` is sequences per micro-batch per GPU; one optimizer step sees
    batch_size · grad_accum_steps · world_size sequences of `seq_len` tokens. Steps count
    optimizer updates. `lr` is the peak learning rate after `warmup_steps` of linear warm-up,
    then cosine decay to `min_lr` at `max_steps` (Loshchilov & Hutter 2017, SGDR, one cycle).

    Phases: `pretrain` reads token shards (`data.PretrainLoader`); `sft` and `polish` read JSONL
    conversations / tool traces (`data.SFTLoader`) and usually start from `init_from` (a model
    folder or a checkpoint step folder). `polish` is SFT on a small, clean chat set at a low lr.
    With `packing` (the default) sft/polish rows hold several examples each (`data.PackedSFTLoader`,
    attention kept inside each example); `packing: false` gives one padded example per row.

    Raises:
        ValueError: on a field outside its range; the message names the field and `source`.
    """

    phase: str = "pretrain"
    model: str = "tiny"                       # a key of PRESETS
    model_overrides: dict[str, int | float | bool] = field(default_factory=dict)  # {"n_layers": 2}
    init_from: Optional[str] = None           # model to start from: our folder / step folder, a Hugging Face folder, a hub id, a .gguf file
    tokenizer: Optional[str] = None           # tokenizer folder or .model file
    train_data: Optional[str] = None          # pretrain: shard folder; sft/polish: .jsonl file(s), comma-separated
    eval_data: Optional[str] = None           # held-out split; None: sft/polish hold out eval_fraction
    raw_data: Optional[str] = None            # pretrain: text folder to tokenize into train_data if it is empty
    domain_weights: Optional[dict[str, float]] = None
    sft_sources: Optional[dict[str, str]] = None  # sft/polish mixture: source name -> JSONL file(s), comma-separated
    sft_mixture: Optional[str] = None         # weights for sft_sources from data.SFT_MIXTURES ("base" | "tools")
    sft_weights: Optional[dict[str, float]] = None  # or explicit relative weights per source
    eval_fraction: float = 0.02
    max_drop_fraction: float = 0.2            # sft/polish: fail when more examples than this are dropped for length
    packing: bool = True                      # sft/polish: several examples per row (data.PackedSFTLoader), attention kept inside each
    batch_size: int = 8
    grad_accum_steps: int = 1
    max_steps: int = 1000
    seq_len: int = 256
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0                    # max global grad norm; 0 disables clipping
    save_every: int = 500
    keep_last: int = 3
    eval_every: int = 250                     # 0 disables periodic eval
    eval_batches: int = 20
    log_every: int = 10
    out_dir: str = "checkpoints/run"
    staging_dir: Optional[str] = None         # local folder to write a checkpoint before copying to out_dir ("auto" on a Drive mount)
    resume: str = "auto"                      # "auto" | "none" | a checkpoint/out folder
    stop_at_step: Optional[int] = None        # stop here as if the runtime died (schedule unchanged)
    max_bad_steps: int = 5                    # consecutive non-finite steps before the run stops
    seed: int = 1337
    device: str = "auto"                      # "auto" | "cpu" | "cuda" | "cuda:1" | "mps"
    dtype: str = "auto"                       # autocast dtype: "auto" | "float32" | "bfloat16" | "float16"
    compile: bool = False                     # torch.compile the model
    gradient_checkpointing: bool = False
    neftune_noise_alpha: float = 0.0          # NEFTune noise on input embeddings in training (arXiv:2310.05914); 0 = off
    distributed: str = "auto"                 # under torchrun: "auto" | "ddp" | "fsdp"
    wandb_mode: str = "auto"                  # "auto" (online iff WANDB_API_KEY) | "disabled" | "offline" | "online"
    wandb_project: str = "havoc_lite"
    wandb_run_name: Optional[str] = None
    progress: bool = True                     # tqdm progress bar on rank 0
    # LoRA / QLoRA (havoc_lite.lora): with lora_r > 0 the init_from model is frozen and only
    # low-rank adapters (and the rows of tokens the tokenizer added) train; checkpoints hold only those.
    lora_r: int = 0                           # adapter rank; 0 = full fine-tuning of every weight
    lora_alpha: float = 32.0                  # the update is scaled by lora_alpha / lora_r
    lora_dropout: float = 0.05
    lora_targets: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"  # comma-separated
    quantize: Optional[str] = None            # "nf4": 4-bit NormalFloat frozen base (QLoRA, CUDA + bitsandbytes)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, source: str = "TrainConfig") -> None:
        if self.phase not in TRAIN_PHASES:
            raise ValueError(f"{source}: phase={self.phase!r}; choose one of {TRAIN_PHASES}")
        if self.model not in PRESETS:
            raise ValueError(f"{source}: model={self.model!r}; choose one of {sorted(PRESETS)}")
        for name in ("batch_size", "grad_accum_steps", "max_steps", "seq_len", "save_every",
                     "keep_last", "eval_batches", "log_every", "max_bad_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{source}: {name} must be a positive int, got {value!r}")
        for name in ("warmup_steps", "eval_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{source}: {name} must be >= 0, got {getattr(self, name)!r}")
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr):
            raise ValueError(f"{source}: need lr > 0 and 0 <= min_lr <= lr, got lr={self.lr}, "
                             f"min_lr={self.min_lr}")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.neftune_noise_alpha < 0:
            raise ValueError(f"{source}: weight_decay, grad_clip and neftune_noise_alpha must be >= 0")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"{source}: eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if not 0 <= self.max_drop_fraction <= 1:
            raise ValueError(f"{source}: max_drop_fraction must be in [0, 1], got {self.max_drop_fraction}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"{source}: dtype={self.dtype!r}; choose auto|float32|bfloat16|float16")
        if self.distributed not in ("auto", "ddp", "fsdp"):
            raise ValueError(f"{source}: distributed={self.distributed!r}; choose auto|ddp|fsdp")
        if self.wandb_mode not in ("auto", "disabled", "offline", "online"):
            raise ValueError(f"{source}: wandb_mode={self.wandb_mode!r}; choose "
                             "auto|disabled|offline|online")
        if self.stop_at_step is not None and self.stop_at_step <= 0:
            raise ValueError(f"{source}: stop_at_step must be positive, got {self.stop_at_step}")
        unknown = sorted(set(self.model_overrides) - {f.name for f in fields(ModelConfig)})
        if unknown:
            raise ValueError(f"{source}: model_overrides has unknown ModelConfig field(s) {unknown}")
        if isinstance(self.lora_targets, (list, tuple)):   # YAML may give a list
            self.lora_targets = ",".join(self.lora_targets)
        if not isinstance(self.lora_r, int) or isinstance(self.lora_r, bool) or self.lora_r < 0:
            raise ValueError(f"{source}: lora_r must be an int >= 0 (0: no LoRA), got {self.lora_r!r}")
        if self.quantize is not None and self.lora_r == 0:
            raise ValueError(f"{source}: quantize={self.quantize!r} needs lora_r > 0 (QLoRA trains adapters "
                             "on a frozen 4-bit base)")
        if self.lora_r:
            self.lora_settings(source)

    def lora_settings(self, source: str = "TrainConfig") -> Optional[dict[str, Any]]:
        """The validated LoRA settings (`lora.lora_settings`), or None when lora_r is 0."""
        if not self.lora_r:
            return None
        from .lora import lora_settings
        return lora_settings(self.lora_r, self.lora_alpha, self.lora_dropout, self.lora_targets,
                             self.quantize, source=source)

    def scaled_to(self, max_steps: int) -> "TrainConfig":
        """This config for a run of `max_steps` optimizer steps: a run shorter than the config's
        gets a proportionally shorter warm-up (at most a tenth of it), everything else unchanged.
        How the smoke run's `--quick`, the notebooks' smoke mode and the demos shorten a config
        without restating its hyperparameters."""
        from dataclasses import replace
        return replace(self, max_steps=max_steps, warmup_steps=min(self.warmup_steps, max(1, max_steps // 10)))

    def model_config(self, **overrides: Any) -> ModelConfig:
        """The preset `model` with `model_overrides` and then `overrides` (e.g. vocab_size) applied."""
        return ModelConfig.from_preset(self.model, **{**self.model_overrides, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "TrainConfig":
        """Build from a dict; unknown keys are an error naming them and `source`."""
        check_fields(cls, data, source)
        cfg = cls.__new__(cls)
        for f in fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            setattr(cfg, f.name, data.get(f.name, default))
        cfg.validate(source)
        return cfg

    @classmethod
    def load(cls, name_or_path: str | Path) -> "TrainConfig":
        """A config by name in `havoc_lite/configs/` (`"pretrain_tiny"`) or a YAML path.

        Raises:
            FileNotFoundError: neither a file nor a known name (lists the known names).
            ValueError: invalid YAML or fields (names the file).
        """
        path, data = read_yaml_config(name_or_path, CONFIGS_DIR, "TrainConfig")
        return cls.from_dict(data, source=str(path))
