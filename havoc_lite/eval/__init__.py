"""Evaluation: GSM8K, pass@k / maj@k, tool metrics, graders, the results report.

    from havoc_lite.eval import evaluate_gsm8k, pass_at_k
    summary = evaluate_gsm8k(model, tokenizer, limit=100, shots=0)
    summary["metrics"]["strict"]["accuracy"], summary["metrics"]["flexible"]["accuracy"]

CLI: `python -m havoc_lite.eval --model DIR --benchmarks gsm8k --samples 10 --k 1,5,10 --output results/x.json`.
"""
from .extract import extract_flexible, extract_gold, extract_strict  # noqa: F401
from .gsm8k import COT_EXEMPLARS, build_messages, build_text_prompt, evaluate_gsm8k, load_gsm8k  # noqa: F401
from .metrics import catch_rate, latency_stats, maj_at_k, pass_at_k, tool_success_rate, tool_use_rate  # noqa: F401
from .runner import Sample, make_generate_fn, run_eval  # noqa: F401
from .graders import GSM8KGrader, PytestGrader, ToolAnswerGrader, Grade, get_grader  # noqa: F401

__all__ = ["evaluate_gsm8k", "pass_at_k", "maj_at_k", "load_gsm8k", "run_eval", "make_generate_fn",
           "extract_strict", "extract_flexible", "GSM8KGrader", "ToolAnswerGrader",
           "PytestGrader", "get_grader", "Sample", "Grade"]
