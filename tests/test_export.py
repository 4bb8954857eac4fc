"""export: our weights in the HF Llama layout give HF's LlamaForCausalLM the same logits."""
import json

import pytest
import torch

from havoc_lite.config import ModelConfig
from havoc_lite.engine import generate
from havoc_lite.export import config_from_hf, from_hf_llama, to_hf_llama
from havoc_lite.model import HavocModel

transformers = pytest.importorskip("transformers")


def make(tie: bool) -> HavocModel:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=300, d_model=64, n_layers=2, n_heads=4, num_kv_heads=2,
                      ffn_hidden_size=160, max_seq_len=128, rope_theta=5000.0, norm_eps=1e-6,
                      tie_embeddings=tie, initializer_range=0.4)  # wide: varied greedy paths
    return HavocModel(cfg).eval()


@pytest.mark.parametrize("tie", [True, False])
def test_hf_llama_parity_and_round_trip(tmp_path, tie):
    ours = make(tie)
    out = to_hf_llama(ours, tmp_path / "hf")
    hf_cfg = json.loads((out / "config.json").read_text())
    assert hf_cfg["architectures"] == ["LlamaForCausalLM"] and hf_cfg["num_key_value_heads"] == 2
    from safetensors import safe_open
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert "model.layers.1.self_attn.k_proj.weight" in names
    assert ("lm_head.weight" in names) == (not tie)

    hf = transformers.LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert hf.config.tie_word_embeddings == tie
    torch.manual_seed(1)
    x = torch.randint(0, 300, (3, 40))
    with torch.no_grad():
        ref = hf(x).logits
    torch.testing.assert_close(ours(x), ref, rtol=0, atol=1e-5)

    # 32 greedy tokens: HF generate (its own cache) == our engine
    prompt = [0, 11, 222, 33, 4]
    with torch.no_grad():
        hf_tokens = hf.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False,
                                min_new_tokens=32, pad_token_id=2)[0, len(prompt):].tolist()
    assert generate(ours, [prompt], max_new_tokens=32)[0].tokens == hf_tokens
    assert len(set(hf_tokens)) > 3

    back = from_hf_llama(out)
    assert back.config == ours.config
    for (k, a), (k2, b) in zip(ours.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert torch.equal(back(x), ours(x))


def test_hf_written_folder_loads(tmp_path):
    """A folder written by transformers itself (not by us) loads, and gives HF's logits."""
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                                   max_position_embeddings=64, tie_word_embeddings=False)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path)
    ours = from_hf_llama(tmp_path)
    assert ours.config.num_kv_heads == 1 and not ours.config.tie_embeddings
    x = torch.randint(0, 128, (2, 17))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, rtol=0, atol=1e-5)


def test_export_writes_tokenizer_and_bf16(tmp_path):
    ours = make(True)
    out = to_hf_llama(ours, tmp_path / "bf16", dtype=torch.bfloat16)
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    back = from_hf_llama(out)
    assert back.embed_tokens.weight.dtype == torch.bfloat16
    assert torch.equal(back.embed_tokens.weight, ours.embed_tokens.weight.to(torch.bfloat16))

    class FakeTok:                        # anything with .save(dir) writing tokenizer.model
        def save(self, d):
            (d / "tokenizer.model").write_bytes(b"spm")
    out = to_hf_llama(ours, tmp_path / "tok", tokenizer=FakeTok())
    tc = json.loads((out / "tokenizer_config.json").read_text())
    assert (out / "tokenizer.model").read_bytes() == b"spm"
    assert tc["bos_token"] == "<|bos|>" and "</tool>" in tc["additional_special_tokens"]


def test_unsupported_configs_are_named():
    base = dict(vocab_size=10, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                num_attention_heads=2, model_type="llama")
    for extra, field in (({"attention_bias": True}, "attention_bias"),
                         ({"hidden_act": "gelu"}, "hidden_act"),
                         ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "RoPE scaling"),
                         ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "gpt2")):
        with pytest.raises(ValueError, match=field):
            config_from_hf({**base, **extra})
    with pytest.raises(FileNotFoundError):
        from_hf_llama("/nonexistent/dir")


def test_bench_runs_and_reports_every_figure(tmp_path):
    """The benchmark CLI end to end at toy sizes, compiled contenders included (figures printed,
    never asserted as speed)."""
    from havoc_lite import bench
    out = tmp_path / "b.json"
    threads = torch.get_num_threads()
    try:
        res = bench.main(["--preset", "tiny", "--steps", "1", "--seq-len", "16", "--batch-size", "2",
                          "--new-tokens", "4", "--gen-batches", "1", "2", "--reps", "1",
                          "--clock", "cpu", "--threads", "1", "--compile", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    saved = json.loads(out.read_text())
    assert saved["generate"].keys() == {"batch_1", "batch_2"}
    for fig in (saved["train_tokens_per_s"], saved["generate"]["batch_2"]["tokens_per_s"]):
        assert fig["ours"] > 0 and fig["hf"] > 0
    assert saved["num_parameters"] == ModelConfig.from_preset("tiny").num_parameters()
    assert saved["train_tokens_per_s"].keys() == {"ours", "hf", "ours_compiled", "hf_compiled"}
    assert saved["train_compiled_ratio"] > 0 and saved["generate"]["batch_1"]["compiled_ratio"] > 0
    assert res["train_ratio"] == pytest.approx(saved["train_tokens_per_s"]["ours"]
                                               / saved["train_tokens_per_s"]["hf"])


def test_bench_vs_trl_trains_both_on_the_same_work():
    """`bench --vs trl` at toy sizes: both sides learn (loss well below the untrained ln V) on packed rows
    of the same traces with the same loss mask, so their loss-bearing tokens per step agree within
    a quarter (the packers differ: TRL best-fit over the whole set, ours over a buffer)."""
    pytest.importorskip("trl")
    import math

    from havoc_lite import bench_trl
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        res = bench_trl.run("tiny", seq_len=64, batch_size=4, steps=3, warmup=1, reps=1, num_traces=150,
                            vocab_size=512, lr=3e-3, verbose=False)
    finally:
        torch.set_num_threads(threads)
    per_step = res["loss_tokens_per_step"]
    assert 0.75 < per_step["ours"] / per_step["trl"] < 1.33
    assert res["dtype"] == "float32" and res["trl_bf16"] is False    # TRL's SFTConfig defaults to bf16
    assert all(v > 0 for v in res["tokens_per_s"].values())
    for loss in res["last_loss"].values():      # untrained: about ln V
        assert loss < math.log(res["vocab_size"]) - 0.5
