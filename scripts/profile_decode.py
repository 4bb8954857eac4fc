"""Where greedy decoding's time goes: per-op CPU time of `engine.generate`, eager or compiled.

    OMP_NUM_THREADS=1 python scripts/profile_decode.py --preset 50m --batch-size 1 --compile

Builds a random model of the preset, warms `engine.generate` up (compiling first with
`--compile`), then records one call of `--new-tokens` tokens after a `--prompt-len` prompt with
`torch.profiler`. Prints the top ops by self CPU time, then the share of the matrix products and
the rate at which they read the weights (bytes of the parameters per token over the time of the
products per token): when the products alone take most of a token's time, that rate is the
memory-bandwidth ceiling of decoding this model on this machine.
"""
from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from havoc_lite.config import ModelConfig
from havoc_lite.engine import generate
from havoc_lite.model import HavocModel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="50m")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--compile", action="store_true", help="the decode step under torch.compile")
    ap.add_argument("--top", type=int, default=12)
    a = ap.parse_args()
    cfg = ModelConfig.from_preset(a.preset)
    torch.manual_seed(0)
    model = HavocModel(cfg).eval()
    prompts = torch.randint(3, cfg.vocab_size, (a.batch_size, a.prompt_len)).tolist()

    def run():
        generate(model, prompts, max_new_tokens=a.new_tokens, compile=a.compile)

    run()
    run()                                   # warm-up (and the compile, with --compile)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=a.top))
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    mm = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm")) / 1e6
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    per_token = mm / a.new_tokens
    print(f"{a.preset}, batch {a.batch_size}, {'compiled' if a.compile else 'eager'}, "
          f"{torch.get_num_threads()} thread(s): {a.new_tokens / total:.1f} steps/s; matrix products "
          f"{mm / total:.0%} of the time, {per_token * 1e3:.1f} ms a step, reading "
          f"{weight_bytes / 2**20:.0f} MiB of weights at {weight_bytes / per_token / 1e9:.1f} GB/s: "
          f"the products alone allow {1 / per_token:.1f} steps/s")


if __name__ == "__main__":
    main()
