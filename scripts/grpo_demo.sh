#!/usr/bin/env bash
# GRPO against RAFT on a CPU, with the same number of sampled answers (4,800 each).
# Start: the RAFT demo's start, the smoke run's SFT stopped at step 400. Then
#   GRPO: 75 steps x 8 prompts x 8 answers (havoc_lite/configs/rl/grpo_tiny.yaml), calculator in the loop;
#   RAFT: 2 cycles x 300 prompts x 8 answers, as scripts/raft_demo.sh.
# Both are scored greedily on the same 300 held-out templated problems; the table gives pass@1 with
# its 95 % Wilson interval. One thread; about 25 minutes on this 2-core box.
#   bash scripts/grpo_demo.sh [RUN_DIR]
set -euo pipefail
run=${1:-checkpoints/grpo_demo}
export OMP_NUM_THREADS=1

if [ ! -f "$run/brief_sft/step_000400/model.safetensors" ]; then
  python -m havoc_lite.smoke --out "$run/smoke"
  python -m havoc_lite.train --config sft_tiny --init-from "$run/smoke/pretrain/step_000120" \
    --tokenizer "$run/smoke/tokenizer" \
    --train-data "$run/smoke/sft/arithmetic_traces.jsonl,$run/smoke/sft/gsm8k_traces.jsonl" \
    --seq-len 160 --batch-size 16 --max-steps 600 --stop-at-step 400 --save-every 400 \
    --lr 3e-3 --min-lr 3e-4 --warmup-steps 30 --weight-decay 0.1 --eval-fraction 0.02 --eval-every 0 \
    --resume none --wandb-mode disabled --out-dir "$run/brief_sft" --seed 0 --no-progress
fi
python -m synth.offline --topic arithmetic --num-examples 300 --seed 5 --output "$run/prompts.jsonl"
python -m synth.offline --topic arithmetic --num-examples 300 --seed 0 --split test --output "$run/heldout.jsonl"

start="$run/brief_sft/step_000400"
python -m havoc_lite.rl --config grpo_tiny --checkpoint "$start" --tokenizer "$run/smoke/tokenizer" \
  --prompts "$run/prompts.jsonl" --eval-prompts "$run/heldout.jsonl" --out-dir "$run/grpo" --resume auto

python -m havoc_lite.raft --checkpoint "$start" --tokenizer "$run/smoke/tokenizer" \
  --prompts "$run/prompts.jsonl" --eval-prompts "$run/heldout.jsonl" --verifier tool --cycles 2 \
  --samples-per-prompt 8 --temperature 0.5 --max-new-tokens 128 --gen-batch-size 100 \
  --train-batch-size 16 --seq-len 192 --lr 3e-4 --out-dir "$run/raft" --no-progress

python - "$run" <<'PY'
import json, sys
from pathlib import Path
from havoc_lite.rl import wilson_interval
run = Path(sys.argv[1])
g = json.loads((run / "grpo" / "stats.json").read_text())
grpo, per_step = g["history"], g["config"]["group_size"] * g["config"]["prompts_per_step"]
raft = json.loads((run / "raft" / "stats.json").read_text())["cycles"]
n = sum(1 for line in open(run / "heldout.jsonl") if line.strip())
rows = [("start", grpo[0]["eval_pass@1"], ""),
        ("GRPO", grpo[-1]["eval_pass@1"], f"{grpo[-1]['step']} steps, {sum(1 for h in grpo if 'reward_mean' in h) * per_step:,} samples"),
        ("RAFT", raft[-1]["eval_pass@1"], f"{len(raft) - 1} cycles, {sum(c.get('samples', 0) for c in raft):,} samples")]
print(f"| model | held-out pass@1 (n={n}) | 95 % Wilson interval | budget |\n| --- | --- | --- | --- |")
for name, p, note in rows:
    lo, hi = wilson_interval(round(p * n), n)
    print(f"| {name} | {p:.3f} | {lo:.3f}-{hi:.3f} | {note} |")
PY
