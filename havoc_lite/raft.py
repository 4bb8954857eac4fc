"""RAFT: rejection-sampling fine-tuning (Dong et al. 2023, "RAFT: Reward rAnked FineTuning";
the same loop as STaR / ReST-EM / expert iteration).

One cycle: sample k answers per prompt at a temperature (batched engine, tools executed), grade
each (GSM8K match, tool-answer match or unit tests), keep the passing ones (deduplicated per
prompt, best reward first, the top `keep_fraction`), SFT one epoch on them with the `Trainer`
(`data.SFTLoader` renders them; engine-written tool results carry no loss), checkpoint the cycle,
and write its statistics. A held-out prompt set, if given, is scored greedily (pass@1) before the
first cycle and after each one.

    python -m havoc_lite.raft --checkpoint checkpoints/sft --prompts data/prompts.jsonl \
        --grader gsm8k --cycles 5

Layout: `<out_dir>/cycle_01/step_XXXXXX/` (Trainer checkpoints, `latest`), `cycle_01/stats.json`,
`cycle_01/samples.jsonl` (what was kept), `<out_dir>/stats.json` (all cycles), the tokenizer in
`<out_dir>/`. A rerun with the same out_dir skips cycles whose stats.json exists and goes on
from the last one's weights.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import tyro

from .eval.metrics import mean_pass_at_k
from .eval.runner import make_generate_fn, sample_and_grade, write_json


@dataclass
class RaftConfig:
    checkpoint: str
    """starting model folder (or a checkpoint out_dir with `latest`)"""
    prompts: str = ""
    """prompts JSONL (question / messages / prompt, plus what the grader needs)"""
    grader: str = "gsm8k"
    """gsm8k | tool | pytest"""
    eval_prompts: Optional[str] = None
    """held-out prompts JSONL scored greedily (pass@1) before and after every cycle"""
    tokenizer: Optional[str] = None
    cycles: int = 5
    samples_per_prompt: int = 8
    """k: answers sampled per prompt each cycle"""
    temperature: float = 0.8
    top_p: Optional[float] = None
    keep_fraction: float = 1.0
    """share of the passing, deduplicated samples kept (best reward first)"""
    max_keep_per_prompt: int = 4
    max_new_tokens: int = 192
    gen_batch_size: int = 64
    train_batch_size: int = 8
    seq_len: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.0
    system: Optional[str] = None
    """system turn for 'question' prompts (default: none)"""
    limit: Optional[int] = None
    out_dir: str = "checkpoints/raft"
    device: str = "auto"
    dtype: str = "auto"
    """autocast of sampling, scoring and training: auto (bf16 on an A100, fp16 + GradScaler on a T4,
    float32 on a CPU) | float32 | bfloat16 | float16; the weights AdamW updates stay float32"""
    seed: int = 0
    progress: bool = True


def _sampling_autocast(dtype: str, model) -> contextlib.AbstractContextManager:
    """Autocast for sampling and greedy scoring in the run's `dtype` (`precision.resolve_dtype`: bf16
    on an A100, fp16 on a T4, float32 on a CPU unless bfloat16 is asked for); the Trainer autocasts
    its own steps. Weights stay as they are (fp32 masters)."""
    from .precision import autocast, resolve_dtype
    device = next(model.parameters()).device
    return autocast(device, resolve_dtype(dtype, device))


def _strip_stop(tokens: list, stop_ids: set) -> list:
    while tokens and tokens[-1] in stop_ids:
        tokens = tokens[:-1]
    return tokens


def select_samples(results: Sequence[tuple[int, Any, Any]], keep_fraction: float = 1.0,
                   max_per_prompt: Optional[int] = None) -> list[tuple[int, Any, Any]]:
    """RAFT's filter. `results`: (item index, text, Grade). Keeps passing samples, drops a text
    already kept for the same item, caps each item at `max_per_prompt`, then keeps the best
    ceil(keep_fraction · n) by reward (stable: earlier samples win ties)."""
    seen, kept, per_item = set(), [], {}
    for i, text, v in sorted(results, key=lambda r: -r[2].reward):
        if not v.passed or (i, text) in seen:
            continue
        if max_per_prompt is not None and per_item.get(i, 0) >= max_per_prompt:
            continue
        seen.add((i, text))
        per_item[i] = per_item.get(i, 0) + 1
        kept.append((i, text, v))
    return kept[:math.ceil(keep_fraction * len(kept))]


def greedy_pass_at_1(model, tokenizer, items, grader, *, max_new_tokens: int, batch_size: int,
                     tools="default") -> float:
    """Fraction of `items` whose greedy answer passes `grader`."""
    gen = make_generate_fn(model, tokenizer, max_new_tokens=max_new_tokens, temperature=0.0,
                           tools=tools, batch_size=batch_size)
    model.eval()
    ok = [v.passed for _, _, _, v, _ in sample_and_grade(items, grader, gen, samples=1,
                                                          batch_size=batch_size, progress=False)]
    return sum(ok) / max(len(ok), 1)


def raft_cycle(model, tokenizer, items: Sequence[dict], grader: Callable, cfg: RaftConfig,
               cycle: int, cycle_dir: Path, tools="default") -> dict:
    """One sample -> grade -> keep -> SFT cycle; trains `model` in place. Returns the stats."""
    from . import data
    from .config import TrainConfig
    from .train import Trainer

    t0 = time.perf_counter()
    stop = {tokenizer.end_id, tokenizer.eos_id}
    gen = make_generate_fn(model, tokenizer, max_new_tokens=cfg.max_new_tokens,
                           temperature=cfg.temperature, top_p=cfg.top_p, tools=tools,
                           batch_size=cfg.gen_batch_size)
    model.eval()
    results, counts = [], [[0, 0] for _ in items]
    with _sampling_autocast(cfg.dtype, model):
        graded = list(sample_and_grade(items, grader, gen, samples=cfg.samples_per_prompt,
                                       batch_size=cfg.gen_batch_size,
                                       seed=cfg.seed + 100_003 * cycle, progress=cfg.progress))
    for i, s, out, v, _ in graded:
        text = tokenizer.decode(_strip_stop(list(out.tokens), stop)) if out.tokens else out.text
        results.append((i, text, v))
        counts[i][0] += 1
        counts[i][1] += int(v.passed)
    sample_s = time.perf_counter() - t0
    kept = select_samples(results, cfg.keep_fraction, cfg.max_keep_per_prompt)
    stats = {"cycle": cycle, "prompts": len(items), "samples": len(results),
             "pass_rate": sum(c for _, c in counts) / max(len(results), 1),
             "pass@1": mean_pass_at_k([tuple(c) for c in counts], 1),
             f"pass@{cfg.samples_per_prompt}": mean_pass_at_k([tuple(c) for c in counts], cfg.samples_per_prompt),
             "prompts_solved": sum(1 for _, c in counts if c), "kept": len(kept), "sample_s": sample_s}
    cycle_dir.mkdir(parents=True, exist_ok=True)
    with open(cycle_dir / "samples.jsonl", "w", encoding="utf-8") as f:
        for i, text, v in kept:
            f.write(json.dumps({"id": items[i].get("id", i), "prompt": items[i]["prompt"],
                                "output": text, "reward": v.reward}, ensure_ascii=False) + "\n")
    if not kept:
        stats.update(loss=None, train_steps=0, checkpoint=None)
        return stats

    examples = [list(items[i]["prompt"]) + [{"role": "assistant", "content": text}] for i, text, _ in kept]
    steps = math.ceil(len(examples) / cfg.train_batch_size)  # one epoch
    tcfg = TrainConfig(phase="sft", batch_size=cfg.train_batch_size, max_steps=steps,
                       seq_len=cfg.seq_len, lr=cfg.lr, min_lr=cfg.lr, warmup_steps=0,
                       weight_decay=cfg.weight_decay, save_every=steps, keep_last=1, eval_every=0,
                       out_dir=str(cycle_dir), resume="none", seed=cfg.seed + cycle,
                       device=cfg.device, dtype=cfg.dtype, wandb_mode="disabled",
                       progress=cfg.progress, log_every=max(1, steps))
    loader = data.SFTLoader(examples, tokenizer, cfg.seq_len, cfg.train_batch_size, seed=cfg.seed + cycle)
    t1 = time.perf_counter()
    hist = Trainer(tcfg, model=model, tokenizer=tokenizer, train_loader=loader).train()
    model.eval()
    losses = hist["loss"]
    stats.update(loss=sum(losses) / max(len(losses), 1), final_loss=losses[-1] if losses else None,
                 train_steps=hist["final_step"], train_s=time.perf_counter() - t1,
                 checkpoint=hist["checkpoint"])
    return stats


def run_raft(cfg: RaftConfig, model=None, tokenizer=None, items=None, eval_items=None,
             grader=None, tools="default") -> list[dict]:
    """Run `cfg.cycles` RAFT cycles (skipping cycles already complete in `cfg.out_dir`).

    model/tokenizer/items/eval_items/grader default to what cfg names (loaded from files).
    Returns the per-cycle stats, each with `eval_pass@1` when eval prompts are given (cycle 0 is
    the starting model). Raises FileNotFoundError / ValueError for missing or bad inputs.
    """
    from .loading import load_model_and_tokenizer
    from .eval.runner import load_prompt_items
    from .eval.graders import get_grader
    from .model import HavocModel

    out = Path(cfg.out_dir)
    if model is None or tokenizer is None:
        model, tokenizer, _ = load_model_and_tokenizer(cfg.checkpoint, cfg.tokenizer,
                                                       "auto" if cfg.device == "auto" else cfg.device,
                                                       dtype="float32")
    # fp32 master weights: AdamW on bf16 weights drops every update smaller than half a bf16 step
    # (8 mantissa bits, ~0.4 % of the weight), so RAFT's small lr would barely move the model. The
    # Trainer still computes in bf16 (fp16 + GradScaler on a T4) under autocast. `.float()` works
    # in place, so a caller's model object is the trained one afterwards.
    if any(p.dtype != torch.float32 for p in model.parameters()):
        print(f"[raft] the model's weights are {next(model.parameters()).dtype}; training keeps "
              "fp32 master weights (model.float()) and autocasts the compute")
        model.float()
    if items is None:
        items = load_prompt_items(cfg.prompts, system=cfg.system, limit=cfg.limit)
    if eval_items is None and cfg.eval_prompts:
        eval_items = load_prompt_items(cfg.eval_prompts, system=cfg.system)
    for it in items:
        if isinstance(it["prompt"], str):
            raise ValueError(f"RAFT trains on chat prompts; item {it.get('id')} is a plain string")
    grader = grader or get_grader(cfg.grader)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out)
    (out / "raft_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    history: list[dict] = []
    ev = dict(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.gen_batch_size, tools=tools)
    for cycle in range(1, cfg.cycles + 1):
        cdir = out / f"cycle_{cycle:02d}"
        if (cdir / "stats.json").is_file():  # done in an earlier run: take its weights and go on
            stats = json.loads((cdir / "stats.json").read_text())
            if stats.get("checkpoint"):
                device = next(model.parameters()).device
                model = HavocModel.from_pretrained(_latest(cdir), device=device).eval()
            history.append(stats)
            print(f"[raft] cycle {cycle} already complete in {cdir}; skipped")
            continue
        if cycle == 1 and eval_items:
            with _sampling_autocast(cfg.dtype, model):
                history.append({"cycle": 0, "eval_pass@1": greedy_pass_at_1(model, tokenizer, eval_items,
                                                                            grader, **ev)})
            print(f"[raft] start: held-out pass@1 {history[-1]['eval_pass@1']:.3f}")
        stats = raft_cycle(model, tokenizer, items, grader, cfg, cycle, cdir, tools=tools)
        if eval_items:
            with _sampling_autocast(cfg.dtype, model):
                stats["eval_pass@1"] = greedy_pass_at_1(model, tokenizer, eval_items, grader, **ev)
        write_json(stats, cdir / "stats.json")
        history.append(stats)
        print(f"[raft] cycle {cycle}: sample pass rate {stats['pass_rate']:.3f}, kept {stats['kept']}, "
              f"loss {stats.get('loss')}" + (f", held-out pass@1 {stats['eval_pass@1']:.3f}"
                                            if eval_items else ""))
        write_json({"config": asdict(cfg), "cycles": history}, out / "stats.json")
    return history


def _latest(cycle_dir: Path) -> Path:
    from .loading import resolve_model_dir
    return resolve_model_dir(cycle_dir)


def main(argv: Optional[list[str]] = None) -> list[dict]:
    cfg = tyro.cli(RaftConfig, args=argv)
    return run_raft(cfg)


if __name__ == "__main__":
    main()
