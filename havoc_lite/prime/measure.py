"""`python -m havoc_lite.prime.measure --from-smoke DIR [--no-roles]`: PRIME per budget, on trap problems.

The smoke run's SFT model is trained on for a third of its SFT steps more, on its own traces plus
`synth.offline` "arithmetic_traps" traces, whose <advocate>/<attack>/<pragmatist>/<verify>
sections catch a planted trap (`synth.validation.attack_problem` checks them). It then answers two sets of
unseen trap problems under each forced budget, MINIMAL, LIGHT, MEDIUM and HEAVY, greedy, with the
calculator: accuracy, mean generated tokens (engine-written included), seconds per problem and
how many answers contain an <attack>.
- in_template: the training trap templates, questions the hash split kept out of training;
- heldout:     `synth.traps.HELDOUT_TRAPS`, other kinds of trap in other sentence shapes.

`--no-roles` adds the comparison: a second model trained from the same checkpoint, on the same
data, for the same steps and seed, with every trap trace passed through `synth.traps.strip_roles`
(no sections: the trace solves the problem directly). Both are scored on the same problems per
budget, and each difference roles - no-roles gets a 95 % Newcombe interval
(`eval.metrics.diff_of_proportions_ci`, conservative for paired answers), the discordant counts
and an exact McNemar p-value (a two-sided binomial test on the discordant pairs): at every budget,
and "matched", the roles model at HEAVY against the no-roles model at MEDIUM. HEAVY forces the four
sections on a model that never saw them, which breaks its output (as withholding a tool breaks a
tool model), so only the matched figure compares what the two trainings taught.

Writes `<out>/prime_budgets.json`; exit 1 if a training stage fails.
"""
from __future__ import annotations

import json
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
    n_test: int = 100               # problems per set (in-template and held-out)
    no_roles: bool = False
    """also train a model on the same traces without the PRIME sections and compare the two"""
    quick: bool = False


def paired_comparison(a: list[bool], b: list[bool]) -> dict:
    """Accuracy of `a` minus that of `b` on the same problems (per-problem correctness, in order).

    Returns {"diff", "ci95" (Newcombe, treats the samples as independent: conservative here),
    "only_a_right", "only_b_right" (the discordant pairs), "mcnemar_exact_p" (two-sided binomial
    test of the discordant pairs against 1/2; 1.0 when there are none)}.
    Raises ValueError when the lists differ in length or are empty.
    """
    from scipy.stats import binomtest
    from ..eval.metrics import diff_of_proportions_ci
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_comparison needs two equal, non-empty lists, got {len(a)} and {len(b)}")
    n = len(a)
    ci = diff_of_proportions_ci(sum(a), n, sum(b), n)
    pairs = list(zip(map(bool, a), map(bool, b)))
    only_a, only_b = pairs.count((True, False)), pairs.count((False, True))
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"diff": round(ci["diff"], 3), "ci95": [round(ci["low"], 3), round(ci["high"], 3)],
            "only_a_right": only_a, "only_b_right": only_b, "mcnemar_exact_p": round(float(p), 4)}


class Measure(Ablation):
    """Reuses a smoke run (`Ablation.stage_reuse_smoke`), trains on the trap traces (and, with
    `no_roles`, on the same traces without sections), and scores every budget on the same unseen
    trap problems."""

    no_roles = False

    def _train_on_traps(self, traps_file: str, run_name: str) -> tuple[Path, dict]:
        from ..train import Trainer
        sft = self.out / "sft"
        n = max(1, self.sizes.sft_steps // 3)
        # the smoke SFT config, continued: trap traces are longer (256 tokens), and a run that
        # starts from a trained model warms up for a twentieth of its steps
        cfg = self.train_config(
            self.sizes.sft_config, n, init_from=str(self.sft_dir),
            train_data=",".join(str(sft / f) for f in ("arithmetic_traces.jsonl", "gsm8k_traces.jsonl", traps_file)),
            seq_len=256, warmup_steps=max(1, n // 20), save_every=n, eval_every=0, out_dir=str(self.out / run_name))
        hist = Trainer(cfg, tokenizer=self.tokenizer).train()
        k = max(1, n // 10)
        first, last = sum(hist["loss"][:k]) / k, sum(hist["loss"][-k:]) / k
        return Path(hist["checkpoint"]), {"ok": last < first, "steps": n, "loss_first": round(first, 3),
                                          "loss_last": round(last, 3)}

    def stage_sft_traps(self) -> dict:
        from synth.offline import generate_offline, write_jsonl
        write_jsonl(generate_offline("arithmetic_traps", self.n_traps, seed=self.args.seed),
                    self.out / "sft" / "traps.jsonl")
        self.models = {}
        self.models["roles"], info = self._train_on_traps("traps.jsonl", "sft_traps_run")
        return {"traps": self.n_traps, **info}

    def stage_sft_no_roles(self) -> dict:
        from synth.offline import write_jsonl
        from synth.traps import strip_roles
        sft = self.out / "sft"
        with open(sft / "traps.jsonl", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        write_jsonl([strip_roles(r) for r in rows], sft / "traps_no_roles.jsonl")
        self.models["no_roles"], info = self._train_on_traps("traps_no_roles.jsonl", "sft_no_roles_run")
        return {"traps": len(rows), **info}

    def eval_sets(self) -> dict[str, list[dict]]:
        """Unseen trap problems: the training templates (test side of the hash split) and the
        held-out family."""
        from synth.offline import generate_offline
        n, seed = self.n_test, self.args.seed
        return {"in_template": generate_offline("arithmetic_traps", n, seed=seed, split="test"),
                "heldout": generate_offline("arithmetic_traps", n, seed=seed, split="test", phrasing="heldout")}

    def stage_budgets(self) -> dict:
        from ..model import HavocModel
        sets = self.eval_sets()
        info: dict = {"problems": {k: len(v) for k, v in sets.items()}}
        self.correct: dict = {}
        for arm, path in self.models.items():
            model = HavocModel.from_pretrained(path, device=self.device).eval()
            for set_name, problems in sets.items():
                for budget in BUDGETS:
                    outs, s = score_prime(model, self.tokenizer, problems, tools=None, budget=budget, max_new_tokens=256)
                    self.correct[arm, set_name, budget] = s["correct"]
                    info.setdefault(arm, {}).setdefault(set_name, {})[budget] = {
                        "accuracy": s["accuracy"], "correct": sum(s["correct"]),
                        "mean_tokens": round(sum(o.num_tokens for o in outs) / len(outs), 1),
                        "seconds_per_problem": round(s["seconds"] / len(outs), 3),
                        "with_attack": sum(1 for o in outs if o.roles.get("attack")),
                        "per_problem": "".join("1" if c else "0" for c in s["correct"]),
                        "example": outs[0].text[:400]}
        return info

    def stage_compare(self) -> dict:
        """Roles minus no-roles at every budget, both sets (HEAVY is the one the issue asks for),
        and "matched": each model at the budget whose output its training matches, the roles model
        at HEAVY against the no-roles model at MEDIUM (HEAVY forces sections the no-roles model
        never saw, so the HEAVY-against-HEAVY figure is partly a forced-tags effect)."""
        info = {"interval": "Newcombe 1998 hybrid score (method 10), Wilson intervals; "
                            "McNemar exact test on the discordant pairs"}
        pairs = [(b, b, b) for b in BUDGETS] + [("matched", "heavy", "medium")]
        for set_name in ("in_template", "heldout"):
            for name, roles_budget, plain_budget in pairs:
                c = paired_comparison(self.correct["roles", set_name, roles_budget],
                                      self.correct["no_roles", set_name, plain_budget])
                c["only_roles_right"], c["only_no_roles_right"] = c.pop("only_a_right"), c.pop("only_b_right")
                info.setdefault(set_name, {})[name] = c
        return info

    def run(self) -> int:
        stages = ("reuse_smoke", "sft_traps") + (("sft_no_roles",) if self.no_roles else ()) + ("budgets",)
        stages += ("compare",) if self.no_roles else ()
        ok = self.run_stages(stages, "prime_budgets.json", drop_curves=False)
        print_tables(self.results["stages"])
        return 0 if ok else 1


def print_tables(stages: dict) -> None:
    """Accuracy per arm, set and budget (and the HEAVY comparison when there is one), as text."""
    budgets = stages.get("budgets", {})
    for arm in ("roles", "no_roles"):
        for set_name, rows in budgets.get(arm, {}).items():
            print(f"\n{arm} / {set_name}: " + ", ".join(
                f"{b} {r['accuracy']:.2f} ({r['correct']}/{budgets['problems'][set_name]}, {r['mean_tokens']} tok, "
                f"{r['with_attack']} attacks)" for b, r in rows.items()))
    for set_name, rows in stages.get("compare", {}).items():
        for name, label in (("heavy", "both at HEAVY"), ("matched", "roles at HEAVY, no_roles at MEDIUM")):
            if isinstance(rows, dict):
                h = rows[name]
                print(f"roles - no_roles, {label}, {set_name}: {h['diff']:+.3f} {h['ci95']}, discordant "
                      f"{h['only_roles_right']}/{h['only_no_roles_right']}, McNemar p {h['mcnemar_exact_p']}")


def main(argv: Optional[list[str]] = None) -> int:
    """Command line; a bad --device, --out or --from-smoke is one line and exit 2."""
    from ..errors import run_cli
    return run_cli(_main, argv)


def _main(argv: Optional[list[str]] = None) -> int:
    import tyro
    from ..checkpoint import check_writable
    args = tyro.cli(MeasureArgs, args=argv, prog="python -m havoc_lite.prime.measure")
    m = Measure(SmokeArgs(out=args.out, device=args.device, seed=args.seed, quick=args.quick))
    m.from_smoke, m.n_traps, m.n_test, m.no_roles = args.from_smoke, args.n_traps, args.n_test, args.no_roles
    m.check_smoke_dir()
    check_writable(args.out, "--out")
    return m.run()


if __name__ == "__main__":
    sys.exit(main())
