"""To and from the Hugging Face Llama layout.

`to_hf_llama(model, out_dir)` writes a folder that `transformers.LlamaForCausalLM.from_pretrained`,
vLLM, llama.cpp's `convert_hf_to_gguf.py` and lm-evaluation-harness read as a Llama model:
`config.json` (architectures ["LlamaForCausalLM"], model_type "llama") and `model.safetensors` with
HF parameter names. Our blocks are the Llama block and our RoPE is HF's rotate-half convention, so
every tensor maps one to one, without permutation. `from_hf_llama(dir)` reads such a folder back
(also sharded `model.safetensors.index.json` checkpoints), refusing what HavocModel cannot
represent (biases, RoPE scaling, another activation) with a ValueError naming the field.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

import torch

from .config import ModelConfig
from .model import HavocModel

# ours -> HF, per layer ({i} is the layer index); the rest are global names
_LAYER_MAP = {
    "input_norm.weight": "input_layernorm.weight",
    "attn.q_proj.weight": "self_attn.q_proj.weight",
    "attn.k_proj.weight": "self_attn.k_proj.weight",
    "attn.v_proj.weight": "self_attn.v_proj.weight",
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
    """The `config.json` dict of a LlamaForCausalLM with `cfg`'s shape.

    RoPE θ is written both as the long-standing top-level `rope_theta` (vLLM, llama.cpp, older
    transformers) and as transformers 5's `rope_parameters`.
    """
    return {
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
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "rope_scaling": None,
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


def to_hf_llama(model: HavocModel, out_dir: str | Path, tokenizer: Any = None,
                dtype: Optional[torch.dtype] = None) -> Path:
    """Write `model` as a Hugging Face Llama folder: config.json, generation_config.json and
    model.safetensors (`lm_head.weight` only when the embeddings are untied).

    Args:
        tokenizer: optional `HavocTokenizer`; its `tokenizer.model` (sentencepiece) is copied in,
            with a minimal tokenizer_config.json / special_tokens_map.json naming the special tokens.
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
    from .tokenizer import SPECIAL_TOKENS
    tokenizer.save(out)                       # tokenizer.model (+ vocab, special_tokens.json)
    special = {"bos_token": SPECIAL_TOKENS[cfg.bos_id], "eos_token": SPECIAL_TOKENS[cfg.eos_id],
               "pad_token": SPECIAL_TOKENS[cfg.pad_id], "unk_token": "<unk>"}
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


def config_from_hf(hf: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """A ModelConfig from a Llama `config.json` dict.

    Raises:
        ValueError: not a Llama config, or a feature HavocModel lacks (attention/MLP biases,
            RoPE scaling, an activation other than SiLU); the message names the field and `source`.
    """
    if hf.get("model_type") not in ("llama", None) and "LlamaForCausalLM" not in hf.get("architectures", []):
        raise ValueError(f"{source}: model_type {hf.get('model_type')!r} is not a Llama model")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{source}: hidden_act={hf['hidden_act']!r}; HavocModel's SwiGLU uses silu")
    for name in ("attention_bias", "mlp_bias"):
        if hf.get(name):
            raise ValueError(f"{source}: {name}=true; HavocModel has no biases")
    rope = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling")
    if (scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default")) or \
            rope.get("rope_type", "default") != "default":
        raise ValueError(f"{source}: RoPE scaling {scaling or rope} is not supported (plain RoPE only)")
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
        initializer_range=float(hf.get("initializer_range", 0.02)), **ids)


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
    """Load a Hugging Face Llama folder (ours or anyone's) as a HavocModel.

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
