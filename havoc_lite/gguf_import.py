"""Read a llama.cpp / Ollama `.gguf` file (Llama, SmolLM2, Qwen2 architectures) as a HavocModel.

The `gguf` package (llama.cpp's own Python reader) parses the file; `gguf.quants.dequantize`
turns every tensor (F32, F16, BF16, Q8_0, Q4_K, ...) back into float32. Two llama.cpp conventions
are undone here:

- For the `llama` architecture, llama.cpp's `convert_hf_to_gguf.py` permutes the rows of the q and
  k projections (its RoPE rotates interleaved pairs; HF and we rotate halves). `unpermute` is the
  inverse, as in transformers' `LlamaTensorProcessor._reverse_permute_weights`. `qwen2` files
  use llama.cpp's NeoX RoPE and are stored unpermuted.
- Llama-3.x RoPE scaling is stored as a `rope_freqs.weight` tensor of per-frequency divisors, not
  as metadata. We recover the `llama3` parameters by recomputing those divisors.

GGML lists a tensor's dimensions innermost first, so a [out, in] matrix has `shape == [in, out]`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .config import ModelConfig
from .model import HavocModel, llama3_inv_freq

SUPPORTED_ARCHS = ("llama", "qwen2")

# GGUF tensor name (after `blk.{i}.`) -> ours (after `layers.{i}.`)
_LAYER_MAP = {
    "attn_norm.weight": "input_norm.weight",
    "attn_q.weight": "attn.q_proj.weight",
    "attn_k.weight": "attn.k_proj.weight",
    "attn_v.weight": "attn.v_proj.weight",
    "attn_q.bias": "attn.q_proj.bias",
    "attn_k.bias": "attn.k_proj.bias",
    "attn_v.bias": "attn.v_proj.bias",
    "attn_output.weight": "attn.o_proj.weight",
    "ffn_norm.weight": "post_attn_norm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_MAP = {"token_embd.weight": "embed_tokens.weight", "output_norm.weight": "norm.weight",
               "output.weight": "lm_head.weight"}


def gguf_name(ours: str) -> str:
    """Our parameter name -> the llama.cpp tensor name (KeyError for one without a counterpart)."""
    if ours.startswith("layers."):
        _, i, rest = ours.split(".", 2)
        return f"blk.{i}." + {v: k for k, v in _LAYER_MAP.items()}[rest]
    return {v: k for k, v in _GLOBAL_MAP.items()}[ours]


def havoc_name(name: str) -> str:
    """llama.cpp tensor name -> ours (KeyError for one HavocModel has no slot for)."""
    if name.startswith("blk."):
        _, i, rest = name.split(".", 2)
        return f"layers.{i}.{_LAYER_MAP[rest]}"
    return _GLOBAL_MAP[name]


def permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF q/k rows [n_head·hd, ...] -> llama.cpp's interleaved order (`convert_hf_to_gguf.py`,
    `LlamaModel.permute`): within each head, row pairs (j, j + hd/2) become neighbours."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Inverse of `permute` (transformers' `_reverse_permute_weights`)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return default
    value = f.contents()
    return value


def llama3_rope_from_factors(factors: torch.Tensor, head_dim: int, theta: float, context: int,
                             source: str) -> dict[str, Any]:
    """The `llama3` rope_scaling dict whose divisors equal llama.cpp's `rope_freqs.weight`.

    llama.cpp writes 1 / (scaled inv_freq / inv_freq) per frequency. `factor` is the largest
    divisor; low/high_freq_factor and the original context are Meta's defaults (1, 4, 8192; what
    convert_hf_to_gguf.py itself assumes), tried also with the file's context length.
    Raises ValueError naming `source` when no such setting reproduces the divisors.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    factor = float(factors.max())
    for original in (8192, context):
        scaling = {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": int(original)}
        ours = inv_freq / llama3_inv_freq(inv_freq, scaling)
        if factors.shape == ours.shape and torch.allclose(factors.float(), ours, rtol=1e-4, atol=1e-5):
            return scaling
    raise ValueError(f"{source}: rope_freqs.weight holds RoPE frequency factors that are not "
                     "Llama-3 scaling; not supported")


def read_gguf(path: str | Path, dtype: Optional[torch.dtype] = None) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Parse a GGUF file into a ModelConfig and a state dict with our parameter names.

    Args:
        dtype: cast each tensor as it is dequantised (saves peak memory); default float32.
    Raises:
        ValueError: not a readable GGUF file (bad magic, truncated), an architecture other than
            llama/qwen2, or a feature HavocModel lacks (MoE, another RoPE scaling, partial
            rotary); one line naming the file and the field.
    """
    import gguf
    source = str(path)
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:                        # the reader raises ValueError, IndexError, OSError...
        raise ValueError(f"{source}: not a readable GGUF file, truncated or corrupt ({type(e).__name__}: {e})") from e
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise ValueError(f"{source}: general.architecture={arch!r} is not supported "
                         f"(supported: {list(SUPPORTED_ARCHS)})")
    a = lambda key, default=None: _field(reader, f"{arch}.{key}", default)  # noqa: E731
    if a("expert_count"):
        raise ValueError(f"{source}: {arch}.expert_count={a('expert_count')}: mixture-of-experts "
                         "models are not supported")
    scaling_type = a("rope.scaling.type")
    if scaling_type not in (None, "none"):
        raise ValueError(f"{source}: {arch}.rope.scaling.type={scaling_type!r} is not supported")
    if a("attention.sliding_window"):
        raise ValueError(f"{source}: {arch}.attention.sliding_window is set: sliding-window "
                         "attention is not supported")
    try:
        d, heads = int(a("embedding_length")), int(a("attention.head_count"))
        kv = int(a("attention.head_count_kv", heads))
        head_dim = int(a("attention.key_length", d // heads))
        n_layers, ffn = int(a("block_count")), int(a("feed_forward_length"))
    except TypeError:
        raise ValueError(f"{source}: metadata lacks {arch}.embedding_length / attention.head_count / "
                         "block_count / feed_forward_length") from None
    if int(a("rope.dimension_count", head_dim)) != head_dim:
        raise ValueError(f"{source}: {arch}.rope.dimension_count={a('rope.dimension_count')} != "
                         f"head_dim {head_dim}: partial rotary embeddings are not supported")
    names = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in names:
        raise ValueError(f"{source}: no token_embd.weight tensor")
    vocab = int(a("vocab_size") or names["token_embd.weight"].shape[-1])
    theta = float(a("rope.freq_base", 10000.0))
    context = int(a("context_length", 2048))

    state: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    rope_scaling = None
    for t in reader.tensors:
        try:
            values = gguf.quants.dequantize(t.data, t.tensor_type)
            # F32/F16 come back as views of the read-only memory map: copy them into our memory
            values = values.astype(np.float32, copy=not values.flags.writeable)
            w = torch.from_numpy(values.reshape(tuple(int(n) for n in reversed(t.shape))))
        except Exception as e:
            raise ValueError(f"{source}: tensor {t.name} ({t.tensor_type.name}) cannot be read "
                             f"({type(e).__name__}: {e}); the file may be truncated") from e
        if t.name == "rope_freqs.weight":
            rope_scaling = llama3_rope_from_factors(w, head_dim, theta, context, source)
            continue
        try:
            key = havoc_name(t.name)
        except KeyError:
            unexpected.append(t.name)
            continue
        if arch == "llama" and key.endswith(("q_proj.weight", "q_proj.bias")):
            w = unpermute(w, heads)
        elif arch == "llama" and key.endswith(("k_proj.weight", "k_proj.bias")):
            w = unpermute(w, kv)
        state[key] = w.to(dtype or torch.float32)
    if unexpected:
        raise ValueError(f"{source}: tensors HavocModel has no slot for: {unexpected[:5]}")

    def token(key: str, default: int) -> int:
        v = _field(reader, f"tokenizer.ggml.{key}")
        return int(v) if v is not None and 0 <= int(v) < vocab else default

    cfg = ModelConfig(
        vocab_size=vocab, d_model=d, n_layers=n_layers, n_heads=heads, num_kv_heads=kv,
        head_dim=head_dim, ffn_hidden_size=ffn, max_seq_len=context, rope_theta=theta,
        norm_eps=float(a("attention.layer_norm_rms_epsilon", 1e-5)),
        tie_embeddings="lm_head.weight" not in state, attention_bias="layers.0.attn.q_proj.bias" in state,
        rope_scaling=rope_scaling, bos_id=token("bos_token_id", 0), eos_id=token("eos_token_id", 1),
        pad_id=token("padding_token_id", token("eos_token_id", 2)))
    if cfg.attention_bias and arch != "qwen2":
        raise ValueError(f"{source}: q/k/v biases in a {arch!r} file are not supported")
    return cfg, state


def load_gguf(path: str | Path, device: str | torch.device = "cpu",
              dtype: Optional[torch.dtype] = None) -> HavocModel:
    """A HavocModel with the (dequantised) weights of a GGUF file; float32 unless `dtype` is given.

    Raises ValueError (see `read_gguf`; also missing or mis-shaped tensors, named).
    """
    cfg, state = read_gguf(path, dtype=dtype)
    model = HavocModel.from_state_dict(cfg, state, source=str(path), name=_gguf_name_or_same)
    return model.to(device)


def _gguf_name_or_same(ours: str) -> str:
    try:
        return gguf_name(ours)
    except KeyError:
        return ours
