"""`python -m havoc_lite.eval`: evaluate a model folder on GSM8K or a prompts file, write results.

    python -m havoc_lite.eval --model checkpoints/sft --benchmarks gsm8k --samples 10 --k 1,5,10 \
        --output results/sft.json
    python -m havoc_lite.eval --model DIR --benchmarks prompts --prompts p.jsonl --verifier tool

Writes the summary JSON to --output, per-sample records next to it (`<output>.<bench>.jsonl`), and
prints markdown tables: the metrics, then Svend's success criteria beside the measured values.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro


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
    verifier: str = "tool"
    """verifier for 'prompts': gsm8k | tool | pytest"""
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


def resolve_model_dir(path: str | Path) -> Path:
    """A model folder, following `<out_dir>/latest` to the newest step folder.

    Raises FileNotFoundError naming the path when neither is there."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    latest = path / "latest"
    if latest.is_file():
        step = path / latest.read_text().strip()
        if (step / "model.safetensors").is_file():
            return step
    raise FileNotFoundError(f"{path}: no model.safetensors and no `latest` naming a step folder")


def inference_dtype(device: str) -> str:
    """Weights dtype for generation on `device`: "bfloat16" on a GPU with native bf16 (compute
    capability >= 8.0, `train.native_bf16`), "float16" on older CUDA GPUs (a T4 emulates bf16,
    several times slower), "float32" on CPU and MPS."""
    import torch
    from ..train import native_bf16
    dev = torch.device(device)
    if dev.type != "cuda":
        return "float32"
    return "bfloat16" if native_bf16(dev) else "float16"


def load_model_and_tokenizer(model: str, tokenizer: Optional[str] = None, device: str = "auto",
                             dtype: Optional[str] = None):
    """(HavocModel in eval mode, HavocTokenizer, model_dir) from a model folder / checkpoint dir."""
    import torch
    from ..model import HavocModel
    from ..tokenizer import HavocTokenizer
    if device == "auto":
        from ..distributed import resolve_device
        device = resolve_device("auto").type
    if dtype is None:
        dtype = inference_dtype(device)
    model_dir = resolve_model_dir(model)
    candidates = [Path(tokenizer)] if tokenizer else [model_dir, model_dir.parent, Path(model)]
    tok, errors = None, []
    for c in candidates:
        try:
            tok = HavocTokenizer.load(c)
            break
        except (FileNotFoundError, ValueError, OSError) as e:
            errors.append(f"{c}: {e}")
    if tok is None:
        raise FileNotFoundError("no tokenizer found (pass --tokenizer): " + "; ".join(errors))
    net = HavocModel.from_pretrained(model_dir, device=device, dtype=getattr(torch, dtype)).eval()
    return net, tok, model_dir


def main(args: Optional[EvalArgs] = None) -> dict:
    from .gsm8k import SYSTEM_PROMPT, evaluate_gsm8k, load_gsm8k
    from .report import criteria_markdown, metrics_markdown, success_criteria
    from .runner import load_prompt_items, make_generate_fn, measure_latency, run_eval, write_json
    from .verifiers import get_verifier

    args = args or tyro.cli(EvalArgs)
    ks = [int(x) for x in args.k.split(",") if x.strip()]
    temperature = args.temperature if args.temperature is not None else (0.0 if args.samples == 1 else 0.7)
    model, tok, model_dir = load_model_and_tokenizer(args.model, args.tokenizer, args.device, args.dtype)
    tools = None if args.no_tools else "default"
    gen = make_generate_fn(model, tok, max_new_tokens=args.max_new_tokens, temperature=temperature,
                           top_p=args.top_p, tools=tools, prime=args.prime, batch_size=args.batch_size)
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
            s = run_eval(items, get_verifier(args.verifier), gen, samples=args.samples, k=ks,
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
        results["verifier_catch"] = catch
    rows = success_criteria(gsm, catch=catch, latency=latency, model_cfg=model.config)
    results["success_criteria"] = rows
    print(criteria_markdown(rows))
    write_json(results, out)
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
