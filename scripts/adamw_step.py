"""One AdamW step over a preset's parameters: torch's for-loop version (its CPU default) against the
fused kernel that `havoc_lite.optim.adamw` picks, in one process, alternating.

    OMP_NUM_THREADS=1 python scripts/adamw_step.py --preset 50m

Prints each version's median CPU seconds per step and the ratio, and the largest difference
between the two versions' updated weights after the timed steps (they run the same update).
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
    ap.add_argument("--reps", type=int, default=7)
    a = ap.parse_args()
    torch.manual_seed(0)
    models = {"for-loop": HavocModel(ModelConfig.from_preset(a.preset))}
    models["fused"] = copy.deepcopy(models["for-loop"])
    opts = {}
    for name, m in models.items():
        for p in m.parameters():
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()))
        opts[name] = torch.optim.AdamW(m.parameters(), lr=1e-4, foreach=False, fused=name == "fused" or None)
        opts[name].step()                           # allocates m and v
    times: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(a.reps):
        for name, opt in opts.items():
            c = time.process_time()
            opt.step()
            times[name].append(time.process_time() - c)
    med = {k: statistics.median(v) for k, v in times.items()}
    n = sum(p.numel() for p in models["fused"].parameters())
    diff = max((p - q).abs().max().item() for p, q in zip(models["for-loop"].parameters(), models["fused"].parameters()))
    print(f"{a.preset}: {n / 1e6:.1f}M parameters, {torch.get_num_threads()} thread(s): for-loop {med['for-loop']:.3f} s, "
          f"fused {med['fused']:.3f} s a step ({med['for-loop'] / med['fused']:.2f}x); largest weight difference {diff:.2e}")


if __name__ == "__main__":
    main()
