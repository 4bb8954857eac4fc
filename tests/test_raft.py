"""RAFT: the keep filter, and one real cycle on a tiny model (sampling with tools, grading,
SFT through the Trainer, checkpoint + stats, resume skipping a finished cycle)."""
import json

import torch

from havoc_lite.eval.graders import Grade
from havoc_lite.raft import RaftConfig, run_raft, select_samples


def _v(ok, reward=None):
    return Grade(ok, float(ok) if reward is None else reward)


def test_select_samples_keeps_passing_dedupes_and_ranks():
    results = [(0, "a", _v(True, 0.5)), (0, "a", _v(True, 0.5)), (0, "b", _v(False)),
               (1, "c", _v(True, 1.0)), (1, "d", _v(True, 0.9)), (1, "e", _v(True, 0.8)),
               (2, "f", _v(True, 0.7))]
    kept = select_samples(results)
    assert [(i, t) for i, t, _ in kept] == [(1, "c"), (1, "d"), (1, "e"), (2, "f"), (0, "a")]
    assert [t for _, t, _ in select_samples(results, max_per_prompt=1)] == ["c", "f", "a"]
    assert [t for _, t, _ in select_samples(results, keep_fraction=0.4)] == ["c", "d"]
    assert select_samples([(0, "x", _v(False))]) == []


def test_one_raft_cycle_trains_checkpoints_and_resumes(tmp_path):
    from synth.offline import generate_offline
    from havoc_lite.data import trace_to_messages
    from havoc_lite.config import ModelConfig
    from havoc_lite.eval.graders import ToolAnswerGrader
    from havoc_lite.model import HavocModel, lm_loss
    from havoc_lite.tokenizer import train_tokenizer

    traces = generate_offline("arithmetic", 200, seed=0, split="train")
    tok = train_tokenizer([tr["question"] + " " + trace_to_messages(tr)[-1]["content"] for tr in traces],
                          tmp_path / "tok", vocab_size=600)
    torch.manual_seed(0)
    model = HavocModel(ModelConfig.from_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=128,
                                               n_layers=2))
    items = [{"id": tr["id"], "prompt": trace_to_messages(tr)[:-1], "answer": tr["answer"]}
             for tr in traces[:6]]
    # Warm start: the model learns the right answer for items 0-2 and a wrong one (+1) for 3-5,
    # so the real grader (the tool-trace answer match) passes half of the samples and RAFT must
    # keep exactly the right half.
    rows = [tok.render_chat(it["prompt"] + [{"role": "assistant", "content":
            f"<answer>{int(it['answer']) + (i >= 3)}</answer>"}]) for i, it in enumerate(items)]
    T = max(len(ids) for ids, _ in rows)
    x, y = torch.zeros(6, T, dtype=torch.long), torch.full((6, T), -100)
    for i, (ids, mask) in enumerate(rows):
        x[i, :len(ids)] = torch.tensor(ids)
        y[i, :len(ids) - 1] = torch.tensor([t if m else -100 for t, m in zip(ids[1:], mask[1:])])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(80):
        opt.zero_grad()
        lm_loss(model(x), y).backward()
        opt.step()
    grader = ToolAnswerGrader()

    cfg = RaftConfig(checkpoint="", cycles=1, samples_per_prompt=2, temperature=1.0,
                     max_new_tokens=12, gen_batch_size=12, train_batch_size=4, seq_len=96,
                     lr=1e-3, out_dir=str(tmp_path / "raft"), progress=False, device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hist = run_raft(cfg, model=model, tokenizer=tok, items=items, grader=grader, tools=None)
    stats = hist[-1]
    # at temperature 1 a right-answer sample can still go astray, so at most half pass
    assert stats["samples"] == 12 and 0 < stats["pass_rate"] <= 0.5 and stats["prompts_solved"] == 3
    kept = [json.loads(line) for line in (tmp_path / "raft" / "cycle_01" / "samples.jsonl").read_text().splitlines()]
    assert stats["kept"] == 3      # two identical right samples per solved prompt, kept once
    assert [r["id"] for r in kept] == [it["id"] for it in items[:3]]
    by_id = {it["id"]: it for it in items}
    assert all(grader(by_id[r["id"]], r["output"], []).passed for r in kept)
    assert stats["train_steps"] == -(-stats["kept"] // 4)  # one epoch
    assert stats["loss"] > 0 and stats["checkpoint"]
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    out = tmp_path / "raft"
    assert json.loads((out / "cycle_01" / "stats.json").read_text())["kept"] == stats["kept"]
    assert len((out / "cycle_01" / "samples.jsonl").read_text().splitlines()) == stats["kept"]
    saved = HavocModel.from_pretrained(out / "cycle_01" / (out / "cycle_01" / "latest").read_text().strip())
    assert all(torch.equal(saved.state_dict()[k], v) for k, v in model.state_dict().items())

    # a rerun finds cycle 1 complete, loads its weights and does nothing else
    again = run_raft(cfg, model=HavocModel(model.config), tokenizer=tok, items=items,
                     grader=grader, tools=None)
    assert again[-1]["kept"] == stats["kept"]


def test_raft_trains_fp32_master_weights_of_a_bf16_model(tmp_path):
    """A model loaded in bf16 (as notebook 05 loads it on a GPU) is trained in fp32: with a small
    lr most updates are smaller than bf16's rounding step, so AdamW on bf16 weights would lose them."""
    from synth.offline import generate_offline
    from havoc_lite.config import ModelConfig
    from havoc_lite.data import trace_to_messages
    from havoc_lite.model import HavocModel
    from havoc_lite.tokenizer import train_tokenizer

    traces = generate_offline("arithmetic", 120, seed=0, split="train")
    tok = train_tokenizer([tr["question"] + " " + trace_to_messages(tr)[-1]["content"] for tr in traces],
                          tmp_path / "tok", vocab_size=500)
    torch.manual_seed(0)
    model = HavocModel(ModelConfig.from_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=96,
                                               n_layers=1)).to(torch.bfloat16)
    start = {k: v.float().clone() for k, v in model.state_dict().items()}
    items = [{"id": tr["id"], "prompt": trace_to_messages(tr)[:-1], "answer": tr["answer"]}
             for tr in traces[:4]]

    class Oracle:
        autocast: set = set()

        def __call__(self, item, text, tool_calls):   # graded as each batch is sampled
            self.autocast.add(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
            return Grade(bool(text), 1.0 if text else 0.0)

    cfg = RaftConfig(checkpoint="", cycles=1, samples_per_prompt=2, temperature=1.0, max_new_tokens=8,
                     gen_batch_size=8, train_batch_size=8, seq_len=64, lr=1e-5,
                     out_dir=str(tmp_path / "raft"), progress=False, device="cpu", dtype="bfloat16")
    oracle = Oracle()
    assert run_raft(cfg, model=model, tokenizer=tok, items=items, grader=oracle, tools=None)[-1]["kept"]
    assert oracle.autocast == {torch.bfloat16}            # sampling ran in the run's dtype
    w = next(k for k in start if k.endswith("gate_proj.weight"))
    after = model.state_dict()[w]
    assert after.dtype == torch.float32
    moved = after != start[w]
    assert moved.float().mean() > 0.5                     # AdamW moved most entries ...
    lost_in_bf16 = after.to(torch.bfloat16).float() == start[w]
    assert (moved & lost_in_bf16).float().mean() > 0.5    # ... by less than bf16 can represent
