"""run_eval with canned samples: pass@k / maj@k aggregation, JSONL records, errors."""
import json

import pytest

from havoc_lite.eval import GSM8KGrader, Sample, pass_at_k, run_eval
from havoc_lite.eval.runner import measure_latency


def test_run_eval_aggregates_pass_and_maj(tmp_path):
    items = [{"id": "a", "prompt": "qa", "gold": "4"}, {"id": "b", "prompt": "qb", "gold": "7"}]
    # per prompt, the answers of samples 0..3 in order
    canned = {"qa": ["4", "5", "5", "4"], "qb": ["1", "7", "2", "3"]}
    seen = {"qa": 0, "qb": 0}

    def generate_fn(prompts, seed):
        out = []
        for p in prompts:
            a = canned[p][seen[p]]
            seen[p] += 1
            calls = [{"name": "calculator", "status": "success" if a != "5" else "error"}]
            out.append(Sample(text=f"<answer>{a}</answer>", tool_calls=calls, num_tokens=3, elapsed_s=0.5))
        return out

    path = tmp_path / "r.jsonl"
    s = run_eval(items, GSM8KGrader(), generate_fn, samples=4, k=(1, 2, 4), batch_size=3,
                 output_jsonl=path, progress=False)
    m = s["metrics"]["strict"]
    assert m["accuracy"] == pytest.approx(3 / 8)
    assert m["pass@2"] == pytest.approx((pass_at_k(4, 2, 2) + pass_at_k(4, 1, 2)) / 2)
    assert m["pass@4"] == 1.0
    # maj@4: "a" ties 4 vs 5 -> first seen "4" (right); "b" all distinct -> "1" (wrong)
    assert m["maj@4"] == 0.5 and m["maj@1"] == 0.5
    assert s["metrics"]["tools"]["success_rate"] == pytest.approx(6 / 8)
    assert s["metrics"]["latency"]["p50_s"] == 0.5 and s["metrics"]["total_tokens"] == 24
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(recs) == 8 and {r["id"] for r in recs} == {"a", "b"}
    assert s["per_example"] == [{"id": "a", "n": 4, "passed": 2}, {"id": "b", "n": 4, "passed": 1}]


def test_run_eval_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k"):
        run_eval([{"prompt": "x", "gold": "1"}], GSM8KGrader(), None, samples=2, k=(5,))
    with pytest.raises(ValueError, match="item 0"):
        run_eval([{"gold": "1"}], GSM8KGrader(), None)


def test_measure_latency_counts_single_queries():
    calls = []

    def generate_fn(prompts, seed):
        calls.append(len(prompts))
        return [Sample(text="1", num_tokens=10)]

    r = measure_latency(generate_fn, ["a", "b", "c"], repeats=2)
    assert calls == [1] * 6 and r["n"] == 6 and r["p50_s"] >= 0


def test_cli_end_to_end_on_a_tiny_model(tmp_path, capsys):
    """`python -m havoc_lite.eval` path: model folder + tokenizer -> results JSON, records, report."""
    import torch
    from havoc_lite.config import ModelConfig
    from havoc_lite.eval.__main__ import EvalArgs, main
    from havoc_lite.eval.gsm8k import ASSET_TEST
    from havoc_lite.model import HavocModel
    from havoc_lite.tokenizer import train_tokenizer

    tok = train_tokenizer([ASSET_TEST], tmp_path / "model", vocab_size=500)
    torch.manual_seed(0)
    HavocModel(ModelConfig.from_preset("tiny", vocab_size=tok.vocab_size, n_layers=1)).save_pretrained(
        tmp_path / "model")
    out = tmp_path / "res" / "x.json"
    res = main(EvalArgs(model=str(tmp_path / "model"), limit=3, samples=2, k="1,2", max_new_tokens=6,
                        batch_size=4, latency_probes=1, output=str(out), device="cpu"))
    saved = json.loads(out.read_text())
    g = saved["benchmarks"]["gsm8k"]
    assert g["num_examples"] == 3 and g["samples"] == 2 and set(g["k"]) == {1, 2}
    assert len(out.with_suffix(".gsm8k.jsonl").read_text().splitlines()) == 6
    rows = {r["criterion"]: r for r in saved["success_criteria"]}
    assert rows["inference memory"]["met"] is True          # a tiny model fits a 40 GB card
    assert rows["GSM8K accuracy (strict)"]["met"] is False  # an untrained one does not solve GSM8K
    assert "| criterion | target | measured | met |" in capsys.readouterr().out
    assert res["latency_single_query"]["n"] == 1


def test_make_generate_fn_shares_one_tool_registry(monkeypatch):
    """Every make_generate_fn(tools="default") reuses one registry (one worker process), instead of
    building a new one per call; an explicit registry is used as given."""
    import havoc_lite.tools as tools_pkg
    from havoc_lite.eval.runner import make_generate_fn
    built = []
    real = tools_pkg.default_registry
    monkeypatch.setattr(tools_pkg, "_SHARED", None)
    monkeypatch.setattr(tools_pkg, "default_registry", lambda *a, **k: built.append(1) or real(*a, **k))

    class Tok:
        end_id, eos_id = 1, 2
    for _ in range(3):
        make_generate_fn(None, Tok())
    assert len(built) == 1
    shared = tools_pkg.shared_registry()
    assert shared is tools_pkg.shared_registry() and len(built) == 1
    shared.close()


def test_report_memory_criterion_comes_from_the_planner():
    """The "inference memory" row is `memory.plan(..., "inference")`'s total (it used to call a
    function that did not exist and always fell back to its own arithmetic)."""
    from havoc_lite import memory
    from havoc_lite.config import ModelConfig
    from havoc_lite.eval.report import inference_memory_bytes, success_criteria
    for preset in ("tiny", "7b", "13b"):
        cfg = ModelConfig.from_preset(preset)
        planned = memory.plan(cfg, "inference", batch_size=1, suggest=False)
        got = inference_memory_bytes(cfg)
        assert got["source"] == "havoc_lite.memory.plan" and got["total_bytes"] == planned.total
        assert got["parts"]["kv cache (bf16)"] == memory.kv_cache_bytes(cfg, 1, cfg.max_seq_len)
        row = {r["criterion"]: r for r in success_criteria(model_cfg=cfg)}["inference memory"]
        assert row["value"] == planned.total and row["met"] == (planned.total <= 40e9)
