"""ToolRegistry: schema validation, time limits, result caps, the worker process, call markup."""
import json
import os
import sys
import textwrap
import time

import pytest
from hypothesis import given, settings, strategies as st

from havoc_lite.tools import ToolRegistry, ToolResult, default_registry, format_call, parse_call

HELPERS = '''
import os, time

def slow(seconds):
    time.sleep(seconds)
    return "done"

def crash():
    os._exit(3)

def big(n):
    return "x" * n

def nan():
    return float("nan")

def not_json():
    return {1, 2}

def alloc(n_bytes):
    return len(bytearray(n_bytes))

def echo(text):
    return {"echo": text}

def shout(text):
    print("noise on stdout must not break the protocol")
    return text.upper()

def span(seconds):
    t0 = time.time()
    time.sleep(seconds)
    return {"pid": os.getpid(), "start": t0, "end": time.time()}
'''


@pytest.fixture
def helpers(tmp_path, monkeypatch):
    """A real module the worker can import by name (isolated tools are sent as module:name)."""
    (tmp_path / "havoc_tool_helpers.py").write_text(textwrap.dedent(HELPERS))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    import importlib
    import havoc_tool_helpers
    return importlib.reload(havoc_tool_helpers)


def _reg(helpers, timeout_s=1.0, max_result_chars=500, workers=1):
    reg = ToolRegistry(timeout_s=timeout_s, max_result_chars=max_result_chars, workers=workers)
    obj = lambda **props: {"properties": props, "required": list(props)}  # noqa: E731
    reg.register("slow", helpers.slow, obj(seconds={"type": "number"}), "sleeps", isolate=True)
    reg.register("slow_inproc", helpers.slow, obj(seconds={"type": "number"}), "sleeps")
    reg.register("crash", helpers.crash, {}, "exits", isolate=True)
    reg.register("big", helpers.big, obj(n={"type": "integer"}), "long text")
    reg.register("nan", helpers.nan, {}, "returns NaN")
    reg.register("not_json", helpers.not_json, {}, "returns a set")
    reg.register("alloc", helpers.alloc, obj(n_bytes={"type": "integer"}), "allocates",
                 isolate=True)
    reg.register("echo", helpers.echo, obj(text={"type": "string"}), "echoes", isolate=True)
    reg.register("shout", helpers.shout, obj(text={"type": "string"}), "upper case", isolate=True)
    reg.register("span", helpers.span, obj(seconds={"type": "number"}), "sleeps, says when", isolate=True)
    return reg


def test_a_registry_dropped_without_close_ends_its_worker(helpers):
    """A registry (and its worker pool) garbage-collected without close() still ends its worker
    process, so nothing is left running, and no pipe open, until the interpreter exits."""
    import gc
    reg = _reg(helpers, timeout_s=10.0)
    pid = reg.execute("span", {"seconds": 0.0}).result["pid"]
    os.kill(pid, 0)                                               # the worker is alive
    del reg
    gc.collect()
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_independent_calls_run_at_once_on_reused_workers(helpers):
    """`execute_calls` (one decoding step's calls) runs isolated calls on `workers` processes at
    the same time: with 2 workers, calls 1-2 and 3-4 overlap in time on two processes, results keep
    their order, and the processes are reused, not started per call."""
    reg = _reg(helpers, timeout_s=10.0, workers=2)
    reg.warmup()
    texts = [format_call("span", {"seconds": 0.4})] * 4 + [format_call("echo", {"text": "last"})]
    out = reg.execute_calls(texts)
    assert [o[0] for o in out] == ["span"] * 4 + ["echo"] and out[-1][2].result == {"echo": "last"}
    spans = [o[2].result for o in out[:4]]
    assert len({s["pid"] for s in spans}) == 2                    # both workers were used
    by_start = sorted(spans, key=lambda s: s["start"])
    assert by_start[1]["start"] < by_start[0]["end"]              # two calls ran at the same time
    assert by_start[3]["start"] < by_start[2]["end"]
    reg.execute_calls(texts[:2])
    assert [w.starts for w in reg._workers] == [1, 1]             # the same two processes again
    one = _reg(helpers, workers=2)
    for _ in range(3):
        one.execute("echo", {"text": "x"})
    assert [w.starts for w in one._workers] == [1, 0]             # one at a time: one process
    reg.close(), one.close()
    with pytest.raises(ValueError, match="workers must be an int >= 1"):
        ToolRegistry(workers=0)


def test_tool_result_json_matches_design():
    assert ToolResult("success", result={"statistic": -1.0}, elapsed_s=3.2).to_json() == \
        '{"status": "success", "result": {"statistic": -1.0}}'
    assert ToolResult.failure("bad").to_json() == '{"status": "error", "error": "bad"}'
    assert ToolResult.success("°C").to_json() == '{"status": "success", "result": "°C"}'


def test_format_and_parse_call():
    text = format_call("calculator", {"expression": "48/2"})
    assert text == '{"tool": "calculator", "args": {"expression": "48/2"}}'
    assert parse_call(text) == ("calculator", {"expression": "48/2"})
    assert parse_call(' {"tool": "rag"} ') == ("rag", {})


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10)
                     | st.floats(allow_nan=False, allow_infinity=False),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                         max_size=3), max_leaves=8)


@settings(max_examples=60, deadline=None)
@given(name=st.text(min_size=1, max_size=12), args=st.dictionaries(st.text(max_size=6), _json,
                                                                       max_size=4))
def test_parse_call_inverts_format_call(name, args):
    assert parse_call(format_call(name, args)) == (name, args)


@pytest.mark.parametrize("text, reason", [
    ('{"tool": "calculator", "args": ', "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"args": {}}', '"tool"'),
    ('{"tool": 3}', '"tool"'),
    ('{"tool": "x", "args": [1]}', '"args" must be an object'),
    ('{"tool": "x", "args": {}, "extra": 1}', "unknown field"),
    ("[" * 100_000, "too long"),
    ("[" * 5000 + "]" * 5000, "nested too deeply"),
    ("", "not valid JSON"),
])
def test_parse_call_errors(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_call(text)


def test_execute_call_never_raises():
    reg = ToolRegistry()
    for text in ['{"tool": "calculator", "args": ', "null", "[" * 5000, '{"tool": "nope"}']:
        name, args, res = reg.execute_call(text)
        assert res.status == "error" and res.error
        json.loads(res.to_json())
    assert reg.execute_call('{"tool": "nope"}')[0] == "nope"
    assert "unknown tool" in reg.execute_call('{"tool": "nope"}')[2].error


def test_schema_errors_name_the_field():
    reg = default_registry()
    cases = [
        ("calculator", {}, "args.expression: required"),
        ("calculator", {"expression": 3}, "args.expression: expected string, got integer"),
        ("calculator", {"expression": "1", "x": 1}, "args.x: unknown field"),
        ("python_math", {"operation": "t_test", "group1": [1, "2"]},
         "args.group1[1]: expected number, got string"),
        ("python_math", {"operation": "t_test", "group1": [1, True]}, "args.group1[1]"),
        ("python_math", {"operation": "median"}, "args.operation: must be one of"),
        ("python_math", {"operation": "anova", "groups": [[1, 2], 3]}, "args.groups[1]"),
        ("dsl_executor", {"design": "box_behnken", "factors": [{"name": "a", "low": 0}]},
         "args.factors[0].high: required"),
        ("rag", {"query": "x", "k": 99}, "args.k: must be <= 5"),
        ("symbolic_math", {"operation": "diff"}, "args.expression: required"),
    ]
    for name, args, msg in cases:
        res = reg.execute(name, args)
        assert res.status == "error" and msg in res.error, (name, args, res.error)
    assert "args: expected object" in reg.execute("calculator", [1]).error
    assert "unknown tool 'nope'" in reg.execute("nope", {}).error


def test_timeouts_return_errors_and_the_worker_restarts(helpers):
    reg = _reg(helpers, timeout_s=0.5)
    assert reg.execute("slow", {"seconds": 0}).result == "done"       # starts the worker
    for name in ("slow", "slow_inproc"):
        t0 = time.perf_counter()
        res = reg.execute(name, {"seconds": 30})
        assert time.perf_counter() - t0 < 2.0
        assert res.status == "error" and "timed out after 0.5 s" in res.error
    reg.warmup()                     # the restarted worker is ready (its start is not timed here)
    assert reg.execute("slow", {"seconds": 0}).result == "done"       # a fresh worker answers
    assert reg._workers[0].starts == 2
    reg.close()


def test_crash_memory_and_stdout_noise_are_contained(helpers):
    reg = _reg(helpers, timeout_s=10)
    res = reg.execute("crash", {})
    assert res.status == "error" and "died during the call (exit status 3)" in res.error
    assert reg.execute("shout", {"text": "ok"}).result == "OK"
    if sys.platform == "linux":                          # RLIMIT_AS is enforced on Linux
        res = reg.execute("alloc", {"n_bytes": 16 << 30})    # over the worker's 4 GiB cap
        assert res.status == "error" and "memory" in res.error.lower()
    assert reg.execute("alloc", {"n_bytes": 1000}).result == 1000
    reg.close()


def test_result_cap_and_non_json_results(helpers):
    reg = _reg(helpers, max_result_chars=500)
    assert reg.execute("big", {"n": 100}).result == "x" * 100
    res = reg.execute("big", {"n": 10_000})
    assert res.status == "error" and "result too large: 10002 chars" in res.error
    assert len(res.to_json()) < 500
    assert "not JSON" in reg.execute("nan", {}).error
    assert "not JSON" in reg.execute("not_json", {}).error


def test_register_rejects_bad_tools():
    reg = ToolRegistry()
    with pytest.raises(ValueError, match="module-level"):
        reg.register("f", lambda: 1, {}, "lambda", isolate=True)
    reg.register("f", abs, {"properties": {}}, "abs")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("f", abs, {}, "again")
    with pytest.raises(ValueError, match="identifier"):
        reg.register("no spaces", abs, {}, "x")


def test_describe_lists_every_tool_and_its_args():
    reg = default_registry()
    text = reg.describe()
    assert reg.names == ["calculator", "python_math", "symbolic_math", "dsl_executor", "rag"]
    for name in reg.names:
        assert f"- {name}(" in text
    assert "calculator(expression)" in text and "<tool>" in text


SLOW_START = """
import time
time.sleep(float(__import__("os").environ.get("HAVOC_TEST_START_S", "0")))
"""


def test_timeout_covers_the_wait_for_a_restarting_worker(helpers, tmp_path, monkeypatch):
    # a worker whose imports take 2 s: after a timeout, the next call must not wait for the
    # restart beyond its own 1 s limit (it used to take start + limit: 8.8 s against 5 s)
    (tmp_path / "havoc_slow_start.py").write_text(SLOW_START)
    (tmp_path / "havoc_tool_helpers.py").write_text(
        textwrap.dedent(HELPERS) + '\nWORKER_PRELOAD = ["havoc_slow_start"]\n')
    monkeypatch.setenv("HAVOC_TEST_START_S", "2")
    reg = _reg(helpers, timeout_s=1.0)
    reg.warmup()                                           # the first start may take its time
    assert reg.execute("slow", {"seconds": 30}).error == "timed out after 1 s"
    t0 = time.perf_counter()
    res = reg.execute("slow", {"seconds": 30})
    assert time.perf_counter() - t0 < 1.5
    assert res.status == "error" and "timed out" in res.error and "restarting" in res.error
    reg.warmup()
    assert reg.execute("slow", {"seconds": 0}).result == "done"
    reg.close()


def test_lone_surrogate_results_are_valid_text_and_keep_the_worker(helpers):
    reg = _reg(helpers, timeout_s=10)
    res = reg.execute("echo", {"text": "a\ud800b"})       # echoed back from the worker
    assert res.status == "success" and res.result == {"echo": "a\ud800b"}
    assert reg._workers[0].starts == 1                            # the worker did not die
    text = res.to_json()
    text.encode("utf-8")                                    # encodable ...
    assert json.loads(text)["result"] == {"echo": "a\ud800b"}   # ... and the same value back
    _, _, bad = reg.execute_call('{"tool": "calculator", "\\udfff": 1}')
    bad.to_json().encode("utf-8")
    reg.close()
