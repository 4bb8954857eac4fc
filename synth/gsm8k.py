"""GSM8K -> calculator tool traces, with every `<<expr=value>>` annotation recomputed.

    python -m synth.gsm8k --input /path/gsm8k/train.jsonl --output data/gsm8k_traces.jsonl \
        --report data/gsm8k_report.json

The trace itself comes from `havoc_lite.data.gsm8k_to_trace` (one renderer for the whole kit):
each annotation becomes a calculator call whose stated result is the annotated value. Here each
annotation is also run through the real calculator and classified:

  equal          the calculator returns the annotated value (both in calculator formatting)
  equal_rounded  the annotated value is the real one rounded to the digits GSM8K wrote
                 ("10/3=3.33"); the real value replaces it in the trace
  disagree       the annotated value is wrong ("5*4=25")
  unparseable    the calculator cannot read the expression, or the value is not a number

Then `synth.validation.validate_trace` checks the whole trace. An example is kept when it validates;
by default one with a disagreeing non-final annotation is dropped (later steps reuse the wrong
value), one whose final annotation was wrong is kept with the real result, and one with an
unparseable expression is dropped (`tool_error`). `--keep-all` writes every example unverified
except for the real results. The report counts all of this and shows examples.
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from havoc_lite.data.readers import read_jsonl  # the kit's one JSONL reader
from havoc_lite.numbers import find_numbers, states_value

from .validation import Report, validate_trace

ANNOTATION = re.compile(r"<<([^<>]*?)=([^<>]*)>>")   # same reading as havoc_lite.data's converter


def classify(expr: str, stated: str, registry) -> tuple[str, object]:
    """(status, recomputed value) of one annotation `<<expr=stated>>`; status as in the module
    docstring. The comparison uses the calculator's own formatting (10 significant digits)."""
    from havoc_lite.tools.calculator import format_number
    stated_nums = find_numbers(stated.strip(), "synth")
    if not expr.strip() or len(stated_nums) != 1:
        return "unparseable", None
    res = registry.execute("calculator", {"expression": expr.strip()})
    if res.status != "success" or not isinstance(res.result, (int, float)):
        return "unparseable", res.error
    real, num = res.result, stated_nums[0]
    if format_number(num.value) == real or math.isclose(num.value, real, rel_tol=1e-9):
        return "equal", real
    if states_value(num, float(real), rel_tol=1e-9):
        return "equal_rounded", real
    return "disagree", real


@dataclass
class ConvertResult:
    traces: list[dict]
    report: dict


def convert(examples: list[dict], registry, *, source: str = "gsm8k", keep_all: bool = False,
            max_examples_in_report: int = 10) -> ConvertResult:
    """Convert GSM8K records (`{"question", "answer"}`) to verified traces and a report dict.

    Each record's id is `{source}-{k:05d}` (k = 1-based line number). A record that is not a
    GSM8K record (no '####' line, missing field) is counted as `bad_record` with its line.
    """
    from havoc_lite.data import DataError, gsm8k_to_trace
    ann = {"total": 0, "equal": 0, "equal_rounded": 0, "disagree": 0, "unparseable": 0}
    shown: dict[str, list] = {"disagree": [], "unparseable": [], "equal_rounded": []}
    verdicts, traces, bad = Report(), [], []
    for k, ex in enumerate(examples, 1):
        tid = f"{source}-{k:05d}"
        for m in ANNOTATION.finditer(str(ex.get("answer", ""))):
            status, real = classify(m.group(1), m.group(2), registry)
            ann["total"] += 1
            ann[status] += 1
            if status in shown and len(shown[status]) < max_examples_in_report:
                shown[status].append({"id": tid, "annotation": m.group(0), "recomputed": real})
        try:
            trace = {"id": tid, "source": "gsm8k", **gsm8k_to_trace(ex, where=f"{source} line {k}")}
        except DataError as e:
            bad.append(str(e))
            continue
        v = validate_trace(trace, registry, require_tool=False, check_answer=False,
                         allowed_tools=["calculator"])
        verdicts.add(v, tid)
        if v.ok:
            traces.append(v.trace)
        elif keep_all:
            traces.append(trace)
    report = {"examples": len(examples), "written": len(traces), "bad_records": len(bad),
              "bad_record_examples": bad[:max_examples_in_report], "annotations": ann,
              "annotation_examples": shown, "validation": verdicts.to_dict()}
    return ConvertResult(traces, report)




@dataclass
class GSM8KArgs:
    """Convert GSM8K to calculator tool traces and report annotations that do not recompute."""
    input: str
    """GSM8K JSONL ({"question", "answer"} a line)"""
    output: str = "data/gsm8k_traces.jsonl"
    report: Optional[str] = None
    """report JSON (default: OUTPUT with .report.json)"""
    keep_all: bool = False
    """also write examples that fail validation (with the real results)"""


def main(argv: Optional[list[str]] = None) -> None:
    import tyro

    from havoc_lite.tools import default_registry
    from .offline import write_jsonl
    args = tyro.cli(GSM8KArgs, args=argv)
    t0 = time.perf_counter()
    reg = default_registry()
    try:
        res = convert(read_jsonl(args.input), reg, source=f"gsm8k-{Path(args.input).stem}",
                      keep_all=args.keep_all)
    finally:
        reg.close()
    write_jsonl(res.traces, args.output)
    out = Path(args.output)
    rpath = Path(args.report) if args.report else out.with_name(out.stem + ".report.json")
    rpath.parent.mkdir(parents=True, exist_ok=True)
    rpath.write_text(json.dumps(res.report, indent=2, ensure_ascii=False), encoding="utf-8")
    a = res.report["annotations"]
    print(f"{res.report['examples']} examples -> {res.report['written']} traces in {out} "
          f"({time.perf_counter() - t0:.1f} s). Annotations: {a['total']} total, {a['equal']} equal, "
          f"{a['equal_rounded']} equal after rounding, {a['disagree']} disagree, "
          f"{a['unparseable']} unparseable. Report: {rpath}")


if __name__ == "__main__":
    main()
