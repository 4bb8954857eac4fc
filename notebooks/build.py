"""Write the notebooks from the cells below: `python notebooks/build.py`.

The .ipynb files are generated (no outputs, no execution counts) and committed with this script;
edit the cells here, never the .ipynb. Cells stay short and call `havoc_lite` (most of what they
need is in `havoc_lite.colab`), so nothing lives only in a notebook.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

SETUP = '''#@title Set-up: mount Drive, install havoc_lite, open the run folder
#@markdown **SOURCE**: where a fresh runtime gets the code: a git URL (`https://github.com/you/havoc_lite.git`),
#@markdown or a wheel, zip or folder on your Drive (`MyDrive/havoc_lite/havoc_lite-0.1.0-py3-none-any.whl`;
#@markdown make one with `pip wheel --no-deps -w dist .`). Runs go to `MyDrive/havoc_lite/runs/RUN_NAME`,
#@markdown apart from the code. After a disconnect, run every cell again: training continues.
SOURCE = "MyDrive/havoc_lite/havoc_lite-0.1.0-py3-none-any.whl"  #@param {type:"string"}
RUN_NAME = "main"  #@param {type:"string"}
import importlib, importlib.metadata, importlib.util, os, subprocess, sys, zipfile
DRIVE = os.environ.get("HAVOC_DRIVE_ROOT", "/content/drive")
try:   # Colab: mount Drive first; the code (SOURCE) and the runs live there
    from google.colab import drive
    if not os.path.isdir(os.path.join(DRIVE, "MyDrive")):
        drive.mount(DRIVE)
except ImportError:
    pass   # not Colab: havoc_lite is pip-installed, or this notebook sits in a checkout
if importlib.util.find_spec("havoc_lite") is None:
    src = SOURCE.strip()
    if src.startswith("MyDrive/"):
        src = os.path.join(DRIVE, src)
    checkout = [d for d in (os.getcwd(), os.path.dirname(os.getcwd()))   # a notebook in a checkout
                if os.path.isfile(os.path.join(d, "havoc_lite", "__init__.py"))]
    if checkout and not os.path.exists(src):
        src = checkout[0]
    if not src.startswith(("https://", "http://", "git@", "git+")) and not os.path.exists(src):
        raise FileNotFoundError(f"SOURCE {src!r} does not exist: upload the wheel or zip to Drive, "
                                "or give a git URL")
    if src.endswith(".zip"):   # a zipped checkout: unpack it to local disk
        zipfile.ZipFile(src).extractall("/content/havoc_lite_src")
        src = next(os.path.dirname(os.path.join(d, "pyproject.toml")) for d, _, files in
                   os.walk("/content/havoc_lite_src") if "pyproject.toml" in files)
    elif src.startswith(("https://", "http://", "git@")) and not src.endswith(".whl"):
        src = "git+" + src
    # Leave Colab's own torch (built for its CUDA) alone: pin it while pip resolves the rest.
    constraints = "/tmp/havoc_lite_constraints.txt"
    with open(constraints, "w") as f:
        try:
            f.write(f"torch=={importlib.metadata.version('torch')}\\n")
        except importlib.metadata.PackageNotFoundError:
            pass
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", src, "-c", constraints], check=True)
    importlib.invalidate_caches()
from havoc_lite import colab
RUN = colab.setup(RUN_NAME)'''

PARAMS = '''#@title Sizes
#@markdown `gpu`: the sizes for one Colab GPU (the 50m preset; an A100 is fastest, a T4 or L4 works).
#@markdown `smoke`: tiny sizes that run the notebook on a CPU in a minute (a pipeline check, not a
#@markdown result). The environment variable HAVOC_SMOKE=1 (the tests) forces `smoke`.
SIZES = "gpu"  #@param ["gpu", "smoke"]
SMOKE = SIZES == "smoke" or os.environ.get("HAVOC_SMOKE") == "1"
SZ = colab.sizes(SMOKE)
colab.check_runtime(SZ)   # warns when GPU sizes are about to run on a CPU runtime
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
from havoc_lite.sizes import SMOKE_QUICK
from havoc_lite.smoke import Smoke, SmokeArgs
smoke = Smoke(SmokeArgs(out=str(RUN / "smoke"), quick=True))
if SMOKE:   # fewer steps and problems than --quick
    smoke.sizes = dataclasses.replace(SMOKE_QUICK, pretrain_steps=12, sft_steps=8, resume_check_steps=2,
                                      offline_traces=100, test_problems=3, eval_limit=2)
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
1. **Claude** (`synth.generate`): first a dry run that prints the prompts, and the estimated cost
   of every topic together; then real generation, which runs only when `ANTHROPIC_API_KEY` is set
   and you tick CONFIRM_SPEND (Message Batches at half price by default, a hard USD cap per topic,
   resumable after a disconnect, every trace re-checked with the real tools);
2. **offline generators** (`synth.offline`): templated problems for every tool, free and instant,
   plus the GSM8K training problems turned into calculator traces.
"""),
    code(SETUP),
    code(PARAMS),
    code('''
#@title Claude: topics, model, budget
#@markdown The batch API costs half as much; its batches live on Anthropic's servers, so after a
#@markdown disconnect re-running the cells polls them again (nothing is paid twice). Tick
#@markdown CONFIRM_SPEND after reading the estimate below, then run the generation cell.
EXAMPLES_PER_TOPIC = 200  #@param {type:"integer"}
MODEL = ""  #@param {type:"string"}
BATCH = True  #@param {type:"boolean"}
MAX_USD_PER_TOPIC = 5.0  #@param {type:"number"}
CONFIRM_SPEND = False  #@param {type:"boolean"}
from synth.claude import DEFAULT_MODEL
from synth.generate import GenerateArgs, estimate_total, run_generation
TOPICS = ["stats_tests", "arithmetic", "algebra_calculus", "doe", "retrieval"]
MODEL = MODEL.strip() or DEFAULT_MODEL
if SMOKE:
    EXAMPLES_PER_TOPIC, MAX_USD_PER_TOPIC = SZ.claude_traces, 0.5
claude_dir = RUN / "data" / "claude"
def claude_args(topic, **kw):
    return GenerateArgs(topic=topic, num_examples=EXAMPLES_PER_TOPIC, model=MODEL, max_usd=MAX_USD_PER_TOPIC,
                        batch=BATCH, poll_s=1.0 if SMOKE else 30.0,
                        output=str(claude_dir / f"{topic}.jsonl"), **kw)
run_generation(claude_args(TOPICS[0], dry_run=True), registry=colab.tools())   # the prompts; sends nothing
'''),
    code('''
# What the whole cell below would cost, across every topic. Nothing is sent.
import pandas as pd
estimate = estimate_total(TOPICS, EXAMPLES_PER_TOPIC, model=MODEL, batch=BATCH, max_usd=MAX_USD_PER_TOPIC,
                          registry=colab.tools())
print(f"{MODEL}{' (batch, half price)' if BATCH else ''}: typical ${estimate['typical_usd']:.2f}, "
      f"worst case ${estimate['worst_case_usd']:.2f}, never more than ${estimate['capped_usd']:.2f} "
      f"(MAX_USD_PER_TOPIC x {len(TOPICS)} topics)")
pd.DataFrame(estimate["topics"]).T[["typical_usd", "worst_case_usd", "capped_at_usd"]]
'''),
    code('''
# Real generation: needs ANTHROPIC_API_KEY (Colab's Secrets panel, the key icon; or the environment)
# and CONFIRM_SPEND ticked. Re-running resumes each topic where it stopped; the USD cap counts what
# earlier runs spent.
from havoc_lite.secrets import get_secret
if not get_secret("ANTHROPIC_API_KEY"):
    print("ANTHROPIC_API_KEY is not set: skipping Claude; the offline generators below need no key.")
elif not CONFIRM_SPEND:
    print(f"Not spending: tick CONFIRM_SPEND above (at most ${estimate['capped_usd']:.2f}) and run this cell again.")
else:
    reports = {t: run_generation(claude_args(t, resume=True), registry=colab.tools()) for t in TOPICS}
    display(pd.DataFrame(reports).T[["kept", "rejected_total", "usd_spent", "stop_reason"]])
'''),
    code('''
# Offline generators: validated traces for every tool, and GSM8K as calculator traces.
import pandas as pd
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
schedule and RNG state as an uninterrupted run, and its loss plot continues the same curve.

Runtime: a GPU (Runtime > Change runtime type > T4, L4 or A100).
"""),
    code(SETUP),
    code(PARAMS),
    code('''
#@title Run length
PRESET = "50m"  #@param ["50m", "1b"]
STEPS = 2000  #@param {type:"integer"}
PLOT_EVERY = 25  #@param {type:"integer"}
SAMPLE_EVERY = 250  #@param {type:"integer"}
if not SMOKE:
    SZ.preset, SZ.pretrain_config, SZ.pretrain_steps = PRESET, f"pretrain_{PRESET}", STEPS
else:
    PLOT_EVERY, SAMPLE_EVERY = 4, 4
'''),
    code('''
# Memory planner first: does the chosen preset fit this GPU (bf16 autocast, AdamW)?
from havoc_lite import memory
print(memory.plan(SZ.preset, "pretrain", colab.planner_gpu() or "a100-40", SZ.batch_size, SZ.seq_len).report())
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
colab.time_estimate(cfg, "pretraining")
colab.gpu_memory("before training")
monitor = colab.LiveMonitor(f"pretraining {SZ.preset}", plot_every=PLOT_EVERY, sample_every=SAMPLE_EVERY,
                            tokenizer=tok, prompt_ids=tok.encode("ROMEO:", bos=True),
                            max_new_tokens=SZ.max_new_tokens)
hist = trainer.train(on_step=monitor)          # this session's steps; trainer.history: the whole run
colab.gpu_memory("after training")
colab.flush_drive()                            # every checkpoint reaches Drive before the runtime can go
if SMOKE:
    assert trainer.resumed_from is not None and hist["step"][0] == SZ.pretrain_steps // 2 + 1
    assert trainer.history["step"] == list(range(1, SZ.pretrain_steps + 1))
'''),
    code('''
colab.plot_history(trainer.history, f"pretraining {SZ.preset}")
colab.history_frame(trainer.history).tail()
'''),
    code('''
# A sample from the pretrained model (greedy continuation), from memory: Drive is unmounted now.
from havoc_lite import engine
model = trainer.raw_model.eval()
gen = engine.generate(model, [tok.encode("ROMEO:", bos=True)], max_new_tokens=SZ.max_new_tokens)[0]
print("ROMEO:" + tok.decode(gen.tokens))
'''),
]

NOTEBOOKS["04_sft"] = [
    md("""
# 04 · Tool SFT + polish, or LoRA on a pretrained model

Two routes to a model that calls tools, on the validated tool traces of 02 (loss on the assistant's
tokens only; the tool results the engine writes carry no loss):
- **scratch**: SFT of the model pretrained in 03, then a short, low-lr polish pass on clean chats,
  then PRIME: pick a budget and watch the model reason, call tools (executed during generation)
  and answer;
- **pretrained**: LoRA SFT of a published instruct model (SmolLM2-1.7B-Instruct or
  Qwen2.5-1.5B-Instruct: LoRA fits a T4 or L4; QLoRA, a 4-bit base, where memory demands), with
  its own tokenizer and chat template plus our markup; it ends with a merged Hugging Face folder,
  pushed to the Hub when HUB_REPO is set and HF_TOKEN is in Colab Secrets.

Runtime: a GPU (T4 or better). Re-run from the top after a disconnect: every training cell resumes.
"""),
    code(SETUP),
    code(PARAMS),
    code('''
#@title Run length
SFT_STEPS = 1000  #@param {type:"integer"}
POLISH_STEPS = 200  #@param {type:"integer"}
PLOT_EVERY = 25  #@param {type:"integer"}
SAMPLE_EVERY = 250  #@param {type:"integer"}
if not SMOKE:
    SZ.sft_steps, SZ.polish_steps = SFT_STEPS, POLISH_STEPS
else:
    PLOT_EVERY, SAMPLE_EVERY = 4, 4
QUESTION = "A farmer has 48 eggs and sells half. How many are left?"
'''),
    code('''
#@title Route
ROUTE = "scratch"  #@param ["scratch", "pretrained", "both"]
BASE_MODEL = "HuggingFaceTB/SmolLM2-1.7B-Instruct"  #@param ["HuggingFaceTB/SmolLM2-1.7B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct"]
LORA_R = 16  #@param {type:"integer"}
LORA_STEPS = 600  #@param {type:"integer"}
QLORA = "auto"  #@param ["auto", "yes", "no"]
HUB_REPO = ""  #@param {type:"string"}
if SMOKE:   # the tests take both routes; the pretrained one on SmolLM2-135M's GGUF (no download)
    ROUTE = "both"
SCRATCH, PRETRAINED = ROUTE in ("scratch", "both"), ROUTE in ("pretrained", "both")
'''),
    code('''
traces = colab.trace_files(RUN, SZ)                    # from 02 (made here in smoke mode)
if SCRATCH:
    tok = colab.ensure_tokenizer(RUN, SZ)
    pretrained = colab.ensure_pretrained(RUN, SZ)      # from 03 (made here in smoke mode)
import pandas as pd
pd.DataFrame({"file": [p.name for p in traces], "traces": [sum(1 for _ in open(p)) for p in traces]})
'''),
    code('''
# Scratch route, SFT on every trace file (resume="auto": re-running continues an interrupted run).
# The live view samples QUESTION with the calculator running.
from havoc_lite import Trainer
from havoc_lite.eval.gsm8k import build_messages
if SCRATCH:
    sft_cfg = colab.sft_config(RUN, SZ, pretrained, traces)
    colab.time_estimate(sft_cfg, "tool SFT")
    colab.gpu_memory("before SFT")
    sample_ids = tok.render_prompt(build_messages(QUESTION))
    sft = Trainer(sft_cfg, tokenizer=tok)
    sft.train(on_step=colab.LiveMonitor("tool SFT", plot_every=PLOT_EVERY, sample_every=SAMPLE_EVERY,
                                        tokenizer=tok, prompt_ids=sample_ids, max_new_tokens=SZ.max_new_tokens,
                                        tools=colab.tools()))
    colab.gpu_memory("after SFT")
    display(colab.history_frame(sft.history).tail(3))
'''),
    code('''
# Scratch route, polish: a short pass at a low learning rate on clean chats.
if SCRATCH:
    polish_cfg = colab.polish_config(RUN, SZ, colab.latest_model(RUN / "sft"))
    polish = Trainer(polish_cfg, tokenizer=tok)
    polish.train(on_step=colab.LiveMonitor("polish", plot_every=PLOT_EVERY, sample_every=SAMPLE_EVERY,
                                           tokenizer=tok, prompt_ids=sample_ids, max_new_tokens=SZ.max_new_tokens,
                                           tools=colab.tools()))
    colab.gpu_memory("after polish")
    display(colab.history_frame(polish.history).tail(3))
'''),
    code('''
# Pretrained route: LoRA SFT of BASE_MODEL on the same traces, with its own tokenizer and chat
# template plus our markup (new embedding rows train with the adapters). Checkpoints hold only the
# adapters; resume="auto" continues after a disconnect.
if PRETRAINED:
    base = colab.pretrained_base(BASE_MODEL, SMOKE)
    lora_cfg = colab.lora_config(RUN, SZ, base, traces, r=LORA_R, quantize=colab.choose_quantize(BASE_MODEL, QLORA),
                                 **({} if SMOKE else {"max_steps": LORA_STEPS}))
    print(f"LoRA r={lora_cfg.lora_r} on {base}" + (" over a 4-bit NF4 base (QLoRA)" if lora_cfg.quantize else ""))
    colab.gpu_memory("before LoRA SFT")
    lora = Trainer(lora_cfg)
    lora.train(on_step=colab.LiveMonitor("LoRA SFT", plot_every=PLOT_EVERY, sample_every=SAMPLE_EVERY,
                                         tokenizer=lora.tokenizer, max_new_tokens=SZ.max_new_tokens,
                                         prompt_ids=lora.tokenizer.render_prompt(build_messages(QUESTION)),
                                         tools=colab.tools()))
    colab.gpu_memory("after LoRA SFT")
    display(colab.history_frame(lora.history).tail(3))
'''),
    code('''
# The end of the pretrained route: adapters merged into the base, a Hugging Face folder
# (<run>/lora_merged, for transformers, vLLM or llama.cpp), pushed to HUB_REPO when set and HF_TOKEN
# is in Colab Secrets. Then Drive is flushed: every checkpoint is there before the runtime can go.
if PRETRAINED:
    merged = colab.merge_and_export(RUN, HUB_REPO, dtype="bfloat16" if SMOKE else "auto")
colab.flush_drive()
'''),
    code('''
# PRIME demo (scratch route): choose a budget (auto = routed per question) and a question, press Run.
from IPython.display import display
if SCRATCH:
    model = polish.raw_model.eval()            # from memory: Drive is unmounted now
    questions = [QUESTION,
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
rejection-sampling fine-tuning (RAFT: sample k answers, keep the ones the grader accepts, SFT on them), the
same evaluation of the RAFT model, and the success-criteria report of the RAFT model.

Runtime: a GPU (T4 or better). On a T4 inference runs in fp16 (it has no native bf16).
"""),
    code(SETUP),
    code(PARAMS),
    code('''
model_dir = colab.ensure_chat_model(RUN, SZ)     # polish, else sft (made here in smoke mode)
model, tok = colab.load_model(model_dir, RUN / "tokenizer")
print(model_dir, f"{model.num_parameters() / 1e6:.1f}M parameters, {next(model.parameters()).dtype}")
colab.gpu_memory("model loaded")
'''),
    code('''
from IPython.display import Markdown, display
from havoc_lite.eval import evaluate_gsm8k, load_gsm8k
from havoc_lite.eval.report import metrics_markdown
ks = sorted({1, SZ.eval_samples})
examples = load_gsm8k(SZ.eval_data, limit=SZ.eval_limit)
print(f"{len(examples)} problems x {SZ.eval_samples} samples, up to {SZ.max_new_tokens} new tokens each")
def evaluate(net, name, tokenizer=tok, limit=None):
    return evaluate_gsm8k(net, tokenizer, examples[:limit], samples=SZ.eval_samples, k=ks,
                          temperature=0.7 if SZ.eval_samples > 1 else 0.0,
                          max_new_tokens=SZ.max_new_tokens, batch_size=SZ.gen_batch_size,
                          tools=colab.tools(), output_jsonl=RUN / "eval" / f"gsm8k_samples_{name}.jsonl")
summary = evaluate(model, "before_raft")
display(Markdown(metrics_markdown(summary, "GSM8K, before RAFT")))
'''),
    code('''
import pandas as pd
samples = pd.read_json(RUN / "eval" / "gsm8k_samples_before_raft.jsonl", lines=True)
samples.head(10)
'''),
    code('''
# RAFT: k samples per training problem, keep the ones the GSM8K grader accepts, SFT on them.
# It trains fp32 master weights (the model was loaded in bf16/fp16 for inference) under autocast.
from havoc_lite.eval.gsm8k import SYSTEM_PROMPT
from havoc_lite.raft import RaftConfig, run_raft
raft_cfg = RaftConfig(checkpoint=str(model_dir), tokenizer=str(RUN / "tokenizer"),
                      prompts=str(colab.ASSETS / "gsm8k_train_500.jsonl"), grader="gsm8k",
                      system=SYSTEM_PROMPT, limit=SZ.raft_prompts, cycles=SZ.raft_cycles,
                      samples_per_prompt=SZ.raft_samples, max_new_tokens=SZ.max_new_tokens,
                      gen_batch_size=SZ.gen_batch_size, seq_len=SZ.sft_seq_len,
                      out_dir=str(RUN / "raft"), progress=not SMOKE)
raft_stats = run_raft(raft_cfg, model=model, tokenizer=tok, tools=colab.tools())
colab.gpu_memory("after RAFT")
pd.DataFrame(raft_stats)
'''),
    code('''
# The RAFT model (last cycle's checkpoint), evaluated exactly as above.
raft_dir = colab.latest_raft_model(RUN / "raft") or model_dir
raft_model, _ = colab.load_model(raft_dir, RUN / "tokenizer")
raft_summary = evaluate(raft_model, "after_raft")
display(Markdown(metrics_markdown(raft_summary, "GSM8K, after RAFT")))
pd.DataFrame({"before RAFT": colab.headline(summary), "after RAFT": colab.headline(raft_summary)})
'''),
    code('''
# Success criteria of the RAFT model: accuracy and latency measured on the same model.
from havoc_lite.eval.report import criteria_markdown, success_criteria
from havoc_lite.eval.runner import make_generate_fn, measure_latency
from havoc_lite.eval.gsm8k import build_messages
single = make_generate_fn(raft_model, tok, max_new_tokens=SZ.max_new_tokens, tools=colab.tools(), batch_size=1)
latency = measure_latency(single, [build_messages(ex["question"]) for ex in examples[:3]])
rows = success_criteria(raft_summary, latency=latency, model_cfg=raft_model.config)
display(Markdown(criteria_markdown(rows)))
pd.DataFrame(rows)
'''),
    code('''
# The pretrained route (04 with ROUTE pretrained or both): the merged LoRA model on the same problems,
# with tools, in its own chat template. Then Drive is flushed.
merged_dir = RUN / "lora_merged"
if (merged_dir / "config.json").is_file():
    lora_model, lora_tok = colab.load_pretrained_route_model(merged_dir)
    lora_summary = evaluate(lora_model, "lora_merged", tokenizer=lora_tok, limit=1 if SMOKE else None)
    display(Markdown(metrics_markdown(lora_summary, f"GSM8K, LoRA-tuned {lora_model.num_parameters() / 1e6:.0f}M")))
    display(pd.DataFrame({"scratch, after RAFT": colab.headline(raft_summary),
                          "pretrained + LoRA": colab.headline(lora_summary)}))
else:
    print(f"{merged_dir}: none yet; run 04 with ROUTE = pretrained to evaluate that route here")
colab.flush_drive()                            # results and RAFT checkpoints reach Drive
'''),
]


NOTEBOOKS["06_rl"] = [
    md("""
# 06 · GRPO with tools in the loop

Reinforcement learning against a grader (GRPO, `havoc_lite/rl.py`): for each GSM8K training
problem the model writes a group of answers with the calculator running inside the rollout, the
GSM8K grader scores each, the rewards are normalised within the group, and a token-level
policy-gradient step follows. The tool results the engine wrote carry no loss. It starts from the
SFT'd model of 04. Checkpoints go to `<run>/grpo` on Drive; re-run the notebook after a disconnect
and it resumes exactly where it stopped (prompt order, sampler seeds, AdamW).

On one A100 (50m preset): 200 steps × 32 problems × 8 answers (51,200 answers of up to 256 tokens).
Expected time ~30 min, an estimate from the sampling and training cost, not yet measured on a GPU.
Sampling and training autocast to bf16 on an A100 or L4 (`dtype="auto"`; float32 on a T4).
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
    grader="gsm8k", out_dir=str(RUN / "grpo"), resume="auto", seed=0, temperature=1.0,
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
From a terminal: `python -m havoc_lite.rl --checkpoint <run>/sft --prompts p.jsonl --grader gsm8k
--out-dir <run>/grpo` (`--config grpo_tiny` is the CPU demo of the README; `--kl-coef 0.04` adds the
KL penalty, `--ppo-epochs 2` reuses each batch with ratio clipping, `--format-weight`,
`--length-penalty`, `--lora-r 16` for adapters).
"""),
]

# The Colab runtime each notebook asks for (Runtime > Change runtime type): 00-02 need no GPU; 03
# pretrains fastest on an A100; 04 and 05 fit a T4 (the free tier) at the 50m preset; 06 samples
# 51,200 answers, an A100's work.
RUNTIME: dict[str, Optional[str]] = {"00_smoke_local": None, "01_tokenizer": None,
                                     "02_synth_tool_traces": None, "03_pretrain": "A100",
                                     "04_sft": "T4", "05_eval_gsm8k": "T4", "06_rl": "A100"}


def build(out_dir: Path = HERE) -> list[Path]:
    """Write every notebook (python3 kernel, no outputs); returns the paths."""
    paths = []
    for name, cells in NOTEBOOKS.items():
        for i, cell in enumerate(cells):   # stable ids: a rebuild changes only what was edited
            cell["id"] = f"{name[:2]}-{i:02d}"
        gpu = RUNTIME[name]
        meta = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                "language_info": {"name": "python"}, "colab": {"provenance": []}}
        if gpu:
            meta["colab"]["gpuType"], meta["accelerator"] = gpu, "GPU"
        nb = new_notebook(cells=cells, metadata=meta)
        path = out_dir / f"{name}.ipynb"
        nbformat.validate(nb)
        path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in build():
        print("wrote", p)
