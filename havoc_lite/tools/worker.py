"""A persistent worker process for tools that may hang or blow up (sympy, scipy).

Why a subprocess and not `multiprocessing`: spawn/forkserver re-import the user's `__main__`
(unguarded notebook or script code would run again), and fork after torch has started threads can
deadlock. `python -m havoc_lite.tools.worker` is a clean interpreter that works the same in Colab,
a script or pytest.

Protocol: one JSON object per line. The parent writes `{"fn": "module:qualname", "args": {...}}`;
the worker answers `{"status": "success"|"error", "payload": ...}`. At start the worker imports
the tool modules named on its command line and the heavy modules each lists in `WORKER_PRELOAD`
(so a call's time limit does not pay for `import sympy`), then prints `{"ready": true}`. On a timeout or crash the parent kills the process; the next call
starts a fresh one.
"""
from __future__ import annotations

import importlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Optional

STARTUP_TIMEOUT_S = 120.0      # first start imports scipy + sympy; a cold Colab disk is slow
MEMORY_LIMIT_BYTES = 4 << 30   # address-space cap of the worker (Linux/macOS), so a runaway
                               # expansion fails with MemoryError instead of OOM-killing Colab


class WorkerPool:
    """One lazily started worker process; `call` is thread-safe (calls are serialised)."""

    def __init__(self):
        self._proc: Optional[subprocess.Popen] = None
        self._lines: Optional[queue.Queue] = None
        self._ready = False
        self._lock = threading.Lock()
        self.preload: set[str] = set()
        self.starts = 0            # how many processes were started (tests and benchmarks read it)
        self._restarting = False   # the live process replaces one killed after a timeout or crash
        self._end: Optional[weakref.finalize] = None   # ends the live worker, once (see _spawn)

    @staticmethod
    def ref(fn: Callable[..., Any]) -> str:
        """`module:qualname` of a module-level function. Raises ValueError otherwise."""
        mod, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
        if not mod or not qual or "<" in qual or "." in qual or mod == "__main__":
            raise ValueError(f"isolated tool function {fn!r} must be a module-level function "
                             "of an importable module (not a lambda, closure or __main__)")
        return f"{mod}:{qual}"

    def call(self, fn: Callable[..., Any], args: dict, timeout: float) -> tuple[str, Any]:
        """Run fn(**args) in the worker. Returns (status, payload); never raises.

        `timeout` bounds the whole call, including the wait for a worker that is still starting
        after an earlier timeout (its imports take seconds): the caller gets its answer within
        about `timeout` seconds. A first start (or one after `close`) waits up to STARTUP_TIMEOUT_S.
        """
        deadline = time.monotonic() + timeout
        try:
            ref = self.ref(fn)
            request = json.dumps({"fn": ref, "args": args}) + "\n"
        except (ValueError, TypeError) as e:
            return "error", str(e)
        with self._lock:
            self.preload.add(ref.split(":")[0])
            err = self._ensure(deadline if self._restarting else None)
            if err:
                return "error", err
            try:
                self._proc.stdin.write(request)
                self._proc.stdin.flush()
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                self._restart()
                return "error", f"timed out after {timeout:g} s"
            except (OSError, ValueError) as e:
                self._restart()
                return "error", f"tool worker failed: {e}"
            if line is None:            # EOF: the worker died (segfault, a signal, exit)
                code = self._exit_code()
                self._restart()
                return "error", f"tool worker died during the call (exit status {code}); it was restarted"
            try:
                msg = json.loads(line)
                return msg["status"], msg["payload"]
            except (ValueError, KeyError):
                self._restart()
                return "error", "tool worker sent an unreadable reply"

    def warmup(self) -> Optional[str]:
        """Start the worker now and wait until its imports are done. Returns an error or None."""
        with self._lock:
            return self._ensure()

    def close(self) -> None:
        with self._lock:
            self._kill()
            self._restarting = False

    # internals ------------------------------------------------------------------------------------
    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _exit_code(self) -> Optional[int]:
        try:
            return self._proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return None

    def _ensure(self, deadline: Optional[float] = None) -> Optional[str]:
        """A live worker that has finished its imports, or the reason there is none. With a
        `deadline` (time.monotonic()), a worker still importing at the deadline is left to finish
        for the next call and the reason says so."""
        if not self._alive():
            try:
                self._spawn()
            except OSError as e:
                self._proc = None
                return f"tool worker failed to start: {e}"
        if not self._ready:
            wait = STARTUP_TIMEOUT_S if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                line = self._lines.get(timeout=min(wait, STARTUP_TIMEOUT_S))
            except queue.Empty:
                if deadline is not None:
                    return "timed out: the tool worker is still restarting after an earlier timeout"
                line = None
            if line is None or not line.startswith('{"ready"'):
                self._kill()
                return "tool worker failed to start"
            self._ready, self._restarting = True, False
        return None

    def _restart(self) -> None:
        """Kill the worker and start the next one at once, so its imports overlap with whatever
        the caller does next instead of delaying the next call."""
        self._kill()
        self._restarting = True
        try:
            self._spawn()
        except OSError:
            self._proc = None

    def _spawn(self) -> None:
        root = str(Path(__file__).resolve().parents[2])       # folder holding havoc_lite/
        env = dict(os.environ)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = "1"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "havoc_lite.tools.worker", *sorted(self.preload)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, encoding="utf-8", bufsize=1, env=env)
        self.starts += 1
        self._lines = queue.Queue()
        self._ready = False
        pump = threading.Thread(target=_pump, args=(self._proc.stdout, self._lines), daemon=True)
        pump.start()
        # One way to end this worker, whichever comes first: `_kill` calls it, or the pool is
        # garbage-collected without close(), or the interpreter exits (weakref.finalize runs then).
        self._end = weakref.finalize(self, _end_worker, self._proc, pump)

    def _kill(self) -> None:
        self._proc = None
        if self._end is not None:
            self._end()          # a no-op when it already ran


def _end_worker(proc: subprocess.Popen, pump: threading.Thread) -> None:
    """Kill a worker and close its stdin. Its stdout belongs to the pump thread, which reads EOF
    now, closes it and ends; closing it here would race with that thread's read (fatal at
    interpreter shutdown), so wait for the thread instead (briefly: the process is dead)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    try:
        proc.stdin.close()
    except OSError:
        pass
    pump.join(timeout=0.5)


def _pump(stream, lines: queue.Queue) -> None:
    """Move the worker's reply lines into a queue (so the parent can wait with a timeout)."""
    try:
        for line in stream:
            lines.put(line)
    except (OSError, ValueError):
        pass
    lines.put(None)
    try:                 # this thread owns the pipe's read end: close it here, after EOF, not racing
        stream.close()   # a read (an unclosed pipe is a ResourceWarning at interpreter exit)
    except (OSError, ValueError):
        pass


def _serve(preload: list[str]) -> None:
    import warnings
    warnings.simplefilter("ignore")
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    except (ImportError, ValueError, OSError):
        pass                       # Windows, or a hard limit already lower: keep what we have
    out = sys.stdout
    sys.stdout = sys.stderr        # a print() in a tool must not corrupt the protocol
    from havoc_lite.tools.registry import run_tool_fn
    for mod in preload:            # each tool module names its heavy imports in WORKER_PRELOAD
        try:
            for dep in getattr(importlib.import_module(mod), "WORKER_PRELOAD", ()):
                importlib.import_module(dep)
        except Exception:
            pass
    out.write('{"ready": true}\n')
    out.flush()
    cache: dict[str, Callable] = {}
    for line in sys.stdin:
        try:
            req = json.loads(line)
            ref = req["fn"]
            if ref not in cache:
                mod, name = ref.split(":")
                cache[ref] = getattr(importlib.import_module(mod), name)
            status, payload = run_tool_fn(cache[ref], req["args"])
        except Exception as e:
            status, payload = "error", f"tool worker: {type(e).__name__}: {e}"
        try:
            # ASCII escapes: a lone surrogate in a result (echoed from the model's input) cannot
            # be written to a UTF-8 pipe and used to kill the worker; JSON escapes it instead
            reply = json.dumps({"status": status, "payload": payload}, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as e:
            reply = json.dumps({"status": "error",
                                "payload": f"tool returned a value that is not JSON: {e}"})
        out.write(reply + "\n")
        out.flush()


if __name__ == "__main__":
    _serve(sys.argv[1:])
