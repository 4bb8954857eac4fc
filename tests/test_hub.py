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
    # return_hidden gives transformers' final-norm hidden states (what a reward head reads)
    with torch.no_grad():
        ref_h = hf.model(x).last_hidden_state
        last = torch.tensor([99, 40])
        torch.testing.assert_close(ours(x, return_hidden=True), ref_h, rtol=0, atol=2e-5)
        torch.testing.assert_close(ours(x, logits_index=last, return_hidden=True), ref_h[[0, 1], last],
                                   rtol=0, atol=2e-5)
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
    ours.save_pretrained(tmp_path / "ours")             # and our own folder keeps every field
    assert HavocModel.from_pretrained(tmp_path / "ours").config == cfg


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


# --- sources: our folder, sharded HF folder, hub id, bad input -----------------------------------
from havoc_lite import hub  # noqa: E402
from havoc_lite.hub import ModelLoadError, load_model, resolve_source  # noqa: E402


def hub_error(cls, msg="404"):
    """A huggingface_hub HTTP error without an HTTP response object (their __init__ wants one)."""
    e = cls.__new__(cls)
    Exception.__init__(e, msg)
    return e


def test_sharded_folder_and_our_folder(tmp_path):
    hf, folder = hf_model("qwen2-untied", tmp_path / "hf")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    x = torch.randint(0, 160, (1, 20))
    with torch.no_grad():
        ref = hf(x).logits
        torch.testing.assert_close(load_model(tmp_path / "sharded")(x), ref, rtol=0, atol=2e-5)
    ours = load_model(folder)
    ours.save_pretrained(tmp_path / "ours")              # our own layout, with the q/k/v biases
    again = HavocModel.from_pretrained(tmp_path / "ours")
    assert again.config == ours.config and torch.equal(again(x), ours(x))
    ours.save_pretrained(tmp_path / "run" / "step_000007")   # a run's out_dir follows `latest`
    (tmp_path / "run" / "latest").write_text("step_000007\n")
    assert torch.equal(load_model(tmp_path / "run")(x), ours(x))


def test_hub_id_downloads_config_weights_and_tokenizer_only(tmp_path, monkeypatch):
    _, folder = hf_model("llama-tied", tmp_path / "snap")
    seen = {}

    def fake_download(repo_id, allow_patterns=None, token=None, **kw):
        seen.update(repo_id=repo_id, patterns=allow_patterns, token=token)
        return str(folder)
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_from_env")
    model = HavocModel.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert model.config.n_layers == 2
    assert seen["repo_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert seen["token"] == "hf_secret_from_env"                   # via secrets.get_secret
    assert "*.safetensors" in seen["patterns"] and "tokenizer.json" in seen["patterns"]
    assert not any(p.endswith((".bin", ".pt", ".pth", "*")) and p != "*.safetensors" for p in seen["patterns"])
    load_model("a/b", token="explicit")
    assert seen["token"] == "explicit"


def test_hub_gguf_file_is_downloaded_alone(tmp_path, monkeypatch):
    import huggingface_hub
    from havoc_lite.gguf_export import export_gguf
    _, folder = hf_model("qwen2-tied", tmp_path / "hf")
    gguf_path = export_gguf(load_model(folder), None, tmp_path / "q.gguf")
    seen = {}

    def fake_file(repo_id, filename, token=None, **kw):
        seen.update(repo_id=repo_id, filename=filename)
        if filename != "q.gguf":
            raise hub_error(huggingface_hub.errors.EntryNotFoundError, "404 entry")
        return str(gguf_path)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_file)
    model = load_model("someone/Qwen-GGUF/q.gguf")
    assert seen == {"repo_id": "someone/Qwen-GGUF", "filename": "q.gguf"} and model.config.attention_bias
    with pytest.raises(ModelLoadError, match="someone/Qwen-GGUF: the repo has no file 'other.gguf'"):
        load_model("someone/Qwen-GGUF/other.gguf")


@pytest.mark.parametrize("error,needle", [
    ("RepositoryNotFoundError", "no such model on the Hugging Face hub"),
    ("GatedRepoError", "gated model"),
    ("LocalEntryNotFoundError", "cannot reach the Hugging Face hub"),
])
def test_hub_errors_are_one_line_naming_the_repo(monkeypatch, error, needle):
    import huggingface_hub
    import huggingface_hub.errors as errors
    cls = getattr(errors, error)
    exc = hub_error(cls) if issubclass(cls, errors.HfHubHTTPError) else cls("offline")

    def fail(*a, **kw):
        raise exc
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ModelLoadError, match=needle) as e:
        load_model("someone/llama-that-does-not-exist")
    assert str(e.value).startswith("someone/llama-that-does-not-exist: ") and "\n" not in str(e.value)
    if error == "GatedRepoError":
        assert "HF_TOKEN" in str(e.value)


def test_bad_local_sources_are_one_line_and_touch_nothing(tmp_path):
    _, folder = hf_model("llama-tied", tmp_path / "hf")
    weights = folder / "model.safetensors"
    # missing path, wrong file type, folder without config / weights
    for src, needle in ((tmp_path / "nope", "no such file or folder"),
                        (weights, "must be .gguf"),
                        (tmp_path, "no config.json")):
        with pytest.raises(ModelLoadError, match=needle):
            load_model(src)
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="no model.safetensors"):
        load_model(tmp_path / "noweights")
    # a truncated safetensors file and a corrupt config.json
    (tmp_path / "noweights" / "model.safetensors").write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="noweights"):
        load_model(tmp_path / "noweights")
    (tmp_path / "noweights" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_model(tmp_path / "noweights")
    # truncated / corrupt GGUF files; the files are left exactly as they were
    from havoc_lite.gguf_export import export_gguf
    good = export_gguf(load_model(folder), None, tmp_path / "good.gguf")
    data = good.read_bytes()
    cases = {"truncated.gguf": data[: len(data) // 2], "header.gguf": data[:100],
             "garbage.gguf": b"GGUF" + b"\xff" * 200, "notgguf.gguf": b"PK\x03\x04" + b"\0" * 100,
             "empty.gguf": b""}
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(ModelLoadError) as e:
            load_model(tmp_path / name)
        assert name in str(e.value) and "\n" not in str(e.value), str(e.value)
        assert (tmp_path / name).read_bytes() == blob
    assert load_model(good).config.n_layers == 2


def test_gguf_llama3_rope_scaling_round_trips_through_rope_freqs(tmp_path):
    """Llama-3 RoPE scaling is written as llama.cpp's rope_freqs tensor and recovered on read."""
    _, folder = hf_model("llama3-rope-untied-head_dim", tmp_path / "hf")
    ours = load_model(folder)
    ours.config.rope_scaling["original_max_position_embeddings"] = 8192  # llama.cpp's assumption
    ours = HavocModel.from_state_dict(ours.config, ours.state_dict()).eval()
    from havoc_lite.gguf_export import export_gguf
    import gguf
    path = export_gguf(ours, None, tmp_path / "l3.gguf")
    assert any(t.name == "rope_freqs.weight" for t in gguf.GGUFReader(path).tensors)
    back = load_model(path)
    assert back.config.rope_scaling == ours.config.rope_scaling
    x = torch.randint(0, 160, (1, 50))
    stored = HavocModel(ours.config).eval()
    stored.load_state_dict({k: v.half().float() if v.dim() > 1 else v for k, v in ours.state_dict().items()})
    torch.testing.assert_close(back(x), stored(x), rtol=0, atol=1e-4)
