"""calculator: arithmetic read with `ast`, never eval/exec.

Accepts numbers with thousands commas ("1,234.5"), + - * / // % ** (and ^ as power), unary
minus, parentheses, the constants pi and e, and sqrt log log10 log2 exp sin cos tan asin acos atan
floor ceil factorial abs round min max. Every operation is bounded before it runs (integer size,
exponent, factorial argument, expression length and node count), so `9**9**9`, division by zero
and garbage come back as errors in milliseconds.

Result: an int when the value is integral (`48/2` -> 24, not 24.0), else a float rounded to 10
significant digits. Integers stay exact up to MAX_INT_BITS bits.
"""
from __future__ import annotations

import ast
import math
import re
from typing import Union

from .registry import ToolError

MAX_EXPR_CHARS = 1000
MAX_NODES = 400
MAX_INT_BITS = 4096         # ~1233 decimal digits: integers above this are refused
MAX_FACTORIAL = 1000
Number = Union[int, float]

SCHEMA = {
    "properties": {"expression": {"type": "string", "maxLength": MAX_EXPR_CHARS,
                                  "description": "arithmetic, e.g. 48/2 or sqrt(2)*3"}},
    "required": ["expression"],
}
DESCRIPTION = ("Evaluate arithmetic exactly: + - * / // % ** parentheses, pi, e, sqrt, log, exp, "
               "sin, cos, floor, ceil, factorial, abs, round, min, max. Returns a number.")

CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _factorial(n: Number) -> int:
    if isinstance(n, float):
        if not n.is_integer():
            raise ToolError(f"factorial needs a whole number, got {n}")
        n = int(n)
    if n < 0:
        raise ToolError("factorial of a negative number")
    if n > MAX_FACTORIAL:
        raise ToolError(f"factorial argument {n} is above the limit {MAX_FACTORIAL}")
    return math.factorial(n)


def _log(x: Number, base: Number = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


def _round(x: Number, ndigits: int = None) -> Number:
    if ndigits is None:
        return round(x)
    if not isinstance(ndigits, int) or abs(ndigits) > 20:
        raise ToolError("round: ndigits must be a whole number between -20 and 20")
    return round(x, ndigits)


# name -> (function, min args, max args)
FUNCTIONS = {
    "sqrt": (math.sqrt, 1, 1), "exp": (math.exp, 1, 1), "log": (_log, 1, 2),
    "ln": (math.log, 1, 1), "log10": (math.log10, 1, 1), "log2": (math.log2, 1, 1),
    "sin": (math.sin, 1, 1), "cos": (math.cos, 1, 1), "tan": (math.tan, 1, 1),
    "asin": (math.asin, 1, 1), "acos": (math.acos, 1, 1), "atan": (math.atan, 1, 1),
    "floor": (math.floor, 1, 1), "ceil": (math.ceil, 1, 1), "factorial": (_factorial, 1, 1),
    "abs": (abs, 1, 1), "round": (_round, 1, 2), "min": (min, 1, 50), "max": (max, 1, 50),
}


def _strip_thousands(expr: str) -> str:
    """Drop thousands commas ("1,234,567.5") outside function-call argument lists.

    Inside `max(1,234)` a comma separates arguments, so numbers there are taken as written.
    """
    out, stack, i = [], [], 0
    number = re.compile(r"\d{1,3}(?:,\d{3})+(?![\d,])")
    while i < len(expr):
        ch = expr[i]
        if ch == "(":
            prev = "".join(out).rstrip()
            stack.append(bool(prev) and (prev[-1].isalnum() or prev[-1] == "_"))
        elif ch == ")" and stack:
            stack.pop()
        elif ch.isdigit() and not (stack and stack[-1]) and (not out or not (out[-1].isalnum() or out[-1] in "._")):
            m = number.match(expr, i)
            if m:
                out.append(m.group(0).replace(",", ""))
                i = m.end()
                continue
        out.append(ch)
        i += 1
    return "".join(out)


def _check_int(v: Number) -> Number:
    if isinstance(v, int) and v.bit_length() > MAX_INT_BITS:
        raise ToolError(f"integer result too large (more than {MAX_INT_BITS} bits)")
    if isinstance(v, float) and not math.isfinite(v):
        raise ToolError("result is not a finite number (overflow)")
    return v


def _pow(a: Number, b: Number) -> Number:
    if isinstance(a, int) and isinstance(b, int) and b >= 0:
        if abs(a) > 1 and a.bit_length() * b > MAX_INT_BITS + 64:
            raise ToolError(f"power too large: {_clip(a)}**{_clip(b)} has more than "
                            f"{MAX_INT_BITS} bits")
        return a ** b
    if isinstance(a, int) and a.bit_length() > 1024 or isinstance(b, int) and b.bit_length() > 1024:
        raise ToolError("power operand too large")
    r = float(a) ** float(b)     # OverflowError / ZeroDivisionError are reported by _eval
    if isinstance(r, complex):
        raise ToolError("negative number to a fractional power is not a real number")
    return r


def _clip(v: Number) -> str:
    s = str(v)
    return s if len(s) <= 20 else s[:8] + "…"


_BINOPS = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b,
    ast.Pow: _pow,
}


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ToolError(f"unsupported literal {_clip(repr(node.value))}")
        return _check_int(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _eval(node.operand)
        return -v if isinstance(node.op, ast.USub) else +v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _eval(node.left), _eval(node.right)
        if isinstance(node.op, (ast.Mult,)) and isinstance(a, int) and isinstance(b, int):
            if a.bit_length() + b.bit_length() > MAX_INT_BITS + 1:
                raise ToolError(f"integer result too large (more than {MAX_INT_BITS} bits)")
        if isinstance(node.op, ast.Div) and isinstance(a, int) and isinstance(b, int) and b:
            # exact when it divides: 10**30 / 10**10 stays an int, not a rounded float
            if a % b == 0:
                return a // b
        return _check_int(_BINOPS[type(node.op)](a, b))
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise ToolError(f"unknown name {node.id!r}")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else "expression"
            raise ToolError(f"unknown function {name!r}; allowed: {', '.join(FUNCTIONS)}")
        if node.keywords:
            raise ToolError("keyword arguments are not supported")
        fn, lo, hi = FUNCTIONS[node.func.id]
        if not lo <= len(node.args) <= hi:
            raise ToolError(f"{node.func.id} takes {lo}" + (f"-{hi}" if hi > lo else "")
                            + f" argument(s), got {len(node.args)}")
        args = [_eval(a) for a in node.args]
        for a in args:
            if isinstance(a, int) and a.bit_length() > 1024 and node.func.id not in ("abs", "min", "max"):
                raise ToolError(f"{node.func.id}: argument too large")
        return _check_int(fn(*args))
    raise ToolError(f"unsupported syntax: {type(node).__name__}")


def calculate(expression: str) -> Number:
    """Evaluate `expression` and return an int (integral values) or a float (10 significant digits).

    Raises:
        ToolError: on syntax errors, unknown names, unsupported syntax, division by zero, math
            domain errors, overflow and results beyond the size limits. The message says which.
    """
    if not isinstance(expression, str):
        raise ToolError(f"expression must be a string, got {type(expression).__name__}")
    if len(expression) > MAX_EXPR_CHARS:
        raise ToolError(f"expression is {len(expression)} chars, limit {MAX_EXPR_CHARS}")
    text = _strip_thousands(expression.strip().replace("^", "**").replace("×", "*")
                            .replace("÷", "/").replace("−", "-"))
    if not text:
        raise ToolError("empty expression")
    if text.count("(") > 100:
        raise ToolError("expression is nested too deeply")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError) as e:
        raise ToolError(f"cannot parse expression: {getattr(e, 'msg', e)}") from None
    except (RecursionError, MemoryError):
        raise ToolError("expression is nested too deeply") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ToolError(f"expression has more than {MAX_NODES} parts")
    try:
        value = _eval(tree)
    except ToolError:
        raise
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError("result is too large (overflow)") from None
    except RecursionError:
        raise ToolError("expression is nested too deeply") from None
    except ValueError as e:
        raise ToolError(f"math error: {e}") from None
    except TypeError as e:
        raise ToolError(f"invalid operation: {e}") from None
    return format_number(value)


def format_number(value: Number) -> Number:
    """int stays int; an integral float of magnitude < 1e15 becomes int; other floats are rounded
    to 10 significant digits. Raises ToolError on inf/NaN."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if not math.isfinite(value):
        raise ToolError("result is not a finite number")
    value = float(f"{value:.10g}")
    if value.is_integer() and abs(value) < 1e15:
        return int(value)
    return value


def register(registry) -> None:
    """Add the calculator to a ToolRegistry (in-process: it bounds its own work)."""
    registry.register("calculator", calculate, SCHEMA, DESCRIPTION)
