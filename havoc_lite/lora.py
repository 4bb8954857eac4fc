"""LoRA and QLoRA on a HavocModel, through `peft`.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") freezes a pretrained
weight W [out, in] and learns a low-rank update: y = W·x + (alpha / r) · B·A·x, with A [r, in]
(Kaiming-uniform init) and B [out, r] (zero init, so a fresh adapter leaves the model unchanged).
Only A and B are trained: for SmolLM2-135M at r=16 on all seven projections that is 4.9M of 135M
parameters, and a checkpoint holds those plus their AdamW moments (megabytes, not gigabytes).

QLoRA (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs") stores the frozen
W in 4-bit NormalFloat (NF4, bitsandbytes `Linear4bit`) and trains the same adapters on top; it
needs a CUDA GPU.

The adapters are `peft`'s own layers injected in place (`peft.inject_adapter_in_model`), so the
model stays a HavocModel (the Trainer, the engine and `export.to_hf_llama` see the same class) and
the LoRA arithmetic, merge and dropout are peft's, not a second copy here.

    model = apply_lora(model, r=16, alpha=32, dropout=0.05)   # in place; only A/B need grad
    adapters = lora_state_dict(model)                        # {"layers.0.attn.q_proj.lora_A.weight": ...}
    merged = merge_lora(model)                               # W + (alpha/r)·B·A, plain nn.Linear again
"""
from __future__ import annotations

import hashlib
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

# The seven linear layers of a Llama block (HavocModel uses the Hugging Face names).
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
QUANTIZE_CHOICES = (None, "nf4")


def lora_settings(r: int = 16, alpha: float = 32, dropout: float = 0.05,
                  targets: Sequence[str] = DEFAULT_TARGETS, quantize: Optional[str] = None,
                  source: str = "LoRA", train_tokens: Sequence[int] = ()) -> dict[str, Any]:
    """Validated LoRA settings as a plain dict (what checkpoints record and compare on resume).

    Raises:
        ValueError: r not a positive int, alpha <= 0, dropout outside [0, 1), an empty or unknown
            target (targets must be among DEFAULT_TARGETS), an unknown `quantize`; the message
            names the field and `source`.
    """
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise ValueError(f"{source}: lora_r must be a positive int, got {r!r}")
    if not alpha > 0:
        raise ValueError(f"{source}: lora_alpha must be > 0, got {alpha!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{source}: lora_dropout must be in [0, 1), got {dropout!r}")
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    targets = list(targets)
    unknown = sorted(set(targets) - set(DEFAULT_TARGETS))
    if not targets or unknown:
        raise ValueError(f"{source}: lora_targets {unknown or targets} not among {list(DEFAULT_TARGETS)}")
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"{source}: quantize={quantize!r}; choose none or nf4")
    ordered = [t for t in DEFAULT_TARGETS if t in targets]   # canonical order: settings compare equal
    return {"r": r, "alpha": float(alpha), "dropout": float(dropout), "targets": ordered, "quantize": quantize,
            "train_tokens": sorted({int(i) for i in train_tokens})}


def apply_lora(model: nn.Module, r: int = 16, alpha: float = 32, dropout: float = 0.05,
               targets: Sequence[str] = DEFAULT_TARGETS, quantize: Optional[str] = None,
               train_tokens: Sequence[int] = ()) -> nn.Module:
    """Freeze `model` and add LoRA adapters to its linear layers named in `targets`, in place.

    Args:
        model: a HavocModel (any module whose linear layers carry the Llama names works).
        r: adapter rank; alpha: scale numerator (the update is scaled by alpha / r, Hu et al. 2021 §4.1).
        dropout: dropout on the adapter's input (peft's `lora_dropout`), training only.
        targets: which projections get adapters (default: all seven of each block).
        quantize: None, or "nf4" to first replace the targeted frozen weights by 4-bit NormalFloat
            `bitsandbytes.nn.Linear4bit` layers on the GPU (QLoRA). Other weights stay as they are.
        train_tokens: token ids whose embedding rows (and LM-head rows) are trained too, through
            peft's trainable tokens: the markup tokens a tokenizer added to a pretrained vocabulary
            start as the mean row, identical to each other, and the frozen model could neither tell
            them apart as input nor predict one over another. A tied head shares the rows with the
            embedding (one delta); an untied head gets its own.
    Returns:
        the same model object, with `model.lora_settings` (the dict of `lora_settings`) set.
        Only the adapter matrices require grad; B starts at zero, so logits are unchanged.
    Raises:
        ValueError: bad settings (see `lora_settings`); a model that already has adapters;
            quantize="nf4" without CUDA or without bitsandbytes (one line saying so).
    """
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils.other import TrainableTokensWrapper
    settings = lora_settings(r, alpha, dropout, targets, quantize, train_tokens=train_tokens)
    if has_lora(model):
        raise ValueError("apply_lora: the model already has LoRA adapters (merge_lora first)")
    ids = settings["train_tokens"]
    vocab = model.embed_tokens.num_embeddings
    if ids and not 0 <= ids[0] <= ids[-1] < vocab:
        raise ValueError(f"apply_lora: train_tokens must lie in [0, {vocab}), got {ids[0]}..{ids[-1]}")
    if settings["quantize"] == "nf4":
        quantize_nf4(model, settings["targets"])
    tied = model.lm_head.weight is model.embed_tokens.weight
    token_layers = {"embed_tokens": ids} if tied else {"embed_tokens": ids, "lm_head": ids}
    config = LoraConfig(r=settings["r"], lora_alpha=settings["alpha"], lora_dropout=settings["dropout"],
                        target_modules=settings["targets"], bias="none",
                        trainable_token_indices=token_layers if ids else None)
    inject_adapter_in_model(config, model)
    if ids and tied:   # the head reads the embedding's rows, new ones included (one shared delta)
        model.lm_head = TrainableTokensWrapper(model.lm_head, "default", token_indices=ids,
                                               tied_adapter=model.embed_tokens.token_adapter)
    for name, p in model.named_parameters():   # peft freezes the base; say so explicitly
        p.requires_grad_(is_adapter_name(name))
    model.lora_settings = settings
    return model


def is_adapter_name(name: str) -> bool:
    """True for a parameter / state-dict name of a LoRA matrix or a trainable-token row block."""
    return "lora_A" in name or "lora_B" in name or "trainable_tokens_delta" in name


def token_rows(module: nn.Module) -> Optional[tuple[nn.Module, Optional[torch.Tensor], Optional[torch.Tensor]]]:
    """For peft's `TrainableTokensWrapper` (the markup rows a pretrained vocabulary gained, trained
    beside LoRA): (its frozen nn.Embedding or nn.Linear, the trained rows [k, d], their token ids
    LongTensor [k] in ascending order); the rows and ids are None while its adapter is disabled or
    merged. None for any other module, or a wrapper with several active adapters.

    Why not call the wrapper: peft writes the k rows into a copy of the whole [V, d] matrix on
    every call (`get_merged_weights`), for the embedding and again for a tied head. On SmolLM2
    (V 49,168, d 576, bf16) one copy took 24 ms on this CPU, against 6.5 ms for the head's whole
    product at batch 1, so every decode step paid for two; and in training the fused loss then
    built the head's gradient as a full [V, d] fp32 matrix to keep k rows of it. `embed`,
    `head_logits` and `head_parts` use the k rows directly (the same values: tests/test_lora.py)."""
    from peft.utils.other import TrainableTokensWrapper
    if not isinstance(module, TrainableTokensWrapper):
        return None
    layer = module.token_adapter
    base = layer.base_layer
    if layer.disable_adapters or layer.merged or not layer.active_adapters:
        return base, None, None
    if len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    rows = layer.trainable_tokens_delta[name]
    index = torch.as_tensor(layer.token_indices[name], dtype=torch.long, device=rows.device)
    order = index.argsort()
    return base, rows[order], index[order]


def _base_output(module: nn.Module, x: torch.Tensor):
    """(output of the frozen layer under `module` for x, trained rows, their ids) for a
    trainable-token wrapper with rows to put in; (module(x), None, None) for anything else."""
    parts = token_rows(module)
    if parts is None:
        return module(x), None, None
    base, rows, index = parts
    return base(x), rows, index


def embed(module: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """`module(ids)` for an embedding, [B, T] -> [B, T, d]; for a trainable-token wrapper
    (`token_rows`), the frozen table's rows with the trained ones put in where `ids` hold them."""
    out, rows, index = _base_output(module, ids)
    if rows is None:
        return out
    slot = torch.searchsorted(index, ids).clamp_(max=index.numel() - 1)    # [B, T] into rows
    hit = index[slot] == ids
    return torch.where(hit[..., None], rows.to(out.dtype)[slot], out)


def head_logits(module: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """`module(h)` for an LM head, [..., d] -> [..., V]; for a trainable-token wrapper
    (`token_rows`), the frozen head's logits with the columns of the trained rows replaced."""
    out, rows, index = _base_output(module, h)
    if rows is None:
        return out
    return out.index_copy(-1, index, F.linear(h, rows.to(out.dtype)))


def head_parts(head: nn.Module) -> Optional[tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]]:
    """(weight [V, d], rows [k, d] or None, index [k] or None) for the fused chunked loss
    (`loss.linear_cross_entropy(h, weight, y, rows=rows, index=index)`), or None when the head is
    something else (then the caller computes the logits through the module). A plain bias-free
    nn.Linear gives its weight; a trainable-token wrapper its frozen weight and trained rows
    (`token_rows`), so neither the logits [B, T, V] nor a merged [V, d] copy is built."""
    if type(head) is nn.Linear:
        return (head.weight, None, None) if head.bias is None else None
    parts = token_rows(head)
    if parts is None or type(parts[0]) is not nn.Linear or parts[0].bias is not None:
        return None
    return parts[0].weight, parts[1], parts[2]


def has_lora(model: nn.Module) -> bool:
    """True when peft LoRA layers are injected in `model`."""
    from peft.tuners.lora import LoraLayer
    return any(isinstance(m, LoraLayer) for m in model.modules())


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors only, keyed without peft's adapter name:
    `layers.{i}.attn.q_proj.lora_A.weight` [r, in] and `...lora_B.weight` [out, r].

    Raises:
        ValueError: the model has no adapters.
    """
    from peft import get_peft_model_state_dict
    if not has_lora(model):
        raise ValueError("lora_state_dict: the model has no LoRA adapters (apply_lora first)")
    return {k: v.detach() for k, v in get_peft_model_state_dict(model).items()}


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "adapters") -> None:
    """Copy adapter tensors (as `lora_state_dict` returns them) into `model`'s adapters.

    Raises:
        ValueError: missing, unexpected or mis-shaped adapter tensors (named, with `source`):
            e.g. a checkpoint of another rank or other targets.
    """
    expected = lora_state_dict(model)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{source}: adapter tensors missing {missing[:3]}, unexpected {unexpected[:3]} "
                         "(other LoRA targets than this run's?)")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ValueError(f"{source}: {k} has shape {tuple(v.shape)}, this run's adapter is "
                             f"{tuple(expected[k].shape)} (another lora_r?)")
    from peft import set_peft_model_state_dict
    set_peft_model_state_dict(model, state)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (W += alpha/r · B·A, peft's `merge`) and put the
    plain `nn.Linear` back, in place. The result is an ordinary HavocModel: its logits equal the
    adapted model's (up to float rounding) and `export.to_hf_llama` writes it as usual.

    Returns:
        the same model object, without `lora_settings`.
    Raises:
        ValueError: no adapters, or a 4-bit (QLoRA) base: merging into NF4 weights would round
            the update away; load the base unquantised and merge there (`python -m havoc_lite.merge`).
    """
    from peft.tuners.lora import LoraLayer
    from peft.utils.other import TrainableTokensWrapper
    if not has_lora(model):
        raise ValueError("merge_lora: the model has no LoRA adapters")
    if (getattr(model, "lora_settings", None) or {}).get("quantize"):
        raise ValueError("merge_lora: the base is 4-bit (QLoRA); load it unquantised, load the adapters "
                         "and merge there (python -m havoc_lite.merge does this)")
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            base = module.get_base_layer()
        elif isinstance(module, TrainableTokensWrapper):
            # copies the trained rows into the (shared, when tied) weight; a tied head merges the
            # same rows again, which changes nothing
            base = module.unload_and_optionally_merge_module(merge=True, safe_merge=False, adapter_names=None)
        else:
            continue
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, base)
    for p in model.parameters():
        p.requires_grad_(True)
    for attr in ("peft_config", "lora_settings"):
        if hasattr(model, attr):
            delattr(model, attr)
    return model


def quantize_nf4(model: nn.Module, targets: Sequence[str] = DEFAULT_TARGETS,
                 compute_dtype: Optional[torch.dtype] = None) -> nn.Module:
    """Replace the `targets` linear layers by frozen 4-bit NF4 `bitsandbytes.nn.Linear4bit` on the
    current CUDA device (double quantisation of the block scales, as in QLoRA §3), in place.

    The weights are read as they are (fp32/fp16/bf16 on CPU or GPU) and quantised when moved to
    the GPU (`Params4bit.to`).
    `compute_dtype` (default bf16 where supported, else fp16) is the dtype of the dequantised matmul.

    Raises:
        ValueError: no CUDA device, or bitsandbytes is not installed (one line, nothing changed).
    """
    if not torch.cuda.is_available():
        raise ValueError("quantize=nf4 (QLoRA) needs a CUDA GPU (bitsandbytes 4-bit kernels); this "
                         "machine has none: drop --quantize to train plain LoRA")
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ValueError("quantize=nf4 (QLoRA) needs bitsandbytes: pip install bitsandbytes") from None
    if compute_dtype is None:
        compute_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    device = torch.device("cuda", torch.cuda.current_device())
    for name, module in list(model.named_modules()):
        parent, _, child = name.rpartition(".")
        if child not in targets or not isinstance(module, nn.Linear):
            continue
        q = bnb.nn.Linear4bit(module.in_features, module.out_features, bias=module.bias is not None,
                              compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4",
                              device="meta")
        q.weight = bnb.nn.Params4bit(module.weight.data.detach().contiguous(), requires_grad=False,
                                     compress_statistics=True, quant_type="nf4", module=q)
        if module.bias is not None:
            q.bias = nn.Parameter(module.bias.data.detach().clone(), requires_grad=False)
        setattr(model.get_submodule(parent) if parent else model, child, q.to(device))
    return model


def base_fingerprint(model: nn.Module) -> str:
    """sha256 over the names, shapes and float32 values of every tensor in `model.state_dict()`
    (the tied head counted once). Floats are hashed as float32, one tensor at a time, so a base
    loaded in bf16 on a GPU and in fp32 on a CPU hash the same (bf16 -> fp32 is exact). A LoRA
    checkpoint records it so that a resume or a merge onto a different base is refused. Call it
    before `apply_lora` (quantisation changes the weights)."""
    h = hashlib.sha256()
    seen = set()
    for name, t in sorted(model.state_dict().items()):
        if t.data_ptr() in seen and t.numel():
            continue
        seen.add(t.data_ptr())
        t = t.detach().to("cpu", torch.float32 if t.is_floating_point() else t.dtype).contiguous()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def cast_for_training(model: nn.Module, frozen_dtype: torch.dtype) -> nn.Module:
    """Trainable (adapter) parameters to float32, the master weights AdamW updates; frozen floating
    parameters to `frozen_dtype` (bf16/fp16 under CUDA autocast: half the memory of the frozen base,
    as the planner assumes; float32 on a CPU, where no autocast runs). 4-bit weights are left as
    they are. In place; returns `model`."""
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
        elif p.is_floating_point() and type(p) is nn.Parameter:
            p.data = p.data.to(frozen_dtype)
    return model
