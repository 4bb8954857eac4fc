"""Write a HavocModel as a `.gguf` file for llama.cpp and Ollama, plus an Ollama `Modelfile`.

    python -m havoc_lite.gguf_export --model runs/merged --out model.gguf --dtype q8_0 --modelfile

The file is written with the `gguf` package's `GGUFWriter` in the layout llama.cpp's own
`convert_hf_to_gguf.py` produces: architecture `llama` (or `qwen2` for a model with q/k/v biases),
llama.cpp tensor names, q/k rows permuted to llama.cpp's interleaved RoPE order (Llama only),
Llama-3 RoPE scaling as a `rope_freqs.weight` tensor, 1-D tensors (norms, biases) in F32 and the
matrices in F16 or Q8_0 (`gguf.quants.quantize`). The tokenizer goes into the metadata: for a
Hugging Face tokenizer its tokens, token types (our markup tokens, being special, are `CONTROL`),
BPE merges, special ids and chat template (via `gguf.SpecialVocab`, as llama.cpp does); for our
sentencepiece `HavocTokenizer` its pieces, scores and types (llama.cpp's `llama` tokenizer model).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .gguf_import import gguf_name, permute
from .model import HavocModel, llama3_inv_freq

DTYPES = ("f16", "q8_0")


def _arch(model: HavocModel) -> str:
    return "qwen2" if model.config.attention_bias else "llama"


def _tensor_data(w: torch.Tensor, dtype: str):
    """(numpy data, GGML type) for one tensor: 1-D ones stay F32 (as llama.cpp keeps norms and
    biases), matrices become F16, or Q8_0 when their rows are a multiple of its 32-wide blocks."""
    import gguf
    Q = gguf.GGMLQuantizationType
    a = w.detach().to("cpu", torch.float32).numpy()
    if a.ndim == 1:
        return a, Q.F32
    if dtype == "q8_0" and a.shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0] == 0:
        return gguf.quants.quantize(a, Q.Q8_0), Q.Q8_0
    return a.astype(np.float16), Q.F16


# base vocabulary size (before added tokens) -> llama.cpp pre-tokenizer of that model family
_PRE_BY_VOCAB = {49152: "smollm", 151643: "qwen2", 128000: "llama-bpe"}


def _pre_tokenizer(hf_tok: Any) -> str:
    """llama.cpp's pre-tokenizer name (`tokenizer.ggml.pre`), which picks the regex llama.cpp
    splits text with before BPE. llama.cpp's converter identifies it by hashing the tokenisation of
    a probe text against a table; we recognise the families this kit loads (SmolLM2, Qwen2.5,
    Llama 3) by their base vocabulary size or name, else `default` (pass `pre=` to override)."""
    pre = _PRE_BY_VOCAB.get(getattr(hf_tok, "vocab_size", None))
    if pre:
        return pre
    name = str(getattr(hf_tok, "name_or_path", "")).lower()
    for key, pre in (("smollm", "smollm"), ("qwen", "qwen2"), ("llama-3", "llama-bpe")):
        if key in name:
            return pre
    return "default"


def _add_hf_tokenizer(writer, hf_tok: Any, n_vocab: int, pre: Optional[str]) -> None:
    """Tokens, types, merges, special ids and chat template of a transformers tokenizer."""
    import gguf
    T = gguf.TokenType
    vocab = hf_tok.get_vocab()
    reverse = {i: t for t, i in vocab.items()}
    added = hf_tok.added_tokens_decoder                          # id -> AddedToken
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in reverse:                                     # embedding rows past the tokenizer
            tokens.append(f"[PAD{i}]")
            types.append(T.UNUSED)
        elif i in added:
            tokens.append(reverse[i])
            types.append(T.CONTROL if added[i].special else T.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(T.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre or _pre_tokenizer(hf_tok))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory() as tmp:                  # SpecialVocab reads saved files
        hf_tok.save_pretrained(tmp)
        special = gguf.SpecialVocab(tmp, load_merges=True, n_vocab=n_vocab)
        special.add_to_gguf(writer)
    if not special.chat_template and getattr(hf_tok, "chat_template", None):
        writer.add_chat_template(hf_tok.chat_template)
    if "bos" not in special.add_special_token:    # our renderers write <bos> themselves
        writer.add_add_bos_token(False)


def _add_sentencepiece(writer, tok: Any, n_vocab: int) -> None:
    """Pieces, scores and types of our sentencepiece `HavocTokenizer` (llama.cpp's
    `_set_vocab_sentencepiece`): control pieces are CONTROL, byte pieces BYTE."""
    import gguf
    T = gguf.TokenType
    sp = tok.sp
    tokens, scores, types = [], [], []
    for i in range(n_vocab):
        if i >= sp.get_piece_size():
            tokens.append(f"[PAD{i}]"), scores.append(-1000.0), types.append(T.UNUSED)
            continue
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(T.CONTROL if sp.is_control(i) else T.UNKNOWN if sp.is_unknown(i)
                     else T.BYTE if sp.is_byte(i) else T.UNUSED if sp.is_unused(i) else T.NORMAL)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_bos_token(False)
    writer.add_add_space_prefix(False)


def export_gguf(model: HavocModel, tokenizer: Any, path: str | Path, dtype: str = "f16",
                name: Optional[str] = None, pre: Optional[str] = None) -> Path:
    """Write `model` (and `tokenizer`'s vocabulary, special ids, chat template) as a GGUF file.

    Args:
        tokenizer: an `HFTokenizer` (its `.hf`), a transformers tokenizer, our `HavocTokenizer`,
            or None (weights only: llama.cpp then cannot tokenize; for inspection only).
        path: the `.gguf` file to write; written to `path.tmp` and renamed, so an existing file
            is replaced only by a complete one.
        dtype: "f16" or "q8_0" for the matrices (1-D tensors stay F32).
        name: `general.name` (default: the file's stem).
        pre: llama.cpp pre-tokenizer name for a BPE tokenizer (default: guessed, see `_pre_tokenizer`).
    Returns the path. Raises ValueError for an unknown dtype or a tokenizer bigger than the model.
    """
    import gguf
    if dtype not in DTYPES:
        raise ValueError(f"export_gguf: dtype={dtype!r}; choose one of {list(DTYPES)}")
    cfg, arch, path = model.config, _arch(model), Path(path)
    hf_tok = getattr(tokenizer, "hf", tokenizer)
    n_tok = len(hf_tok) if tokenizer is not None else 0
    if n_tok > cfg.vocab_size:
        raise ValueError(f"export_gguf: the tokenizer has {n_tok} tokens but the model only "
                         f"{cfg.vocab_size} embedding rows (resize_token_embeddings first)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        _write(gguf.GGUFWriter(str(tmp), arch=arch), model, hf_tok if tokenizer is not None else None,
               arch, dtype, name or path.stem, pre)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)               # a failed export leaves no partial file behind
    return path


def _write(writer, model: HavocModel, hf_tok: Any, arch: str, dtype: str, name: str,
           pre: Optional[str]) -> None:
    import gguf
    cfg = model.config
    writer.add_name(name)
    writer.add_context_length(cfg.max_seq_len)
    writer.add_embedding_length(cfg.d_model)
    writer.add_block_count(cfg.n_layers)
    writer.add_feed_forward_length(cfg.ffn_hidden_size)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.num_kv_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    if hf_tok is None:
        pass
    elif hasattr(hf_tok, "sp"):
        _add_sentencepiece(writer, hf_tok, cfg.vocab_size)
    else:
        _add_hf_tokenizer(writer, hf_tok, cfg.vocab_size, pre)
    if hf_tok is not None and hasattr(hf_tok, "sp"):     # SpecialVocab wrote the HF ones
        writer.add_bos_token_id(cfg.bos_id)
        writer.add_eos_token_id(cfg.eos_id)
        writer.add_pad_token_id(cfg.pad_id)

    if cfg.rope_scaling and cfg.rope_scaling.get("rope_type", cfg.rope_scaling.get("type")) == "llama3":
        # llama.cpp divides each RoPE frequency by this factor (convert_hf_to_gguf.py, LlamaModel)
        inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim))
        writer.add_tensor("rope_freqs.weight", (inv / llama3_inv_freq(inv, cfg.rope_scaling)).numpy())
    for key, w in model.state_dict().items():
        if key == "lm_head.weight" and cfg.tie_embeddings:
            continue
        if arch == "llama" and key.endswith("q_proj.weight"):
            w = permute(w, cfg.n_heads)
        elif arch == "llama" and key.endswith("k_proj.weight"):
            w = permute(w, cfg.num_kv_heads)
        try:
            gname = gguf_name(key)
        except KeyError:
            raise ValueError(f"export_gguf: parameter {key!r} has no GGUF counterpart (a LoRA "
                             "model must be merged first: havoc_lite.lora.merge_lora)") from None
        data, qtype = _tensor_data(w, dtype)
        writer.add_tensor(gname, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def chatml_template() -> str:
    """Ollama (Go template) form of ChatML, the chat format of SmolLM2 and Qwen2.5."""
    return ('{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
            '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
            '<|im_start|>assistant\n')


def write_modelfile(gguf_path: str | Path, out: Optional[str | Path] = None, stop: Sequence[str] = (),
                    template: Optional[str] = None, system: Optional[str] = None,
                    temperature: Optional[float] = None) -> Path:
    """Write an Ollama `Modelfile` next to `gguf_path` (or at `out`): `ollama create NAME -f Modelfile`.

    Args:
        stop: stop strings (e.g. "<|im_end|>", "<|end|>", "</tool>"), one PARAMETER line each.
        template: an Ollama Go template; None leaves it out, so Ollama derives it from the GGUF's
            chat template (`chatml_template()` gives ChatML).
        system / temperature: optional SYSTEM and PARAMETER lines.
    Returns the Modelfile path.
    """
    gguf_path = Path(gguf_path)
    out = Path(out) if out is not None else gguf_path.with_name("Modelfile")
    rel = gguf_path.name if gguf_path.parent.resolve() == out.parent.resolve() else str(gguf_path.resolve())
    lines = [f"FROM ./{rel}" if "/" not in rel else f"FROM {rel}"]
    if template:
        lines.append(f'TEMPLATE """{template}"""')
    if system:
        lines.append(f'SYSTEM """{system}"""')
    for s in stop:
        lines.append(f"PARAMETER stop {_quote(s)}")
    if temperature is not None:
        lines.append(f"PARAMETER temperature {temperature}")
    out.write_text("\n".join(lines) + "\n")
    return out


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m havoc_lite.gguf_export",
                                description="Export a model (our folder, HF folder, hub id or .gguf) to GGUF.")
    p.add_argument("--model", required=True, help="model folder, hub id or .gguf file")
    p.add_argument("--tokenizer", help="tokenizer folder or hub id (default: the model's own)")
    p.add_argument("--out", required=True, help="the .gguf file to write")
    p.add_argument("--dtype", default="f16", choices=DTYPES)
    p.add_argument("--modelfile", action="store_true", help="also write an Ollama Modelfile next to it")
    p.add_argument("--pre", help="llama.cpp pre-tokenizer name (default: guessed from the tokenizer)")
    args = p.parse_args(argv)
    from .hub import ModelLoadError, load_model, resolve_source
    try:
        if not args.out.endswith(".gguf"):
            raise ValueError(f"--out {args.out}: the file name must end in .gguf")
        model = load_model(args.model)
        tok = _load_tokenizer(args.tokenizer or args.model, resolve_source)
        if tok is None:
            print(f"warning: no tokenizer found at {args.tokenizer or args.model}; "
                  "writing weights only", file=sys.stderr)
        path = export_gguf(model, tok, args.out, dtype=args.dtype, pre=args.pre)
    except (ModelLoadError, ValueError, OSError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {args.dtype})")
    if args.modelfile:
        chatml = tok is not None and "<|im_start|>" in getattr(getattr(tok, "hf", tok), "get_vocab", dict)()
        stops = ["<|im_end|>"] if chatml else []
        mf = write_modelfile(path, stop=stops, template=chatml_template() if chatml else None)
        print(f"wrote {mf}")
    return 0


def _load_tokenizer(src: str, resolve_source) -> Any:
    """Our HavocTokenizer (a folder with tokenizer.model + special_tokens.json), else the Hugging
    Face tokenizer of a folder, hub id or .gguf file, as saved: a folder written by `HFTokenizer.save`
    already holds our markup as added special tokens, and a base model's own has none (its
    embedding has no rows for them). None when there is none."""
    path = resolve_source(src)
    if path.is_dir() and (path / "tokenizer.model").is_file() and (path / "special_tokens.json").is_file():
        from .tokenizer import HavocTokenizer
        return HavocTokenizer.load(path)
    import transformers
    try:
        if path.is_file():
            return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        return transformers.AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, TypeError):
        return None


if __name__ == "__main__":
    raise SystemExit(main())
