"""Write the notebooks from the cells below: `python notebooks/build.py`.

The .ipynb files are generated (no outputs, no execution counts) and committed with this script;
edit the cells here, never the .ipynb. Cells stay short and call `havoc_lite` (most of what they
need is in `havoc_lite.colab`), so nothing lives only in a notebook.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

SETUP = '''# Set-up: install the kit from a checkout (this folder's parent, /content/havoc_lite, a copy on
# Drive, or a clone of HAVOC_REPO_URL), then the run folder: Google Drive in Colab (checkpoints
# survive a disconnect), ./checkpoints elsewhere.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("havoc_lite") is None:
    HAVOC_REPO_URL = os.environ.get("HAVOC_REPO_URL", "")   # your fork's git URL, if you clone
    candidates = (os.getcwd(), os.path.dirname(os.getcwd()), "/content/havoc_lite",
                  "/content/drive/MyDrive/havoc_lite")
    ROOT = next((p for p in candidates if os.path.isfile(os.path.join(p, "havoc_lite", "__init__.py"))), None)
    if ROOT is None and HAVOC_REPO_URL:
        ROOT = "/content/havoc_lite"
        subprocess.run(["git", "clone", "--depth", "1", HAVOC_REPO_URL, ROOT], check=True)
    if ROOT is None:
        raise RuntimeError("havoc_lite is not installed: upload the repository to /content/havoc_lite or "
                           "MyDrive/havoc_lite, or set HAVOC_REPO_URL to a git URL to clone")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", ROOT], check=True)
    sys.path.insert(0, ROOT)
from havoc_lite import colab
RUN = colab.setup()'''

PARAMS = '''# Parameters: HAVOC_SMOKE=1 picks tiny sizes (tiny preset, a few steps, a few examples) so the
# notebook runs on a CPU in a minute; otherwise the sizes for one Colab A100.
SMOKE = os.environ.get("HAVOC_SMOKE") == "1"
SZ = colab.sizes(SMOKE)
SZ'''


def md(text: str):
    return new_markdown_cell(text.strip())


def code(text: str):
    return new_code_cell(text.strip())


NOTEBOOKS: dict[str, list] = {}

NOTEBOOKS["00_smoke_local"] = [
    md("""
# 00 · Smoke test, local

The whole pipeline, tiny, on bundled real text: tokenizer → pretraining → exact resume check →
tool-trace SFT → PRIME with the calculator executed during generation → GSM8K → report. The same
as `python -m havoc_lite.smoke` on a laptop. In smoke mode (`HAVOC_SMOKE=1`) the step counts are cut
further: a pipeline check, not a result.
"""),
    code(SETUP),
    code(PARAMS),
    code('''
import dataclasses
from havoc_lite.smoke import QUICK, Smoke, SmokeArgs
smoke = Smoke(SmokeArgs(out=str(RUN / "smoke"), quick=True))
if SMOKE:   # fewer steps and problems than --quick
    smoke.sizes = dataclasses.replace(QUICK, pretrain_steps=12, sft_steps=8, resume_check_steps=2,
                                      n_train_traces=100, n_test_problems=3, n_gsm8k=2, batch_size=8)
exit_code = smoke.run()
'''),
    code('''
import pandas as pd
pd.DataFrame([{"stage": name, "passed": info["passed"], "seconds": info["seconds"],
               "figures": ", ".join(f"{k}={v}" for k, v in info.items() if k not in ("passed", "seconds"))}
              for name, info in smoke.results["stages"].items()]).set_index("stage")
'''),
    code('''
from IPython.display import Image, display
if (RUN / "smoke" / "loss_curve.png").is_file():
    display(Image(str(RUN / "smoke" / "loss_curve.png")))
# The tiny step counts of smoke mode may not pass every goal; a full local run must.
assert SMOKE or exit_code == 0, "a smoke stage failed: see the table above"
'''),
]

NOTEBOOKS["01_tokenizer"] = [
    md("""
# 01 · Tokenizer

A sentencepiece BPE tokenizer with the reasoning / tool markup as single, never-split tokens,
trained on Tiny Shakespeare, GSM8K and rendered tool traces (plus FineWeb-Edu text at A100 sizes).
Writes `<run>/tokenizer/`, which every later notebook loads.
"""),
    code(SETUP),
    code(PARAMS),
    code('''
# An existing tokenizer is kept: the shards and checkpoints of 03-05 depend on it. To retrain,
# set RETRAIN = True (then re-run 03-05 from scratch).
RETRAIN = False
colab.write_general_text(RUN, SZ)   # hub text at A100 sizes (streamed), bundled text always
tok = colab.ensure_tokenizer(RUN, SZ, create=True, retrain=RETRAIN)
tok
'''),
    code('''
import pandas as pd
pd.DataFrame(sorted(tok.special_ids.items(), key=lambda kv: kv[1]), columns=["token", "id"]).T
'''),
    code('''
# Compression on held-out text (GSM8K test problems the tokenizer never saw) and exact round trips.
from havoc_lite.eval import load_gsm8k
held_out = [ex["question"] + "\\n" + ex["answer"] for ex in load_gsm8k(limit=50)]
ids = tok.encode_batch(held_out)
assert all(tok.decode(i) == t for i, t in zip(ids, held_out)), "round trip failed"
print(f"{sum(map(len, held_out)) / sum(map(len, ids)):.2f} characters per token on held-out GSM8K")
'''),
    code('''
# A tool trace rendered as a chat: the loss mask is 1 on the assistant's tokens only, and 0 on the
# tool result the engine writes.
from havoc_lite.data import gsm8k_to_trace, trace_to_messages
example = load_gsm8k(path=colab.ASSETS / "gsm8k_train_500.jsonl", limit=1)[0]
ids, mask = tok.render_chat(trace_to_messages(gsm8k_to_trace(example)))
start = ids.index(tok.assistant_id)   # from the assistant's turn on
pd.DataFrame({"piece": [tok.id_to_piece(i) for i in ids], "loss": mask}).iloc[start - 2:start + 48].T
'''),
]

NOTEBOOKS["02_synth_tool_traces"] = [
    md("""
# 02 · Synthesise tool traces

Verified tool-use traces for SFT, written to `<run>/data/`:
1. **Claude** (`synth.generate`): first a dry run that prints the prompts and the cost estimate and
   sends nothing; then real generation, which runs only when `ANTHROPIC_API_KEY` is set (a hard USD
   cap, resumable after a disconnect, every trace re-checked with the real tools);
2. **offline generators** (`synth.offline`): templated problems for every tool, free and instant,
   plus the GSM8K training problems turned into calculator traces.
"""),
    code(SETUP),
    code(PARAMS),
    code('''
# Dry run: the prompts Claude would get and what the run would cost. Nothing is sent.
from synth.generate import GenerateArgs, run_generation
TOPICS = ["stats_tests", "arithmetic", "algebra_calculus", "doe", "retrieval"]
MODEL = "claude-sonnet-4-5"
MAX_USD_PER_TOPIC = 0.5 if SMOKE else 5.0   # hard cap per topic's output file, resumed runs included
claude_dir = RUN / "data" / "claude"
def claude_args(topic, **kw):
    return GenerateArgs(topic=topic, num_examples=SZ.claude_traces, model=MODEL, max_usd=MAX_USD_PER_TOPIC,
                        output=str(claude_dir / f"{topic}.jsonl"), **kw)
estimate = run_generation(claude_args(TOPICS[0], dry_run=True), registry=colab.tools())
estimate
'''),
    code('''
# Real generation (only with ANTHROPIC_API_KEY; in Colab: Secrets -> ANTHROPIC_API_KEY). Re-running
# the cell resumes each topic where it stopped; the USD cap counts what earlier runs spent.
import pandas as pd
if os.environ.get("ANTHROPIC_API_KEY"):
    reports = {t: run_generation(claude_args(t, resume=True), registry=colab.tools()) for t in TOPICS}
    display(pd.DataFrame(reports).T[["kept", "rejected_total", "usd_spent", "stop_reason"]])
else:
    print("ANTHROPIC_API_KEY is not set: skipping Claude; the offline generators below need no key.")
'''),
    code('''
# Offline generators: verified traces for every tool, and GSM8K as calculator traces.
paths = colab.write_offline_traces(RUN, SZ)
counts = {t: sum(1 for _ in open(p)) for t, p in paths.items()}
pd.DataFrame({"traces": counts, "file": {t: str(p) for t, p in paths.items()}})
'''),
    code('''
# One trace as the model will see it (the assistant turn of SFT).
import json
from havoc_lite.data import render_trace
trace = json.loads(open(paths["stats_tests"]).readline())
print(trace["question"], "\\n\\n", render_trace(trace))
'''),
]

NOTEBOOKS["03_pretrain"] = [
    md("""
# 03 · Pretraining (Drive-checkpointed, resumable)

Pretrains the chosen preset on `<run>/data/shards`. Checkpoints go to `<run>/pretrain/` on Google
Drive (written locally, verified, then copied). **After a disconnect, run the notebook again from
the top: the training cell continues from `latest`** with the same data order, learning-rate
schedule and RNG state as an uninterrupted run.
"""),
    code(SETUP),
    code(PARAMS),
    code('''
# Memory planner first: does the chosen preset fit the GPU (bf16 autocast, AdamW)?
from havoc_lite import memory
print(memory.plan(SZ.preset, "pretrain", "a100-40", SZ.batch_size, SZ.seq_len).report())
colab.memory_frame(SZ.preset, batch_size=SZ.batch_size, seq_len=SZ.seq_len)
'''),
    code('''
tok = colab.ensure_tokenizer(RUN, SZ)          # from 01 (made here in smoke mode if missing)
index = colab.ensure_shards(RUN, SZ, tok)      # tokenised once; reused on a re-run
import pandas as pd
pd.DataFrame({d: {"documents": v["documents"], "tokens": v["tokens"]} for d, v in index["domains"].items()}).T
'''),
    code('''
import dataclasses
from havoc_lite import Trainer
cfg = colab.pretrain_config(RUN, SZ)
print(cfg.to_yaml())
if SMOKE and colab.latest_model(RUN / "pretrain") is None:
    # Smoke mode shows a resume: stop half-way as if the runtime died ...
    Trainer(dataclasses.replace(cfg, stop_at_step=SZ.pretrain_steps // 2), tokenizer=tok).train()
'''),
    code('''
# ... and this cell, re-run after a disconnect, continues from `latest` (resume="auto").
trainer = Trainer(cfg, tokenizer=tok)
print("resumed from", trainer.resumed_from, "at step", trainer.step)
hist = trainer.train()
if SMOKE:
    assert trainer.resumed_from is not None and hist["step"][0] == SZ.pretrain_steps // 2 + 1
'''),
    code('''
colab.plot_history(hist, f"pretraining {SZ.preset}")
colab.history_frame(hist).tail()
'''),
    code('''
# A sample from the pretrained model (greedy continuation).
from havoc_lite import engine
model, _ = colab.load_model(RUN / "pretrain", RUN / "tokenizer")
prompt = tok.encode("ROMEO:", bos=True)
gen = engine.generate(model, [prompt], max_new_tokens=SZ.max_new_tokens)[0]
print("ROMEO:" + tok.decode(gen.tokens))
'''),
]

NOTEBOOKS["04_sft"] = [
    md("""
# 04 · Tool SFT + polish

Supervised fine-tuning of the pretrained model on the verified tool traces of 02 (loss on the
assistant's tokens only; the tool results the engine writes carry no loss), then a short, low-lr
polish pass on clean chats. Then PRIME: pick a budget and watch the model reason, call tools
(executed during generation) and answer.
"""),
    code(SETUP),
    code(PARAMS),
    code('''
tok = colab.ensure_tokenizer(RUN, SZ)
pretrained = colab.ensure_pretrained(RUN, SZ)          # from 03 (made here in smoke mode)
traces = colab.trace_files(RUN, SZ)                    # from 02 (made here in smoke mode)
import pandas as pd
pd.DataFrame({"file": [p.name for p in traces], "traces": [sum(1 for _ in open(p)) for p in traces]})
'''),
    code('''
# SFT on every trace file (resume="auto": re-running continues an interrupted run).
from havoc_lite import Trainer
sft_cfg = colab.sft_config(RUN, SZ, pretrained, traces)
sft_hist = Trainer(sft_cfg, tokenizer=tok).train()
colab.plot_history(sft_hist, "tool SFT")
colab.history_frame(sft_hist).tail(3)
'''),
    code('''
# Polish: a short pass at a low learning rate on clean chats.
polish_cfg = colab.polish_config(RUN, SZ, colab.latest_model(RUN / "sft"))
polish_hist = Trainer(polish_cfg, tokenizer=tok).train()
colab.plot_history(polish_hist, "polish")
colab.history_frame(polish_hist).tail(3)
'''),
    code('''
# PRIME demo: choose a budget (auto = routed per question) and a question, press Run.
from IPython.display import display
model, _ = colab.load_model(RUN / "polish", RUN / "tokenizer")
questions = ["A farmer has 48 eggs and sells half. How many are left?",
             "Is there a significant difference between [5.1, 4.9, 5.6, 5.8] and [6.2, 6.8, 6.1, 7.0]?",
             "What is the derivative of x**3 + 2*x?"]
widget, run_prime = colab.prime_demo(model, tok, questions, max_new_tokens=SZ.max_new_tokens if SMOKE else None,
                                     tools=colab.tools())
display(widget)
if SMOKE:   # no one presses the button in a test: call its handler once
    result = run_prime("heavy", questions[0])
    assert result.routing.budget.value == "heavy"
'''),
    md("""
Chat with it in a terminal: `python -m havoc_lite.chat --model <run>/polish` (add `--show-sections`
to see PRIME's sections as they are written, `-p "question"` for one answer).
"""),
]

NOTEBOOKS["05_eval_gsm8k"] = [
    md("""
# 05 · GSM8K evaluation, RAFT, success criteria

Accuracy on GSM8K (strict and flexible answer extraction, pass@k, maj@k, tool use), then
rejection-sampling fine-tuning (RAFT: sample k answers, keep the verified ones, SFT on them) and
the success-criteria report.
"""),
    code(SETUP),
    code(PARAMS),
    code('''
model_dir = colab.ensure_chat_model(RUN, SZ)     # polish, else sft (made here in smoke mode)
model, tok = colab.load_model(model_dir, RUN / "tokenizer")
print(model_dir, f"{model.num_parameters() / 1e6:.1f}M parameters")
'''),
    code('''
from IPython.display import Markdown, display
from havoc_lite.eval import evaluate_gsm8k, load_gsm8k
from havoc_lite.eval.report import metrics_markdown
ks = sorted({1, SZ.eval_samples})
examples = load_gsm8k(SZ.eval_data, limit=SZ.eval_limit)
summary = evaluate_gsm8k(model, tok, examples, samples=SZ.eval_samples, k=ks,
                         temperature=0.7 if SZ.eval_samples > 1 else 0.0,
                         max_new_tokens=SZ.max_new_tokens, batch_size=SZ.gen_batch_size,
                         tools=colab.tools(), output_jsonl=RUN / "eval" / "gsm8k_samples.jsonl")
display(Markdown(metrics_markdown(summary, "GSM8K")))
'''),
    code('''
import pandas as pd
samples = pd.read_json(RUN / "eval" / "gsm8k_samples.jsonl", lines=True)
samples.head(10)
'''),
    code('''
# RAFT: k samples per training problem, keep the ones the GSM8K verifier accepts, SFT on them.
from havoc_lite.eval.gsm8k import SYSTEM_PROMPT
from havoc_lite.raft import RaftConfig, run_raft
raft_cfg = RaftConfig(checkpoint=str(model_dir), tokenizer=str(RUN / "tokenizer"),
                      prompts=str(colab.ASSETS / "gsm8k_train_500.jsonl"), verifier="gsm8k",
                      system=SYSTEM_PROMPT, limit=SZ.raft_prompts, cycles=SZ.raft_cycles,
                      samples_per_prompt=SZ.raft_samples, max_new_tokens=SZ.max_new_tokens,
                      gen_batch_size=SZ.gen_batch_size, seq_len=SZ.sft_seq_len,
                      out_dir=str(RUN / "raft"), progress=not SMOKE)
raft_stats = run_raft(raft_cfg, model=model, tokenizer=tok, tools=colab.tools())
pd.DataFrame(raft_stats)
'''),
    code('''
# Success criteria: measured values beside the targets.
from havoc_lite.eval.report import criteria_markdown, success_criteria
from havoc_lite.eval.runner import make_generate_fn, measure_latency
from havoc_lite.eval.gsm8k import build_messages
single = make_generate_fn(model, tok, max_new_tokens=SZ.max_new_tokens, tools=colab.tools(), batch_size=1)
latency = measure_latency(single, [build_messages(ex["question"]) for ex in examples[:3]])
rows = success_criteria(summary, latency=latency, model_cfg=model.config)
display(Markdown(criteria_markdown(rows)))
pd.DataFrame(rows)
'''),
]


NOTEBOOKS["06_rl"] = [
    md("""
# 06 · GRPO with tools in the loop

Reinforcement learning against a verifier (GRPO, `havoc_lite/rl.py`): for each GSM8K training
problem the model writes a group of answers with the calculator running inside the rollout, the
GSM8K verifier scores each, the rewards are normalised within the group, and a token-level
policy-gradient step follows. The tool results the engine wrote carry no loss. It starts from the
SFT'd model of 04. Checkpoints go to `<run>/grpo` on Drive; re-run the notebook after a disconnect
and it resumes exactly where it stopped (prompt order, sampler seeds, AdamW).

On one A100 (50m preset): 200 steps × 32 problems × 8 answers (51,200 answers of up to 256 tokens).
Expected time ~30 min, an estimate from the sampling and training cost, not yet measured on a GPU.
"""),
    code(SETUP),
    code(PARAMS),
    code('''
model_dir = colab.ensure_chat_model(RUN, SZ)     # polish, else sft, from 04 (made here in smoke mode)
model, tok = colab.load_model(model_dir, RUN / "tokenizer")
print(model_dir, f"{model.num_parameters() / 1e6:.1f}M parameters")
'''),
    code('''
# GSM8K prompts (train: the bundled 500 in smoke mode, the hub's 7,473 otherwise) and a held-out test slice.
from havoc_lite.eval.gsm8k import build_messages, load_gsm8k
def as_items(examples):
    return [{"id": ex["id"], "prompt": build_messages(ex["question"]), "answer": ex["answer"],
             "gold": ex["gold"]} for ex in examples]
train_items = as_items(load_gsm8k(colab.ASSETS / "gsm8k_train_500.jsonl" if SMOKE else "hub", split="train"))
eval_items = as_items(load_gsm8k(SZ.eval_data, limit=SZ.eval_limit if SMOKE else 500))
len(train_items), len(eval_items)
'''),
    code('''
# GRPO (resume="auto": re-running this cell continues an interrupted run from <run>/grpo).
from havoc_lite.rl import GrpoConfig, GrpoRunner
grpo_cfg = GrpoConfig(
    verifier="gsm8k", out_dir=str(RUN / "grpo"), resume="auto", seed=0, temperature=1.0,
    max_new_tokens=SZ.max_new_tokens, lr=1e-5 if not SMOKE else 1e-4, warmup_steps=0 if SMOKE else 10,
    **(dict(group_size=2, prompts_per_step=2, max_steps=2, gen_batch_size=8, train_batch_size=4,
            save_every=1, eval_every=0) if SMOKE else
       dict(group_size=8, prompts_per_step=32, max_steps=200, gen_batch_size=256, train_batch_size=32,
            save_every=10, eval_every=50)))
runner = GrpoRunner(grpo_cfg, model=model, tokenizer=tok, items=train_items, eval_items=eval_items,
                    tools=colab.tools())
history = runner.train()
'''),
    code('''
import pandas as pd
frame = pd.DataFrame([h for h in history if "reward_mean" in h]).set_index("step")
frame[["reward_mean", "pass_rate", "sampled_tokens", "tool_call_rate", "sample_s", "train_s"]].plot(
    subplots=True, figsize=(8, 8), title="GRPO")
pd.DataFrame([h for h in history if "eval_pass@1" in h])[["step", "eval_pass@1", "eval_ci95"]]
'''),
    md("""
From a terminal: `python -m havoc_lite.rl --checkpoint <run>/sft --prompts p.jsonl --verifier gsm8k
--out-dir <run>/grpo` (`--config grpo_tiny` is the CPU demo of the README; `--kl-coef 0.04` adds the
KL penalty, `--ppo-epochs 2` reuses each batch with ratio clipping, `--format-weight`,
`--length-penalty`, `--lora-r 16` for adapters).
"""),
]

def build(out_dir: Path = HERE) -> list[Path]:
    """Write every notebook (python3 kernel, no outputs); returns the paths."""
    paths = []
    for name, cells in NOTEBOOKS.items():
        for i, cell in enumerate(cells):   # stable ids: a rebuild changes only what was edited
            cell["id"] = f"{name[:2]}-{i:02d}"
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
            "colab": {"provenance": [], "gpuType": "A100"}, "accelerator": "GPU"})
        path = out_dir / f"{name}.ipynb"
        nbformat.validate(nb)
        path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in build():
        print("wrote", p)
