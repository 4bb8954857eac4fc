"""`python -m havoc_lite.ablation`: what the calculator is worth, measured fairly.

Denying a tool to a model trained to wait for its result scores zero by construction, so that
figure says nothing about the tool. Here two models are SFT'd from the same pretrained checkpoint,
on the same problems, for the same steps, with the same seed:
- "tool":    the smoke run's traces (each calculator call and the result the engine writes);
- "no_tool": the same traces with every tool call removed: the step writes the expression and its
             value itself ("... 12+5 = 17.") and states the answer, so it must compute in its head.
Both answer the same unseen problems, in-template and held-out-template (`Smoke.eval_sets`), the
tool model with the calculator, the no-tool model without one. The effect of the tool is the
difference of accuracies with a 95 % Newcombe interval (`eval.metrics.diff_of_proportions_ci`).

Sizes are the smoke run's (`--quick` for its quick sizes). `--from-smoke DIR` reuses a finished smoke
run's tokenizer, checkpoints and traces and trains only the no-tool model (600 steps: ~1.5 minutes
on an idle 2-core box, 18 minutes on one thread of a shared one). Results go to `<out>/ablation.json`; exit 1 if a training stage fails.
"""
from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .smoke import Smoke, SmokeArgs, score_prime


def strip_tool_calls(trace: dict) -> dict:
    """A copy of `trace` without tool calls: each calculator step says `expr = value.` in its own
    reasoning; a call of another tool is dropped with its result (the step's text stays).

    Raises KeyError/TypeError on a malformed trace (verified traces never are).
    """
    out = copy.deepcopy(trace)
    for step in out["reasoning"]:
        call = step.pop("tool_call", None)
        result = step.pop("tool_result", None)
        if call and call["name"] == "calculator" and result and result.get("status") == "success":
            value = result["result"]
            value = int(value) if isinstance(value, float) and value.is_integer() else value
            step["content"] = f"{step['content'].rstrip()} {call['args']['expression']} = {value}."
    out.pop("tool_result", None)
    return out


@dataclass
class AblationArgs:
    """Arguments of `python -m havoc_lite.ablation`."""

    out: str = "checkpoints/ablation"   # run folder (wiped at start)
    device: str = "auto"
    seed: int = 0
    quick: bool = False                 # the smoke run's quick sizes: a pipeline check
    from_smoke: Optional[str] = None
    """a finished `python -m havoc_lite.smoke` folder (same --quick/--seed): reuse its tokenizer,
    pretrained checkpoint, traces and tool model instead of training them again"""


class Ablation(Smoke):
    """The smoke run's tokenizer, pretrain and SFT, a second SFT on tool-free traces, and both
    models scored on the same problems."""

    def check_smoke_dir(self) -> tuple[Path, Path]:
        """The pretrained and SFT checkpoints of `--from-smoke`; ConfigError (one line, exit 2)
        naming what is missing, before anything runs."""
        from .errors import ConfigError
        src = Path(self.from_smoke)
        pre = src / "pretrain" / f"step_{self.sizes.pretrain_steps:06d}"
        sft = src / "sft_run" / f"step_{self.sizes.sft_steps:06d}"
        for need in (src / "tokenizer", pre, src / "sft" / "arithmetic_traces.jsonl"):
            if not need.exists():
                raise ConfigError(f"--from-smoke {src}: {need} is missing (a finished smoke run with the "
                                  "same --quick is needed)")
        return pre, sft

    def stage_reuse_smoke(self) -> dict:
        """Take the tokenizer, traces, pretrained and SFT checkpoints of a finished smoke run."""
        import shutil
        from .tokenizer import load_tokenizer
        src = Path(self.from_smoke)
        pre, sft = self.check_smoke_dir()
        self.tokenizer = load_tokenizer(src / "tokenizer")
        shutil.copytree(src / "sft", self.out / "sft")
        self.pretrain_dir, self.sft_dir = pre, sft
        return {"smoke_run": str(src)}

    def stage_sft_no_tool(self) -> dict:
        from synth.offline import write_jsonl
        from .train import Trainer
        sft = self.out / "sft"
        for name in ("arithmetic_traces", "gsm8k_traces"):
            rows = [json.loads(line) for line in open(sft / f"{name}.jsonl", encoding="utf-8")]
            write_jsonl([strip_tool_calls(r) for r in rows], sft / f"{name}_no_tool.jsonl")
        n = self.sizes.sft_steps
        cfg = self.train_config(       # the tool model's SFT config, steps and seed: only the data differ
            self.sizes.sft_config, n, init_from=str(self.pretrain_dir),
            train_data=f"{sft / 'arithmetic_traces_no_tool.jsonl'},{sft / 'gsm8k_traces_no_tool.jsonl'}",
            save_every=n, eval_every=0, out_dir=str(self.out / "sft_no_tool_run"))
        hist = Trainer(cfg, tokenizer=self.tokenizer).train()
        self.no_tool_dir = Path(hist["checkpoint"])
        k = max(1, n // 10)
        return {"ok": sum(hist["loss"][-k:]) < sum(hist["loss"][:k]),
                "loss_first": round(sum(hist["loss"][:k]) / k, 3), "loss_last": round(sum(hist["loss"][-k:]) / k, 3)}

    def stage_compare(self) -> dict:
        from .eval.metrics import diff_of_proportions_ci
        from .model import HavocModel
        if not self.sft_dir.exists():
            raise FileNotFoundError(f"the tool model {self.sft_dir} is missing (is the smoke run finished?)")
        tool_model = HavocModel.from_pretrained(self.sft_dir, device=self.device).eval()
        plain_model = HavocModel.from_pretrained(self.no_tool_dir, device=self.device).eval()
        info = {}
        for name, problems in self.eval_sets().items():
            _, with_tool = score_prime(tool_model, self.tokenizer, problems, tools=None)
            outs, no_tool = score_prime(plain_model, self.tokenizer, problems, tools=False)
            _, denied = score_prime(tool_model, self.tokenizer, problems, tools=False)
            n, k1, k2 = len(problems), sum(with_tool["correct"]), sum(no_tool["correct"])
            ci = diff_of_proportions_ci(k1, n, k2, n)
            # discordant pairs: what a paired test would look at
            both = list(zip(with_tool["correct"], no_tool["correct"]))
            info[name] = {"problems": n, "tool_model_with_tool": round(k1 / n, 3), "no_tool_model": round(k2 / n, 3),
                          "tool_effect": round(ci["diff"], 3), "ci95": [round(ci["low"], 3), round(ci["high"], 3)],
                          "only_tool_right": both.count((True, False)), "only_no_tool_right": both.count((False, True)),
                          "denied_tool_figure (tool model, tool withheld; 0 by construction)": denied["accuracy"],
                          "no_tool_example": outs[0].text[:200]}
        info["interval"] = ci["method"]
        return info

    def run(self) -> int:
        stages = (("reuse_smoke",) if self.from_smoke else ("tokenizer", "pretrain", "sft")) + ("sft_no_tool", "compare")
        if not self.from_smoke:
            self.pretrain_dir = self.out / "pretrain" / f"step_{self.sizes.pretrain_steps:06d}"
        ok = self.run_stages(stages, "ablation.json")
        print(json.dumps(self.results["stages"].get("compare", {}), indent=2, default=str))
        return 0 if ok else 1


def main(argv: Optional[list[str]] = None) -> int:
    """Command line; a bad --device or --out is one line and exit 2 (`errors.run_cli`)."""
    from .errors import run_cli
    return run_cli(_main, argv)


def _main(argv: Optional[list[str]] = None) -> int:
    import tyro
    from .checkpoint import check_writable
    args = tyro.cli(AblationArgs, args=argv, prog="python -m havoc_lite.ablation")
    ablation = Ablation(SmokeArgs(out=args.out, device=args.device, seed=args.seed, quick=args.quick))
    ablation.from_smoke = args.from_smoke
    if args.from_smoke:
        ablation.check_smoke_dir()
    check_writable(args.out, "--out")
    return ablation.run()


if __name__ == "__main__":
    sys.exit(main())
