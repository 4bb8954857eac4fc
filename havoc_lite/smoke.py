"""`python -m havoc_lite.smoke`: the whole pipeline, tiny, on real bundled text, in minutes.

Stages (each timed, each with a pass criterion; the run stops at the first failure and exits 1):
 1. tokenizer  — offline calculator traces are generated, then sentencepiece learns Tiny
                 Shakespeare + GSM8K + those traces (bundled slices).
                 Passes when the vocabulary has the requested size and every markup tag is one id.
 2. pretrain   — the `tiny` preset on two domains: general (Shakespeare) and math (GSM8K
                 solutions + the calculator traces as plain text). Passes when the mean loss of
                 the last tenth of steps is 0.5 nats below that of the first tenth.
 3. resume     — restart from the half-way checkpoint. Passes when the continuation matches the
                 uninterrupted run step for step (bitwise on CPU, 1e-3 on a GPU).
 4. sft        — offline calculator traces + converted GSM8K traces, loss on the answer only.
                 Passes when the loss falls.
 5. prime      — arithmetic through `generate_with_prime`, the calculator really executed during
                 generation, on two sets of unseen problems: in-template (the training templates,
                 questions the hash split kept out of training) and held-out-template (sentence
                 shapes no training template makes, `synth.offline` phrasing="heldout"). Passes
                 when every problem was scored and the accuracies reach the size's `min_in_template` /
                 `min_heldout` (full run: 0.5 and 0.0; the quick run only needs every problem
                 scored). The held-out bar is 0.0 because the tiny model does not generalise to new
                 phrasings (1 of 60 with the tool, seed 0): any real bar would fail every run. Raise
                 it when the training data teaches more than nine sentence shapes.
                 The "denied tool" figure (the same model, tool withheld) is 0 by construction
                 and labelled so; the fair comparison is `python -m havoc_lite.ablation`.
 6. gsm8k      — real GSM8K test problems (a near-zero score is the honest expectation).
                 Passes when every problem ran and was scored.
 7. report     — summary table, `results.json` and `loss_curve.png` in the run folder.
                 Passes when the plot was written.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .sizes import SMOKE_QUICK, SMOKE_RUN

ASSETS = Path(__file__).parent / "assets"


@dataclass
class SmokeArgs:
    """Arguments of `python -m havoc_lite.smoke`."""

    out: str = "checkpoints/smoke"   # run folder (wiped at start)
    device: str = "auto"             # "auto" | "cpu" | "cuda" | "mps"
    seed: int = 0
    quick: bool = False              # fewer steps and problems: a pipeline check, not a result


class Smoke:
    """Runs the stages in order, keeping what each measured in `self.results`."""

    def __init__(self, args: SmokeArgs):
        self.args = args
        self.sizes = SMOKE_QUICK if args.quick else SMOKE_RUN
        self.out = Path(args.out)
        from .distributed import resolve_device
        self.device = str(resolve_device(args.device))
        self.results: dict = {"args": vars(args), "device": self.device, "stages": {}}
        self.tokenizer = None

    # --- helpers --------------------------------------------------------------------------
    def train_config(self, config: str = "sft_smoke", max_steps: Optional[int] = None, **fields):
        """`configs/<config>.yaml` shortened to `max_steps` (`TrainConfig.scaled_to`), with this run's
        tokenizer, seed and device; `fields` (paths, save points) override."""
        from dataclasses import replace
        from .config import TrainConfig
        cfg = TrainConfig.load(config)
        if max_steps is not None:
            cfg = cfg.scaled_to(max_steps)
        return replace(cfg, **{**dict(tokenizer=str(self.out / "tokenizer"), seed=self.args.seed,
                                      device=self.device, progress=False), **fields})

    def run_stage(self, name: str, fn: Callable[[], dict]) -> bool:
        print(f"\n== {name} " + "=" * (60 - len(name)), flush=True)
        t0 = time.perf_counter()
        try:
            info = fn() or {}
            ok = bool(info.pop("ok", True))
        except Exception as e:  # a stage failure is reported, not hidden
            traceback.print_exc()
            info, ok = {"error": f"{type(e).__name__}: {e}"}, False
        info["seconds"] = round(time.perf_counter() - t0, 2)
        info["passed"] = ok
        self.results["stages"][name] = info
        print(f"-> {name}: {'ok' if ok else 'FAILED'} in {info['seconds']} s  "
              f"{ {k: v for k, v in info.items() if k not in ('seconds', 'passed', 'curve')} }", flush=True)
        return ok

    # --- stages ---------------------------------------------------------------------------
    def stage_tokenizer(self) -> dict:
        from synth.offline import generate_offline, write_jsonl
        from .data import render_trace
        from .tokenizer import train_tokenizer
        self.traces = generate_offline("arithmetic", self.sizes.offline_traces, seed=self.args.seed)
        write_jsonl(self.traces, self.out / "sft" / "arithmetic_traces.jsonl")
        self.trace_texts = [t["question"] + "\n" + render_trace(t) for t in self.traces]
        self.gsm8k = [json.loads(line) for line in open(ASSETS / "gsm8k_train_500.jsonl", encoding="utf-8")]
        self.gsm8k_texts = [g["question"] + "\n" + g["answer"] for g in self.gsm8k]
        shakespeare = (ASSETS / "tinyshakespeare_200k.txt").read_text(encoding="utf-8")
        t0 = time.perf_counter()
        tok = train_tokenizer(self.trace_texts + self.gsm8k_texts + [shakespeare], self.out / "tokenizer",
                              vocab_size=self.sizes.vocab_size)
        self.tokenizer = tok
        sample = self.trace_texts[0]
        from .markup import SPECIAL_TOKENS
        single = all(len(tok.encode(t, allow_special=True)) == 1 for t in SPECIAL_TOKENS)
        return {"ok": tok.vocab_size == self.sizes.vocab_size and single,
                "vocab_size": tok.vocab_size, "train_s": round(time.perf_counter() - t0, 2),
                "chars_per_token": round(len(sample) / len(tok.encode(sample, allow_special=True)), 2)}

    def pretrain_config(self, **fields):
        return self.train_config(self.sizes.pretrain_config, self.sizes.pretrain_steps,
                                 train_data=str(self.out / "shards"), **fields)

    def stage_pretrain(self) -> dict:
        from .data import prepare_pretraining
        from .train import Trainer
        raw = self.out / "pretrain_text"
        (raw / "general").mkdir(parents=True, exist_ok=True)
        (raw / "math").mkdir(parents=True, exist_ok=True)
        shutil.copy(ASSETS / "tinyshakespeare_200k.txt", raw / "general" / "shakespeare.txt")
        with open(raw / "math" / "gsm8k_and_traces.jsonl", "w", encoding="utf-8") as f:
            for text in self.gsm8k_texts + self.trace_texts:
                f.write(json.dumps({"text": text}) + "\n")
        index = prepare_pretraining(raw, self.tokenizer, self.out / "shards")
        n = self.sizes.pretrain_steps
        cfg = self.pretrain_config(save_every=n // 2, out_dir=str(self.out / "pretrain"))
        hist = Trainer(cfg, tokenizer=self.tokenizer).train()
        self.pretrain_hist = hist
        k = max(1, n // 10)
        first, last = sum(hist["loss"][:k]) / k, sum(hist["loss"][-k:]) / k
        tps = sorted(hist["tokens_per_s"])[len(hist["tokens_per_s"]) // 2]
        return {"ok": last < first - 0.5, "tokens": sum(d["tokens"] for d in index["domains"].values()),
                "loss_first": round(first, 3), "loss_last": round(last, 3),
                "tokens_per_s": round(tps), "curve": hist["loss"]}

    def stage_resume(self) -> dict:
        from .train import Trainer
        n, k = self.sizes.pretrain_steps, self.sizes.resume_check_steps
        half = self.out / "pretrain" / f"step_{n // 2:06d}"
        cfg = self.pretrain_config(save_every=n, out_dir=str(self.out / "resumed"), resume=str(half),
                                   stop_at_step=n // 2 + k)
        trainer = Trainer(cfg, tokenizer=self.tokenizer)
        start = trainer.step
        hist = trainer.train()
        full = dict(zip(self.pretrain_hist["step"], self.pretrain_hist["loss"]))
        diffs = [abs(loss - full[s]) for s, loss in zip(hist["step"], hist["loss"])]
        tol = 0.0 if self.device == "cpu" else 1e-3
        return {"ok": start == n // 2 and len(diffs) == k and max(diffs) <= tol,
                "resumed_at": start, "steps_compared": len(diffs), "max_abs_loss_diff": max(diffs)}

    def stage_sft(self) -> dict:
        from synth.offline import write_jsonl
        from .data import gsm8k_to_trace
        from .train import Trainer
        gsm = [gsm8k_to_trace(g) for g in self.gsm8k[:self.sizes.gsm8k_traces]]
        write_jsonl(gsm, self.out / "sft" / "gsm8k_traces.jsonl")
        n = self.sizes.sft_steps
        cfg = self.train_config(
            self.sizes.sft_config, n, init_from=str(self.out / "pretrain" / f"step_{self.sizes.pretrain_steps:06d}"),
            train_data=f"{self.out / 'sft' / 'arithmetic_traces.jsonl'},{self.out / 'sft' / 'gsm8k_traces.jsonl'}",
            save_every=n, eval_every=n, out_dir=str(self.out / "sft_run"))
        hist = Trainer(cfg, tokenizer=self.tokenizer).train()
        self.sft_hist = hist
        self.sft_dir = Path(hist["checkpoint"])
        k = max(1, n // 10)
        return {"ok": sum(hist["loss"][-k:]) < sum(hist["loss"][:k]), "traces": len(self.traces) + len(gsm),
                "loss_first": round(sum(hist["loss"][:k]) / k, 3),
                "loss_last": round(sum(hist["loss"][-k:]) / k, 3),
                "eval_loss": round(hist["eval_loss"][-1], 3) if hist["eval_loss"] else None,
                "curve": hist["loss"]}

    def eval_sets(self) -> dict[str, list[dict]]:
        """In-template and held-out-template arithmetic problems, none of them trained on."""
        from synth.offline import generate_offline
        n, seed = self.sizes.test_problems, self.args.seed
        return {"in_template": generate_offline("arithmetic", n, seed=seed, split="test"),
                "heldout": generate_offline("arithmetic", n, seed=seed, split="test", phrasing="heldout")}

    def stage_prime(self) -> dict:
        from .model import HavocModel
        model = HavocModel.from_pretrained(self.sft_dir, device=self.device).eval()
        self.model = model
        sets = self.eval_sets()
        info = {"problems": {k: len(v) for k, v in sets.items()}}
        for name, problems in sets.items():
            outs, scores = score_prime(model, self.tokenizer, problems, tools=None)
            info[name] = {k: v for k, v in scores.items() if k != "correct"}
            if name == "in_template":
                print("example:", outs[0].prompt, "\n ->", outs[0].text[:300])
            with open(self.out / "prime_samples.jsonl", "a", encoding="utf-8") as f:
                f.writelines(json.dumps({"set": name, **o.to_dict()}, default=str) + "\n" for o in outs[:10])
        _, denied = score_prime(model, self.tokenizer, sets["in_template"], tools=False)
        info["denied_tool_in_template"] = {k: v for k, v in denied.items() if k != "correct"}
        info["criteria"] = {"min_in_template": self.sizes.min_in_template, "min_heldout": self.sizes.min_heldout}
        info["ok"] = (all(info[k]["scored"] == len(sets[k]) for k in sets)
                      and info["in_template"]["accuracy"] >= self.sizes.min_in_template
                      and info["heldout"]["accuracy"] >= self.sizes.min_heldout)
        return info

    def stage_gsm8k(self) -> dict:
        from .eval import evaluate_gsm8k
        summary = evaluate_gsm8k(self.model, self.tokenizer, path=ASSETS / "gsm8k_test_100.jsonl",
                                 limit=self.sizes.eval_limit, max_new_tokens=160, batch_size=10,
                                 output_jsonl=self.out / "gsm8k_samples.jsonl", progress=False)
        m = summary["metrics"]
        scored = sum(1 for _ in open(self.out / "gsm8k_samples.jsonl", encoding="utf-8"))
        return {"ok": summary.get("num_examples") == self.sizes.eval_limit == scored,
                "problems": summary.get("num_examples"), "scored": scored,
                "strict_accuracy": m["strict"].get("accuracy", m["strict"]),
                "flexible_accuracy": m["flexible"].get("accuracy", m["flexible"])}

    def stage_report(self) -> dict:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        for ax, (title, hist) in zip(axes, (("pretrain (tiny)", self.pretrain_hist), ("sft", self.sft_hist))):
            ax.plot(hist["step"], hist["loss"], lw=1)
            ax.set_title(title), ax.set_xlabel("step"), ax.set_ylabel("train loss")
        fig.tight_layout()
        fig.savefig(self.out / "loss_curve.png", dpi=100)
        plt.close(fig)
        png = self.out / "loss_curve.png"
        return {"ok": png.stat().st_size > 1000, "png": str(png)}

    # --- run ------------------------------------------------------------------------------
    def run_stages(self, names: tuple[str, ...], results_file: str, drop_curves: bool = True) -> bool:
        """Wipe the run folder, run `stage_<name>` for each name until one fails, and write the
        results (total seconds, passed, each stage's figures) to `<out>/<results_file>`. The
        smoke run, the ablation and the PRIME measurement all run through here."""
        if self.out.exists():
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True)
        t0 = time.perf_counter()
        ok = all(self.run_stage(name, getattr(self, f"stage_{name}")) for name in names)
        self.results["total_seconds"] = round(time.perf_counter() - t0, 1)
        self.results["passed"] = ok
        if drop_curves:
            for info in self.results["stages"].values():
                info.pop("curve", None)
        (self.out / results_file).write_text(json.dumps(self.results, indent=2, default=str))
        return ok

    def run(self) -> int:
        ok = self.run_stages(("tokenizer", "pretrain", "resume", "sft", "prime", "gsm8k", "report"),
                             "results.json")
        print_summary(self.results)
        print(f"\nresults: {self.out / 'results.json'}")
        return 0 if ok else 1


def score_prime(model, tokenizer, problems: list[dict], tools=None, max_new_tokens: int = 120,
                budget: str = "medium") -> tuple[list, dict]:
    """Greedy `generate_with_prime` over offline trace problems; accuracy by `numbers.normalized_equal`.

    `tools`: None = the default registry (the calculator runs), False = no tool (a call gets no
    result). Returns (PrimeResults, {"accuracy", "correct", "scored", "tool_calls",
    "tool_call_success", "seconds"}); `correct` is the per-problem list of bools, in order.
    """
    from .numbers import normalized_equal
    from .prime import generate_with_prime
    t0 = time.perf_counter()
    outs = generate_with_prime(model, tokenizer, [p["question"] for p in problems], budget=budget,
                               prime_system=False, tools=tools, max_new_tokens=max_new_tokens)
    correct = [bool(normalized_equal(o.answer, p["answer"])) for o, p in zip(outs, problems)]
    calls = [c for o in outs for c in o.tool_calls]
    ok_calls = [c for c in calls if c["result"].status == "success"]
    return outs, {"accuracy": round(sum(correct) / len(problems), 3), "correct": correct,
                  "scored": len(outs), "tool_calls": len(calls),
                  "tool_call_success": round(len(ok_calls) / len(calls), 3) if calls else None,
                  "seconds": round(time.perf_counter() - t0, 2)}


def print_summary(results: dict) -> None:
    """A plain-text table of every stage: status, seconds and its key figures."""
    print(f"\n{'stage':<10} {'status':<7} {'s':>7}  figures")
    for name, info in results["stages"].items():
        figures = ", ".join(f"{k}={v}" for k, v in info.items() if k not in ("passed", "seconds"))
        print(f"{name:<10} {'ok' if info['passed'] else 'FAILED':<7} {info['seconds']:>7.1f}  {figures}")
    print(f"total {results['total_seconds']} s on {results['device']}: "
          f"{'all stages passed' if results['passed'] else 'FAILED'}")


def main(argv: Optional[list[str]] = None) -> int:
    """The command line. A bad --device or an unwritable --out is one line and exit 2, found
    before any stage runs (`errors.run_cli`); a failed stage is exit 1."""
    from .errors import run_cli
    return run_cli(_main, argv)


def _main(argv: Optional[list[str]] = None) -> int:
    import tyro
    from .checkpoint import check_writable
    args = tyro.cli(SmokeArgs, args=argv, prog="python -m havoc_lite.smoke")
    smoke = Smoke(args)                 # resolves --device (ConfigError for tpu, cuda without CUDA)
    check_writable(args.out, "--out")
    return smoke.run()


if __name__ == "__main__":
    sys.exit(main())
