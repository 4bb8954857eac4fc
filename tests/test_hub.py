"""Loading pretrained models: Llama / Llama-3 RoPE scaling / SmolLM2 / Qwen2 folders written by
transformers itself give transformers' logits; hub ids, GGUF files and bad input."""
import json

import pytest
import torch

from havoc_lite.engine import generate
from havoc_lite.export import from_hf_llama, to_hf_llama
from havoc_lite.model import HavocModel

transformers = pytest.importorskip("transformers")

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}
SHAPE = dict(vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
# name -> (config class, extra config fields)
ARCHS = {
    "llama-tied": ("LlamaConfig", dict(tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=10000.0)),
    "llama3-rope-untied-head_dim": ("LlamaConfig", dict(tie_word_embeddings=False, rope_theta=500000.0,
                                                       head_dim=24, rope_scaling=LLAMA3_ROPE)),
    "smollm2": ("LlamaConfig", dict(tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=100000.0,
                                    num_key_value_heads=1)),
    "qwen2-tied": ("Qwen2Config", dict(tie_word_embeddings=True, rope_theta=1000000.0)),
    "qwen2-untied": ("Qwen2Config", dict(tie_word_embeddings=False, rms_norm_eps=1e-6)),
}


def hf_model(name: str, tmp_path):
    """A random transformers model of architecture `name`, saved into tmp_path; (model, folder)."""
    cls, extra = ARCHS[name]
    cfg = getattr(transformers, cls)(**{**SHAPE, **extra})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():                           # random biases/norms: zeros/ones would hide bugs
        for n, p in model.named_parameters():
            if n.endswith("bias") or "norm" in n:
                p.normal_(1.0 if "norm" in n else 0.0, 0.3)
    model.save_pretrained(tmp_path)
    return model, tmp_path


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_hf_folder_logits_equal_transformers(tmp_path, name):
    hf, folder = hf_model(name, tmp_path / "hf")
    ours = HavocModel.from_pretrained(folder).eval()
    cfg = ours.config
    assert cfg.attention_bias == name.startswith("qwen2")
    assert cfg.tie_embeddings == ARCHS[name][1]["tie_word_embeddings"]
    assert (cfg.rope_scaling is not None) == ("rope" in name)
    torch.manual_seed(1)
    x = torch.randint(0, 160, (2, 100))             # past original_max_position_embeddings=32
    with torch.no_grad():
        ref = hf(x).logits
        got = ours(x)
    diff = (got - ref).abs().max().item()
    print(f"{name}: max |logit diff| = {diff:.2e}")
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-5)
    # the engine's KV-cache decode follows transformers' greedy path
    prompt = [5, 17, 99, 3]
    with torch.no_grad():
        hf_tokens = hf.generate(torch.tensor([prompt]), max_new_tokens=12, min_new_tokens=12,
                                do_sample=False, pad_token_id=0)[0, len(prompt):].tolist()
    assert generate(ours, [prompt], max_new_tokens=12)[0].tokens == hf_tokens
    # and our export writes the same architecture back, which transformers reads to the same logits
    out = to_hf_llama(ours, tmp_path / "back")
    assert json.loads((out / "config.json").read_text())["model_type"] == hf.config.model_type
    again = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, ref, rtol=0, atol=2e-5)
    assert from_hf_llama(out).config == cfg


@pytest.mark.parametrize("field,value,needle", [
    ("use_sliding_window", True, "use_sliding_window"),
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}, "rope_scaling type 'yarn'"),
    ("rope_scaling", {"rope_type": "dynamic", "factor": 2.0}, "rope_scaling type 'dynamic'"),
    ("model_type", "mixtral", "model_type 'mixtral'"),
    ("num_experts", 8, "num_experts"),
    ("mlp_bias", True, "mlp_bias"),
])
def test_unsupported_features_are_refused_naming_the_field(tmp_path, field, value, needle):
    _, folder = hf_model("qwen2-tied", tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg[field] = value
    if field == "rope_scaling":
        cfg.pop("rope_parameters", None)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=needle) as e:
        HavocModel.from_pretrained(folder)
    assert "\n" not in str(e.value) and str(folder) in str(e.value)
