"""`python -m havoc_lite.prime.measure`: the paired comparison's figures, and (opt-in, slow) the
whole measurement with the no-roles arm on a quick smoke run."""
import json
import os
import subprocess
import sys

import pytest
from scipy.stats import binomtest

from havoc_lite.eval.metrics import diff_of_proportions_ci
from havoc_lite.prime.measure import BUDGETS, paired_comparison


def test_paired_comparison_counts_discordant_pairs_and_tests_them():
    # 10 problems: both right on 3, only a on 4, only b on 1, neither on 2
    a = [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    b = [1, 1, 1, 0, 0, 0, 0, 1, 0, 0]
    c = paired_comparison([bool(x) for x in a], [bool(x) for x in b])
    assert (c["only_a_right"], c["only_b_right"]) == (4, 1)
    assert c["diff"] == pytest.approx(0.7 - 0.4)
    ref = diff_of_proportions_ci(7, 10, 4, 10)
    assert c["ci95"] == [round(ref["low"], 3), round(ref["high"], 3)]
    # McNemar's exact test: 4 of 5 discordant pairs one way, two-sided: (1 + 5 + 5 + 1) / 32
    assert c["mcnemar_exact_p"] == pytest.approx(12 / 32, abs=1e-4)
    assert c["mcnemar_exact_p"] == pytest.approx(binomtest(4, 5, 0.5).pvalue, abs=1e-4)


def test_paired_comparison_without_discordant_pairs_and_bad_input():
    same = [True, False, True]
    c = paired_comparison(same, same)
    assert c["diff"] == 0 and c["mcnemar_exact_p"] == 1.0 and c["only_a_right"] == c["only_b_right"] == 0
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_comparison([True], [True, False])
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_comparison([], [])


@pytest.mark.skipif(os.environ.get("HAVOC_SLOW_TESTS") != "1", reason="slow (~2 min): HAVOC_SLOW_TESTS=1")
def test_measure_quick_with_the_no_roles_arm(tmp_path):
    """Quick smoke run, then the measurement with --no-roles: both arms trained, every budget scored
    on both sets, and the comparison's counts agree with the per-budget accuracies."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    smoke = tmp_path / "smoke"
    subprocess.run([sys.executable, "-m", "havoc_lite.smoke", "--quick", "--out", str(smoke), "--device", "cpu"],
                   check=True, env=env, capture_output=True)
    out = tmp_path / "m"
    proc = subprocess.run([sys.executable, "-m", "havoc_lite.prime.measure", "--quick", "--from-smoke", str(smoke),
                           "--out", str(out), "--device", "cpu", "--no-roles", "--n-traps", "100", "--n-test", "8"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stages = json.loads((out / "prime_budgets.json").read_text())["stages"]
    assert list(stages) == ["reuse_smoke", "sft_traps", "sft_no_roles", "budgets", "compare"]
    traps = [json.loads(line) for line in (out / "sft" / "traps_no_roles.jsonl").read_text().splitlines()]
    assert len(traps) == 100 and not any("role" in s for t in traps for s in t["reasoning"])
    budgets = stages["budgets"]
    assert budgets["problems"] == {"in_template": 8, "heldout": 8}
    for set_name in ("in_template", "heldout"):
        for budget in BUDGETS:
            r, p = budgets["roles"][set_name][budget], budgets["no_roles"][set_name][budget]
            c = stages["compare"][set_name][budget]
            assert c["diff"] == pytest.approx((r["correct"] - p["correct"]) / 8, abs=1e-3)
            assert c["only_roles_right"] - c["only_no_roles_right"] == r["correct"] - p["correct"]
            assert r["per_problem"].count("1") == r["correct"] and len(r["per_problem"]) == 8
        m = stages["compare"][set_name]["matched"]
        heavy, medium = budgets["roles"][set_name]["heavy"], budgets["no_roles"][set_name]["medium"]
        assert m["only_roles_right"] == sum(a > b for a, b in zip(heavy["per_problem"], medium["per_problem"]))
        assert m["only_no_roles_right"] == sum(a < b for a, b in zip(heavy["per_problem"], medium["per_problem"]))
