"""dsl_executor: run counts, orthogonality and unit mapping of the pyDOE designs."""
import itertools
import time

import numpy as np
import pytest

from havoc_lite.tools import ToolRegistry
from havoc_lite.tools import dsl_executor as dsl


@pytest.fixture(scope="module")
def reg():
    r = ToolRegistry(timeout_s=5.0)
    dsl.register(r)
    yield r
    r.close()


def factors(k):
    return [{"name": f"f{i}", "low": 10.0 * i, "high": 10.0 * i + 4, "unit": "mm"} for i in range(k)]


def run(reg, **args):
    res = reg.execute("dsl_executor", args)
    assert res.status == "success", res.error
    return res.result


@pytest.mark.parametrize("k", [2, 3, 4])
def test_full_factorial_counts_and_all_combinations(reg, k):
    out = run(reg, design="full_factorial", factors=factors(k))
    assert out["runs"] == 2 ** k
    assert sorted(map(tuple, out["coded"])) == sorted(itertools.product([-1, 1], repeat=k))
    mixed = run(reg, design="full_factorial", factors=[dict(factors(1)[0], levels=3),
                                                        dict(factors(2)[1], levels=4)])
    assert mixed["runs"] == 12 and sorted({r[0] for r in mixed["coded"]}) == [-1, 0, 1]


def test_real_units_follow_the_coding(reg):
    f = [{"name": "temperature", "low": 100, "high": 200, "unit": "°C"},
         {"name": "time", "low": 10, "high": 30, "unit": "min"}]
    out = run(reg, design="full_factorial", factors=f)
    assert out["factors"] == f and out["design"] == "full_factorial"
    assert out["real"] == [[100, 10], [200, 10], [100, 30], [200, 30]]
    assert "°C" in reg.execute("dsl_executor", {"design": "full_factorial", "factors": f}).to_json()


@pytest.mark.parametrize("k", [3, 5, 7, 11])
def test_plackett_burman_columns_are_orthogonal(reg, k):
    out = run(reg, design="plackett_burman", factors=factors(k))
    x = np.array(out["coded"], float)
    assert out["runs"] % 4 == 0 and k < out["runs"] <= k + 4
    assert np.array_equal(x.T @ x, out["runs"] * np.eye(k))      # orthogonal, balanced columns
    assert set(np.unique(x)) == {-1.0, 1.0}


def test_fractional_factorial_aliasing(reg):
    out = run(reg, design="fractional_factorial", factors=factors(4), generator="a b c abc")
    x = np.array(out["coded"], float)
    assert out["runs"] == 8
    assert np.array_equal(x[:, 3], x[:, 0] * x[:, 1] * x[:, 2])  # D = ABC
    assert np.array_equal(x.T @ x, 8 * np.eye(4))
    neg = run(reg, design="fractional_factorial", factors=factors(4), generator="a b c -abc")
    assert np.array_equal(np.array(neg["coded"])[:, 3], -x[:, 3])


@pytest.mark.parametrize("k, center", [(2, None), (3, None), (3, [1, 1]), (4, 6)])
def test_central_composite_run_count(reg, k, center):
    args = dict(design="central_composite", factors=factors(k))
    if center is not None:
        args["center"] = center
    out = run(reg, **args)
    n_center = 8 if center is None else (sum(center) if isinstance(center, list) else center)
    assert out["runs"] == 2 ** k + 2 * k + n_center
    x = np.array(out["coded"], float)
    rotatable = run(reg, design="central_composite", factors=factors(k), alpha="rotatable")
    assert np.abs(np.array(rotatable["coded"])).max() == pytest.approx((2 ** k) ** 0.25, rel=1e-3)
    assert (np.abs(x).sum(1) == 0).sum() == n_center
    faced = run(reg, design="central_composite", factors=factors(k), face="faced")
    assert np.abs(np.array(faced["coded"])).max() == 1


@pytest.mark.parametrize("k", [3, 4])
def test_box_behnken(reg, k):
    out = run(reg, design="box_behnken", factors=factors(k), center=3)
    x = np.array(out["coded"], float)
    edges = 4 * k * (k - 1) // 2
    assert out["runs"] == edges + 3
    assert set(np.unique(x)) == {-1.0, 0.0, 1.0}
    assert not any(np.all(np.abs(r) == 1) for r in x)              # never a corner


def test_latin_hypercube_is_seeded_and_stratified(reg):
    a = run(reg, design="latin_hypercube", factors=factors(3), samples=8, seed=7)
    b = run(reg, design="latin_hypercube", factors=factors(3), samples=8, seed=7)
    c = run(reg, design="latin_hypercube", factors=factors(3), samples=8, seed=8)
    assert a == b and a != c and a["runs"] == 8
    u = (np.array(a["coded"]) + 1) / 2
    for col in u.T:                                 # one sample in each of the 8 strata
        assert sorted(np.floor(col * 8).astype(int)) == list(range(8))
    real, f = np.array(a["real"]), factors(3)
    for j in range(3):
        assert f[j]["low"] <= real[:, j].min() and real[:, j].max() <= f[j]["high"]


HOSTILE = [
    {"design": "full_factorial", "factors": []},
    {"design": "full_factorial", "factors": factors(15)},
    {"design": "full_factorial", "factors": [dict(f, levels=10) for f in factors(4)]},
    {"design": "full_factorial", "factors": [{"name": "a", "low": 2, "high": 1}]},
    {"design": "full_factorial", "factors": [{"name": "a", "low": 1, "high": 1}]},
    {"design": "full_factorial", "factors": [{"name": "a", "low": 0, "high": 1}] * 2},
    {"design": "full_factorial", "factors": [{"name": "a", "low": "0", "high": 1}]},
    {"design": "full_factorial", "factors": [{"name": "a", "low": float("nan"), "high": 1}]},
    {"design": "full_factorial", "factors": [{"name": "a", "low": 0, "high": float("inf")}]},
    {"design": "full_factorial", "factors": [{"name": "a", "low": 0, "high": 1, "levels": 1}]},
    {"design": "full_factorial", "factors": [{"name": "a", "low": 0, "high": 1, "levels": 2.5}]},
    {"design": "full_factorial", "factors": [{"name": "a", "low": 0, "high": 1, "x": 1}]},
    {"design": "full_factorial", "factors": [{"low": 0, "high": 1}]},
    {"design": "full_factorial", "factors": [{"name": "a" * 1000, "low": 0, "high": 1}]},
    {"design": "full_factorial", "factors": "temperature"},
    {"design": "full_factorial", "factors": [[0, 1]]},
    {"design": "full_factorial", "factors": factors(2), "generator": "a b"},
    {"design": "taguchi", "factors": factors(2)},
    {"design": "__import__('os')", "factors": factors(2)},
    {"design": "fractional_factorial", "factors": factors(3)},
    {"design": "fractional_factorial", "factors": factors(3), "generator": "a b"},
    {"design": "fractional_factorial", "factors": factors(3), "generator": "a b zz"},
    {"design": "fractional_factorial", "factors": factors(3), "generator": "a a ab"},
    {"design": "fractional_factorial", "factors": factors(3), "generator": "b c bc"},
    {"design": "fractional_factorial", "factors": factors(3), "generator": "a b __import__"},
    {"design": "fractional_factorial", "factors": factors(3), "generator": "a b aab"},
    {"design": "fractional_factorial", "factors": factors(15), "generator": " ".join("abcdefghijklmno")},
    {"design": "fractional_factorial", "factors": factors(3), "generator": "a b c" * 100},
    {"design": "box_behnken", "factors": factors(2)},
    {"design": "box_behnken", "factors": factors(3), "center": [1, 2]},
    {"design": "box_behnken", "factors": factors(3), "center": -1},
    {"design": "central_composite", "factors": factors(1)},
    {"design": "central_composite", "factors": factors(11)},
    {"design": "central_composite", "factors": factors(3), "center": [1, 2, 3]},
    {"design": "central_composite", "factors": factors(3), "alpha": "huge"},
    {"design": "latin_hypercube", "factors": factors(3), "samples": 10**9},
    {"design": "latin_hypercube", "factors": factors(3), "seed": -1},
    {"design": "latin_hypercube", "factors": factors(3), "criterion": "best"},
    {"design": "plackett_burman", "factors": factors(3), "seed": 1},
    {"factors": factors(3)},
]


@pytest.mark.parametrize("args", HOSTILE)
def test_hostile_designs_are_errors(reg, args):
    t0 = time.perf_counter()
    res = reg.execute("dsl_executor", args)
    assert time.perf_counter() - t0 < 2.0
    assert res.status == "error" and res.error, (args, res.result)
