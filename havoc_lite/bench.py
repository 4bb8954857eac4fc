"""`python -m havoc_lite.bench`: speed of HavocModel against Hugging Face LlamaForCausalLM.

Both models have the same shape and the same weights (ours exported with `export.to_hf_llama`).
Measured, interleaved in one process on one device (ours, HF, ours, HF, … so drift in clock speed
or background load hits both alike), medians over `--reps`:
  - training tokens/s: forward + backward + AdamW step on random tokens [batch, seq_len];
  - generation tokens/s: greedy, `--new-tokens` (256) new tokens, batch 1 and batch 8, ours through
    `engine.generate` and HF through `generate()` with its own KV cache; with `--compile`, ours
    again with its decode step under torch.compile (compile time reported apart);
  - with `--compile`, training again with both models under torch.compile (the Trainer's
    `compile: true`; compile time reported apart);
  - MFU: model FLOPs per second over the device's measured matmul peak. Training FLOPs per token
    are 6·N + 12·n_layers·n_heads·head_dim·T (Chowdhery et al. 2022, PaLM, appendix B), N the
    unique parameter count; generation uses a third of that (forward only). The peak is a timed
    large square matmul in the benchmark dtype.

    python -m havoc_lite.bench --preset tiny
    python -m havoc_lite.bench --preset 50m --json bench_50m.json
    python -m havoc_lite.bench --preset tiny --threads 1 --clock cpu --compile
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from typing import Callable

import torch

from .config import ModelConfig
from .engine import generate
from .model import HavocModel, lm_loss
from .optim import adamw

MiB = 2 ** 20

# CPU-sized defaults per preset (batch, seq_len, steps); override on the command line
_DEFAULTS = {"tiny": (8, 256, 10), "50m": (4, 128, 3)}


def pick_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda if available, else mps, else cpu."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


_CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _timed(fn: Callable[[], None], device: torch.device, repeat: int = 1, clock: str = "wall") -> float:
    """Seconds for `repeat` calls of fn. clock "cpu" counts this process's CPU seconds (all
    threads), which a shared, overloaded machine disturbs far less than wall time."""
    now = _CLOCKS[clock]
    _sync(device)
    t0 = now()
    for _ in range(repeat):
        fn()
    _sync(device)
    return now() - t0


def _warm_up(fns: dict[str, Callable[[], None]]) -> dict[str, float]:
    """Call each contender once, untimed by the benchmark; return each call's wall seconds (a
    compiled contender's compile time)."""
    seconds = {}
    for name, fn in fns.items():
        t = time.perf_counter()
        fn()
        seconds[name] = time.perf_counter() - t
    return seconds


def measure_peak_flops(device: torch.device, dtype: torch.dtype, n: int | None = None,
                       reps: int = 5, clock: str = "wall") -> float:
    """Best FLOP/s of an n×n @ n×n matmul (2·n³ FLOPs) in `dtype`: the device's practical peak."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    best = min(_timed(lambda: a @ b, device, 1, clock) for _ in range(reps))
    return 2 * n ** 3 / best


def flops_per_token(cfg: ModelConfig, n_params: int, seq_len: int) -> float:
    """Training FLOPs per token: 6·N + 12·L·H·hd·T (PaLM appendix B; forward is a third)."""
    return 6 * n_params + 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len


def build_pair(cfg: ModelConfig, device: torch.device, seed: int = 0):
    """(HavocModel, LlamaForCausalLM) with identical weights, both fp32 on `device`, eval mode."""
    import transformers

    from .export import to_hf_llama
    torch.manual_seed(seed)
    ours = HavocModel(cfg)
    with tempfile.TemporaryDirectory() as d:
        to_hf_llama(ours, d)
        hf = transformers.LlamaForCausalLM.from_pretrained(d, dtype=torch.float32,
                                                           attn_implementation="sdpa")
    return ours.to(device).eval(), hf.to(device).eval()


def _train_step_fn(model, hf: bool, x, y, dtype, device, compiled=None) -> Callable[[], None]:
    """One training step of `model` (forward through `compiled`, its torch.compile wrapper, if given)."""
    opt = adamw(model.parameters(), device, lr=1e-4)     # fused, as both trainers run it
    amp = dtype != torch.float32
    fwd = model if compiled is None else compiled

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            # ours as the Trainer runs it: the loss chunked inside forward, no [B, T, V] logits
            loss = fwd(input_ids=x, labels=x).loss if hf else fwd(x, targets=y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def run(preset: str = "tiny", device: str = "auto", steps: int | None = None,
        seq_len: int | None = None, batch_size: int | None = None, new_tokens: int = 256,
        gen_batches: tuple = (1, 8), prompt_len: int = 32, reps: int = 3,
        dtype: str | None = None, clock: str = "wall", verbose: bool = True,
        compile: bool = False) -> dict:
    """Run the benchmark and return the figures (tokens/s, ratios ours/HF, MFU) as a dict.

    With `compile`, training also times both models under torch.compile ("ours_compiled",
    "hf_compiled"; `train_compiled_ratio` is theirs, `train_compiled_vs_hf_eager` ours compiled over
    HF eager), and generation times ours with the compiled decode step
    (`engine.generate(compile=True)`) as a third contender, "ours_compiled"; its compile time (the
    first call) is reported apart, as `compile_s`, and is not in the tokens/s.
    """
    dev = pick_device(device)
    if clock not in _CLOCKS or (clock == "cpu" and dev.type != "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu' (cpu only on a CPU device), got {clock!r}")
    dt = getattr(torch, dtype) if dtype else (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    b0, t0_, s0 = _DEFAULTS.get(preset, (4, 128, 3))
    B, T, steps = batch_size or b0, seq_len or t0_, steps or s0
    cfg = ModelConfig.from_preset(preset)
    T = min(T, cfg.max_seq_len)
    log = print if verbose else (lambda *a, **k: None)
    log(f"havoc_lite.bench: preset {preset} on {dev} ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads), {dt}, torch {torch.__version__}, {clock} clock")

    peak = measure_peak_flops(dev, dt, clock=clock)
    log(f"matmul peak: {peak / 1e9:.1f} GFLOP/s")
    results: dict = {"preset": preset, "device": str(dev), "dtype": str(dt).replace("torch.", ""),
                     "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "peak_flops": peak, "batch_size": B, "seq_len": T, "steps": steps,
                     "new_tokens": new_tokens, "reps": reps, "clock": clock}

    # --- training ---------------------------------------------------------------------------
    ours, hf = build_pair(cfg, dev)
    n_params = ours.num_parameters()
    results["num_parameters"] = n_params
    ours.train(), hf.train()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (B, T), generator=g).to(dev)
    y = torch.cat([x[:, 1:], torch.full((B, 1), -100, device=dev)], dim=1)
    fns = {"ours": _train_step_fn(ours, False, x, y, dt, dev), "hf": _train_step_fn(hf, True, x, y, dt, dev)}
    if compile:
        # both models again under torch.compile (copies with the same weights): the fair pair for
        # a compiled run, and the compiled one against HF as users run it (eager, the default)
        for name, m in (("ours_compiled", ours), ("hf_compiled", hf)):
            c = copy.deepcopy(m)
            fns[name] = _train_step_fn(c, name == "hf_compiled", x, y, dt, dev, compiled=torch.compile(c))
    times: dict = {k: [] for k in fns}
    train_warm_s = _warm_up(fns)                 # allocator, kernels, optimizer state; compiling
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(_timed(fn, dev, steps, clock))
    train = {k: B * T * steps / statistics.median(v) for k, v in times.items()}
    fpt = flops_per_token(cfg, n_params, T)
    results["train_tokens_per_s"] = train
    results["train_ratio"] = train["ours"] / train["hf"]
    results["train_mfu"] = {k: v * fpt / peak for k, v in train.items()}
    log(f"train  B={B} T={T}: ours {train['ours']:,.0f} tok/s, HF {train['hf']:,.0f} tok/s, "
        f"ratio {results['train_ratio']:.2f}x, MFU ours {results['train_mfu']['ours']:.1%} "
        f"HF {results['train_mfu']['hf']:.1%}")
    if compile:
        results["train_compiled_ratio"] = train["ours_compiled"] / train["hf_compiled"]
        results["train_compiled_vs_hf_eager"] = train["ours_compiled"] / train["hf"]
        results["train_compile_s"] = {k: train_warm_s[k] for k in ("ours_compiled", "hf_compiled")}
        log(f"train  compiled: ours {train['ours_compiled']:,.0f} tok/s, HF {train['hf_compiled']:,.0f} tok/s, "
            f"ratio {results['train_compiled_ratio']:.2f}x; compiled ours to eager HF "
            f"{results['train_compiled_vs_hf_eager']:.2f}x (compiled in {train_warm_s['ours_compiled']:.0f} / "
            f"{train_warm_s['hf_compiled']:.0f} s, not counted)")
    del fns
    ours.eval(), hf.eval()
    ours.zero_grad(set_to_none=True), hf.zero_grad(set_to_none=True)
    if dt != torch.float32:
        ours.to(dt), hf.to(dt)

    # --- generation -------------------------------------------------------------------------
    results["generate"] = {}
    for gb in gen_batches:
        prompts = torch.randint(3, cfg.vocab_size, (gb, prompt_len), generator=g)
        p_list = prompts.tolist()
        p_dev = prompts.to(dev)
        mask = torch.ones_like(p_dev)

        def run_ours():
            out = generate(ours, p_list, max_new_tokens=new_tokens)
            assert all(o.num_tokens == new_tokens for o in out)

        def run_hf():
            with torch.inference_mode():
                out = hf.generate(p_dev, attention_mask=mask, max_new_tokens=new_tokens,
                                  min_new_tokens=new_tokens, do_sample=False,
                                  pad_token_id=cfg.pad_id)
            assert out.shape[1] == prompt_len + new_tokens

        def run_ours_compiled():
            out = generate(ours, p_list, max_new_tokens=new_tokens, compile=True)
            assert all(o.num_tokens == new_tokens for o in out)

        gfns = {"ours": run_ours, "hf": run_hf}
        if compile:
            gfns["ours_compiled"] = run_ours_compiled
        compile_s = _warm_up(gfns).get("ours_compiled")   # the compiled contender compiles here
        gtimes: dict = {k: [] for k in gfns}
        for _ in range(reps):
            for name, fn in gfns.items():
                gtimes[name].append(_timed(fn, dev, 1, clock))
        tps = {k: gb * new_tokens / statistics.median(v) for k, v in gtimes.items()}
        gfpt = fpt / 3
        entry = {"tokens_per_s": tps, "ratio": tps["ours"] / tps["hf"],
                 "mfu": {k: v * gfpt / peak for k, v in tps.items()}}
        if compile:
            entry.update({"compiled_ratio": tps["ours_compiled"] / tps["hf"], "compile_s": compile_s})
        results["generate"][f"batch_{gb}"] = entry
        log(f"generate B={gb} {new_tokens} new: ours {tps['ours']:,.1f} tok/s, HF {tps['hf']:,.1f} "
            f"tok/s, ratio {entry['ratio']:.2f}x, MFU ours {entry['mfu']['ours']:.2%}")
        if compile:
            log(f"generate B={gb} compiled: ours {tps['ours_compiled']:,.1f} tok/s, ratio to HF "
                f"{entry['compiled_ratio']:.2f}x, to eager ours {tps['ours_compiled'] / tps['ours']:.2f}x "
                f"(compiled in {compile_s:.1f} s, not counted)")
    return results


def _rss(field: str) -> int:
    """VmRSS or VmHWM (peak) of this process from /proc/self/status, in bytes (Linux)."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _step_memory_child(preset: str, batch_size: int, seq_len: int, loss: str) -> dict:
    """In this process: peak memory of one steady-state fp32 CPU training step (forward,
    backward, AdamW, with m and v already allocated) of `preset` on [batch_size, seq_len] random
    tokens. `loss`: "chunked" (the Trainer's `model(x, targets=y)`) or "full" (the fp32 logits
    [B, T, V] materialised, then `lm_loss`, as before).

    How: a first step warms every code path and allocates AdamW's state; then the kernel's
    peak-RSS counter is reset (`/proc/self/clear_refs` = 5) and the second step runs. The peak
    is (VmHWM - VmRSS before the step) + the weights and AdamW state, which are exact tensor
    bytes; the libraries' own resident pages cancel out. Linux only."""
    torch.manual_seed(0)
    model = HavocModel(ModelConfig.from_preset(preset)).train()
    opt = adamw(model.parameters(), "cpu", lr=1e-4)      # as the Trainer runs it
    x = torch.randint(0, model.config.vocab_size, (batch_size, seq_len))
    y = torch.roll(x, -1, dims=1)

    def step():
        out = model(x, targets=y) if loss == "chunked" else lm_loss(model(x), y)
        out.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    held = sum(t.numel() * t.element_size() for t in
               [*model.parameters(), *(v for st in opt.state.values() for v in st.values() if torch.is_tensor(v))])
    before = _rss("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    step()
    peak = _rss("VmHWM") - before + held
    return {"preset": preset, "batch_size": batch_size, "seq_len": seq_len, "loss": loss,
            "peak_bytes": peak}


def step_peak_memory(preset: str = "50m", batch_size: int = 4, seq_len: int = 512,
                     loss: str = "chunked") -> dict:
    """`_step_memory_child` in a subprocess (ru_maxrss is a process-wide high-water mark, and
    tracemalloc does not see torch's allocations). Returns its dict; raises RuntimeError if the
    child fails."""
    import subprocess
    import sys
    code = ("import json, torch; torch.set_num_threads(1); from havoc_lite.bench import _step_memory_child; "
            f"print(json.dumps(_step_memory_child({preset!r}, {batch_size}, {seq_len}, {loss!r})))")
    # every allocation over 64 KiB gets its own mmap, returned to the OS when freed, so the
    # resident size follows the live tensors instead of glibc's reuse heuristics
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"step_peak_memory child failed: {r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def memory_report(preset: str = "50m", batch_size: int = 4, seq_len: int = 512) -> dict:
    """Peak memory of one fp32 training step with the full logits and with the chunked loss, each
    next to `memory.plan` for the same shapes, printed and returned."""
    from .memory import plan
    planned = plan(preset, phase="sft", batch_size=batch_size, seq_len=seq_len, dtype="fp32", suggest=False)
    out = {}
    for loss in ("full", "chunked"):
        m = step_peak_memory(preset, batch_size, seq_len, loss)
        out[loss] = m["peak_bytes"]
        print(f"{preset} step B={batch_size} T={seq_len} fp32, {loss:>7} loss: peak {m['peak_bytes'] / MiB:,.0f} MiB")
    out["planned_chunked"] = planned.total
    out["ratio_chunked_over_full"] = out["chunked"] / out["full"]
    out["planned_over_measured"] = planned.total / out["chunked"]
    print(f"chunked / full = {out['ratio_chunked_over_full']:.2f}; planner {planned.total / MiB:,.0f} MiB "
          f"= {out['planned_over_measured']:.2f} x the measured chunked peak")
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m havoc_lite.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="tiny", help="model preset (tiny, 50m, ...)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    ap.add_argument("--steps", type=int, default=None, help="training steps per timed repetition")
    ap.add_argument("--seq-len", type=int, default=None, help="training sequence length (tokens)")
    ap.add_argument("--batch-size", type=int, default=None, help="training batch size")
    ap.add_argument("--new-tokens", type=int, default=256, help="tokens generated per row")
    ap.add_argument("--gen-batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions (median reported)")
    ap.add_argument("--dtype", default=None,
                    help="float32 | bfloat16 (default: bf16 on cuda; with --vs trl: float32 on both sides)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (1 gives steadier figures on a shared machine)")
    ap.add_argument("--clock", default="wall", choices=sorted(_CLOCKS),
                    help="wall seconds, or this process's CPU seconds (steadier on a busy CPU box)")
    ap.add_argument("--compile", action="store_true",
                    help="also time training with both models under torch.compile, and generation with our "
                         "compiled decode step (engine.generate(compile=True))")
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    ap.add_argument("--memory", action="store_true",
                    help="instead: peak memory of one fp32 CPU training step, full logits vs chunked loss, "
                         "against the memory planner (batch 4 x 512 unless given)")
    ap.add_argument("--vs", default="hf", choices=["hf", "trl"],
                    help="hf: the model against LlamaForCausalLM (training and generation); trl: packed SFT "
                         "against TRL's SFTTrainer on the same traces, loss-bearing tokens/s (havoc_lite.bench_trl; "
                         "needs `pip install trl`; batch 16 x 160 and 20 steps unless given)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.memory:
        return memory_report(a.preset, a.batch_size or 4, a.seq_len or 512)
    if a.vs == "trl":
        from .bench_trl import run as run_trl
        try:
            res = run_trl(a.preset, a.seq_len or 160, a.batch_size or 16, a.steps or 20, reps=a.reps,
                          clock=a.clock, dtype=a.dtype or "float32")
        except (ImportError, ValueError) as e:
            raise SystemExit(f"havoc_lite.bench: {e}")
    else:
        res = run(a.preset, a.device, a.steps, a.seq_len, a.batch_size, a.new_tokens,
                  tuple(a.gen_batches), reps=a.reps, dtype=a.dtype, clock=a.clock, compile=a.compile)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {a.json}")
    return res


if __name__ == "__main__":
    main()
