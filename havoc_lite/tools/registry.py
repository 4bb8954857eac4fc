"""ToolRegistry, ToolResult and the call markup helpers.

A tool is a plain function `fn(**args) -> JSON-able value` plus a small JSON-schema-like dict
describing its arguments. The registry validates arguments against the schema, runs the function
under a wall-clock limit, caps the size of what comes back and turns every failure into an error
`ToolResult`, so nothing a tool does can raise into the generation loop.

Two ways to run a tool:
  - in-process (`isolate=False`, the default): for cheap tools that bound their own work (the
    calculator). The call runs in a daemon thread joined with the time limit; on a timeout the
    caller gets an error result at once and the thread is abandoned (Python cannot kill a thread).
  - isolated (`isolate=True`): for tools that can hang or eat memory (sympy, scipy). The call runs
    in a persistent worker process (`havoc_lite.tools.worker`) that is killed and restarted on a
    timeout or crash. `fn` must then be a module-level function (it is sent by name).

The JSON inside `<tool>…</tool>` is written by `format_call` and read by `parse_call`; nothing else
in the kit builds or parses it.
"""
from __future__ import annotations

import json
import math
import queue
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..markup import TOOL, TOOL_RESULT, wrap
from .worker import WorkerPool

MAX_CALL_CHARS = 20_000          # a <tool> body longer than this is rejected before json.loads
MAX_DEPTH = 20                   # nesting depth allowed in arguments
_SURROGATE = re.compile("[\ud800-\udfff]")   # lone surrogates: valid in a str, not in UTF-8
_TAG_START = re.compile(r"<(?=/?[A-Za-z_][A-Za-z0-9_]*>|\|)")   # `<` opening <tag>, </tag>, <|tok|>
_TYPES = {
    "string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,),
    "array": (list,), "object": (dict,), "null": (type(None),),
}


# --- results --------------------------------------------------------------------------------------
@dataclass
class ToolResult:
    """Outcome of one tool call.

    Attributes:
        status: "success" or "error".
        result: the tool's JSON-able value (success only).
        error: a one-line reason the model can read (error only).
        elapsed_s: wall-clock seconds the call took (kept out of `to_json`, so training text
            stays deterministic).
    """

    status: str
    result: Any = None
    error: Optional[str] = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def to_dict(self) -> dict:
        """`{"status": "success", "result": …}` or `{"status": "error", "error": "…"}`."""
        if self.status == "success":
            return {"status": "success", "result": self.result}
        return {"status": "error", "error": self.error}

    def to_json(self) -> str:
        """`json.dumps(self.to_dict(), ensure_ascii=False)`: the text inside <tool_result>.

        Always valid UTF-8: a lone surrogate (`"\\ud800"`, which a model-written key can carry
        into an error message) is written as its JSON escape, so `json.loads` gives the same
        value back and no tokenizer chokes on it. Likewise the `<` that opens anything shaped
        like a markup tag (`</tool_result>`, `<answer>`, `<|end|>`, `<s>`) is written `\\u003c`:
        a result that quotes markup can then never become a control token, neither in the
        engine nor in training text rendered with special tokens allowed, and `json.loads`
        still gives the quoted text back. `p < 0.05` is left as it is.

        Raises:
            TypeError / ValueError: a result that is not JSON (the registry never returns one).
        """
        text = json.dumps(self.to_dict(), ensure_ascii=False)
        text = _TAG_START.sub(r"\\u003c", text)
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)

    @classmethod
    def success(cls, result: Any, elapsed_s: float = 0.0) -> "ToolResult":
        return cls("success", result=result, elapsed_s=elapsed_s)

    @classmethod
    def failure(cls, error: str, elapsed_s: float = 0.0) -> "ToolResult":
        return cls("error", error=str(error), elapsed_s=elapsed_s)


class ToolError(ValueError):
    """Raised by a tool for a bad input; the registry turns it into an error result verbatim."""


# --- call markup ----------------------------------------------------------------------------------
def format_call(name: str, args: dict) -> str:
    """The JSON written between <tool> and </tool>: `{"tool": name, "args": args}`."""
    return json.dumps({"tool": name, "args": args}, ensure_ascii=False)


def parse_call(text: str) -> tuple[str, dict]:
    """Read the JSON between <tool> and </tool> (the inverse of `format_call`).

    Returns (name, args); a missing "args" means {}, and "name" is accepted in place of "tool".
    Raises:
        ValueError: with the reason when the text is too long, not JSON, nested too deep, not an
            object, or lacks a string "tool" / a dict "args".
    """
    if not isinstance(text, str):
        raise ValueError(f"tool call must be text, got {type(text).__name__}")
    if len(text) > MAX_CALL_CHARS:
        raise ValueError(f"tool call is too long: {len(text)} chars, limit {MAX_CALL_CHARS}")
    try:
        obj = json.loads(text)
    except RecursionError:
        raise ValueError("tool call JSON is nested too deeply") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"tool call is not valid JSON: {e.msg} at char {e.pos}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"tool call must be a JSON object, got {type(obj).__name__}")
    name = obj.get("tool", obj.get("name"))
    if not isinstance(name, str) or not name:
        raise ValueError('tool call needs a string field "tool"')
    args = obj.get("args", {})
    if not isinstance(args, dict):
        raise ValueError(f'field "args" must be an object, got {type(args).__name__}')
    extra = set(obj) - {"tool", "name", "args"}
    if extra:
        raise ValueError(f"tool call has unknown field(s): {', '.join(sorted(extra))}")
    return name, args


# --- schema validation ----------------------------------------------------------------------------
def _type_ok(value: Any, typ: str) -> bool:
    if typ not in _TYPES:
        raise ValueError(f"schema uses unknown type {typ!r}")
    if isinstance(value, bool) and typ != "boolean":    # True is an int in Python, not in JSON
        return False
    return isinstance(value, _TYPES[typ])


def validate(value: Any, schema: dict, path: str = "args", depth: int = 0) -> None:
    """Check `value` against a small JSON-schema subset.

    Supported keys: type (a name or list of names), properties, required, additionalProperties
    (default False: unknown keys are errors), items, enum, minItems, maxItems, maxLength,
    minimum, maximum.
    Raises:
        ToolError: naming the field path, e.g. `args.group1[2]: expected number, got string`.
    """
    if depth > MAX_DEPTH:
        raise ToolError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    typ = schema.get("type")
    if typ is not None:
        types = [typ] if isinstance(typ, str) else list(typ)
        if not any(_type_ok(value, t) for t in types):
            raise ToolError(f"{path}: expected {' or '.join(types)}, got {_json_type(value)}")
    if "enum" in schema and value not in schema["enum"]:
        raise ToolError(f"{path}: must be one of {schema['enum']}, got {_short(value)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise ToolError(f"{path}: must be a finite number, got {value}")
        if "minimum" in schema and value < schema["minimum"]:
            raise ToolError(f"{path}: must be >= {schema['minimum']}, got {value}")
        if "maximum" in schema and value > schema["maximum"]:
            raise ToolError(f"{path}: must be <= {schema['maximum']}, got {_short(value)}")
    if isinstance(value, str) and "maxLength" in schema and len(value) > schema["maxLength"]:
        raise ToolError(f"{path}: string of {len(value)} chars, limit {schema['maxLength']}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise ToolError(f"{path}: needs at least {schema['minItems']} items, got {len(value)}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise ToolError(f"{path}: at most {schema['maxItems']} items, got {len(value)}")
        if "items" in schema:
            for i, item in enumerate(value):
                validate(item, schema["items"], f"{path}[{i}]", depth + 1)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                raise ToolError(f"{path}.{key}: required field is missing")
        if not schema.get("additionalProperties", False):
            extra = [k for k in value if k not in props]
            if extra:
                raise ToolError(f"{path}.{extra[0]}: unknown field (allowed: {', '.join(props)})")
        for key, sub in props.items():
            if key in value:
                validate(value[key], sub, f"{path}.{key}", depth + 1)


def _json_type(value: Any) -> str:
    for name in ("boolean", "integer", "number", "string", "array", "object", "null"):
        if _type_ok(value, name):
            return name
    return type(value).__name__


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n] + "…"


# --- registry -------------------------------------------------------------------------------------
@dataclass
class _Tool:
    name: str
    fn: Callable[..., Any]
    schema: dict
    description: str
    isolate: bool
    timeout_s: Optional[float]
    bound: dict


class ToolRegistry:
    """Named tools with schemas, time limits and result-size caps.

    Args:
        timeout_s: default wall-clock limit of one call, seconds.
        max_result_chars: the largest `ToolResult.to_json()` (characters) handed back; a larger
            result becomes an error result saying how large it was (never a cut-off JSON).
        workers: worker processes for isolated tools (each started on first need and reused for
            every later call). `execute_calls` runs up to this many isolated calls at once; a
            lone call always goes to the first worker, so one-at-a-time use starts one process.

    `execute` never raises: unknown tools, schema errors, tool exceptions, timeouts, crashed
    workers, non-JSON results and oversized results all come back as `ToolResult("error", …)`.
    Raises ValueError for workers < 1.
    """

    def __init__(self, timeout_s: float = 5.0, max_result_chars: int = 4000, workers: int = 1):
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"ToolRegistry: workers must be an int >= 1, got {workers!r}")
        self.timeout_s = float(timeout_s)
        self.max_result_chars = int(max_result_chars)
        self._tools: dict[str, _Tool] = {}
        self._workers = [WorkerPool() for _ in range(workers)]
        # idle workers, lowest index first: sequential calls keep to worker 0
        self._idle: queue.PriorityQueue = queue.PriorityQueue()
        for i in range(workers):
            self._idle.put(i)
        self._threads: Optional[ThreadPoolExecutor] = None

    # registration ---------------------------------------------------------------------------------
    def register(self, name: str, fn: Callable[..., Any], schema: dict, description: str,
                 isolate: bool = False, timeout_s: Optional[float] = None,
                 bound: Optional[dict] = None) -> None:
        """Add a tool. `schema` is an object schema (see `validate`); `fn(**args)` returns a
        JSON-able value or raises (ToolError/ValueError messages reach the model verbatim).
        `isolate=True` runs it in the worker process (fn must be importable by module + name).
        `timeout_s` overrides the registry's limit for this tool. `bound` holds keyword arguments
        the model does not see or set (e.g. rag's folder); JSON-able when isolated.

        Raises:
            ValueError: on an empty/duplicate name, a schema that is not an object schema, or an
                isolated fn that cannot be imported by name (lambda, closure).
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"tool name must be an identifier, got {name!r}")
        if name in self._tools:
            raise ValueError(f"tool {name!r} is already registered")
        if not isinstance(schema, dict) or schema.get("type", "object") != "object":
            raise ValueError(f"tool {name!r}: schema must be an object schema")
        if isolate:
            WorkerPool.ref(fn)   # raises ValueError for lambdas / closures
        bound = dict(bound or {})
        clash = set(bound) & set(schema.get("properties", {}))
        if clash:
            raise ValueError(f"tool {name!r}: bound argument(s) {sorted(clash)} are also in the schema")
        if isolate:
            json.dumps(bound)                  # TypeError now rather than at the first call
            for w in self._workers:
                w.preload.add(WorkerPool.ref(fn).split(":")[0])
        self._tools[name] = _Tool(name, fn, {"type": "object", **schema}, description.strip(),
                                  isolate, timeout_s, bound)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def describe(self) -> str:
        """Text for a system prompt: how to call, then each tool's name, description and args."""
        lines = [f'Call a tool by writing {wrap(TOOL, """{"tool": NAME, "args": {...}}""")}; the result '
                 f'comes back inside {wrap(TOOL_RESULT, "…")}.', "Tools:"]
        for t in self._tools.values():
            req = t.schema.get("required", [])
            opt = [k for k in t.schema.get("properties", {}) if k not in req]
            sig = ", ".join(req) + (f"; optional: {', '.join(opt)}" if opt else "")
            lines.append(f"- {t.name}({sig}): {t.description}")
        return "\n".join(lines)

    # execution ------------------------------------------------------------------------------------
    def execute(self, name: str, args: Any) -> ToolResult:
        """Run tool `name` with `args` (a dict). Never raises; see the class docstring."""
        t0 = time.perf_counter()
        try:
            res = self._execute(name, args)
        except Exception as e:   # last line of defence: a bug must not reach the generation loop
            res = ToolResult.failure(f"internal error: {type(e).__name__}: {e}")
        res.elapsed_s = time.perf_counter() - t0
        return res

    def execute_call(self, text: str) -> tuple[Optional[str], Optional[dict], ToolResult]:
        """Parse the text inside <tool>…</tool> and run it: (name, args, result), never raising.
        On a malformed call name and args are None and the result says why."""
        try:
            name, args = parse_call(text)
        except Exception as e:
            return None, None, ToolResult.failure(f"malformed tool call: {e}")
        return name, args, self.execute(name, args)

    def execute_calls(self, texts: list[str]) -> list[tuple[Optional[str], Optional[dict], ToolResult]]:
        """`execute_call` for each text, run at the same time (threads; isolated tools on up to
        `workers` processes at once): the calls one decoding step of a batch closes are
        independent. Results in the order of `texts`; never raises."""
        if len(texts) <= 1:
            return [self.execute_call(t) for t in texts]
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=max(4, len(self._workers)),
                                               thread_name_prefix="havoc-tools")
        return list(self._threads.map(self.execute_call, texts))

    def warmup(self) -> None:
        """Start the worker processes now, side by side (so the first isolated calls do not wait
        ~1-3 s for scipy/sympy imports). Failures are left for `execute` to report."""
        if any(t.isolate for t in self._tools.values()):
            threads = [threading.Thread(target=w.warmup, daemon=True) for w in self._workers]
            for th in threads:
                th.start()
            for th in threads:
                th.join()

    def close(self) -> None:
        """Stop the worker processes and the call threads (a later call starts new ones)."""
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=False)
        for w in self._workers:
            w.close()

    def _execute(self, name: str, args: Any) -> ToolResult:
        tool = self._tools.get(name) if isinstance(name, str) else None
        if tool is None:
            return ToolResult.failure(f"unknown tool {_short(name)}; available: {', '.join(self._tools)}")
        try:
            validate(args, tool.schema)
        except ToolError as e:
            return ToolResult.failure(str(e))
        timeout = tool.timeout_s or self.timeout_s
        call_args = {**args, **tool.bound}
        if tool.isolate:
            # as many isolated calls at once as there are workers; the wait for one is part of
            # the call's time limit
            left = timeout
            try:
                i = self._idle.get_nowait()
            except queue.Empty:
                t0 = time.monotonic()
                try:
                    i = self._idle.get(timeout=timeout)
                except queue.Empty:
                    return ToolResult.failure(f"timed out after {timeout:g} s waiting for a free tool worker")
                left = max(timeout - (time.monotonic() - t0), 0.01)
            try:
                status, payload = self._workers[i].call(tool.fn, call_args, left)
            finally:
                self._idle.put(i)
        else:
            status, payload = _run_in_thread(tool.fn, call_args, timeout)
        if status != "success":
            return ToolResult.failure(payload)
        try:
            size = len(json.dumps(payload, ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError, RecursionError) as e:
            return ToolResult.failure(f"tool returned a value that is not JSON: {e}")
        if size + 32 > self.max_result_chars:
            return ToolResult.failure(f"result too large: {size} chars, limit "
                                      f"{self.max_result_chars}; ask for less")
        return ToolResult.success(payload)


def run_tool_fn(fn: Callable[..., Any], args: dict) -> tuple[str, Any]:
    """Call `fn(**args)` and map exceptions to ("error", reason). Shared by threads and worker."""
    try:
        return "success", fn(**args)
    except (ToolError, ValueError, ArithmeticError, TypeError) as e:
        return "error", str(e) or type(e).__name__
    except RecursionError:
        return "error", "input is nested too deeply"
    except MemoryError:
        return "error", "out of memory"
    except Exception as e:
        return "error", f"{type(e).__name__}: {e}"


def _run_in_thread(fn: Callable[..., Any], args: dict, timeout: float) -> tuple[str, Any]:
    box: list = []
    th = threading.Thread(target=lambda: box.append(run_tool_fn(fn, args)), daemon=True)
    th.start()
    th.join(timeout)
    if not box:
        return "error", f"timed out after {timeout:g} s"
    return box[0]
