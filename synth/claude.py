"""The Anthropic side of synthesis: client, one structured request, retries, prices and a budget.

The trace comes back through tool-use forcing: the request offers one tool, `emit_trace`, whose
`input_schema` is the trace format, and `tool_choice={"type": "tool", "name": "emit_trace"}` makes
the model answer with exactly one `tool_use` block whose `input` is the trace
(https://docs.anthropic.com/en/docs/build-with-claude/tool-use). Nothing here runs our tools; the
caller verifies the trace (`synth.verify`).

Retries: the SDK itself retries 408/409/429/5xx (529 "overloaded" included) `max_retries` times
with exponential backoff and honours `retry-after`; `request_trace` adds an outer loop with longer
waits for rate-limit/overload/connection errors that outlast the SDK's retries.

The API key is read from `ANTHROPIC_API_KEY` only and handed to the SDK; it is never printed,
logged or written anywhere.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Optional

import anthropic

log = logging.getLogger("synth")

# USD per million (input, output) tokens, from Anthropic's pricing pages (platform.claude.com /
# docs.anthropic.com "Pricing"). Keys are model ids without a date suffix. Cache writes cost 1.25x
# the input price, cache reads 0.1x (same pages). A model not listed needs --price-in/--price-out.
PRICES_USD_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-3-haiku": (0.25, 1.25),
    "claude-3-5-haiku": (0.80, 4.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-3-5-sonnet": (3.0, 15.0),
    "claude-3-7-sonnet": (3.0, 15.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-opus-4": (15.0, 75.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-6": (5.0, 25.0),
    "claude-sonnet-5": (2.0, 10.0),
    "claude-sonnet-5-5": (2.0, 10.0),
    "claude-opus-5": (5.0, 25.0),
    "claude-opus-5-5": (4.0, 20.0),
    "claude-fable-5-1": (10.0, 50.0),
}
CACHE_WRITE_MULT, CACHE_READ_MULT = 1.25, 0.10
CHARS_PER_TOKEN_LOW = 3.0   # conservative (low) chars per token, so input estimates run high
FATAL_ERRORS = (anthropic.AuthenticationError, anthropic.PermissionDeniedError,
                anthropic.NotFoundError, anthropic.BadRequestError)
TRANSIENT_ERRORS = (anthropic.RateLimitError, anthropic.InternalServerError,
                    anthropic.APIConnectionError)


def price_for(model: str, price_in: Optional[float] = None,
              price_out: Optional[float] = None) -> tuple[float, float]:
    """(input, output) USD per million tokens for `model`.

    Explicit `price_in`/`price_out` win. Otherwise the id is looked up in PRICES_USD_PER_MTOK after
    dropping a date suffix ("-20250929") or "-latest".
    Raises:
        ValueError: for a model not in the table when either price is missing, or a negative price.
    """
    if price_in is not None and price_out is not None:
        if price_in < 0 or price_out < 0:
            raise ValueError("--price-in/--price-out must be >= 0 (USD per million tokens)")
        return float(price_in), float(price_out)
    base = re.sub(r"-(\d{8}|latest)$", "", model.strip())
    if base not in PRICES_USD_PER_MTOK:
        raise ValueError(f"no price on file for model {model!r}: pass --price-in and --price-out "
                         f"(USD per million input/output tokens). Known: {', '.join(PRICES_USD_PER_MTOK)}")
    table = PRICES_USD_PER_MTOK[base]
    return (float(price_in) if price_in is not None else table[0],
            float(price_out) if price_out is not None else table[1])


@dataclass
class Usage:
    """Token counts of one response (`response.usage`), and what they cost."""
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @classmethod
    def from_response(cls, usage: Any) -> "Usage":
        g = lambda k: int(getattr(usage, k, 0) or 0)  # noqa: E731 - SDK fields may be None
        return cls(g("input_tokens"), g("output_tokens"), g("cache_creation_input_tokens"),
                   g("cache_read_input_tokens"))

    def cost_usd(self, prices: tuple[float, float]) -> float:
        pin, pout = prices
        return (self.input_tokens * pin + self.output_tokens * pout
                + self.cache_creation_input_tokens * pin * CACHE_WRITE_MULT
                + self.cache_read_input_tokens * pin * CACHE_READ_MULT) / 1e6


class Budget:
    """A hard USD cap shared by concurrent requests.

    Before a request, `reserve(worst_case_usd)` books the most it could cost (input estimate plus
    `max_tokens` of output); it refuses when spent + booked + worst case would pass `max_usd`, so no
    request is sent that could cross the cap. `settle(booked, actual)` swaps the booking for the
    real cost from `usage`.
    """

    def __init__(self, max_usd: float, spent_usd: float = 0.0):
        if not max_usd > 0:
            raise ValueError(f"--max-usd must be > 0, got {max_usd}")
        self.max_usd, self.spent, self.reserved = float(max_usd), float(spent_usd), 0.0

    def reserve(self, worst_case_usd: float) -> bool:
        if self.spent + self.reserved + worst_case_usd > self.max_usd:
            return False
        self.reserved += worst_case_usd
        return True

    def settle(self, reserved_usd: float, actual_usd: float) -> None:
        self.reserved = max(0.0, self.reserved - reserved_usd)
        self.spent += actual_usd


def estimate_input_tokens(*texts: str) -> int:
    """A deliberately high token estimate for request text (chars / 3), used before any usage."""
    return math.ceil(sum(len(t) for t in texts) / CHARS_PER_TOKEN_LOW)


def sdk_http_module():
    """The httpx-style package the installed SDK speaks (`httpx2` in anthropic>=2.x, `httpx`
    before): a custom `http_client`/`transport` must come from it, or the SDK rejects it."""
    for cls in anthropic.DefaultAsyncHttpxClient.__mro__:
        if cls.__name__ == "AsyncClient":
            return importlib.import_module(cls.__module__.partition(".")[0])
    return importlib.import_module("httpx")


def make_client(*, http_client=None, max_retries: int = 4, base_url: Optional[str] = None,
                timeout_s: float = 300.0) -> "anthropic.AsyncAnthropic":
    """`AsyncAnthropic` with the key from `ANTHROPIC_API_KEY` (and nothing else).

    Args:
        http_client: an `AsyncClient` of `sdk_http_module()` (tests pass one with a MockTransport).
        max_retries: the SDK's own retries on 408/409/429/5xx.
    Raises:
        RuntimeError: when ANTHROPIC_API_KEY is unset or empty (the message never echoes a key).
    """
    key = os.environ.get("ANTHROPIC_API_KEY", "").strip()
    if not key:
        raise RuntimeError("ANTHROPIC_API_KEY is not set: export it (in Colab: "
                           "os.environ['ANTHROPIC_API_KEY'] = userdata.get(...)), or use --dry-run")
    return anthropic.AsyncAnthropic(api_key=key, max_retries=max_retries, base_url=base_url,
                                    http_client=http_client, timeout=timeout_s)


@dataclass
class Reply:
    """What one request produced: the `emit_trace` input (None if absent), why it is missing,
    token usage and the response's stop_reason."""
    trace: Optional[dict]
    problem: str
    usage: Usage
    stop_reason: Optional[str]


async def request_trace(client, *, model: str, system: str, user: str, tool_schema: dict,
                        max_tokens: int = 2048, temperature: Optional[float] = None,
                        outer_retries: int = 4, backoff_s: float = 5.0) -> Reply:
    """Ask for one trace with `emit_trace` forced; parse the tool_use block.

    Transient failures (rate limit, 5xx/overloaded, connection) that survive the SDK's retries are
    retried `outer_retries` more times after `backoff_s * 2**attempt` seconds.
    Raises:
        anthropic.APIError: a fatal error (bad request, auth, unknown model) at once, or a
            transient one after every retry is spent.
    """
    kwargs = dict(model=model, max_tokens=max_tokens, system=system,
                  messages=[{"role": "user", "content": user}],
                  tools=[{"name": "emit_trace", "description": "Emit one worked tool-use trace.",
                          "input_schema": tool_schema}],
                  tool_choice={"type": "tool", "name": "emit_trace"})
    if temperature is not None:   # not a create() parameter in anthropic>=2.x; older models take it
        kwargs["extra_body"] = {"temperature": temperature}
    for attempt in range(outer_retries + 1):
        try:
            msg = await client.messages.create(**kwargs)
            break
        except FATAL_ERRORS:
            raise
        except TRANSIENT_ERRORS as e:
            if attempt == outer_retries:
                raise
            wait = backoff_s * 2 ** attempt
            log.warning("transient API error (%s); retrying in %.1f s", type(e).__name__, wait)
            await asyncio.sleep(wait)
    usage = Usage.from_response(msg.usage)
    blocks = [b for b in msg.content if getattr(b, "type", None) == "tool_use"
              and getattr(b, "name", None) == "emit_trace"]
    if msg.stop_reason == "max_tokens":
        return Reply(None, f"response hit max_tokens={max_tokens} (trace cut off)", usage, msg.stop_reason)
    if not blocks:
        return Reply(None, "response has no emit_trace tool_use block", usage, msg.stop_reason)
    data = blocks[0].input
    if not isinstance(data, dict):
        return Reply(None, f"emit_trace input is {type(data).__name__}, not an object", usage, msg.stop_reason)
    return Reply(data, "", usage, msg.stop_reason)
