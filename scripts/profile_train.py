"""Per-op CPU time of one training step, ours against HF LlamaForCausalLM (same shape and weights).

    OMP_NUM_THREADS=1 python scripts/profile_train.py --preset 50m --batch-size 4 --seq-len 128
    OMP_NUM_THREADS=1 python scripts/profile_train.py --preset 50m --dtype bfloat16   # under autocast

Builds the pair as `havoc_lite.bench` does, warms each up, then records `--steps` steps of each
with `torch.profiler` (forward + backward + AdamW, ours with the chunked loss as the Trainer runs
it). Prints the ops whose self CPU time differs most between the two, with their call counts, and
each side's total, so a gap can be traced to the ops that make it.
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from havoc_lite.bench import _train_step_fn, build_pair
from havoc_lite.config import ModelConfig


def op_times(fn, steps: int) -> dict[str, tuple[float, int]]:
    """{op name: (self CPU seconds, calls)} over `steps` calls of fn."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    out: dict = defaultdict(lambda: [0.0, 0])
    for e in prof.key_averages():
        out[e.key][0] += e.self_cpu_time_total / 1e6
        out[e.key][1] += e.count
    return {k: (v[0], v[1]) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="50m")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="autocast dtype")
    a = ap.parse_args()
    cfg = ModelConfig.from_preset(a.preset)
    ours, hf = build_pair(cfg, torch.device("cpu"))
    ours.train(), hf.train()
    x = torch.randint(0, cfg.vocab_size, (a.batch_size, a.seq_len), generator=torch.Generator().manual_seed(0))
    y = torch.cat([x[:, 1:], torch.full((a.batch_size, 1), -100)], dim=1)
    dt = getattr(torch, a.dtype)
    fns = {"ours": _train_step_fn(ours, False, x, y, dt, torch.device("cpu")),
           "hf": _train_step_fn(hf, True, x, y, dt, torch.device("cpu"))}
    for fn in fns.values():
        fn()
    times = {k: op_times(fn, a.steps) for k, fn in fns.items()}
    total = {k: sum(t for t, _ in v.values()) for k, v in times.items()}
    print(f"{a.preset}, {a.dtype}, batch {a.batch_size} x {a.seq_len}, {a.steps} steps, {torch.get_num_threads()} thread(s): "
          f"self CPU ours {total['ours']:.2f} s, HF {total['hf']:.2f} s ({total['ours'] / total['hf']:.2f}x)")
    keys = set(times["ours"]) | set(times["hf"])
    rows = sorted(keys, key=lambda k: -abs(times["ours"].get(k, (0, 0))[0] - times["hf"].get(k, (0, 0))[0]))
    print(f"{'op':<44} {'ours s':>8} {'calls':>6} {'HF s':>8} {'calls':>6} {'ours-HF':>8}")
    for k in rows[:a.top]:
        (to, co), (th, ch) = times["ours"].get(k, (0.0, 0)), times["hf"].get(k, (0.0, 0))
        print(f"{k[:44]:<44} {to:8.3f} {co:6d} {th:8.3f} {ch:6d} {to - th:+8.3f}")


if __name__ == "__main__":
    main()
