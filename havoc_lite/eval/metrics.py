"""Metrics: pass@k, maj@k, tool use, reward-model catch rate, latency and throughput.

Every function takes plain Python numbers/lists, so it works on results JSONL read back later.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Optional, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem from n samples of which c passed.

    pass@k = 1 - C(n-c, k) / C(n, k), computed in the numerically stable product form
    1 - prod_{i=n-c+1}^{n} (1 - k / i) (Chen et al. 2021, "Evaluating Large Language Models
    Trained on Code", Fig. 3).

    Raises:
        ValueError: unless 0 <= c <= n and 1 <= k <= n.
    """
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """Mean pass@k over problems given (n, c) per problem; problems with n < k are an error."""
    if not counts:
        return float("nan")
    return float(np.mean([pass_at_k(n, c, k) for n, c in counts]))


def majority_answer(answers: Iterable[Optional[str]]) -> Optional[str]:
    """The most frequent non-None answer; ties go to the one seen first. None if all are None."""
    answers = [a for a in answers if a is not None]
    if not answers:
        return None
    counts = Counter(answers)
    best = max(counts.values())
    return next(a for a in answers if counts[a] == best)


def maj_at_k(answers: Sequence[Optional[str]], gold: str, k: int) -> bool:
    """maj@k (self-consistency, Wang et al. 2022): does the majority of the first k extracted
    answers equal the gold answer?"""
    if k > len(answers):
        raise ValueError(f"maj@{k} needs at least {k} answers, got {len(answers)}")
    return majority_answer(answers[:k]) == gold


def tool_use_rate(tool_calls_per_sample: Sequence[Sequence[dict]]) -> float:
    """Fraction of samples that made at least one tool call (NaN for no samples)."""
    if not tool_calls_per_sample:
        return float("nan")
    return sum(1 for calls in tool_calls_per_sample if calls) / len(tool_calls_per_sample)


def tool_success_rate(tool_calls_per_sample: Sequence[Sequence[dict]]) -> float:
    """Fraction of tool calls whose result has status "success" (NaN when no call was made).
    A call dict carries `status` (as written by the runner) or a `result` with `.status`."""
    statuses = []
    for calls in tool_calls_per_sample:
        for call in calls:
            status = call.get("status")
            if status is None and call.get("result") is not None:
                result = call["result"]
                status = result.get("status") if isinstance(result, dict) else getattr(result, "status", None)
            statuses.append(status == "success")
    return float(np.mean(statuses)) if statuses else float("nan")


def catch_rate(flagged: Sequence[bool], is_wrong: Sequence[bool]) -> dict[str, float]:
    """How well a reward model (or any grader) flags wrong answers.

    Args:
        flagged: per item, True when it was rejected.
        is_wrong: per item, True when the item is (planted) wrong.

    Returns:
        {"catch_rate": recall on wrong items, "false_alarm_rate": rejected share of right items,
         "accuracy": agreement overall, "n_wrong", "n_right"}.
    """
    if len(flagged) != len(is_wrong):
        raise ValueError(f"catch_rate: {len(flagged)} verdicts for {len(is_wrong)} items")
    f, w = np.asarray(flagged, bool), np.asarray(is_wrong, bool)
    nan = float("nan")
    return {
        "catch_rate": float(f[w].mean()) if w.any() else nan,
        "false_alarm_rate": float(f[~w].mean()) if (~w).any() else nan,
        "accuracy": float((f == w).mean()) if len(f) else nan,
        "n_wrong": int(w.sum()), "n_right": int((~w).sum()),
    }


def latency_stats(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / mean latency in seconds (numpy's linear-interpolated percentiles)."""
    if not latencies_s:
        return {"p50_s": float("nan"), "p95_s": float("nan"), "mean_s": float("nan")}
    a = np.asarray(latencies_s, dtype=np.float64)
    return {"p50_s": float(np.percentile(a, 50)), "p95_s": float(np.percentile(a, 95)),
            "mean_s": float(a.mean())}


def tokens_per_second(num_tokens: int, seconds: float) -> float:
    """Generated tokens per wall-clock second (NaN if no time elapsed)."""
    return num_tokens / seconds if seconds > 0 else float("nan")


def wilson_interval(passed: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a pass rate passed/n (scipy.stats.binomtest(...).proportion_ci)."""
    from scipy.stats import binomtest
    ci = binomtest(passed, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def diff_of_proportions_ci(k1: int, n1: int, k2: int, n2: int, confidence: float = 0.95) -> dict:
    """p1 - p2 = k1/n1 - k2/n2 with Newcombe's hybrid score interval.

    Newcombe (1998), "Interval estimation for the difference between independent proportions:
    comparison of eleven methods", Statistics in Medicine 17:873-890, method 10: with Wilson
    intervals (l1, u1) and (l2, u2) for each proportion (scipy's `binomtest(...).proportion_ci(
    method="wilson")`),
        lower = d - sqrt((p1 - l1)^2 + (u2 - p2)^2),  upper = d + sqrt((u1 - p1)^2 + (p2 - l2)^2).
    It treats the two samples as independent; when both models answer the same problems and
    their successes are positively correlated, this is conservative (wider than a paired one).

    Returns {"diff", "low", "high", "confidence", "method"}.
    Raises ValueError unless 0 <= k <= n and n >= 1 for both samples and 0 < confidence < 1.
    """
    for k, n in ((k1, n1), (k2, n2)):
        if not (n >= 1 and 0 <= k <= n):
            raise ValueError(f"diff_of_proportions_ci needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, confidence)
    l2, u2 = wilson_interval(k2, n2, confidence)
    d = p1 - p2
    return {"diff": d, "low": d - float(np.hypot(p1 - l1, u2 - p2)),
            "high": d + float(np.hypot(u1 - p1, p2 - l2)), "confidence": confidence,
            "method": "Newcombe 1998 hybrid score (method 10), Wilson intervals"}
