"""Run a coroutine to completion from plain code, whether or not an event loop is running.

`asyncio.run` raises "cannot be called from a running event loop" inside Jupyter/Colab, whose
kernel runs one. There the coroutine runs on a fresh loop in a worker thread and the caller
blocks until it is done, so a notebook cell behaves like a script. Exceptions (KeyboardInterrupt
included) reach the caller either way.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Coroutine


def run_sync(coro: Coroutine) -> Any:
    """`asyncio.run(coro)`, or the same on a worker thread when this thread's loop is running.

    Returns the coroutine's result; raises what it raises.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="synth-loop") as pool:
        return pool.submit(asyncio.run, coro).result()
