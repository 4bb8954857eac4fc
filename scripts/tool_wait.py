"""Time spent waiting on tools during PRIME generation of one batch, against the same batch without.

    OMP_NUM_THREADS=1 python scripts/tool_wait.py --model checkpoints/smoke/sft_run \
        --tokenizer checkpoints/smoke/tokenizer --batch 64

Generates held-out calculator problems (`synth.offline`, split "test") with the default tool
registry, then again with tools off, and prints: tool calls, seconds inside the tools (the sum of
each call's `ToolResult.elapsed_s`, measured by the registry around the call), per call, their
share of the generation's wall time, and generation tokens/s with tools against without.

Then (`--isolated N`, default 64) the case the calculator does not show: N independent calls to an
isolated tool (sympy's `symbolic_math`, in the worker processes), as one decoding step of a batch
closes them, executed one after another and then at once (`ToolRegistry.execute_calls`) on the same
warmed workers, alternating, `--reps` times; it prints the median seconds of each and their ratio.

    OMP_NUM_THREADS=1 python scripts/tool_wait.py --isolated 64 --skip-generation
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from havoc_lite.tools import default_registry


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="trained model folder (for the generation measurement)")
    ap.add_argument("--tokenizer")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=120)
    ap.add_argument("--isolated", type=int, default=64, help="independent symbolic_math calls (0: skip)")
    ap.add_argument("--workers", type=int, default=None, help="tool worker processes (default: per core, <= 4)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-generation", action="store_true", help="only the isolated-call measurement")
    args = ap.parse_args()
    if not args.skip_generation and not (args.model and args.tokenizer):
        ap.error("--model and --tokenizer are needed unless --skip-generation")
    tools = default_registry(workers=args.workers)
    tools.warmup()
    if not args.skip_generation:
        generation(args, tools)
    if args.isolated:
        isolated(args, tools)


def isolated(args, tools) -> None:
    """N independent symbolic_math calls: one by one against `execute_calls`, same workers."""
    from havoc_lite.tools import format_call
    ops = [("diff", "sin(x)**{k}*exp({k}*x)"), ("integrate", "x**{k}*cos(x)"), ("factor", "x**{k} - 1"),
           ("series", "exp(x)*cos({k}*x)")]
    texts = [format_call("symbolic_math", {"operation": op, "expression": e.format(k=2 + i % 7)})
             for i, (op, e) in zip(range(args.isolated), ops * args.isolated)]
    runs = {"one by one": lambda: [tools.execute_call(t) for t in texts],
            "at once": lambda: tools.execute_calls(texts)}
    secs = {k: [] for k in runs}
    for _ in range(args.reps):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            out = fn()
            secs[name].append(time.perf_counter() - t0)
            assert all(r.ok for _, _, r in out), [r.error for _, _, r in out if not r.ok][:3]
    med = {k: statistics.median(v) for k, v in secs.items()}
    print(f"{len(texts)} independent symbolic_math calls on {len(tools._workers)} worker(s): "
          f"one by one {med['one by one']:.2f} s, at once {med['at once']:.2f} s, "
          f"{med['one by one'] / med['at once']:.2f}x; worker processes started: "
          f"{sum(w.starts for w in tools._workers)}")


def generation(args, tools) -> None:
    from havoc_lite.model import HavocModel
    from havoc_lite.prime import generate_with_prime
    from havoc_lite.tokenizer import HavocTokenizer
    from synth.offline import generate_offline
    torch.manual_seed(0)
    model = HavocModel.from_pretrained(args.model).eval()
    tok = HavocTokenizer.load(args.tokenizer)
    questions = [p["question"] for p in generate_offline("arithmetic", args.batch, seed=0, split="test")]
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
