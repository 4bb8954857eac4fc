"""Tools a model calls with <tool>{"tool": name, "args": {...}}</tool>.

`default_registry()` gives calculator, python_math (scipy.stats), symbolic_math (sympy),
dsl_executor (design of experiments, pyDOE) and rag (BM25 over local notes).
"""
from .registry import (ToolError, ToolRegistry, ToolResult, format_call, parse_call,  # noqa: F401
                       validate)


def default_registry(rag_dir=None, timeout_s: float = 5.0, max_result_chars: int = 4000) -> ToolRegistry:
    """A ToolRegistry with every bundled tool. `rag_dir`: folder of .md/.txt notes for `rag`
    (default: the bundled corpus in havoc_lite/assets/corpus)."""
    from . import calculator, dsl_executor, python_math, rag, symbolic_math
    reg = ToolRegistry(timeout_s=timeout_s, max_result_chars=max_result_chars)
    calculator.register(reg)
    python_math.register(reg)
    symbolic_math.register(reg)
    dsl_executor.register(reg)
    rag.register(reg, rag_dir)
    return reg


__all__ = ["ToolError", "ToolRegistry", "ToolResult", "default_registry", "format_call",
           "parse_call", "validate"]
