"""HavocModel: a Llama-style decoder-only transformer.

Pre-norm blocks of RMSNorm (Zhang & Sennrich 2019) -> grouped-query attention with rotary position
embeddings (Su et al. 2021; Ainslie et al. 2023) -> residual, RMSNorm -> SwiGLU MLP (Shazeer 2020)
-> residual; a final RMSNorm and an LM head tied to the token embedding. Parameter names and the
rotary convention (rotate-half, not interleaved) follow Hugging Face `LlamaForCausalLM`, so
`export.py` maps weights one to one.

Shapes: B batch, T new tokens, L cache length, H query heads, KV key/value heads, hd head_dim,
d d_model, V vocab_size.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig
from .loss import IGNORE_INDEX, linear_cross_entropy, lm_loss  # noqa: F401  (lm_loss: re-exported)



def _sdpa_supports_gqa() -> bool:
    """torch >= 2.5 broadcasts KV heads inside SDPA (`enable_gqa`); older builds need an expand."""
    try:
        z = torch.zeros(1, 2, 1, 2)
        F.scaled_dot_product_attention(z, z[:, :1], z[:, :1], enable_gqa=True)
        return True
    except (TypeError, RuntimeError):
        return False


_SDPA_HAS_GQA = _sdpa_supports_gqa()


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x²) + eps) · weight, computed in float32 (as HF LlamaRMSNorm). x: [..., d]."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Llama 3.1 RoPE frequency scaling (Meta's `apply_scaling` in llama-models; HF
    `_compute_llama3_parameters`): wavelengths shorter than original_context/high_freq_factor are
    kept, those longer than original_context/low_freq_factor are divided by `factor`, and the band
    between is interpolated smoothly. inv_freq: [head_dim/2] float32 -> the same shape."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
    return torch.where(medium, smoothed, scaled)


def rope_cache(max_seq_len: int, head_dim: int, theta: float,
               scaling: Optional[dict] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables [max_seq_len, head_dim] for rotate-half RoPE (Su et al. 2021, HF layout).

    `scaling`: a `ModelConfig.rope_scaling` dict (type `llama3`, or `default`/None for none)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    if scaling and scaling.get("rope_type", scaling.get("type")) == "llama3":
        inv_freq = llama3_inv_freq(inv_freq, scaling)
    t = torch.arange(max_seq_len, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, heads, T, hd] by cos/sin [B, 1, T, hd] (or broadcastable)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    """Grouped-query self-attention through `F.scaled_dot_product_attention`.

    Without a cache it is plain causal attention over the T given tokens, or, with `doc_mask`
    [B, 1, T, T] (packed rows), attention within each example only. With a cache (`k_cache`,
    `v_cache` of shape [B, KV, L, hd], preallocated by the engine) the new keys/values are written
    at each row's own `positions` and every query attends to the cache slots at or before its
    position, so rows of a batch may sit at different lengths.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.num_kv_heads, self.head_dim = cfg.n_heads, cfg.num_kv_heads, cfg.head_dim
        bias = cfg.attention_bias                   # Qwen2 has q/k/v biases, Llama none
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=bias)
        self.k_proj = nn.Linear(cfg.d_model, cfg.num_kv_heads * cfg.head_dim, bias=bias)
        self.v_proj = nn.Linear(cfg.d_model, cfg.num_kv_heads * cfg.head_dim, bias=bias)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x, cos, sin, positions=None, k_cache=None, v_cache=None, cache_meta=None,
                doc_mask=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        mask, is_causal = doc_mask, doc_mask is None
        if k_cache is not None:
            # Scatter the new K/V into each row's slots, then attend over the filled prefix.
            rows, L, mask = cache_meta
            k_cache[rows, :, positions] = k.transpose(1, 2).to(k_cache.dtype)
            v_cache[rows, :, positions] = v.transpose(1, 2).to(v_cache.dtype)
            k, v = k_cache[:, :, :L].to(q.dtype), v_cache[:, :, :L].to(q.dtype)
            is_causal = False

        rep = self.n_heads // self.num_kv_heads
        extra = {}
        if rep > 1:
            if _SDPA_HAS_GQA:
                extra["enable_gqa"] = True
            else:
                k = k.repeat_interleave(rep, dim=1)
                v = v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal and T > 1,
            dropout_p=self.dropout if self.training else 0.0, **extra)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)) (Shazeer 2020, "GLU Variants Improve Transformer")."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.ffn_hidden_size, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.ffn_hidden_size, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_hidden_size, cfg.d_model, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """x + attn(norm(x)), then h + mlp(norm(h)); dropout on both residual branches in training."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.post_attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, positions=None, k_cache=None, v_cache=None, cache_meta=None,
                doc_mask=None):
        x = x + self.drop(self.attn(self.input_norm(x), cos, sin, positions, k_cache, v_cache, cache_meta,
                                    doc_mask))
        return x + self.drop(self.mlp(self.post_attn_norm(x)))


class HavocModel(nn.Module):
    """Decoder-only LM. `forward(input_ids [B, T]) -> logits [B, T, V]` (float32 logits).

    Set `model.gradient_checkpointing = True` to recompute each block in the backward pass
    (activation memory drops from O(layers) to O(1) blocks at ~1/3 more compute).
    Set `model.neftune_noise_alpha = a > 0` to add NEFTune noise to the input embeddings in
    training mode (Jain et al. 2023, arXiv:2310.05914: uniform in [-1, 1] scaled by a / sqrt(T * d),
    T the row's length in tokens, as in Hugging Face's `neftune_noise_alpha`); 0 (default) adds none.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.drop = nn.Dropout(cfg.dropout)
        self.gradient_checkpointing = False
        self.neftune_noise_alpha = 0.0
        self.supports_logits_index = True   # engine.generate: prefill asks for the last logits only
        cos, sin = rope_cache(cfg.max_seq_len, cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-NeoX / GPT-2 init: N(0, 0.02) everywhere, residual output projections (o_proj,
        down_proj) scaled by 1/sqrt(2·n_layers) so the residual stream's variance does not grow
        with depth (Radford et al. 2019, §2.3); norms start at 1, biases at 0."""
        std = self.config.initializer_range
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                nn.init.zeros_(p)
            elif p.dim() == 1:
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.config.n_layers))
            else:
                nn.init.normal_(p, 0.0, std)

    # --- forward ------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, positions: Optional[torch.Tensor] = None,
                kv_cache=None, targets: Optional[torch.Tensor] = None,
                logits_index: Optional[torch.Tensor] = None, return_hidden: bool = False) -> torch.Tensor:
        """Logits for every input position, or with `targets` the mean next-token loss.

        Args:
            input_ids: LongTensor [B, T] of token ids in [0, vocab_size).
            positions: LongTensor [B, T]. With a cache: the absolute positions, i.e. the slots the
                new tokens are written to. Without a cache: a PACKED batch, several examples per
                row, each example's positions restarting at 0 (0, 1, …, n-1, 0, 1, …); attention
                then stays inside each example (a block-diagonal causal mask through SDPA) and
                RoPE uses the restarted positions, so every example sees exactly what it would
                see alone. Default (None): 0..T-1 for every row, one sequence per row.
            kv_cache: an object with `k` and `v` tensors [n_layers, B, KV, L, hd] (see
                `engine.KVCache`); None for a plain full-sequence forward.
            targets: LongTensor [B, T] aligned with input_ids (targets[:, t] is the token after
                input_ids[:, t], -100 = no loss). Then the return value is the mean
                cross-entropy, computed chunk by chunk (`loss.linear_cross_entropy`), so the fp32
                logits [B, T, V] are never materialised.
            logits_index: LongTensor [B]: only the logits at position logits_index[b] of each
                row are computed, [B, vocab_size] (a prefill needs its last token's only: the head
                is skipped for the other T - 1 positions).
            return_hidden: return the final-norm hidden states [B, T, d_model] ([B, d_model]
                with `logits_index`) in the model's dtype instead of logits; the LM head is
                skipped (a reward model's scalar head reads these).

        Returns:
            float32 logits [B, T, vocab_size] ([B, vocab_size] with `logits_index`), the hidden
            states with `return_hidden`, or a float32 scalar loss when `targets` is given.

        Raises:
            ValueError: ids outside the vocab (checked for CPU tensors only), positions beyond
                `max_seq_len`, or a cache without positions.

        No host synchronisation on an accelerator when the engine drives the cache: ids are
        validated where they enter (the engine's prompt check, the Trainer's tokenizer check),
        and the cache's host-side `filled` / `same_position` (set by `engine.generate` each
        step) give the attended length without reading `positions` back. A caller that leaves
        them unset pays one sync to compute them (as before). The packed path has no sync.
        """
        cfg = self.config
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, T], got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if input_ids.device.type == "cpu" and input_ids.numel() and not torch.compiler.is_compiling():
            bad = (input_ids < 0) | (input_ids >= cfg.vocab_size)   # on the CPU: no device to stall
            if bad.any():
                raise ValueError(f"token id {input_ids[bad][0].item()} is outside the vocabulary "
                                 f"[0, {cfg.vocab_size})")
        doc_mask = None
        if positions is None or kv_cache is None:
            if positions is None and kv_cache is not None:
                raise ValueError("a kv_cache forward needs explicit positions [B, T]")
            if T > cfg.max_seq_len:
                raise ValueError(f"sequence of {T} tokens is longer than max_seq_len={cfg.max_seq_len}")
        if positions is None:
            cos, sin = self.rope_cos[:T][None, None], self.rope_sin[:T][None, None]
        elif kv_cache is None:
            # packed rows: an example starts where its position is 0; a query sees the keys of its
            # own example at or before it. Positions never exceed t, so T <= max_seq_len bounds them.
            doc = (positions == 0).cumsum(1)                                        # [B, T]
            causal = torch.ones(T, T, dtype=torch.bool, device=input_ids.device).tril()
            doc_mask = ((doc[:, :, None] == doc[:, None, :]) & causal)[:, None]    # [B, 1, T, T]
            flat = positions.reshape(-1)
            cos = self.rope_cos.index_select(0, flat).view(B, 1, T, -1)
            sin = self.rope_sin.index_select(0, flat).view(B, 1, T, -1)
        else:
            filled = getattr(kv_cache, "filled", None)
            if filled is not None:       # host-side, from the engine: max position + 1, no sync
                length, same = int(filled), bool(getattr(kv_cache, "same_position", False))
            else:
                lo, hi = (int(v) for v in torch.aminmax(positions))
                length, same = hi + 1, lo == hi
            if length > cfg.max_seq_len:
                raise ValueError(f"position {length - 1} is beyond max_seq_len={cfg.max_seq_len}")
            flat = positions.reshape(-1)
            cos = self.rope_cos.index_select(0, flat).view(B, 1, T, -1)
            sin = self.rope_sin.index_select(0, flat).view(B, 1, T, -1)
        cache_meta = None
        if kv_cache is not None:
            # shared by every layer: row index, filled length, and the [B, 1, T, L] visibility mask
            rows = torch.arange(B, device=input_ids.device)[:, None].expand(B, T)
            if T == 1 and same:
                mask = None   # one decode step, every row at the same slot: all L slots are visible
            else:
                slots = torch.arange(length, device=input_ids.device)
                mask = (slots[None, None, :] <= positions[:, :, None])[:, None]
            cache_meta = (rows, length, mask)

        if type(self.embed_tokens) is nn.Embedding:
            x = self.embed_tokens(input_ids)
        else:                             # peft's wrapper of the markup rows of a pretrained vocab
            from .lora import embed
            x = embed(self.embed_tokens, input_ids)
        x = self.drop(x)
        if self.training and self.neftune_noise_alpha > 0:   # NEFTune: noisy embeddings while tuning
            scale = self.neftune_noise_alpha / math.sqrt(T * x.size(-1))
            x = x + torch.empty_like(x).uniform_(-scale, scale)
        for i, layer in enumerate(self.layers):
            kc = kv_cache.k[i] if kv_cache is not None else None
            vc = kv_cache.v[i] if kv_cache is not None else None
            if self.gradient_checkpointing and self.training:
                x = checkpoint(layer, x, cos, sin, positions, kc, vc, cache_meta, doc_mask, use_reentrant=False)
            else:
                x = layer(x, cos, sin, positions, kc, vc, cache_meta, doc_mask)
        if logits_index is not None:
            x = x[torch.arange(B, device=x.device), logits_index]               # [B, d]
        h = self.norm(x)
        if return_hidden:
            return h
        plain = type(self.lm_head) is nn.Linear
        if targets is None:
            if plain:
                return self.lm_head(h).float()
            from .lora import head_logits     # a wrapped head: the markup rows of a pretrained vocab
            return head_logits(self.lm_head, h).float()
        if plain:
            return linear_cross_entropy(h, self.lm_head.weight, targets)
        from .lora import head_parts
        parts = head_parts(self.lm_head)
        if parts is not None:
            weight, rows, index = parts
            return linear_cross_entropy(h, weight, targets, rows=rows, index=index)
        return lm_loss(self.lm_head(h), targets)   # any other head: logits first

    def loss(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy, Hugging Face convention: `labels` [B, T] are aligned with
        `input_ids` and shifted here (position t predicts labels[t+1]); -100 is ignored."""
        return self(input_ids[:, :-1], targets=labels[:, 1:])

    # --- save / load --------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path) -> None:
        """Write `model.safetensors` + `config.json` into `out_dir` (created). The tied LM head is
        stored once (as `embed_tokens.weight`)."""
        from safetensors.torch import save_file
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if self.config.tie_embeddings:
            state.pop("lm_head.weight", None)
        save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
        self.config.save_json(out_dir / "config.json")

    @classmethod
    def from_pretrained(cls, src: str | Path, device: str | torch.device = "cpu",
                        dtype: Optional[torch.dtype] = None, token: Optional[str] = None) -> "HavocModel":
        """Load a model from a folder written by `save_pretrained`, a Hugging Face Llama / SmolLM2 /
        Qwen2 folder, a hub id (`owner/name`), or a `.gguf` file; see `hub.load_model`.

        Args:
            dtype: cast to this dtype; default keeps the stored one (float32 for GGUF).
            token: Hugging Face token for gated hub models (default `get_secret("HF_TOKEN")`).
        Raises:
            hub.ModelLoadError (a ValueError): one line naming `src` and the cause.
        """
        from .hub import load_model
        return load_model(src, device=device, dtype=dtype, token=token)

    @classmethod
    def _load_own(cls, model_dir: str | Path, device: str | torch.device = "cpu",
                  dtype: Optional[torch.dtype] = None) -> "HavocModel":
        """Load a folder written by `save_pretrained` (no pickle involved).

        Raises:
            FileNotFoundError: the folder lacks model.safetensors or config.json.
            ValueError: the weights do not match the config (missing/unexpected/mis-shaped names).
        """
        from safetensors.torch import load_file
        model_dir = Path(model_dir)
        for name in ("config.json", "model.safetensors"):
            if not (model_dir / name).is_file():
                raise FileNotFoundError(f"{model_dir / name} not found (expected a folder written by "
                                        "HavocModel.save_pretrained)")
        cfg = ModelConfig.load_json(model_dir / "config.json")
        state = load_file(str(model_dir / "model.safetensors"))
        model = cls.from_state_dict(cfg, state, source=str(model_dir / "model.safetensors"))
        return model.to(device=device, dtype=dtype) if dtype else model.to(device)

    @classmethod
    def from_state_dict(cls, cfg: ModelConfig, state: dict[str, torch.Tensor], source: str = "state dict",
                        unexpected: Sequence[str] = (), name: Callable[[str], str] = str) -> "HavocModel":
        """Build a model for `cfg` around the tensors of `state` (our parameter names), without
        allocating weights twice (meta device, then `assign`). A tied head may be absent or present.

        Args:
            unexpected: keys the caller could not map (reported together with ours).
            name: how to print a parameter name in errors (e.g. its Hugging Face name).
        Raises:
            ValueError: missing, unexpected or mis-shaped weights, named, with `source`.
        """
        with torch.device("meta"):
            model = cls(cfg)
        expected = dict(model.state_dict())
        if cfg.tie_embeddings:
            expected.pop("lm_head.weight", None)
            state = {k: v for k, v in state.items() if k != "lm_head.weight"}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(unexpected) + sorted(name(k) for k in set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{source}: weights missing {[name(k) for k in missing][:5]}, "
                             f"unexpected {unexpected[:5]}")
        for k, v in state.items():
            if tuple(v.shape) != tuple(expected[k].shape):
                raise ValueError(f"{source}: {name(k)} has shape {tuple(v.shape)}, config.json implies "
                                 f"{tuple(expected[k].shape)}")
        model.load_state_dict(state, strict=False, assign=True)
        if cfg.tie_embeddings:
            model.lm_head.weight = model.embed_tokens.weight
        model.rope_cos, model.rope_sin = rope_cache(cfg.max_seq_len, cfg.head_dim, cfg.rope_theta,
                                                    cfg.rope_scaling)
        return model

    def resize_token_embeddings(self, n: int) -> "HavocModel":
        """Grow or shrink the vocabulary to `n` ids, in place; returns self.

        New embedding rows (and new LM-head rows when the head is untied) are set to the mean of
        the existing rows, so a new token starts as an "average" token rather than noise that
        dominates the softmax (Hewitt 2021, "Initializing New Word Embeddings for Pretrained
        Language Models"; HF `resize_token_embeddings(mean_resizing=True)` does the same).
        Shrinking drops the last rows. A tied head stays tied; `config.vocab_size` becomes `n`.

        Raises:
            ValueError: n < 1, or n would cut off `bos_id` / `eos_id` / `pad_id`.
        """
        cfg = self.config
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"resize_token_embeddings: n must be a positive int, got {n!r}")
        for name in ("bos_id", "eos_id", "pad_id"):
            if getattr(cfg, name) >= n:
                raise ValueError(f"resize_token_embeddings: n={n} would drop {name}={getattr(cfg, name)}")
        old = cfg.vocab_size
        if n == old:
            return self

        def resized(weight: torch.Tensor) -> nn.Parameter:
            with torch.no_grad():
                keep = weight[:min(n, old)]
                if n > old:
                    mean = weight.float().mean(0, keepdim=True).to(weight.dtype)
                    keep = torch.cat([keep, mean.expand(n - old, -1)])
                return nn.Parameter(keep.clone(), requires_grad=weight.requires_grad)

        # new modules on the meta device (no second random init of a V x d matrix), weights assigned
        new_emb = nn.Embedding(n, cfg.d_model, device="meta")
        new_emb.weight = resized(self.embed_tokens.weight)
        self.embed_tokens = new_emb
        head = nn.Linear(cfg.d_model, n, bias=False, device="meta")
        if cfg.tie_embeddings:
            head.weight = self.embed_tokens.weight
        else:
            head.weight = resized(self.lm_head.weight)
        self.lm_head = head
        cfg.vocab_size = n
        return self

    def num_parameters(self) -> int:
        """Unique parameters (the tied head counted once)."""
        return sum(p.numel() for p in self.parameters())

