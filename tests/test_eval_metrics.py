"""pass@k against the combinatorial definition, maj@k, catch-rate, latency percentiles."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from havoc_lite.eval.metrics import (catch_rate, latency_stats, maj_at_k, majority_answer,
                                     mean_pass_at_k, pass_at_k, tool_success_rate, tool_use_rate)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 60).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_matches_combinatorial_definition(nck):
    n, c, k = nck
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)  # Chen et al. 2021, eq. 1
    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_edges_and_errors():
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    # large n where C(n, k) overflows a float: the product form still gives a finite answer
    assert 0.0 < pass_at_k(2000, 1, 100) == pytest.approx(100 / 2000)
    for bad in [(5, 6, 1), (5, 2, 0), (5, 2, 6)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)
    assert mean_pass_at_k([(4, 2), (4, 0)], 1) == pytest.approx(0.25)


def test_pass_at_1_is_the_fraction_correct_monte_carlo():
    rng = np.random.default_rng(0)
    n, c, k = 20, 7, 5
    draws = [rng.choice(n, size=k, replace=False) for _ in range(20000)]
    mc = np.mean([(d < c).any() for d in draws])  # samples 0..c-1 are the correct ones
    assert pass_at_k(n, c, k) == pytest.approx(mc, abs=0.01)


def test_majority_and_maj_at_k():
    assert majority_answer(["3", None, "5", "5", "3"]) == "3"  # tie: the first seen wins
    assert majority_answer([None, None]) is None
    answers = ["7", "8", "8", "7", "8"]
    assert maj_at_k(answers, "8", 5) and not maj_at_k(answers, "8", 1) and maj_at_k(answers, "7", 1)
    with pytest.raises(ValueError):
        maj_at_k(answers, "8", 6)


def test_catch_rate_and_tool_rates():
    r = catch_rate([True, False, True, False, False], [True, True, False, False, False])
    assert r["catch_rate"] == 0.5 and r["false_alarm_rate"] == pytest.approx(1 / 3)
    assert r["accuracy"] == pytest.approx(3 / 5) and r["n_wrong"] == 2
    calls = [[{"status": "success"}, {"status": "error"}], [], [{"status": "success"}]]
    assert tool_use_rate(calls) == pytest.approx(2 / 3)
    assert tool_success_rate(calls) == pytest.approx(2 / 3)
    assert math.isnan(tool_success_rate([[], []]))


def test_latency_percentiles_match_numpy():
    xs = list(np.random.default_rng(1).exponential(0.5, size=101))
    s = latency_stats(xs)
    assert s["p50_s"] == pytest.approx(float(np.median(xs)))
    assert s["p95_s"] == pytest.approx(sorted(xs)[95])  # 101 points: the 95th percentile is exact


def test_newcombe_interval_matches_the_published_table():
    """Newcombe (1998) Stat Med 17:873, Table II, method 10 (hybrid score), four of its examples."""
    from havoc_lite.eval.metrics import diff_of_proportions_ci
    table = {(56, 70, 48, 80): (0.0524, 0.3339), (9, 10, 3, 10): (0.1705, 0.8090),
             (6, 7, 2, 7): (0.0582, 0.8062), (5, 56, 0, 29): (-0.0381, 0.1926)}
    for (k1, n1, k2, n2), (low, high) in table.items():
        ci = diff_of_proportions_ci(k1, n1, k2, n2)
        assert ci["diff"] == pytest.approx(k1 / n1 - k2 / n2)
        assert (round(ci["low"], 4), round(ci["high"], 4)) == (low, high)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        diff_of_proportions_ci(5, 4, 1, 4)
