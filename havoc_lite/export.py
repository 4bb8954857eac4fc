"""To and from the Hugging Face Llama and Qwen2 layouts.

`to_hf_llama(model, out_dir)` writes a folder that `transformers.AutoModelForCausalLM`, vLLM,
llama.cpp's `convert_hf_to_gguf.py` and lm-evaluation-harness read: `config.json` and
`model.safetensors` with HF parameter names. A model without biases is written as
`LlamaForCausalLM`; one with q/k/v biases (`attention_bias`) as `Qwen2ForCausalLM`, whose block is
the Llama block plus those biases. Our RoPE is HF's rotate-half convention, so every tensor maps one
to one, without permutation. `from_hf_llama(dir)` reads such a folder back (Llama, including
Llama-3.x `rope_scaling` of type `llama3`, SmolLM2 and Qwen2/2.5; sharded
`model.safetensors.index.json` checkpoints too), refusing what HavocModel cannot represent
(sliding-window attention, MoE, another RoPE type or activation) with a ValueError naming the field.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

import torch

from .config import LLAMA3_ROPE_KEYS, ModelConfig, check_rope_scaling
from .model import HavocModel

# ours -> HF, per layer ({i} is the layer index); the rest are global names
_LAYER_MAP = {
    "input_norm.weight": "input_layernorm.weight",
    "attn.q_proj.weight": "self_attn.q_proj.weight",
    "attn.k_proj.weight": "self_attn.k_proj.weight",
    "attn.v_proj.weight": "self_attn.v_proj.weight",
    "attn.q_proj.bias": "self_attn.q_proj.bias",
    "attn.k_proj.bias": "self_attn.k_proj.bias",
    "attn.v_proj.bias": "self_attn.v_proj.bias",
    "attn.o_proj.weight": "self_attn.o_proj.weight",
    "post_attn_norm.weight": "post_attention_layernorm.weight",
    "mlp.gate_proj.weight": "mlp.gate_proj.weight",
    "mlp.up_proj.weight": "mlp.up_proj.weight",
    "mlp.down_proj.weight": "mlp.down_proj.weight",
}
_GLOBAL_MAP = {"embed_tokens.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
               "lm_head.weight": "lm_head.weight"}
_LAYER_RE = re.compile(r"^layers\.(\d+)\.(.+)$")
_HF_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def hf_name(name: str) -> str:
    """Our parameter name -> the HF Llama name (KeyError for an unknown one)."""
    m = _LAYER_RE.match(name)
    if m:
        return f"model.layers.{m.group(1)}.{_LAYER_MAP[m.group(2)]}"
    return _GLOBAL_MAP[name]


def havoc_name(hf: str) -> str:
    """HF Llama name -> ours (KeyError for a name HavocModel has no slot for)."""
    m = _HF_LAYER_RE.match(hf)
    if m:
        inverse = {v: k for k, v in _LAYER_MAP.items()}
        return f"layers.{m.group(1)}.{inverse[m.group(2)]}"
    return {v: k for k, v in _GLOBAL_MAP.items()}[hf]


def hf_llama_config(cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The `config.json` dict of a LlamaForCausalLM (or, with `attention_bias`, a
    Qwen2ForCausalLM) with `cfg`'s shape.

    RoPE θ is written both as the long-standing top-level `rope_theta` / `rope_scaling` (vLLM,
    llama.cpp, older transformers) and as transformers 5's `rope_parameters`.
    """
    rope = {"rope_type": "default", **(cfg.rope_scaling or {}), "rope_theta": cfg.rope_theta}
    rope.pop("type", None)
    out = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.ffn_hidden_size,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": rope,
        "rope_scaling": ({k: v for k, v in rope.items() if k != "rope_theta"}
                         if cfg.rope_scaling else None),
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": cfg.initializer_range,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": cfg.bos_id,
        "eos_token_id": cfg.eos_id,
        "pad_token_id": cfg.pad_id,
        "torch_dtype": _DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", "")),
        "use_cache": True,
    }
    if cfg.attention_bias:
        # Qwen2: biases on q/k/v only (a Llama `attention_bias` would also put one on o_proj)
        for k in ("attention_bias", "mlp_bias"):
            out.pop(k)
        out.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2", use_sliding_window=False,
                   sliding_window=None, max_window_layers=cfg.n_layers,
                   layer_types=["full_attention"] * cfg.n_layers)
    return out


def to_hf_llama(model: HavocModel, out_dir: str | Path, tokenizer: Any = None,
                dtype: Optional[torch.dtype] = None) -> Path:
    """Write `model` as a Hugging Face Llama folder (Qwen2 when it has q/k/v biases):
    config.json, generation_config.json and model.safetensors (`lm_head.weight` only when the
    embeddings are untied).

    Args:
        tokenizer: optional `HavocTokenizer`; its `tokenizer.model` (sentencepiece) is copied in,
            with a minimal tokenizer_config.json / special_tokens_map.json naming the special tokens.
            A Hugging Face backed tokenizer (one with a `.hf` attribute) saves its own files.
        dtype: cast the weights (e.g. torch.bfloat16); default: the model's own dtype.
    Returns the folder. Raises ValueError for a parameter with no Llama counterpart.
    """
    from safetensors.torch import save_file
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_embeddings:
            continue
        try:
            key = hf_name(name)
        except KeyError:
            raise ValueError(f"to_hf_llama: parameter {name!r} has no Llama counterpart") from None
        t = tensor.detach().to("cpu")
        state[key] = (t.to(dtype) if dtype is not None else t).contiguous()
    out_dtype = dtype or next(model.parameters()).dtype
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_llama_config(cfg, out_dtype), indent=2) + "\n")
    gen = {"bos_token_id": cfg.bos_id, "eos_token_id": cfg.eos_id, "pad_token_id": cfg.pad_id}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    if tokenizer is not None:
        _write_tokenizer(tokenizer, out, cfg)
    return out


def _write_tokenizer(tokenizer: Any, out: Path, cfg: ModelConfig) -> None:
    from .markup import SPECIAL_TOKENS, UNK
    if hasattr(tokenizer, "hf"):              # HFTokenizer: its save() writes the HF files itself
        tokenizer.save(out)
        return
    tokenizer.save(out)                       # tokenizer.model (+ vocab, special_tokens.json)
    special = {"bos_token": SPECIAL_TOKENS[cfg.bos_id], "eos_token": SPECIAL_TOKENS[cfg.eos_id],
               "pad_token": SPECIAL_TOKENS[cfg.pad_id], "unk_token": UNK}
    extra = [t for t in SPECIAL_TOKENS if t not in special.values()]
    (out / "special_tokens_map.json").write_text(
        json.dumps({**special, "additional_special_tokens": extra}, indent=2, ensure_ascii=False) + "\n")
    tok_cfg = {"tokenizer_class": "LlamaTokenizer", **special, "additional_special_tokens": extra,
               "add_bos_token": False, "add_eos_token": False, "add_prefix_space": False,
               "legacy": False, "model_max_length": cfg.max_seq_len}
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n")


def _first_id(value: Any, default: int) -> int:
    if isinstance(value, list):
        value = value[0] if value else None
    return default if value is None else int(value)


_MODEL_TYPES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def config_from_hf(hf: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """A ModelConfig from a Llama / SmolLM2 / Qwen2 `config.json` dict.

    Qwen2 is the Llama block with biases on q/k/v (`attention_bias=True` here). A Llama
    `attention_bias` also biases o_proj, which HavocModel lacks, so it is refused.

    Raises:
        ValueError: a model_type other than llama/qwen2, or a feature HavocModel lacks (MoE,
            sliding-window attention, MLP or output biases, RoPE scaling other than `llama3`,
            partial rotary, an activation other than SiLU); the message names the field and `source`.
    """
    kind = hf.get("model_type")
    if kind is None:
        arch = hf.get("architectures") or []
        kind = next((k for k, a in _MODEL_TYPES.items() if a in arch), None)
        if kind is None:
            raise ValueError(f"{source}: no model_type, and architectures={arch} is not "
                             f"one of {sorted(_MODEL_TYPES.values())}")
    if kind not in _MODEL_TYPES:
        raise ValueError(f"{source}: model_type {kind!r} is not supported (supported: "
                         f"{sorted(_MODEL_TYPES)}: Llama, SmolLM2, Qwen2/2.5)")
    for moe in ("num_experts", "num_local_experts", "n_routed_experts"):
        if hf.get(moe):
            raise ValueError(f"{source}: {moe}={hf[moe]}: mixture-of-experts models are not supported")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{source}: hidden_act={hf['hidden_act']!r}; HavocModel's SwiGLU uses silu")
    if hf.get("mlp_bias"):
        raise ValueError(f"{source}: mlp_bias=true; HavocModel has no MLP biases")
    if kind == "llama" and hf.get("attention_bias"):
        raise ValueError(f"{source}: attention_bias=true on a Llama model biases o_proj too; "
                         "HavocModel only has q/k/v biases (the Qwen2 layout)")
    if hf.get("use_sliding_window") or "sliding_attention" in (hf.get("layer_types") or []):
        raise ValueError(f"{source}: use_sliding_window=true: sliding-window attention is not supported")
    if float(hf.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError(f"{source}: partial_rotary_factor={hf['partial_rotary_factor']} is not supported")
    # transformers 5 folds rope_theta and rope_scaling into rope_parameters; older files use both.
    rope = dict(hf.get("rope_parameters") or {})
    scaling = dict(hf.get("rope_scaling") or rope)
    kind_rope = scaling.get("rope_type", scaling.get("type", "default"))
    if kind_rope not in ("default", "llama3"):
        raise ValueError(f"{source}: rope_scaling type {kind_rope!r} is not supported (RoPE scaling "
                         "'llama3' or none)")
    rope_scaling = None
    if kind_rope == "llama3":
        scaling.setdefault("original_max_position_embeddings", hf.get("max_position_embeddings"))
        rope_scaling = {"rope_type": "llama3", **{k: scaling.get(k) for k in LLAMA3_ROPE_KEYS}}
        check_rope_scaling(rope_scaling, source)
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    vocab = int(hf["vocab_size"])
    heads = int(hf["num_attention_heads"])
    defaults = ModelConfig.__dataclass_fields__
    ids = {k: _first_id(hf.get(f"{k.split('_')[0]}_token_id"), defaults[k].default)
           for k in ("bos_id", "eos_id", "pad_id")}
    ids = {k: (v if 0 <= v < vocab else defaults[k].default) for k, v in ids.items()}
    return ModelConfig(
        vocab_size=vocab, d_model=int(hf["hidden_size"]), n_layers=int(hf["num_hidden_layers"]),
        n_heads=heads, num_kv_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=hf.get("head_dim") or None, ffn_hidden_size=int(hf["intermediate_size"]),
        max_seq_len=int(hf.get("max_position_embeddings", 2048)), rope_theta=float(theta),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)), tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        initializer_range=float(hf.get("initializer_range", 0.02)), attention_bias=kind == "qwen2",
        rope_scaling=rope_scaling, **ids)


def _load_hf_state(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    single, index = model_dir / "model.safetensors", model_dir / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(str(model_dir / shard)))
        return state
    raise FileNotFoundError(f"{model_dir}: no model.safetensors or model.safetensors.index.json "
                            "(pytorch_model.bin is not read: weights never load through pickle)")


def from_hf_llama(model_dir: str | Path, device: str | torch.device = "cpu",
                  dtype: Optional[torch.dtype] = None) -> HavocModel:
    """Load a Hugging Face Llama / SmolLM2 / Qwen2 folder (ours or anyone's) as a HavocModel.

    Args:
        dtype: cast to this dtype; default keeps the stored one.
    Raises:
        FileNotFoundError: no config.json / safetensors weights.
        ValueError: see `config_from_hf`; weights missing, unexpected or mis-shaped (named).
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir / 'config.json'} not found")
    try:
        hf = json.loads((model_dir / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{model_dir / 'config.json'}: not valid JSON ({e})") from e
    cfg = config_from_hf(hf, str(model_dir / "config.json"))
    hf_state = _load_hf_state(model_dir)
    state, unexpected = {}, []
    for key, tensor in hf_state.items():
        if key.endswith("rotary_emb.inv_freq"):
            continue                                  # older exports store this buffer; we rebuild it
        try:
            state[havoc_name(key)] = tensor
        except KeyError:
            unexpected.append(key)
    model = HavocModel.from_state_dict(cfg, state, source=str(model_dir), unexpected=unexpected, name=hf_name)
    return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
