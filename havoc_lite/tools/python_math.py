"""python_math: statistics with scipy.stats.

`compute(operation, **fields)` returns scipy's numbers at full precision; the tool the model calls,
`python_math`, returns the same dict with every float rounded to 4 significant digits
(`round_sig`), which keeps <tool_result> short and training text stable across scipy builds.
Integers (counts, n) are kept as they are; degrees of freedom are always floats.

Operations and fields (all lists are of finite numbers):
  t_test              group1, group2?, equal_var=True, paired=False, popmean?, alternative
                      (two-sample Student/Welch `ttest_ind`, paired `ttest_rel`, or one-sample
                      `ttest_1samp` when group2 is absent) -> statistic, pvalue, df
  anova               groups (>= 2 lists) -> statistic (F), pvalue, df_between, df_within
  chi_square          observed: a table (list of rows) -> test of independence
                      (`chi2_contingency`, Yates' correction on 2x2 unless correction=false);
                      a flat list (+ expected?) -> goodness of fit (`chisquare`)
                      -> statistic, pvalue, df
  correlation         x, y, method = pearson | spearman | kendall -> statistic, pvalue, n
  linear_regression   x, y -> slope, intercept, rvalue, r_squared, pvalue, stderr,
                      intercept_stderr, n (`linregress`)
  describe            data -> n, mean, std (ddof=1), variance, min, q1, median, q3, max,
                      skewness, kurtosis (excess, Fisher)
  shapiro             data (3..5000 values) -> statistic (W), pvalue
  cohens_d            group1, group2 -> d = (mean1 - mean2) / pooled sd, pooled sd with n-1
                      weights (Cohen 1988, eq. 2.5.2)
  eta_squared         groups -> eta_squared = SS_between / SS_total (Cohen 1988, ch. 8)
  confidence_interval data, confidence=0.95 -> mean, lower, upper (t interval of the mean,
                      `ttest_1samp(...).confidence_interval`)

Degenerate input (too few values, zero variance, ragged tables, negative counts) raises ToolError
with the reason; scipy's own ValueErrors are passed on as they read.
"""
from __future__ import annotations

import math
from typing import Any

from .registry import ToolError

WORKER_PRELOAD = ["numpy", "scipy.stats"]   # imported when the worker starts, not per call

MAX_VALUES = 10_000
MAX_ABS = 1e100
SIG_DIGITS = 4

_NUMS = {"type": "array", "items": {"type": "number"}, "maxItems": MAX_VALUES}
SCHEMA = {
    "properties": {
        "operation": {"type": "string", "enum": [
            "t_test", "anova", "chi_square", "correlation", "linear_regression", "describe",
            "shapiro", "cohens_d", "eta_squared", "confidence_interval"]},
        "group1": _NUMS, "group2": _NUMS, "data": _NUMS, "x": _NUMS, "y": _NUMS,
        "groups": {"type": "array", "items": _NUMS, "maxItems": 100},
        "observed": {"type": "array", "items": {"type": ["number", "array"],
                                                "items": {"type": "number"}, "maxItems": 1000},
                     "maxItems": 1000},
        "expected": _NUMS,
        "equal_var": {"type": "boolean"}, "paired": {"type": "boolean"},
        "one_sample": {"type": "boolean"}, "correction": {"type": "boolean"},
        "popmean": {"type": "number"},
        "alternative": {"type": "string", "enum": ["two-sided", "less", "greater"]},
        "method": {"type": "string", "enum": ["pearson", "spearman", "kendall"]},
        "confidence": {"type": "number", "minimum": 0.5, "maximum": 0.9999},
    },
    "required": ["operation"],
}
DESCRIPTION = ("Statistics with scipy: operation t_test (group1, group2, equal_var, paired; or "
               "group1 + popmean), anova (groups), chi_square (observed table or counts, expected), "
               "correlation (x, y, method), linear_regression (x, y), describe (data), shapiro "
               "(data), cohens_d (group1, group2), eta_squared (groups), confidence_interval (data, "
               "confidence). Floats rounded to 4 significant digits.")

# fields each operation reads (anything else given is an error, so a typo does not pass silently)
FIELDS = {
    "t_test": {"group1", "group2", "equal_var", "paired", "one_sample", "popmean", "alternative"},
    "anova": {"groups"}, "chi_square": {"observed", "expected", "correction"},
    "correlation": {"x", "y", "method"}, "linear_regression": {"x", "y"},
    "describe": {"data"}, "shapiro": {"data"}, "cohens_d": {"group1", "group2"},
    "eta_squared": {"groups"}, "confidence_interval": {"data", "confidence"},
}


def round_sig(value: Any, digits: int = SIG_DIGITS) -> Any:
    """Round every float inside `value` (dicts, lists) to `digits` significant digits."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: round_sig(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [round_sig(v, digits) for v in value]
    return value


def python_math(operation: str, **fields: Any) -> dict:
    """The tool: `compute` rounded to 4 significant digits. Raises ToolError (see module doc)."""
    return round_sig(compute(operation, **fields))


def compute(operation: str, **fields: Any) -> dict:
    """Run one operation at full precision; returns a dict of plain Python numbers."""
    if operation not in FIELDS:
        raise ToolError(f"operation: unknown {operation!r}; one of {', '.join(FIELDS)}")
    extra = set(fields) - FIELDS[operation]
    if extra:
        raise ToolError(f"{sorted(extra)[0]}: not a field of {operation} "
                        f"(fields: {', '.join(sorted(FIELDS[operation]))})")
    for key, value in fields.items():     # squares of larger values overflow float64
        if isinstance(value, list) and _max_abs(value) > MAX_ABS:
            raise ToolError(f"{key}: values above {MAX_ABS:g} in magnitude overflow the statistics")
    import numpy as np
    import scipy.stats as st
    out = globals()[f"_{operation}"](st, np, **fields)
    for key, v in out.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ToolError(f"{operation}: {key} is undefined for this data ({v})")
    return out


# --- helpers --------------------------------------------------------------------------------------
def _max_abs(values: list) -> float:
    return max((_max_abs(v) if isinstance(v, list) else abs(v) for v in values), default=0.0)


def _need(name: str, values: Any, n: int = 2, varying: bool = True) -> list:
    if values is None:
        raise ToolError(f"{name}: required field is missing")
    if len(values) < n:
        raise ToolError(f"{name}: needs at least {n} values, got {len(values)}")
    if varying and max(values) == min(values):
        raise ToolError(f"{name}: all values are equal (zero variance)")
    return values


def _f(x: Any) -> float:
    return float(x)


# --- operations -----------------------------------------------------------------------------------
def _t_test(st, np, group1=None, group2=None, equal_var=True, paired=False, one_sample=False,
            popmean=None, alternative="two-sided"):
    _need("group1", group1, varying=False)
    if one_sample or group2 is None:
        if popmean is None:
            raise ToolError("popmean: required for a one-sample t-test (or give group2)")
        if group2 is not None:
            raise ToolError("group2: not used by a one-sample t-test")
        _need("group1", group1)
        r = st.ttest_1samp(group1, popmean, alternative=alternative)
    elif paired:
        if len(group1) != len(group2):
            raise ToolError(f"group2: paired test needs equal lengths, got {len(group1)} and "
                            f"{len(group2)}")
        diff = [a - b for a, b in zip(group1, group2)]
        _need("group1 - group2", diff)
        r = st.ttest_rel(group1, group2, alternative=alternative)
    else:
        _need("group2", group2, varying=False)
        if max(group1) == min(group1) and max(group2) == min(group2):
            raise ToolError("group1, group2: both groups have zero variance")
        r = st.ttest_ind(group1, group2, equal_var=equal_var, alternative=alternative)
    return {"statistic": _f(r.statistic), "pvalue": _f(r.pvalue), "df": _f(r.df)}


def _groups(groups):
    if groups is None:
        raise ToolError("groups: required field is missing")
    if len(groups) < 2:
        raise ToolError(f"groups: needs at least 2 groups, got {len(groups)}")
    for i, g in enumerate(groups):
        _need(f"groups[{i}]", g, n=1, varying=False)
    n = sum(len(g) for g in groups)
    if n - len(groups) < 1:
        raise ToolError("groups: needs more values than groups")
    flat = [v for g in groups for v in g]
    if max(flat) == min(flat):
        raise ToolError("groups: all values are equal (zero variance)")
    return n


def _anova(st, np, groups=None):
    n = _groups(groups)
    r = st.f_oneway(*groups)
    return {"statistic": _f(r.statistic), "pvalue": _f(r.pvalue),
            "df_between": float(len(groups) - 1), "df_within": float(n - len(groups))}


def _eta_squared(st, np, groups=None):
    _groups(groups)
    flat = np.concatenate([np.asarray(g, float) for g in groups])
    grand = flat.mean()
    ss_between = sum(len(g) * (np.mean(g) - grand) ** 2 for g in groups)
    ss_total = float(((flat - grand) ** 2).sum())
    return {"eta_squared": _f(ss_between / ss_total), "ss_between": _f(ss_between),
            "ss_total": ss_total}


def _chi_square(st, np, observed=None, expected=None, correction=True):
    if observed is None:
        raise ToolError("observed: required field is missing")
    if not observed:
        raise ToolError("observed: is empty")
    is_table = [isinstance(row, list) for row in observed]
    if all(is_table):
        if expected is not None:
            raise ToolError("expected: computed from the table for a test of independence; "
                            "leave it out")
        widths = {len(row) for row in observed}
        if len(widths) != 1:
            raise ToolError(f"observed: rows have different lengths {sorted(widths)} (ragged table)")
        table = np.asarray(observed, float)
        if table.shape[0] < 2 or table.shape[1] < 2:
            raise ToolError(f"observed: table must be at least 2x2, got {table.shape[0]}x{table.shape[1]}")
        if (table < 0).any():
            raise ToolError("observed: counts must be >= 0")
        if (table.sum(0) == 0).any() or (table.sum(1) == 0).any():
            raise ToolError("observed: a row or column sums to zero")
        r = st.chi2_contingency(table, correction=correction)
        return {"statistic": _f(r.statistic), "pvalue": _f(r.pvalue), "df": float(r.dof)}
    if any(is_table):
        raise ToolError("observed: mixes numbers and rows; give a flat list or a table")
    _need("observed", observed, varying=False)
    if min(observed) < 0:
        raise ToolError("observed: counts must be >= 0")
    if expected is not None:
        if len(expected) != len(observed):
            raise ToolError(f"expected: has {len(expected)} values, observed has {len(observed)}")
        if min(expected) <= 0:
            raise ToolError("expected: frequencies must be > 0")
    elif sum(observed) == 0:
        raise ToolError("observed: counts sum to zero")
    r = st.chisquare(observed, f_exp=expected)
    return {"statistic": _f(r.statistic), "pvalue": _f(r.pvalue), "df": float(len(observed) - 1)}


def _xy(x, y, n=3):
    _need("x", x, n)
    _need("y", y, n)
    if len(x) != len(y):
        raise ToolError(f"y: has {len(y)} values, x has {len(x)}")


def _correlation(st, np, x=None, y=None, method="pearson"):
    _xy(x, y)
    fn = {"pearson": st.pearsonr, "spearman": st.spearmanr, "kendall": st.kendalltau}[method]
    r = fn(x, y)
    return {"statistic": _f(r.statistic), "pvalue": _f(r.pvalue), "n": len(x)}


def _linear_regression(st, np, x=None, y=None):
    _need("x", x, 3)
    _need("y", y, 3, varying=False)
    if len(x) != len(y):
        raise ToolError(f"y: has {len(y)} values, x has {len(x)}")
    r = st.linregress(x, y)
    return {"slope": _f(r.slope), "intercept": _f(r.intercept), "rvalue": _f(r.rvalue),
            "r_squared": _f(r.rvalue ** 2), "pvalue": _f(r.pvalue), "stderr": _f(r.stderr),
            "intercept_stderr": _f(r.intercept_stderr), "n": len(x)}


def _describe(st, np, data=None):
    _need("data", data, 2, varying=False)
    a = np.asarray(data, float)
    d = st.describe(a)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    varying = d.minmax[0] != d.minmax[1]
    out = {"n": int(d.nobs), "mean": _f(d.mean), "std": _f(math.sqrt(d.variance)),
           "variance": _f(d.variance), "min": _f(d.minmax[0]), "q1": _f(q1), "median": _f(med),
           "q3": _f(q3), "max": _f(d.minmax[1])}
    if varying and len(data) >= 3:       # undefined for constant data: left out, not NaN
        out["skewness"] = _f(d.skewness)
        out["kurtosis"] = _f(d.kurtosis)
    return out


def _shapiro(st, np, data=None):
    _need("data", data, 3)
    if len(data) > 5000:
        raise ToolError(f"data: Shapiro-Wilk p-values are unreliable above 5000 values, got {len(data)}")
    r = st.shapiro(data)
    return {"statistic": _f(r.statistic), "pvalue": _f(r.pvalue), "n": len(data)}


def _cohens_d(st, np, group1=None, group2=None):
    _need("group1", group1, varying=False)
    _need("group2", group2, varying=False)
    n1, n2 = len(group1), len(group2)
    v1, v2 = np.var(group1, ddof=1), np.var(group2, ddof=1)
    pooled = math.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2))
    if pooled == 0:
        raise ToolError("group1, group2: both groups have zero variance")
    return {"d": _f((np.mean(group1) - np.mean(group2)) / pooled), "pooled_sd": _f(pooled)}


def _confidence_interval(st, np, data=None, confidence=0.95):
    _need("data", data, 2)
    ci = st.ttest_1samp(data, 0.0).confidence_interval(confidence)
    return {"mean": _f(np.mean(data)), "lower": _f(ci.low), "upper": _f(ci.high),
            "confidence": _f(confidence), "n": len(data)}


def register(registry) -> None:
    """Add python_math to a ToolRegistry; it runs in the worker process (scipy may be slow)."""
    registry.register("python_math", python_math, SCHEMA, DESCRIPTION, isolate=True)
