"""`python -m havoc_lite.prime.measure --from-smoke DIR`: PRIME per budget, on problems with traps.

The smoke run's SFT model is trained on for a third of its SFT steps more, on its own traces plus
`synth.offline` "arithmetic_traps" traces, whose <advocate>/<attack>/<pragmatist>/<verify>
sections catch a planted trap (`synth.validation.attack_problem` checks them). It then answers unseen trap
problems (the hash split's test side) under each forced budget, MINIMAL, LIGHT, MEDIUM and HEAVY,
greedy, with the calculator: accuracy, mean generated tokens (engine-written included) and seconds
per problem. Writes `<out>/prime_budgets.json`.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..ablation import Ablation
from ..smoke import SmokeArgs, score_prime

BUDGETS = ("minimal", "light", "medium", "heavy")


@dataclass
class MeasureArgs:
    """PRIME per budget on trap problems, from a finished smoke run."""
    from_smoke: str                 # a finished `python -m havoc_lite.smoke` folder
    out: str = "checkpoints/prime_budgets"
    device: str = "auto"
    seed: int = 0
    n_traps: int = 1000             # trap traces added to the smoke run's SFT data
    n_test: int = 60
    quick: bool = False


class Measure(Ablation):
    """Reuses a smoke run (`Ablation.stage_reuse_smoke`), trains on the trap traces, and scores
    every budget on the same unseen trap problems."""

    def stage_sft_traps(self) -> dict:
        from synth.offline import generate_offline, write_jsonl
        from ..train import Trainer
        sft = self.out / "sft"
        write_jsonl(generate_offline("arithmetic_traps", self.n_traps, seed=self.args.seed), sft / "traps.jsonl")
        n = max(1, self.sizes.sft_steps // 3)
        cfg = self.train_config(
            phase="sft", init_from=str(self.sft_dir),
            train_data=",".join(str(sft / f) for f in ("arithmetic_traces.jsonl", "gsm8k_traces.jsonl", "traps.jsonl")),
            seq_len=256, max_steps=n, lr=3e-3, min_lr=3e-4, warmup_steps=max(1, n // 20),
            save_every=n, eval_every=0, out_dir=str(self.out / "sft_traps_run"))
        hist = Trainer(cfg, tokenizer=self.tokenizer).train()
        self.traps_dir = Path(hist["checkpoint"])
        k = max(1, n // 10)
        return {"ok": sum(hist["loss"][-k:]) < sum(hist["loss"][:k]), "traps": self.n_traps,
                "loss_first": round(sum(hist["loss"][:k]) / k, 3), "loss_last": round(sum(hist["loss"][-k:]) / k, 3)}

    def stage_budgets(self) -> dict:
        from synth.offline import generate_offline
        from ..model import HavocModel
        model = HavocModel.from_pretrained(self.traps_dir, device=self.device).eval()
        problems = generate_offline("arithmetic_traps", self.n_test, seed=self.args.seed, split="test")
        info = {"problems": len(problems)}
        for budget in BUDGETS:
            outs, s = score_prime(model, self.tokenizer, problems, tools=None, budget=budget, max_new_tokens=256)
            info[budget] = {"accuracy": s["accuracy"], "mean_tokens": round(sum(o.num_tokens for o in outs) / len(outs), 1),
                            "seconds_per_problem": round(s["seconds"] / len(outs), 3),
                            "with_attack": sum(1 for o in outs if o.roles.get("attack")),
                            "example": outs[0].text[:400]}
        return info

    def run(self) -> int:
        ok = self.run_stages(("reuse_smoke", "sft_traps", "budgets"), "prime_budgets.json", drop_curves=False)
        return 0 if ok else 1


def main(argv: Optional[list[str]] = None) -> int:
    """Command line; a bad --device, --out or --from-smoke is one line and exit 2."""
    from ..errors import run_cli
    return run_cli(_main, argv)


def _main(argv: Optional[list[str]] = None) -> int:
    import tyro
    from ..checkpoint import check_writable
    args = tyro.cli(MeasureArgs, args=argv, prog="python -m havoc_lite.prime.measure")
    m = Measure(SmokeArgs(out=args.out, device=args.device, seed=args.seed, quick=args.quick))
    m.from_smoke, m.n_traps, m.n_test = args.from_smoke, args.n_traps, args.n_test
    m.check_smoke_dir()
    check_writable(args.out, "--out")
    return m.run()


if __name__ == "__main__":
    sys.exit(main())
