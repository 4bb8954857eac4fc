"""Outcome reward model on the tiny preset: planted-error pairs from offline arithmetic traces.

The model sees the rendered trace (question, calculator calls, their results, the answer); a
planted error changes the answer so it no longer matches the last tool result. After a short BCE
fit, its catch-rate on held-out planted errors must beat chance by a wide margin.
"""
import random

import pytest
import torch

from havoc_lite.reward_model import (RewardModel, perturb_number, planted_error_pairs,
                                     train_reward_model)


@pytest.fixture(scope="module")
def tok_and_traces(tmp_path_factory):
    from synth.offline import generate_offline
    from havoc_lite.reward_model import solution_text
    from havoc_lite.tokenizer import train_tokenizer
    train = generate_offline("arithmetic", 600, seed=0, split="train")
    test = generate_offline("arithmetic", 120, seed=1, split="test")
    texts = [t["question"] + " " + solution_text(t) for t in train]
    tok = train_tokenizer(texts, tmp_path_factory.mktemp("tok"), vocab_size=1000)
    return tok, train, test


def test_perturb_number_always_differs():
    rng = random.Random(0)
    for v in ["0", "7", "37", "1200", "-4", "2.5", "0.3333333333"]:
        for _ in range(50):
            p = perturb_number(v, rng)
            assert p != v and float(p) != float(v)


def test_planted_pairs_label_the_changed_answer(tok_and_traces):
    _, train, _ = tok_and_traces
    triples = planted_error_pairs(train[:200], seed=0)
    assert 60 < sum(1 for *_, ok in triples if not ok) < 140
    for (q, text, ok), tr in zip(triples, train[:200]):
        assert q == tr["question"]
        assert (f"<answer>{tr['answer']}</answer>" in text) == ok


def test_reward_model_catches_planted_errors(tok_and_traces, tmp_path):
    tok, train, test = tok_and_traces
    torch.manual_seed(0)
    # the last 40 tokens hold the final tool result and the answer: enough to judge, and short
    # enough to fit on a CPU in seconds
    rm = RewardModel.from_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=40, n_layers=2)
    before = rm.catch_rate(tok, planted_error_pairs(test, seed=1))
    # lr 1e-3: at 3e-3 the fit stalls at chance (BCE 0.69) for some seeds and package versions;
    # at 1e-3 it learns for every seed tried (0, 1: held-out AUC 0.72).
    hist = train_reward_model(rm, tok, planted_error_pairs(train, seed=0), steps=400, batch_size=32,
                              lr=1e-3, seed=0)
    assert sum(hist["loss"][-20:]) / 20 < sum(hist["loss"][:20]) / 20
    held_out = planted_error_pairs(test, seed=1)
    after = rm.catch_rate(tok, held_out)
    print("reward model before", before, "after", after)
    # chance: AUC 0.5 and a catch-rate equal to the false-alarm rate (a coin that flags p of all
    # items flags p of the wrong ones too). AUC's null s.d. here is ~0.05.
    assert before["auc"] == pytest.approx(0.5, abs=0.05)
    assert after["auc"] > 0.6, after
    assert after["catch_rate"] > after["false_alarm_rate"] + 0.15, after

    rm.save_pretrained(tmp_path / "rm")
    again = RewardModel.from_pretrained(tmp_path / "rm")
    pairs = [(q, s) for q, s, _ in held_out[:8]]
    assert again.score(tok, pairs) == pytest.approx(rm.score(tok, pairs), abs=1e-5)
    # best-of-n between a right solution and the same one with its answer changed: the model must
    # prefer the right one far more often than a coin (0.5) over 40 held-out pairs
    right = [(q, s) for q, s, ok in held_out if ok][:40]
    picks = [rm.rank(tok, q, [s.replace("<answer>", "<answer>9").replace("</answer>", "9</answer>"), s])[0]
             for q, s in right]
    print("best-of-2 prefers the right solution in", sum(picks), "of", len(picks))
    assert sum(picks) / len(picks) > 0.7


def test_train_command_learns_saves_and_refuses_bad_rows(tok_and_traces, tmp_path, capsys):
    """`python -m havoc_lite.reward_model` from a policy folder: held-out AUC rises from chance,
    the folder reloads to the same scores (with its max_tokens cut), and a bad row is one line."""
    import json
    from havoc_lite.errors import run_cli
    from havoc_lite.model import HavocModel
    from havoc_lite.config import ModelConfig
    from havoc_lite.reward_model import main
    from synth.offline import write_jsonl
    tok, train, _ = tok_and_traces
    policy = tmp_path / "policy"
    torch.manual_seed(0)
    HavocModel(ModelConfig.from_preset("tiny", vocab_size=tok.vocab_size, n_layers=2)).save_pretrained(policy)
    tok.save(policy)                                 # found next to the model, as in a run folder
    write_jsonl(train, tmp_path / "traces.jsonl")
    report = main(["--model", str(policy), "--data", str(tmp_path / "traces.jsonl"), "--out", str(tmp_path / "rm"),
                   "--steps", "400", "--max-tokens", "40", "--device", "cpu"])
    assert report["held_out"] == 120 and report["train"] == 480
    assert report["before"]["auc"] == pytest.approx(0.5, abs=0.1)
    assert report["after"]["auc"] > 0.6, report
    saved = json.loads((tmp_path / "rm" / "report.json").read_text())
    assert saved["after"] == report["after"]
    again = RewardModel.from_pretrained(tmp_path / "rm")
    assert again.max_tokens == 40
    q = train[0]["question"]
    assert len(again.encode(tok, q, "x" * 400)) == 40

    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "q", "solution": "s", "correct": True}) + "\n"
                                        + json.dumps({"prompt": "no answer"}) + "\n")
    code = run_cli(main, ["--model", str(policy), "--data", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "bad.jsonl:2" in err[0], err
    assert not (tmp_path / "x").exists()
