"""python_math against scipy.stats (full precision in compute, 4 significant digits in the tool)."""
import math
import time

import numpy as np
import pytest
import scipy.stats as st

from havoc_lite.tools import ToolRegistry
from havoc_lite.tools import python_math as pm

rng = np.random.default_rng(0)
A = [round(float(v), 3) for v in rng.normal(10, 2, 12)]
B = [round(float(v), 3) for v in rng.normal(11, 3, 15)]
C = [round(float(v), 3) for v in rng.normal(12, 2, 9)]


@pytest.fixture(scope="module")
def reg():
    r = ToolRegistry(timeout_s=5.0)
    pm.register(r)
    yield r
    r.close()


def test_design_examples_exactly(reg):
    res = reg.execute("python_math", {"operation": "t_test", "group1": [1, 2, 3, 4, 5],
                                      "group2": [2, 3, 4, 5, 6]})
    assert res.to_json() == ('{"status": "success", "result": '
                             '{"statistic": -1.0, "pvalue": 0.3466, "df": 8.0}}')
    res = reg.execute("python_math", {"operation": "anova", "groups": [[1, 2, 3], [2, 3, 4], [3, 4, 5]]})
    assert res.result == {"statistic": 3.0, "pvalue": 0.125, "df_between": 2.0, "df_within": 6.0}


def _close(got, ref):
    assert got == pytest.approx(float(ref), rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("kwargs, ref", [
    (dict(group1=A, group2=B), st.ttest_ind(A, B)),
    (dict(group1=A, group2=B, equal_var=False), st.ttest_ind(A, B, equal_var=False)),
    (dict(group1=A, group2=B[:12], paired=True), st.ttest_rel(A, B[:12])),
    (dict(group1=A, popmean=9.5), st.ttest_1samp(A, 9.5)),
    (dict(group1=A, group2=B, alternative="less"), st.ttest_ind(A, B, alternative="less")),
])
def test_t_tests_match_scipy(reg, kwargs, ref):
    full = pm.compute("t_test", **kwargs)
    for key in ("statistic", "pvalue", "df"):
        _close(full[key], getattr(ref, key))
    shown = reg.execute("python_math", {"operation": "t_test", **kwargs}).result
    assert shown == pm.round_sig(full)
    assert shown["pvalue"] == float(f"{ref.pvalue:.4g}")


def test_other_operations_match_scipy(reg):
    r = st.f_oneway(A, B, C)
    got = pm.compute("anova", groups=[A, B, C])
    _close(got["statistic"], r.statistic), _close(got["pvalue"], r.pvalue)

    table = [[12, 5, 7], [9, 14, 3]]
    r = st.chi2_contingency(table)
    got = pm.compute("chi_square", observed=table)
    _close(got["statistic"], r.statistic), _close(got["pvalue"], r.pvalue)
    assert got["df"] == r.dof
    r = st.chi2_contingency([[10, 20], [30, 40]], correction=False)
    _close(pm.compute("chi_square", observed=[[10, 20], [30, 40]], correction=False)["statistic"],
           r.statistic)
    r = st.chisquare([18, 22, 20], f_exp=[20, 20, 20])
    got = pm.compute("chi_square", observed=[18, 22, 20], expected=[20, 20, 20])
    _close(got["statistic"], r.statistic), _close(got["pvalue"], r.pvalue)

    for method, fn in [("pearson", st.pearsonr), ("spearman", st.spearmanr),
                       ("kendall", st.kendalltau)]:
        r = fn(A, B[:12])
        got = pm.compute("correlation", x=A, y=B[:12], method=method)
        _close(got["statistic"], r.statistic), _close(got["pvalue"], r.pvalue)

    r = st.linregress(A, C + C[:3])
    got = pm.compute("linear_regression", x=A, y=C + C[:3])
    for key in ("slope", "intercept", "rvalue", "pvalue", "stderr", "intercept_stderr"):
        _close(got[key], getattr(r, key))
    _close(got["r_squared"], r.rvalue ** 2)

    d = st.describe(B)
    got = pm.compute("describe", data=B)
    _close(got["mean"], d.mean), _close(got["variance"], d.variance)
    _close(got["skewness"], d.skewness), _close(got["kurtosis"], d.kurtosis)
    _close(got["median"], np.median(B)), _close(got["std"], np.std(B, ddof=1))

    r = st.shapiro(B)
    got = pm.compute("shapiro", data=B)
    _close(got["statistic"], r.statistic), _close(got["pvalue"], r.pvalue)

    ci = st.t.interval(0.9, len(A) - 1, loc=np.mean(A), scale=st.sem(A))
    got = pm.compute("confidence_interval", data=A, confidence=0.9)
    _close(got["lower"], ci[0]), _close(got["upper"], ci[1])

    shown = reg.execute("python_math", {"operation": "describe", "data": B}).result
    assert shown == pm.round_sig(pm.compute("describe", data=B)) and shown["n"] == 15


def test_effect_sizes_agree_with_scipy_statistics():
    # Cohen's d from Student's t: d = t * sqrt(1/n1 + 1/n2)
    t = st.ttest_ind(A, B).statistic
    _close(pm.compute("cohens_d", group1=A, group2=B)["d"], t * math.sqrt(1 / len(A) + 1 / len(B)))
    # eta^2 from F: F*df_b / (F*df_b + df_w)
    f = st.f_oneway(A, B, C).statistic
    dfb, dfw = 2, len(A) + len(B) + len(C) - 3
    assert pm.compute("eta_squared", groups=[A, B, C])["eta_squared"] == pytest.approx(
        f * dfb / (f * dfb + dfw), rel=1e-12)


def test_rounding_policy():
    assert pm.round_sig({"a": 0.000123456, "b": [123456.7, 3], "n": 7}) == \
        {"a": 0.0001235, "b": [123500.0, 3], "n": 7}


HOSTILE = [
    {"operation": "t_test", "group1": [1], "group2": [1, 2]},
    {"operation": "t_test", "group1": [1, 1, 1], "group2": [2, 2, 2]},
    {"operation": "t_test", "group1": [1, 2, 3]},
    {"operation": "t_test", "group1": [5, 5, 5], "popmean": 5},
    {"operation": "t_test", "group1": [1, 2, 3], "group2": [1, 2], "paired": True},
    {"operation": "t_test", "group1": [1, 2, 3], "group2": [2, 3, 4], "paired": True},
    {"operation": "t_test", "group1": [1, 2, float("nan")], "group2": [1, 2]},
    {"operation": "t_test", "group1": [1, 2, float("inf")], "group2": [1, 2]},
    {"operation": "t_test", "group1": [1, 2, "3"], "group2": [1, 2]},
    {"operation": "t_test", "group1": "1,2,3", "group2": [1, 2]},
    {"operation": "t_test", "group1": [[1, 2], [3]], "group2": [1, 2]},
    {"operation": "t_test", "group1": [1e308, -1e308, 1e308], "group2": [1, 2, 3]},
    {"operation": "t_test", "group1": list(range(20_000)), "group2": [1, 2]},
    {"operation": "t_test", "group1": [1, 2], "group2": [3, 4], "groups": [[1]]},
    {"operation": "anova", "groups": [[1, 2, 3]]},
    {"operation": "anova", "groups": [[1], [2]]},
    {"operation": "anova", "groups": [[1, 1], [1, 1]]},
    {"operation": "anova", "groups": [[1, 2], []]},
    {"operation": "anova"},
    {"operation": "chi_square", "observed": [[10, 20], [30]]},
    {"operation": "chi_square", "observed": [[10, 20], 30]},
    {"operation": "chi_square", "observed": [[-1, 2], [3, 4]]},
    {"operation": "chi_square", "observed": [[0, 0], [3, 4]]},
    {"operation": "chi_square", "observed": [[1, 2, 3]]},
    {"operation": "chi_square", "observed": [10, 20], "expected": [10, 10, 10]},
    {"operation": "chi_square", "observed": [10, 20], "expected": [0, 30]},
    {"operation": "chi_square", "observed": [10, 20], "expected": [10, 10]},
    {"operation": "chi_square", "observed": []},
    {"operation": "correlation", "x": [1, 2, 3], "y": [1, 2]},
    {"operation": "correlation", "x": [1, 1, 1], "y": [1, 2, 3]},
    {"operation": "correlation", "x": [1, 2, 3], "y": [4, 5, 6], "method": "magic"},
    {"operation": "linear_regression", "x": [2, 2, 2], "y": [1, 2, 3]},
    {"operation": "linear_regression", "x": [1, 2], "y": [1, 2]},
    {"operation": "describe", "data": [1]},
    {"operation": "describe", "data": [1e308, -1e308, 1e308]},
    {"operation": "shapiro", "data": [1, 2]},
    {"operation": "shapiro", "data": [3, 3, 3, 3]},
    {"operation": "cohens_d", "group1": [1, 1], "group2": [1, 1]},
    {"operation": "eta_squared", "groups": [[2, 2], [2, 2]]},
    {"operation": "confidence_interval", "data": [1, 2, 3], "confidence": 1.5},
    {"operation": "confidence_interval", "data": [4, 4, 4]},
    {"operation": "__import__('os')"},
    {"operation": "t_test", "group1": [1, 2], "group2": [1, 3], "__class__": 1},
    {"operation": None},
    {"operation": "t_test", "group1": [True, False, True], "group2": [1, 2]},
]


@pytest.mark.parametrize("args", HOSTILE)
def test_degenerate_and_hostile_input_is_an_error(reg, args):
    t0 = time.perf_counter()
    res = reg.execute("python_math", args)
    assert time.perf_counter() - t0 < 2.0
    assert res.status == "error" and res.error, (args, res.result)


def test_errors_say_why(reg):
    err = lambda **a: reg.execute("python_math", a).error  # noqa: E731
    assert "zero variance" in err(operation="t_test", group1=[1, 1, 1], group2=[2, 2, 2])
    assert "at least 2 values" in err(operation="t_test", group1=[1], group2=[1, 2])
    assert "ragged" in err(operation="chi_square", observed=[[1, 2], [3]])
    assert "finite" in err(operation="describe", data=[1, float("nan")])
    assert "popmean" in err(operation="t_test", group1=[1, 2, 3])
    assert "groups: not a field of t_test" in err(operation="t_test", group1=[1, 2], groups=[[1]])
