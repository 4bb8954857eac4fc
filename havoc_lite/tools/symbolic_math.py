"""symbolic_math: calculus and algebra with sympy.

Operations: diff, integrate (indefinite, or definite with lower/upper), solve (an expression = 0,
or an equation with one "="), simplify, expand, factor, limit (point, direction), series (point,
order). Results are strings (`str(expr)`; `sstr` of a list for solve), plus LaTeX on request.

Input is checked before sympy sees it, because `parse_expr` ends in `eval`: the text is split with
Python's tokenizer and only numbers, operators `+ - * / ** ^ ( ) , =` and plain names pass; names
that are keywords, start with "_" or are longer than 20 characters are refused, so attribute
access, dunders, lambdas, imports, strings, subscripts and calls into Python are impossible. Every
name then resolves through our own tables (sympy functions and constants we list, or a new
Symbol), with empty builtins. Lengths, token counts and nesting depth are bounded. What the checks
cannot bound (`expand((x+1)**100000)`) is cut off by the registry's time limit: this tool runs in
the worker process, which is killed on a timeout.
"""
from __future__ import annotations

import io
import keyword
import re
import tokenize
from typing import Any, Optional, Union

from .registry import ToolError

WORKER_PRELOAD = ["sympy", "sympy.parsing.sympy_parser"]   # imported when the worker starts, not per call

MAX_CHARS = 500
MAX_TOKENS = 300
MAX_DEPTH = 30
MAX_NUMBER_CHARS = 30
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,19}\Z")
_OPS = {"+", "-", "*", "/", "**", "(", ")", ",", "="}

OPERATIONS = ["diff", "integrate", "solve", "simplify", "expand", "factor", "limit", "series"]
_EXPR = {"type": "string", "maxLength": MAX_CHARS}
_POINT = {"type": ["number", "string"], "maxLength": 50}
SCHEMA = {
    "properties": {
        "operation": {"type": "string", "enum": OPERATIONS},
        "expression": _EXPR,
        "variable": {"type": "string", "maxLength": 20},
        "order": {"type": "integer", "minimum": 1, "maximum": 20},
        "point": _POINT, "lower": _POINT, "upper": _POINT,
        "direction": {"type": "string", "enum": ["+", "-", "+-"]},
        "latex": {"type": "boolean"},
    },
    "required": ["operation", "expression"],
}
DESCRIPTION = ("Symbolic math with sympy: operation diff | integrate | solve | simplify | expand | "
               "factor | limit | series on expression (x**2, sin(x), exp(x), log(x); '=' for "
               "equations). Optional: variable, order (derivative order / series terms), lower and "
               "upper (definite integral), point and direction (limit, series), latex.")

_FUNCTION_NAMES = [
    "sin", "cos", "tan", "cot", "sec", "csc", "asin", "acos", "atan", "atan2", "sinh", "cosh",
    "tanh", "asinh", "acosh", "atanh", "exp", "log", "sqrt", "cbrt", "root", "Abs", "sign",
    "floor", "ceiling", "factorial", "binomial", "gamma", "erf", "Min", "Max", "re", "im",
    "Heaviside", "DiracDelta",
]
_ALIASES = {"ln": "log", "abs": "Abs", "ceil": "ceiling", "min": "Min", "max": "Max",
            "arcsin": "asin", "arccos": "acos", "arctan": "atan"}
_CONSTANTS = {"pi": "pi", "E": "E", "e": "E", "I": "I", "oo": "oo", "inf": "oo",
              "infinity": "oo"}


def _tables():
    import sympy
    funcs = {n: getattr(sympy, n) for n in _FUNCTION_NAMES}
    funcs.update({a: getattr(sympy, n) for a, n in _ALIASES.items()})
    consts = {a: getattr(sympy, n) for a, n in _CONSTANTS.items()}
    return funcs, consts


def check_text(text: str, field: str = "expression") -> list[str]:
    """Refuse anything but numbers, arithmetic operators, parentheses, commas, '=' and plain names.

    Returns the names used. Raises ToolError naming the field and the offending piece.
    """
    if not isinstance(text, str):
        raise ToolError(f"{field}: expected a string")
    if len(text) > MAX_CHARS:
        raise ToolError(f"{field}: {len(text)} chars, limit {MAX_CHARS}")
    if "__" in text:
        raise ToolError(f"{field}: '__' is not allowed")
    if not text.strip():
        raise ToolError(f"{field}: is empty")
    if any(c in text for c in "\n\r\\;"):
        raise ToolError(f"{field}: must be a single-line math expression")
    names, depth, count = [], 0, 0
    try:
        source = text.strip().replace("^", "**")
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError) as e:
        raise ToolError(f"{field}: cannot read expression ({e.args[0] if e.args else e})") from None
    for tok in tokens:
        if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            continue
        count += 1
        if count > MAX_TOKENS:
            raise ToolError(f"{field}: more than {MAX_TOKENS} tokens")
        s = tok.string
        if tok.type == tokenize.NUMBER:
            if len(s) > MAX_NUMBER_CHARS or s[-1] in "jJ" or "_" in s:
                raise ToolError(f"{field}: number {s[:20]!r} is not allowed")
        elif tok.type == tokenize.NAME:
            if keyword.iskeyword(s) or not _NAME.match(s):
                raise ToolError(f"{field}: name {s[:20]!r} is not allowed")
            names.append(s)
        elif tok.type == tokenize.OP and s in _OPS:
            depth += s == "("
            depth -= s == ")"
            if depth > MAX_DEPTH:
                raise ToolError(f"{field}: nested deeper than {MAX_DEPTH} parentheses")
            if depth < 0:
                raise ToolError(f"{field}: unbalanced ')'")
        else:
            raise ToolError(f"{field}: {s[:20]!r} is not allowed (only numbers, + - * / ** ^ "
                            "( ) , = and names)")
    if depth != 0:
        raise ToolError(f"{field}: unbalanced '('")
    return names


def parse(text: Union[str, int, float], field: str = "expression"):
    """Check `text` with `check_text`, then `parse_expr` it against our name tables only."""
    import sympy
    from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication, parse_expr,
                                            standard_transformations)
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return sympy.sympify(text)
    names = check_text(text, field)
    text = text.strip()
    if "=" in text:
        raise ToolError(f"{field}: '=' is only allowed in solve")
    funcs, consts = _tables()
    local = {}
    for n in names:
        local[n] = funcs[n] if n in funcs else consts[n] if n in consts else sympy.Symbol(n)
    glob = {"__builtins__": {}, "Integer": sympy.Integer, "Float": sympy.Float,
            "Rational": sympy.Rational, "Symbol": sympy.Symbol}
    try:
        expr = parse_expr(text, local_dict=local, global_dict=glob,
                          transformations=standard_transformations + (implicit_multiplication,
                                                                      convert_xor))
    except (SyntaxError, TypeError, ValueError, AttributeError, NameError, ZeroDivisionError) as e:
        raise ToolError(f"{field}: cannot parse ({type(e).__name__}: {str(e)[:100]})") from None
    if not isinstance(expr, sympy.Basic):
        raise ToolError(f"{field}: is not a math expression")
    return expr


def _variable(expr, variable: Optional[str], operation: str):
    import sympy
    if variable is not None:
        if not _NAME.match(variable) or keyword.iskeyword(variable):
            raise ToolError(f"variable: {variable!r} is not a plain name")
        return sympy.Symbol(variable)
    free = sorted(expr.free_symbols, key=str)
    if len(free) == 1:
        return free[0]
    if not free:
        return sympy.Symbol("x")
    raise ToolError(f"variable: required for {operation}, the expression has "
                    f"{', '.join(map(str, free))}")


def symbolic_math(operation: str, expression: str, variable: Optional[str] = None,
                  order: Optional[int] = None, point: Any = None, lower: Any = None,
                  upper: Any = None, direction: str = "+", latex: bool = False) -> dict:
    """Run one sympy operation. Returns {"result": str} (solve: {"result": [str, ...]}), plus
    "latex" when asked. Raises ToolError on hostile or unparsable input, or an argument that does
    not belong to the operation."""
    import sympy
    used = {"order": order, "point": point, "lower": lower, "upper": upper}
    allowed = {"diff": {"order"}, "integrate": {"lower", "upper"}, "limit": {"point"},
               "series": {"point", "order"}}.get(operation, set())
    for key, value in used.items():
        if value is not None and key not in allowed:
            raise ToolError(f"{key}: not a field of {operation}")
    if direction != "+" and operation != "limit":
        raise ToolError(f"direction: not a field of {operation}")

    if operation == "solve":
        check_text(expression)
        if expression.count("=") > 1:
            raise ToolError("expression: at most one '='")
        lhs, eq, rhs = expression.partition("=")
        expr = parse(lhs) - parse(rhs) if eq else parse(lhs)
        var = _variable(expr, variable, operation)
        value = sympy.solve(expr, var)
    else:
        expr = parse(expression)
        if operation in ("simplify", "expand", "factor"):
            if variable is not None:
                raise ToolError(f"variable: not a field of {operation}")
        else:
            var = _variable(expr, variable, operation)
        if operation == "diff":
            value = sympy.diff(expr, var, order or 1)
        elif operation == "integrate":
            if (lower is None) != (upper is None):
                raise ToolError("lower, upper: give both for a definite integral, or neither")
            value = (sympy.integrate(expr, var) if lower is None else
                     sympy.integrate(expr, (var, parse(lower, "lower"), parse(upper, "upper"))))
        elif operation == "limit":
            if point is None:
                raise ToolError("point: required for limit")
            value = sympy.limit(expr, var, parse(point, "point"), dir=direction)
        elif operation == "series":
            value = sympy.series(expr, var, parse(point, "point") if point is not None else 0,
                                 order or 6)
        else:
            value = {"simplify": sympy.simplify, "expand": sympy.expand,
                     "factor": sympy.factor}[operation](expr)
    if isinstance(value, list):
        out = {"result": [str(v) for v in value]}
    else:
        out = {"result": str(value)}
    if latex:
        out["latex"] = sympy.latex(value)
    return out


def register(registry) -> None:
    """Add symbolic_math to a ToolRegistry; it runs in the worker process (sympy can hang)."""
    registry.register("symbolic_math", symbolic_math, SCHEMA, DESCRIPTION, isolate=True)
