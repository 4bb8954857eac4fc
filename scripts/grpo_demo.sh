#!/usr/bin/env bash
# GRPO against RAFT on a CPU, with the same number of sampled answers (4,800 each).
# Start: the RAFT demo's start, the smoke run's SFT stopped at step 400. Then
#   GRPO: 75 steps x 8 prompts x 8 answers at T = 0.5 (havoc_lite/configs/rl/grpo_tiny.yaml), calculator in the loop;
#   RAFT: 2 cycles x 300 prompts x 8 answers, as scripts/raft_demo.sh.
# Both are scored greedily on 300 held-out templated problems (and 300 more); the tables give pass@1
# with its 95 % Wilson interval. One thread; about 25 minutes on an idle 2-core box.
#   bash scripts/grpo_demo.sh [RUN_DIR]
#   START_STEP=300 bash scripts/grpo_demo.sh [RUN_DIR]    # start from a weaker model (SFT stopped at 300)
set -euo pipefail
run=${1:-checkpoints/grpo_demo}
stop=${START_STEP:-400}
export OMP_NUM_THREADS=1
start="$run/brief_sft/step_$(printf %06d "$stop")"

if [ ! -f "$start/model.safetensors" ]; then
  python -m havoc_lite.smoke --out "$run/smoke"
  python -m havoc_lite.train --config sft_smoke --init-from "$run/smoke/pretrain/step_000120" \
      --tokenizer "$run/smoke/tokenizer" \
      --train-data "$run/smoke/sft/arithmetic_traces.jsonl,$run/smoke/sft/gsm8k_traces.jsonl" \
      --stop-at-step "$stop" --save-every "$stop" --out-dir "$run/brief_sft" --seed 0 --no-progress
fi
python -m synth.offline --topic arithmetic --num-examples 300 --seed 5 --output "$run/prompts.jsonl"
python -m synth.offline --topic arithmetic --num-examples 300 --seed 0 --split test --output "$run/heldout.jsonl"

python -m havoc_lite.rl --config grpo_tiny --checkpoint "$start" --tokenizer "$run/smoke/tokenizer" \
  --prompts "$run/prompts.jsonl" --eval-prompts "$run/heldout.jsonl" --out-dir "$run/grpo" --resume auto

python -m havoc_lite.raft --checkpoint "$start" --tokenizer "$run/smoke/tokenizer" \
  --prompts "$run/prompts.jsonl" --eval-prompts "$run/heldout.jsonl" --grader tool --cycles 2 \
  --samples-per-prompt 8 --temperature 0.5 --max-new-tokens 128 --gen-batch-size 100 \
  --train-batch-size 16 --seq-len 192 --lr 3e-4 --out-dir "$run/raft" --no-progress

# pass@1 (greedy) of the three models on the held-out set and on a second one (seed 1) that no
# setting was chosen on, with 95 % Wilson intervals.
python -m synth.offline --topic arithmetic --num-examples 300 --seed 1 --split test --output "$run/heldout2.jsonl"
python - "$run" "$start" <<'PY'
import sys
import torch
from havoc_lite.eval.runner import load_prompt_items
from havoc_lite.eval.graders import ToolAnswerGrader
from havoc_lite.rl import heldout_pass_at_1, load_policy
torch.set_num_threads(1)
run = sys.argv[1]
models = {"start": sys.argv[2], "GRPO": f"{run}/grpo", "RAFT": f"{run}/raft/cycle_02"}
for name in ("heldout", "heldout2"):
    items = load_prompt_items(f"{run}/{name}.jsonl")
    print(f"\n{name}.jsonl (n={len(items)})\n| model | pass@1 | 95 % Wilson interval |\n| --- | --- | --- |")
    for label, src in models.items():
        model, tok, _ = load_policy(src, f"{run}/smoke/tokenizer")
        r = heldout_pass_at_1(model.eval(), tok, items, ToolAnswerGrader(), max_new_tokens=128, batch_size=100)
        print(f"| {label} | {r['pass@1']:.3f} | {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f} |", flush=True)
PY
