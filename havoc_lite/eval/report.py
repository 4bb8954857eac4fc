"""Results as markdown: a metrics table, and the success criteria next to what was measured.

The success criteria (the project brief): GSM8K accuracy > 50 %, tool calls executing correctly > 90 %,
the reward model catching obvious errors > 80 %, a typical query answered in < 2 s, and inference that
fits a 40 GB card.
"""
from __future__ import annotations

import math
from typing import Optional

GB = 1e9
CARD_BYTES = 40 * GB


def inference_memory_bytes(cfg, batch_size: int = 1, seq_len: Optional[int] = None) -> dict:
    """Memory to serve a model, in bytes, from the planner (`havoc_lite.memory.plan`, phase
    "inference": bf16 weights, the bf16 KV cache, prefill logits, working activations).

    Args:
        cfg: a ModelConfig (or a preset name).
        batch_size: sequences served at once.
        seq_len: tokens per sequence; default the model's max_seq_len (the worst case).

    Returns:
        {"total_bytes": int, "parts": {name: bytes}, "source": "havoc_lite.memory.plan"}.
    """
    from .. import memory
    p = memory.plan(cfg, phase="inference", batch_size=batch_size, seq_len=seq_len, suggest=False)
    return {"total_bytes": p.total, "parts": dict(p.parts), "source": "havoc_lite.memory.plan"}


def _fmt(value, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not measured"
    if unit == "%":
        return f"{100 * value:.1f} %"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "GB":
        return f"{value / GB:.1f} GB"
    return str(value)


def success_criteria(summary: Optional[dict] = None, *, catch: Optional[dict] = None,
                     latency: Optional[dict] = None, model_cfg=None,
                     memory_bytes: Optional[float] = None) -> list[dict]:
    """Rows {"criterion", "target", "measured", "met" (True/False/None)} for the success criteria.

    Args:
        summary: a GSM8K `run_eval` summary (strict accuracy and tool success are read from it).
        catch: a `metrics.catch_rate` dict from a planted-error set.
        latency: `runner.measure_latency` output (batch-1 p50); else the summary's p50 is used.
        model_cfg / memory_bytes: the served model's ModelConfig (memory from
            `inference_memory_bytes`: the planner at bf16, batch 1, full context) or a measured number of bytes.
    """
    m = (summary or {}).get("metrics", {})
    acc = m.get("strict", {}).get("accuracy")
    tools = m.get("tools", {}).get("success_rate")
    caught = (catch or {}).get("catch_rate")
    lat = (latency or {}).get("p50_s", m.get("latency", {}).get("p50_s"))
    if memory_bytes is None and model_cfg is not None:
        memory_bytes = inference_memory_bytes(model_cfg)["total_bytes"]

    def row(name, target, value, unit, ok):
        known = value is not None and not (isinstance(value, float) and math.isnan(value))
        return {"criterion": name, "target": target, "measured": _fmt(value, unit),
                "value": value if known else None, "met": bool(ok(value)) if known else None}

    return [
        row("GSM8K accuracy (strict)", "> 50 %", acc, "%", lambda v: v > 0.5),
        row("tool calls executing correctly", "> 90 %", tools, "%", lambda v: v > 0.9),
        row("reward model catches obvious errors", "> 80 %", caught, "%", lambda v: v > 0.8),
        row("latency, typical query (p50)", "< 2 s", lat, "s", lambda v: v < 2.0),
        row("inference memory", "<= 40 GB card", memory_bytes, "GB", lambda v: v <= CARD_BYTES),
    ]


def criteria_markdown(rows: list[dict]) -> str:
    """The criteria rows as a markdown table."""
    mark = {True: "yes", False: "NO", None: "—"}
    lines = ["| criterion | target | measured | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['criterion']} | {r['target']} | {r['measured']} | {mark[r['met']]} |" for r in rows]
    return "\n".join(lines)


def metrics_markdown(summary: dict, title: str = "") -> str:
    """A `run_eval` summary as a markdown table: one row per check (accuracy, pass@k, maj@k),
    then tool use, latency and throughput."""
    m = summary["metrics"]
    checks = [name for name, v in m.items() if isinstance(v, dict) and "accuracy" in v]
    cols = ["accuracy"] + [f"pass@{k}" for k in summary["k"]] + [f"maj@{k}" for k in summary["k"]]
    lines = [f"### {title}" if title else "",
             f"{summary['num_examples']} problems x {summary['samples']} samples", "",
             "| check | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for name in checks:
        lines.append(f"| {name} | " + " | ".join(_fmt(m[name].get(c), "%") if c in m[name] else "—"
                                                 for c in cols) + " |")
    t, lat = m["tools"], m["latency"]
    lines += ["", f"tool use {_fmt(t['use_rate'], '%')}, tool success {_fmt(t['success_rate'], '%')} "
              f"({t['num_calls']} calls); latency p50 {_fmt(lat['p50_s'], 's')}, p95 "
              f"{_fmt(lat['p95_s'], 's')}; {m['tokens_per_s']:.1f} tokens/s"]
    return "\n".join(x for x in lines if x is not None).strip() + "\n"
