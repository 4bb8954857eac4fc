"""Time spent waiting on tools during PRIME generation of one batch, against the same batch without.

    OMP_NUM_THREADS=1 python scripts/tool_wait.py --model checkpoints/smoke/sft_run \
        --tokenizer checkpoints/smoke/tokenizer --batch 64

Generates held-out calculator problems (`synth.offline`, split "test") with the default tool
registry, then again with tools off, and prints: tool calls, seconds inside the tools (the sum of
each call's `ToolResult.elapsed_s`, measured by the registry around the call), per call, their
share of the generation's wall time, and generation tokens/s with tools against without.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=120)
    args = ap.parse_args()
    from havoc_lite.model import HavocModel
    from havoc_lite.prime import generate_with_prime
    from havoc_lite.tokenizer import HavocTokenizer
    from havoc_lite.tools import default_registry
    from synth.offline import generate_offline
    torch.manual_seed(0)
    model = HavocModel.from_pretrained(args.model).eval()
    tok = HavocTokenizer.load(args.tokenizer)
    questions = [p["question"] for p in generate_offline("arithmetic", args.batch, seed=0, split="test")]
    tools = default_registry()
    tools.warmup()
    figures = {}
    for name, t in (("with tools", tools), ("without", False)):
        t0 = time.perf_counter()
        outs = generate_with_prime(model, tok, questions, budget="medium", prime_system=False, tools=t,
                                   max_new_tokens=args.max_new_tokens)
        wall = time.perf_counter() - t0
        calls = [c["result"].elapsed_s for o in outs for c in o.tool_calls]
        tokens = sum(o.num_tokens for o in outs)
        figures[name] = tokens / wall
        print(f"{name}: {len(outs)} rows, {tokens} tokens in {wall:.2f} s = {tokens / wall:,.0f} tok/s; "
              f"{len(calls)} tool calls, {sum(calls):.3f} s inside tools"
              + (f" (median {statistics.median(calls) * 1e3:.2f} ms a call, "
                 f"{sum(calls) / wall:.1%} of the wall time)" if calls else ""))
    print(f"tokens/s with tools / without: {figures['with tools'] / figures['without']:.2f}")


if __name__ == "__main__":
    main()
