"""Tools a model calls with <tool>{"tool": name, "args": {...}}</tool>.

`default_registry()` gives calculator, python_math (scipy.stats), symbolic_math (sympy),
dsl_executor (design of experiments, pyDOE) and rag (BM25 over local notes).
"""
import os

from .registry import (ToolError, ToolRegistry, ToolResult, format_call, parse_call,  # noqa: F401
                       validate)


def default_workers() -> int:
    """Worker processes for isolated tools: one per CPU core, at most 4 (each holds scipy and
    sympy, ~150 MB; a process starts only when that many calls are running at once)."""
    return max(1, min(4, os.cpu_count() or 1))


def default_registry(rag_dir=None, timeout_s: float = 5.0, max_result_chars: int = 4000,
                     workers: int | None = None) -> ToolRegistry:
    """A ToolRegistry with every bundled tool. `rag_dir`: folder of .md/.txt notes for `rag`
    (default: the bundled corpus in havoc_lite/assets/corpus). `workers`: processes for the
    isolated tools, so the calls of one decoding step run at once (default `default_workers()`)."""
    from . import calculator, dsl_executor, python_math, rag, symbolic_math
    reg = ToolRegistry(timeout_s=timeout_s, max_result_chars=max_result_chars,
                       workers=workers or default_workers())
    calculator.register(reg)
    python_math.register(reg)
    symbolic_math.register(reg)
    dsl_executor.register(reg)
    rag.register(reg, rag_dir)
    return reg


_SHARED: "ToolRegistry | None" = None


def shared_registry() -> ToolRegistry:
    """The process's one `default_registry()`, created on first use and closed at exit.

    Each registry owns a worker process (scipy and sympy imported in it, ~1-3 s to start), so
    callers that only want "the bundled tools" (eval's `make_generate_fn`, GRPO, PRIME, the Colab
    helpers) share this one instead of starting a worker per call. Build your own
    `default_registry(...)` for other settings (a RAG folder, a timeout)."""
    global _SHARED
    if _SHARED is None:
        import atexit
        _SHARED = default_registry()
        atexit.register(_SHARED.close)
    return _SHARED


__all__ = ["ToolError", "ToolRegistry", "ToolResult", "default_registry", "shared_registry", "format_call",
           "parse_call", "validate"]
