"""AdamW on the CPU: torch's for-loop version (its default there) against the fused kernel that
`havoc_lite.optim.adamw` picks, in one process, alternating.

    OMP_NUM_THREADS=1 python scripts/adamw_step.py --preset 50m

Two copies of a preset's model with the same weights, one per version. Prints the median CPU
seconds of the optimizer step alone and of a whole training step (forward with the chunked loss,
backward, AdamW, on `--batch-size` x `--seq-len` random tokens), their ratios, and the largest
difference between the two copies' weights at the end (the two versions make the same update).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from havoc_lite.config import ModelConfig
from havoc_lite.model import HavocModel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="50m")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--reps", type=int, default=7)
    a = ap.parse_args()
    torch.manual_seed(0)
    models = {"for-loop": HavocModel(ModelConfig.from_preset(a.preset)).train()}
    models["fused"] = copy.deepcopy(models["for-loop"])
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4, foreach=False, fused=name == "fused" or None)
            for name, m in models.items()}
    vocab = models["fused"].config.vocab_size
    x = torch.randint(0, vocab, (a.batch_size, a.seq_len), generator=torch.Generator().manual_seed(0))
    y = torch.roll(x, -1, dims=1)
    opt_s: dict[str, list[float]] = {k: [] for k in opts}
    step_s: dict[str, list[float]] = {k: [] for k in opts}
    for rep in range(a.reps + 1):                    # the first round warms up and allocates m, v
        for name, opt in opts.items():
            c0 = time.process_time()
            models[name](x, targets=y).backward()
            c1 = time.process_time()
            opt.step()
            opt.zero_grad(set_to_none=True)
            c2 = time.process_time()
            if rep:
                opt_s[name].append(c2 - c1)
                step_s[name].append(c2 - c0)
    o = {k: statistics.median(v) for k, v in opt_s.items()}
    s = {k: statistics.median(v) for k, v in step_s.items()}
    n = sum(p.numel() for p in models["fused"].parameters())
    diff = max((p - q).abs().max().item()
               for p, q in zip(models["for-loop"].parameters(), models["fused"].parameters()))
    print(f"{a.preset}: {n / 1e6:.1f}M parameters, batch {a.batch_size} x {a.seq_len}, "
          f"{torch.get_num_threads()} thread(s), CPU s, median of {a.reps}")
    print(f"  AdamW step:    for-loop {o['for-loop']:.3f}, fused {o['fused']:.3f} ({o['for-loop'] / o['fused']:.2f}x)")
    print(f"  training step: for-loop {s['for-loop']:.3f}, fused {s['fused']:.3f} ({s['for-loop'] / s['fused']:.2f}x)")
    print(f"  largest weight difference after {a.reps + 1} steps: {diff:.2e}")


if __name__ == "__main__":
    main()
