"""How much GPU memory a preset needs to train or serve, and what would make it fit.

    python -m havoc_lite.memory --preset 7b --gpu a100-40 --phase sft --batch-size 1 --seq-len 2048
    python -m havoc_lite.memory --all

What is assumed (it is what `train.Trainer` does):
* Training keeps the parameters in fp32 (they are the master weights) and runs the forward and
  backward under bf16 autocast (`--dtype bf16`), or entirely in fp32 (`--dtype fp32`).
  Per parameter: 4 bytes weights + 4 bytes gradients + 8 bytes AdamW `exp_avg`/`exp_avg_sq`
  (+ one 4-byte `step` scalar per tensor) = 16 bytes, plus 2 bytes for the bf16 copies autocast
  makes of the weights (held for the backward). No pure-bf16 weights, no 8-bit optimizer.
* FSDP over n GPUs (FSDP2, bf16 `MixedPrecisionPolicy`): weights, gradients and AdamW states are
  split n ways; each GPU also holds the gathered bf16 weights (and fp32 gradients before the
  reduce-scatter) of two blocks (the running one and the prefetched one) and the unsharded root
  (embedding / tied head). DDP does not reduce per-GPU memory.
* Activations (what autograd saves for the backward) are counted term by term for this model,
  following Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
  Models" §4.1 (34·s·b·h bytes per GPT layer), adapted: SDPA / FlashAttention keeps no s×s
  score matrix (their 5·a·s/h term is gone), SwiGLU has three d×ffn matrices, GQA's k/v are
  KV·hd wide, RMSNorm replaces LayerNorm, no dropout masks (dropout=0), and our residual stream is
  fp32 under autocast. Per token and layer, with a = activation bytes (2 under bf16 autocast,
  4 in fp32), q = H·hd, kv = KV·hd, f = ffn_hidden_size:
      2 norms × (input + normalised output) in fp32      16·d
      bf16 casts of the 5 projection inputs (autocast)   5·a·d     (fp32: the 2 norm outputs, 8·d)
      q, k, v and the attention output = o_proj input    a·(2q + 2kv)
      SwiGLU: gate, silu(gate), up, down input           4·a·f
      SDPA logsumexp, RMSNorm rsqrt                      4·H + 8
  (checked against the tensors autograd actually saves, tests/test_memory.py).
  With gradient checkpointing each block keeps only its fp32 input (4·d per token) and one
  block's activations exist at a time during recomputation.
* Logits: the loss is computed in chunks of `loss.CHUNK_TOKENS` tokens with the LM head fused in
  (`loss.linear_cross_entropy`), so the logits [B, T, V] never exist whole. At the loss: one chunk's
  head output, its fp32 copy and softmax (about 10·V bytes per chunk token under autocast, 8·V in
  fp32), the head-weight gradient it accumulates in fp32 plus one chunk's contribution (8·V·d);
  the hidden-state gradient it keeps replaces the head input autograd no longer saves. Measured
  for one 50m step on the CPU (`python -m havoc_lite.bench --memory --preset 50m`, tested on a
  smaller shape in tests/test_memory.py). With `full_logits=True`, the old path (logits, fp32
  copy, log-softmax: 10·V per token under autocast, 12·V in fp32).
* Gradients and activations are never all alive together: the Trainer sets the gradients to None
  after each step, and the backward creates them while it frees the activations. The peak is
  at the start of the backward (weights, AdamW state, every activation, the loss) or at the
  optimizer step (weights, AdamW state, gradients), so the plan counts the larger of the two
  (the negative "overlap" row). Measured: within 3 % for one 50m step on the CPU.
* Inference: bf16 weights, a preallocated bf16 KV cache of 2·layers·batch·KV·seq·hd values,
  fp32 logits of the prompt (prefill) and one layer's working tensors.
* Every GPU loses about 1 GiB to the CUDA context, cuBLAS workspace and allocator slack; the rest
  is "usable". Capacities are the marketed GiB.
* LoRA (`--lora-r 16`, what `train.Trainer` does with `lora_r`): the frozen base is held in bf16
  (fp16 on a T4), 2 bytes per parameter, without gradients or optimizer states; the adapters
  (r·(in + out) per targeted projection, `lora.py`) and the trainable rows of added tokens are fp32
  with gradients and AdamW, 16 bytes each, plus their bf16 autocast copies. Activations are those
  of full training (the input of every projection is still saved, now by the adapter's A
  instead of the frozen weight) plus the r-wide A outputs, 7·r·a per token and layer, less the
  normalised activations the frozen RMSNorm weights and head no longer need (8·d per layer, 4·d +
  a·d at the head), and, with lora_dropout > 0, what the adapters' dropout saves: 4·(5·d + f)
  per token and layer, as measured against autograd on the CPU (tests/test_memory.py; CUDA's
  fused dropout keeps 1-byte masks, so this errs high there).
* QLoRA (`--quantize nf4`): the targeted projections are stored as 4-bit NormalFloat with double
  quantisation, 4.127 bits per weight (Dettmers et al. 2023, QLoRA §3: 0.127 bits of constants),
  plus one dequantised bf16 weight at a time; the embedding, norms and head stay bf16.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Optional

from .catalog import GPUS, PEAK_BF16_TFLOPS, PRETRAINED
from .config import PRESETS, ModelConfig

GiB = 1024 ** 3
CONTEXT_OVERHEAD = 1.0 * GiB
PHASES = ("pretrain", "sft", "polish", "inference")
NF4_BYTES_PER_WEIGHT = 4.127 / 8          # QLoRA §3: 4-bit weights + double-quantised block constants
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")



def model_config(preset: str | ModelConfig) -> ModelConfig:
    """A ModelConfig from a name in `config.PRESETS` or `PRETRAINED`, or the config itself.

    Raises:
        ValueError: an unknown name (lists the known ones).
    """
    if isinstance(preset, ModelConfig):
        return preset
    if preset in PRETRAINED:
        return PRETRAINED[preset]
    if preset in PRESETS:
        return ModelConfig.from_preset(preset)
    raise ValueError(f"unknown preset {preset!r}; one of {sorted(PRESETS) + sorted(PRETRAINED)}")


def projection_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """(in, out) features of the seven linear layers of one block, by their names."""
    d, q, kv, f = cfg.d_model, cfg.n_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, cfg.ffn_hidden_size
    return {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
            "gate_proj": (d, f), "up_proj": (d, f), "down_proj": (f, d)}


def lora_parameters(cfg: ModelConfig, r: int, targets=LORA_TARGETS, new_tokens: int = 0) -> int:
    """Trainable parameters of a LoRA run: r·(in + out) per targeted projection per layer (A is
    [r, in], B is [out, r]; Hu et al. 2021), plus `new_tokens` embedding rows of d (trainable
    token rows; a tied head shares them, an untied head has its own)."""
    shapes = projection_shapes(cfg)
    per_layer = sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)
    rows = new_tokens * cfg.d_model * (1 if cfg.tie_embeddings else 2)
    return cfg.n_layers * per_layer + rows


def target_weight_parameters(cfg: ModelConfig, targets=LORA_TARGETS) -> int:
    """Weights of the targeted projections (what QLoRA stores in 4 bits)."""
    shapes = projection_shapes(cfg)
    return cfg.n_layers * sum(shapes[t][0] * shapes[t][1] for t in targets)


def gpu_capacity(gpu: str) -> float:
    """Bytes of a GPU given by name (`a100-40`) or as a number of GiB (`24`).

    Raises:
        ValueError: an unknown name (lists the known ones).
    """
    if gpu in GPUS:
        return GPUS[gpu] * GiB
    try:
        return float(gpu) * GiB
    except ValueError:
        raise ValueError(f"unknown GPU {gpu!r}; use one of {sorted(GPUS)} or a size in GiB") from None


def num_param_tensors(cfg: ModelConfig) -> int:
    """Parameter tensors: per layer 4 attention + 3 MLP matrices + 2 norms; embedding, final norm,
    and an LM head when untied."""
    return cfg.n_layers * 9 + 2 + (0 if cfg.tie_embeddings else 1)


def block_params(cfg: ModelConfig) -> int:
    return (cfg.num_parameters(include_embeddings=False) - cfg.d_model) // cfg.n_layers


def activation_bytes_per_token_layer(cfg: ModelConfig, dtype: str = "bf16") -> int:
    """Bytes autograd saves per token per block (formula in the module docstring)."""
    a = 2 if dtype == "bf16" else 4
    d, f = cfg.d_model, cfg.ffn_hidden_size
    q, kv = cfg.n_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    proj_inputs = 5 * a * d if dtype == "bf16" else 2 * 4 * d  # 5 bf16 casts | the 2 norm outputs
    small = 4 * cfg.n_heads + 2 * 4                             # SDPA logsumexp, RMSNorm rsqrt
    return 16 * d + proj_inputs + a * (2 * q + 2 * kv) + 4 * a * f + small


def activation_bytes(cfg: ModelConfig, batch_size: int, seq_len: int, dtype: str = "bf16",
                     grad_checkpointing: bool = False) -> int:
    """Saved activations of one forward of [batch_size, seq_len] tokens through all blocks plus the
    final norm and the LM head input (the logits are counted by `logits_bytes`)."""
    tokens = batch_size * seq_len
    per_layer = activation_bytes_per_token_layer(cfg, dtype)
    head = 8 * cfg.d_model + (2 if dtype == "bf16" else 4) * cfg.d_model  # final norm + head input
    if grad_checkpointing:
        body = cfg.n_layers * 4 * cfg.d_model + per_layer
    else:
        body = cfg.n_layers * per_layer
    return tokens * (body + head)


def logits_bytes(cfg: ModelConfig, batch_size: int, seq_len: int, dtype: str = "bf16",
                 full_logits: bool = False) -> int:
    """Peak bytes at the loss (module docstring). Chunked (what the Trainer does): one chunk of
    min(B·T, CHUNK_TOKENS) tokens × V × (10 bf16 | 8 fp32) + the fp32 head-weight gradient and
    one chunk's share of it (8·V·d). `full_logits`: the saved fp32 log-softmax (4·V per token)
    plus the LM-head output and its fp32 copy (bf16: 2·V + 4·V) or their gradient (fp32: 8·V)."""
    from .loss import CHUNK_TOKENS
    V = cfg.vocab_size
    if full_logits:
        return batch_size * seq_len * V * (10 if dtype == "bf16" else 12)
    chunk = min(batch_size * seq_len, CHUNK_TOKENS)
    return chunk * V * (10 if dtype == "bf16" else 8) + 8 * V * cfg.d_model


def kv_cache_bytes(cfg: ModelConfig, batch_size: int, seq_len: int, bytes_per_value: int = 2) -> int:
    """A preallocated K and V cache: 2 · layers · batch · KV heads · seq · head_dim values."""
    return 2 * cfg.n_layers * batch_size * cfg.num_kv_heads * seq_len * cfg.head_dim * bytes_per_value


@dataclass
class MemoryPlan:
    """Bytes per GPU by category; `fits` compares `total` with `usable` (capacity - 1 GiB)."""

    preset: str
    phase: str
    gpu: str
    batch_size: int
    seq_len: int
    dtype: str
    grad_checkpointing: bool
    fsdp: int
    parts: dict[str, int] = field(default_factory=dict)
    capacity: float = 0.0
    suggestions: list[str] = field(default_factory=list)
    lora_r: int = 0
    quantize: Optional[str] = None

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def usable(self) -> float:
        return self.capacity - CONTEXT_OVERHEAD

    @property
    def fits(self) -> bool:
        return self.total <= self.usable

    def report(self) -> str:
        lines = [f"{self.preset} {self.phase} on {self.gpu} ({self.capacity / GiB:.0f} GiB, "
                 f"{self.usable / GiB:.1f} usable): batch {self.batch_size} x seq {self.seq_len}, {self.dtype}"
                 + (f", LoRA r={self.lora_r}" if self.lora_r else "")
                 + (" over a 4-bit NF4 base (QLoRA)" if self.quantize else "")
                 + (", gradient checkpointing" if self.grad_checkpointing else "")
                 + (f", FSDP over {self.fsdp} GPUs (per GPU)" if self.fsdp > 1 else "")]
        for name, n in self.parts.items():
            lines.append(f"  {name:<24} {n / GiB:10.2f} GiB  ({n:,} bytes)")
        lines.append(f"  {'total':<24} {self.total / GiB:10.2f} GiB -> "
                     + ("fits" if self.fits else "DOES NOT FIT"))
        lines += [f"  - {s}" for s in self.suggestions]
        return "\n".join(lines)


def _lora_parts(cfg: ModelConfig, batch_size: int, seq_len: int, dtype: str, grad_checkpointing: bool,
                lora_r: int, quantize: Optional[str], lora_dropout: float, new_tokens: int) -> dict[str, int]:
    """LoRA / QLoRA rows (module docstring): frozen base, adapters with grads and AdamW, activations."""
    n, a = cfg.num_parameters(), 2 if dtype == "bf16" else 4
    frozen_bytes = 2 if dtype == "bf16" else 4
    n_lora = lora_parameters(cfg, lora_r, new_tokens=new_tokens)
    parts = {}
    if quantize == "nf4":
        q = target_weight_parameters(cfg)
        parts["frozen base, 4-bit NF4"] = math.ceil(NF4_BYTES_PER_WEIGHT * q)
        parts[f"frozen rest ({'bf16' if dtype == 'bf16' else 'fp32'})"] = frozen_bytes * (n - q)
        parts["one dequantised weight"] = 2 * max(i * o for i, o in projection_shapes(cfg).values())
    else:
        parts[f"frozen base ({'bf16' if dtype == 'bf16' else 'fp32'})"] = frozen_bytes * n
    parts["adapters (fp32)"] = 4 * n_lora
    parts["adapter gradients (fp32)"] = 4 * n_lora
    parts["adapter AdamW m, v (fp32)"] = 8 * n_lora
    if dtype == "bf16":
        parts["adapter bf16 copies"] = 2 * n_lora
    # per token and layer: + the A outputs and dropout masks; - the normalised activations the
    # frozen RMSNorm weights no longer need (2 norms x 4·d)
    extra = 7 * lora_r * a + (4 * (5 * cfg.d_model + cfg.ffn_hidden_size) if lora_dropout > 0 else 0) \
        - 8 * cfg.d_model
    layers_holding = 1 if grad_checkpointing else cfg.n_layers
    frozen_head = (4 + a) * cfg.d_model      # final norm's normalised output + the frozen head's input
    parts["activations"] = (activation_bytes(cfg, batch_size, seq_len, dtype, grad_checkpointing)
                            + batch_size * seq_len * (layers_holding * extra - frozen_head))
    # the fused chunked loss either way (`lora.head_parts`): a frozen head gets no [V, d] weight
    # gradient, which logits_bytes counts; new token rows are read directly (`lora.token_rows`:
    # no merged [V, d] copy), their k·d gradient is in the adapters' rows above
    head = cfg.vocab_size * cfg.d_model
    parts["logits + loss"] = logits_bytes(cfg, batch_size, seq_len, dtype) - 8 * head
    return parts


def _parts(cfg: ModelConfig, phase: str, batch_size: int, seq_len: int, dtype: str,
           grad_checkpointing: bool, fsdp: int, lora_r: int = 0, quantize: Optional[str] = None,
           lora_dropout: float = 0.05, new_tokens: int = 0) -> dict[str, int]:
    n = cfg.num_parameters()
    if lora_r and phase != "inference":
        return _lora_parts(cfg, batch_size, seq_len, dtype, grad_checkpointing, lora_r, quantize,
                           lora_dropout, new_tokens)
    if phase == "inference":
        return {"weights (bf16)": 2 * n,
                "kv cache (bf16)": kv_cache_bytes(cfg, batch_size, seq_len),
                "prefill logits (fp32)": 6 * batch_size * seq_len * cfg.vocab_size,
                "working activations": batch_size * seq_len * (8 * cfg.d_model + 6 * cfg.ffn_hidden_size)}
    fsdp = max(fsdp, 1)
    parts = {
        "weights (fp32 master)": math.ceil(4 * n / fsdp),
        "gradients (fp32)": math.ceil(4 * n / fsdp),
        "AdamW m, v (fp32)": math.ceil(8 * n / fsdp) + 4 * num_param_tensors(cfg),
    }
    if fsdp > 1:
        root = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2) + cfg.d_model
        parts["gathered bf16 weights"] = 2 * (2 * block_params(cfg) + root)
        parts["unsharded block grads"] = 4 * 2 * block_params(cfg)
    elif dtype == "bf16":
        parts["bf16 weight copies"] = 2 * n
    parts["activations"] = activation_bytes(cfg, batch_size, seq_len, dtype, grad_checkpointing)
    parts["logits + loss"] = logits_bytes(cfg, batch_size, seq_len, dtype)
    # The gradients (set to None after every step) appear during the backward as the activations
    # are freed, so the peak is max(activations + loss, gradients), not their sum.
    parts["grads/activations overlap"] = -min(parts["gradients (fp32)"],
                                              parts["activations"] + parts["logits + loss"])
    return parts


def plan(preset: str | ModelConfig, phase: str = "sft", gpu: str = "a100-40", batch_size: int = 1,
         seq_len: Optional[int] = None, grad_checkpointing: bool = False, fsdp: int = 1,
         dtype: str = "bf16", suggest: bool = True, lora_r: int = 0, quantize: Optional[str] = None,
         lora_dropout: float = 0.05, new_tokens: int = 0) -> MemoryPlan:
    """Memory per GPU for `phase` ("pretrain" | "sft" | "polish" | "inference") of a preset.

    `preset` is a name in `config.PRESETS` or `PRETRAINED` (e.g. "qwen2.5-1.5b"), or a ModelConfig.
    `seq_len` defaults to the preset's max_seq_len. `lora_r > 0` plans a LoRA run on all seven
    projections (`quantize="nf4"`: QLoRA; `new_tokens` trainable embedding rows). With `suggest`,
    a plan that does not fit lists what would (checkpointing, a smaller batch or sequence, QLoRA,
    FSDP over n GPUs, CPU offload).

    Raises:
        ValueError: unknown preset, phase, GPU, dtype or quantize.
    """
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r}; choose one of {PHASES}")
    if dtype not in ("bf16", "fp32"):
        raise ValueError(f"dtype {dtype!r}; choose bf16 or fp32")
    if quantize not in (None, "nf4") or (quantize and not lora_r):
        raise ValueError(f"quantize {quantize!r}: only nf4, and only with lora_r > 0")
    name = preset if isinstance(preset, str) else "custom"
    cfg = model_config(preset)
    seq_len = seq_len or cfg.max_seq_len
    p = MemoryPlan(name, phase, gpu, batch_size, seq_len, dtype, grad_checkpointing, fsdp,
                   _parts(cfg, phase, batch_size, seq_len, dtype, grad_checkpointing, fsdp, lora_r, quantize,
                          lora_dropout, new_tokens),
                   gpu_capacity(gpu), lora_r=lora_r, quantize=quantize)
    if suggest and not p.fits:
        p.suggestions = _suggestions(cfg, p)
    return p


def _suggestions(cfg: ModelConfig, p: MemoryPlan) -> list[str]:
    out = []
    usable = p.usable

    def total(**kw) -> int:
        args = dict(phase=p.phase, batch_size=p.batch_size, seq_len=p.seq_len, dtype=p.dtype,
                    grad_checkpointing=p.grad_checkpointing, fsdp=p.fsdp, lora_r=p.lora_r, quantize=p.quantize)
        args.update(kw)
        return sum(_parts(cfg, **args).values())

    if p.phase == "inference":
        for b in range(p.batch_size - 1, 0, -1):
            if total(batch_size=b) <= usable:
                return [f"batch_size <= {b}"]
        s = p.seq_len
        while s > 128 and total(batch_size=1, seq_len=s) > usable:
            s //= 2
        if total(batch_size=1, seq_len=s) <= usable:
            return [f"batch_size 1 and seq_len <= {s}"]
        return [f"the bf16 weights alone need {2 * cfg.num_parameters() / GiB:.1f} GiB: use a larger GPU "
                "or quantised weights (int8/int4; not in this kit)"]

    fixed = total(batch_size=1, seq_len=1, grad_checkpointing=True)
    if fixed > usable:
        out.append(f"weights + gradients + AdamW states alone need {fixed / GiB:.1f} GiB per GPU "
                   f"(> {usable / GiB:.1f} GiB usable): no batch size or checkpointing makes full "
                   f"training fit" + (" one GPU" if p.fsdp <= 1 else f" {p.fsdp} GPUs"))
    else:
        if not p.grad_checkpointing and total(grad_checkpointing=True) <= usable:
            out.append("enable gradient checkpointing (--gradient-checkpointing; ~1/3 more compute)")
        for ckpt in ((False, True) if not p.grad_checkpointing else (True,)):
            best = max((b for b in range(1, p.batch_size) if total(batch_size=b, grad_checkpointing=ckpt) <= usable),
                       default=0)
            if best:
                out.append(f"batch_size <= {best}{' with checkpointing' if ckpt else ''} "
                           "(raise grad_accum_steps to keep the tokens per step)")
                break
        s = p.seq_len // 2
        while s >= 128 and total(batch_size=1, seq_len=s, grad_checkpointing=True) > usable:
            s //= 2
        if s >= 128 and s < p.seq_len:
            out.append(f"seq_len <= {s} at batch 1 with checkpointing")
    if p.lora_r:
        if not p.quantize and total(quantize="nf4", grad_checkpointing=True) <= usable:
            out.append("QLoRA: a 4-bit NF4 base (--quantize nf4; CUDA + bitsandbytes), with checkpointing: "
                       f"{total(quantize='nf4', grad_checkpointing=True) / GiB:.1f} GiB")
        out.append("or a smaller base")
        return out
    for n in (2, 4, 8, 16, 32, 64):
        if n > p.fsdp and total(fsdp=n, grad_checkpointing=True) <= usable:
            out.append(f"FSDP over {n} such GPUs with checkpointing: "
                       f"{total(fsdp=n, grad_checkpointing=True) / GiB:.1f} GiB per GPU "
                       f"(torchrun --nproc_per_node={n}, distributed: fsdp)")
            break
    host = 16 * cfg.num_parameters()
    gpu_only = total(fsdp=10**9, grad_checkpointing=True)  # everything sharded away = offloaded
    if gpu_only <= usable:
        out.append(f"CPU offload of weights/grads/AdamW (FSDP2 CPUOffloadPolicy; not wired into the "
                   f"Trainer): ~{gpu_only / GiB:.1f} GiB on the GPU, {host / GiB:.0f} GiB of host RAM, much slower")
    out.append("or train a smaller preset, or LoRA from a pretrained base (--lora-r 16; see lora_table)")
    return out


def train_hours(cfg: ModelConfig, tokens: float, gpu: str = "a100-40", mfu: float = 0.4,
                num_gpus: int = 1) -> float:
    """Wall-clock hours to train `cfg` on `tokens` tokens: 6·N·tokens FLOPs (Kaplan et al. 2020,
    forward + backward) over `num_gpus` × the GPU's dense bf16 peak × `mfu`.

    `mfu` (model FLOPs utilisation) is an assumption, not a measurement: 0.3–0.5 is typical for a
    well-fed decoder on A100/H100 (Chowdhery et al. 2022, PaLM, Table 3); `python -m havoc_lite.bench`
    on the GPU measures the real figure. Gradient checkpointing adds about a third (one more forward).

    Raises:
        ValueError: a GPU without a known peak, or mfu outside (0, 1].
    """
    if gpu not in PEAK_BF16_TFLOPS:
        raise ValueError(f"no bf16 peak known for GPU {gpu!r}; one of {sorted(PEAK_BF16_TFLOPS)}")
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu}")
    flops = 6 * cfg.num_parameters() * tokens
    return flops / (num_gpus * PEAK_BF16_TFLOPS[gpu] * 1e12 * mfu) / 3600


def check_args(args: argparse.Namespace) -> None:
    """Refuse values that describe no run (ConfigError naming the flag), before any arithmetic."""
    from .errors import ConfigError
    for flag, value, ok, want in (
            ("--batch-size", args.batch_size, args.batch_size >= 1, ">= 1"),
            ("--seq-len", args.seq_len, args.seq_len is None or args.seq_len >= 1, ">= 1"),
            ("--fsdp", args.fsdp, args.fsdp >= 1, ">= 1 (the number of GPUs)"),
            ("--tokens", args.tokens, args.tokens is None or (args.tokens > 0 and math.isfinite(args.tokens)),
             "a positive number"),
            ("--mfu", args.mfu, 0 < args.mfu <= 1, "in (0, 1], e.g. 0.4")):
        if not ok:
            raise ConfigError(f"{flag} must be {want}, got {value}")
    try:
        capacity = gpu_capacity(args.gpu)
    except ValueError as e:
        raise ConfigError(f"--gpu: {e}") from None
    if not (capacity > 0 and math.isfinite(capacity)):
        raise ConfigError(f"--gpu {args.gpu}: a GPU size must be a positive number of GiB")
    if args.tokens is not None and args.gpu not in PEAK_BF16_TFLOPS:
        raise ConfigError(f"--tokens needs a GPU with a known bf16 peak for --gpu; one of "
                          f"{sorted(PEAK_BF16_TFLOPS)}, got {args.gpu!r}")


def main(argv: Optional[list[str]] = None) -> int:
    """The command line; a bad flag is one line and exit 2 (`errors.run_cli`)."""
    from .errors import run_cli
    return run_cli(_main, argv)


def _main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m havoc_lite.memory", description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="7b", choices=sorted(PRESETS) + sorted(PRETRAINED))
    ap.add_argument("--gpu", default="a100-40", help=f"one of {sorted(GPUS)} or a size in GiB")
    ap.add_argument("--phase", default="sft", choices=PHASES)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=None, help="default: the preset's max_seq_len")
    ap.add_argument("--grad-checkpointing", action="store_true")
    ap.add_argument("--fsdp", type=int, default=1, help="number of GPUs the states are sharded over")
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp32"))
    ap.add_argument("--all", action="store_true", help="table of every preset on 24/40/80 GB cards")
    ap.add_argument("--lora-r", type=int, default=0, help="plan a LoRA run of this rank (0: full training)")
    ap.add_argument("--quantize", default=None, choices=("nf4",), help="QLoRA: 4-bit NF4 frozen base")
    ap.add_argument("--lora-table", action="store_true",
                    help="which pretrained bases fit LoRA / QLoRA SFT on a T4-16, an L4-24 and an A100-40")
    ap.add_argument("--tokens", type=float, default=None,
                    help="also estimate training hours for this many tokens (6·N·tokens FLOPs)")
    ap.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilisation for --tokens")
    args = ap.parse_args(argv)
    check_args(args)
    from .memory_tables import lora_table, table
    if args.all:
        print(table(batch_size=args.batch_size, seq_len=args.seq_len))
        return 0
    if args.lora_table:
        print(lora_table(batch_size=args.batch_size if args.batch_size > 1 else 4, seq_len=args.seq_len or 1024,
                         lora_r=args.lora_r or 16))
        return 0
    if args.quantize and not args.lora_r:
        ap.error("--quantize nf4 needs --lora-r > 0")
    p = plan(args.preset, args.phase, args.gpu, args.batch_size, args.seq_len, args.grad_checkpointing,
             args.fsdp, args.dtype, lora_r=args.lora_r, quantize=args.quantize)
    print(p.report())
    if args.tokens:
        cfg = model_config(args.preset)
        hours = train_hours(cfg, args.tokens, args.gpu, args.mfu, max(1, args.fsdp))
        took = f"~{hours:.1f} h" if hours >= 1 else f"~{hours * 60:.0f} min"
        print(f"  time: {args.tokens:.3g} tokens x 6 x {cfg.num_parameters():,} params "
              f"on {max(1, args.fsdp)} x {args.gpu} at an assumed MFU of {args.mfu:.0%}: "
              f"{took} (estimate, not a measurement)")
    return 0 if p.fits else 1


if __name__ == "__main__":
    raise SystemExit(main())
