"""`python -m havoc_lite.eval`: evaluate a model folder on GSM8K or a prompts file, write results.

    python -m havoc_lite.eval --model checkpoints/sft --benchmarks gsm8k --samples 10 --k 1,5,10 \
        --output results/sft.json
    python -m havoc_lite.eval --model DIR --benchmarks prompts --prompts p.jsonl --grader tool

Writes the summary JSON to --output, per-sample records next to it (`<output>.<bench>.jsonl`), and
prints markdown tables: the metrics, then the success criteria beside the measured values.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro

# Re-exported for callers that imported them from here before they moved to loading.py.
from ..loading import inference_dtype, load_model_and_tokenizer, resolve_model_dir  # noqa: F401


@dataclass
class EvalArgs:
    model: str
    """model folder (model.safetensors + config.json) or a checkpoint out_dir with `latest`"""
    tokenizer: Optional[str] = None
    """tokenizer folder or .model file (default: looked up in the model folder and its parent)"""
    benchmarks: str = "gsm8k"
    """comma list of: gsm8k, prompts"""
    data: Optional[str] = None
    """GSM8K JSONL, or 'hub' for datasets.load_dataset('openai/gsm8k', 'main') (default: the packaged 100)"""
    prompts: Optional[str] = None
    """prompts JSONL for the 'prompts' benchmark"""
    grader: str = "tool"
    """grader for 'prompts': gsm8k | tool | pytest"""
    limit: Optional[int] = None
    samples: int = 1
    k: str = "1"
    """comma list of k for pass@k / maj@k"""
    shots: int = 0
    prompt_style: str = "chat"
    prime: bool = False
    temperature: Optional[float] = None
    """default: 0 (greedy) for one sample, 0.7 for several"""
    top_p: Optional[float] = None
    max_new_tokens: int = 256
    batch_size: int = 16
    compile_decode: bool = False
    """run the decode steps under torch.compile (seconds to compile; pays on long evaluations)"""
    no_tools: bool = False
    latency_probes: int = 5
    """batch-1 queries timed for the latency criterion (0 = skip)"""
    reward_model: Optional[str] = None
    """a reward-model folder: its catch-rate on planted GSM8K errors goes into the report"""
    device: str = "auto"
    dtype: Optional[str] = None
    """float32 | bfloat16 | float16 (default: float32 on CPU; bfloat16 on a GPU with native bf16,
    float16 on older ones such as a T4; see `inference_dtype`)"""
    output: str = "results/eval.json"
    seed: int = 0


BENCHMARKS = ("gsm8k", "prompts")
GRADERS = ("gsm8k", "tool", "pytest")
DTYPES = ("float32", "bfloat16", "float16")


def parse_ks(k: str) -> list[int]:
    """`"1,5,10"` -> [1, 5, 10]. Raises ConfigError naming --k."""
    from ..errors import ConfigError
    try:
        ks = [int(x) for x in str(k).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--k {k!r}: expected a comma list of whole numbers, e.g. 1,5,10") from None
    if not ks:
        raise ConfigError("--k is empty; e.g. --k 1")
    return ks


def check_args(args: EvalArgs) -> None:
    """Every flag checked before the model loads, so a typo costs a second, not a GSM8K run.

    Raises:
        ConfigError: one line naming the flag: an unknown benchmark, grader or dtype, a value
            out of range (samples, k, batch size, temperature, top_p, ...), --benchmarks prompts
            without --prompts, or --prime with --compile-decode.
        FileNotFoundError: --data, --prompts or --reward-model names nothing.
        HavocError: --output cannot be written.
    """
    from ..checkpoint import check_writable
    from ..errors import ConfigError
    benches = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    unknown = [b for b in benches if b not in BENCHMARKS]
    if not benches or unknown:
        raise ConfigError(f"--benchmarks {args.benchmarks!r}: choose from {', '.join(BENCHMARKS)}")
    if "prompts" in benches and not args.prompts:
        raise ConfigError("--benchmarks prompts needs --prompts FILE")
    if args.prime and args.compile_decode:
        raise ConfigError("--compile-decode does not apply to --prime generation; drop one")
    if args.grader not in GRADERS:
        raise ConfigError(f"--grader {args.grader!r}: choose one of {', '.join(GRADERS)}")
    for name in ("samples", "batch_size", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    if args.latency_probes < 0:
        raise ConfigError(f"--latency-probes must be >= 0, got {args.latency_probes}")
    bad = [k for k in parse_ks(args.k) if not 1 <= k <= args.samples]
    if bad:
        raise ConfigError(f"--k {args.k}: each k must be in [1, --samples={args.samples}]")
    if args.temperature is not None and not args.temperature >= 0:
        raise ConfigError(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.dtype is not None and args.dtype not in DTYPES:
        raise ConfigError(f"--dtype {args.dtype!r}: choose one of {', '.join(DTYPES)}")
    if args.prompt_style not in ("chat", "text"):
        raise ConfigError(f"--prompt-style {args.prompt_style!r}: choose chat or text")
    if args.shots < 0:
        raise ConfigError(f"--shots must be >= 0, got {args.shots}")
    for flag, path in (("--data", args.data if args.data != "hub" else None), ("--prompts", args.prompts),
                       ("--reward-model", args.reward_model)):
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"{flag} {path}: no such file or folder")
    check_writable(Path(args.output).parent, "--output folder")


def main(args: Optional[EvalArgs] = None) -> dict:
    from .gsm8k import SYSTEM_PROMPT, evaluate_gsm8k, load_gsm8k
    from .report import criteria_markdown, metrics_markdown, success_criteria
    from .runner import load_prompt_items, make_generate_fn, measure_latency, run_eval, write_json
    from .graders import get_grader

    args = args or tyro.cli(EvalArgs)
    check_args(args)
    ks = parse_ks(args.k)
    temperature = args.temperature if args.temperature is not None else (0.0 if args.samples == 1 else 0.7)
    model, tok, model_dir = load_model_and_tokenizer(args.model, args.tokenizer, args.device, args.dtype)
    tools = None if args.no_tools else "default"
    gen = make_generate_fn(model, tok, max_new_tokens=args.max_new_tokens, temperature=temperature,
                           top_p=args.top_p, tools=tools, prime=args.prime, batch_size=args.batch_size,
                           compile_decode=args.compile_decode)
    out = Path(args.output)
    results = {"model": str(model_dir), "args": vars(args), "benchmarks": {}}
    gsm = None
    for bench in [b.strip() for b in args.benchmarks.split(",") if b.strip()]:
        records = out.with_suffix(f".{bench}.jsonl")
        if bench == "gsm8k":
            examples = load_gsm8k(args.data, limit=args.limit)
            s = evaluate_gsm8k(examples=examples, shots=args.shots, prompt_style=args.prompt_style,
                               prime=args.prime, samples=args.samples, k=ks, temperature=temperature,
                               max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                               output_jsonl=records, seed=args.seed, generate_fn=gen)
            gsm = s
        elif bench == "prompts":
            if not args.prompts:
                raise ValueError("--benchmarks prompts needs --prompts FILE")
            items = load_prompt_items(args.prompts, system=SYSTEM_PROMPT, limit=args.limit)
            s = run_eval(items, get_grader(args.grader), gen, samples=args.samples, k=ks,
                         batch_size=args.batch_size, output_jsonl=records, seed=args.seed)
        else:
            raise ValueError(f"unknown benchmark {bench!r}; choose gsm8k or prompts")
        s.pop("per_example", None)
        results["benchmarks"][bench] = s
        print(metrics_markdown(s, title=bench))

    latency = None
    if args.latency_probes > 0:
        single = make_generate_fn(model, tok, max_new_tokens=args.max_new_tokens, temperature=0.0,
                                  tools=tools, prime=args.prime, batch_size=1)
        qs = [ex["question"] for ex in load_gsm8k(args.data, limit=args.latency_probes)]
        from .gsm8k import build_messages
        latency = measure_latency(single, [build_messages(q, args.shots) for q in qs])
        results["latency_single_query"] = latency
    catch = None
    if args.reward_model:
        from ..reward_model import RewardModel, planted_error_pairs
        rm = RewardModel.from_pretrained(args.reward_model, device=str(next(model.parameters()).device))
        catch = rm.catch_rate(tok, planted_error_pairs(load_gsm8k(args.data, limit=args.limit or 100),
                                                        seed=args.seed))
        results["reward_model_catch"] = catch
    rows = success_criteria(gsm, catch=catch, latency=latency, model_cfg=model.config)
    results["success_criteria"] = rows
    print(criteria_markdown(rows))
    write_json(results, out)
    print(f"wrote {out}")
    return results


def cli(argv: Optional[list[str]] = None) -> int:
    """The command line: a user error (bad flag, missing or corrupt file) is one line and exit 2."""
    from ..errors import run_cli
    return run_cli(lambda a: main(tyro.cli(EvalArgs, args=a, prog="python -m havoc_lite.eval")),
                   argv)


if __name__ == "__main__":
    sys.exit(cli())
