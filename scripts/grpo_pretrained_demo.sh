#!/usr/bin/env bash
# GRPO with LoRA on a real pretrained model, on a CPU: the tool-tuned SmolLM2-135M-Instruct of
# `python -m havoc_lite.pretrained_demo` (its `tuned/` folder), then
#   GRPO: 30 steps x 8 prompts x 8 answers at T = 0.7 (havoc_lite/configs/rl/grpo_smollm2_lora.yaml),
#         LoRA r = 16 on a bf16 base, calculator in the loop, on synth.offline's templated
#         arithmetic (phrasings the SFT never saw; on its own grammar the tuned model passes every
#         sample, which gives GRPO no gradient);
#   merge: the adapters folded into the start (`python -m havoc_lite.merge`);
#   RAFT with the same 1,920 samples: 1 cycle x 240 of the prompts x 8 answers at T = 0.7, then one
#         epoch of full-model SFT (bf16 autocast, lr 1e-5) on the answers that passed;
# and the three models are scored greedily, with the calculator, by the pretrained demo's evaluation on
# 300 held-out templated problems (synth.offline --split test), the 96 validation phrasings and the
# 200 held-out phrasings, with 95 % Wilson intervals. Two threads; about 45 minutes on this 2-core box.
#   bash scripts/grpo_pretrained_demo.sh [DEMO_DIR] [RUN_DIR]
# DEMO_DIR defaults to checkpoints/grpo_pretrained_start; without DEMO_DIR/tuned the tune stage runs
# first, on the SFT grammar alone (`--train-data phrasings`): the demo's default also trains on the
# nine templates, which would make GRPO's prompts a family the SFT has seen.
set -euo pipefail
demo=${1:-checkpoints/grpo_pretrained_start}
run=${2:-checkpoints/grpo_smollm2}
threads=${THREADS:-2}
export OMP_NUM_THREADS=$threads
mkdir -p "$run"

if [ ! -f "$demo/tuned/config.json" ]; then
  python -m havoc_lite.pretrained_demo --stages tune --train-data phrasings --threads "$threads" --out-dir "$demo"
fi
python -m synth.offline --topic arithmetic --num-examples 300 --seed 5 --output "$run/prompts.jsonl"
python -m synth.offline --topic arithmetic --num-examples 300 --seed 0 --split test --output "$run/templated_test.jsonl"
# the validation phrasings, for the GRPO run's own start/end check (the tool grader reads "answer")
python - "$run" <<'PY'
import json, sys
from synth.arith_phrasings import phrasing_rows
with open(f"{sys.argv[1]}/validation.jsonl", "w") as f:
    for r in phrasing_rows(96, family="validation"):
        f.write(json.dumps({**r, "answer": r["gold"]}) + "\n")
PY
system=$(python -c 'from havoc_lite.eval.gsm8k import SYSTEM_PROMPT; print(SYSTEM_PROMPT)')

python -m havoc_lite.rl --config grpo_smollm2_lora --checkpoint "$demo/tuned" --prompts "$run/prompts.jsonl" \
  --eval-prompts "$run/validation.jsonl" --system "$system" --out-dir "$run/grpo" --resume auto
if [ ! -f "$run/merged/config.json" ]; then
  python -m havoc_lite.merge --run "$run/grpo" --out "$run/merged"
fi

python -m havoc_lite.raft --checkpoint "$demo/tuned" --prompts "$run/prompts.jsonl" --limit 240 \
  --eval-prompts "$run/validation.jsonl" --system "$system" --grader tool --cycles 1 --samples-per-prompt 8 \
  --temperature 0.7 --max-new-tokens 200 --gen-batch-size 64 --train-batch-size 8 --seq-len 256 \
  --lr 1e-5 --dtype bfloat16 --out-dir "$run/raft" --no-progress

# greedy pass@1 with the calculator, as the pretrained demo scores (its evaluate: strict = <answer>)
python - "$run" "$demo/tuned" "$threads" <<'PY'
import json, sys
import torch
from havoc_lite.eval.metrics import wilson_interval
from havoc_lite.hub import load_model
from havoc_lite.loading import resolve_model_dir
from havoc_lite.pretrained_demo import eval_sets, evaluate
from havoc_lite.tokenizer import load_tokenizer
from havoc_lite.tools import default_registry
run, start, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
templated = [json.loads(line) for line in open(f"{run}/templated_test.jsonl")]
sets = {"templated test (synth.offline)": [{"id": r["id"], "question": r["question"], "gold": str(r["answer"])}
                                           for r in templated]}
phrasings = eval_sets(200, 96, 1)
sets.update({"validation phrasings": phrasings["validation"], "held-out phrasings": phrasings["heldout"]})
print("| model | " + " | ".join(sets) + " |\n| --- |" + " --- |" * len(sets))
models = {"start (tool SFT)": (start, start), "GRPO": (f"{run}/merged",) * 2,
          "RAFT": (str(resolve_model_dir(f"{run}/raft/cycle_01")), f"{run}/raft")}
for label, (src, tok_src) in models.items():
    model, tok = load_model(src, dtype=torch.bfloat16), load_tokenizer(tok_src)
    cells = []
    for i, (name, rows) in enumerate(sets.items()):
        r = evaluate(model, tok, rows, tools=default_registry(), max_new_tokens=200, batch_size=32,
                     output_jsonl=f"{run}/{label.split()[0]}_{i}.jsonl")
        lo, hi = wilson_interval(round(r["strict"] * r["n"]), r["n"])
        cells.append(f"{r['strict']:.3f} ({lo:.3f}-{hi:.3f})")
    print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
PY
