"""The Anthropic side of synthesis: client, one structured request, batches, prices and a budget.

The trace comes back through tool use: the request offers one tool, `emit_trace`, whose
`input_schema` is the trace format, and the model answers with one `tool_use` block whose `input`
is the trace (https://docs.anthropic.com/en/docs/build-with-claude/tool-use). Where the model
accepts it, `tool_choice={"type": "tool", "name": "emit_trace"}` forces that block; the 5.5
generation and Fable return a 400 for forced tool use (platform.claude.com, "What's new in Claude
Sonnet 5.5": "Forced tool use returns an error"), so for those the request sends
`tool_choice={"type": "auto"}` and the system prompt asks for the call; a reply without it is
rejected as malformed like any other. Nothing here runs our tools; the caller validates the trace
(`synth.validation`).

Retries: the SDK itself retries 408/409/429/5xx (529 "overloaded" included) `max_retries` times
with exponential backoff and honours `retry-after`; `request_trace` adds an outer loop with longer
waits for rate-limit/overload/connection errors that outlast the SDK's retries. A response that
cannot be read (invalid JSON in a 200, `content: null`, a non-object input) is one malformed reply,
never an exception that ends the run.

Message Batches (`submit_batch`, `wait_batch`, `batch_replies`): the same requests at half price,
processed on the server within 24 h (https://docs.anthropic.com/en/docs/build-with-claude/batch-processing).

The API key comes from `havoc_lite.secrets.get_secret("ANTHROPIC_API_KEY")` (Colab Secrets, then
the environment) and goes to the SDK only; it is never printed, logged or written anywhere.
"""
from __future__ import annotations

import asyncio
import importlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, AsyncIterator, Optional

import anthropic

from havoc_lite.secrets import get_secret

log = logging.getLogger("synth")

DEFAULT_MODEL = "claude-sonnet-5-5"   # the current Sonnet (claude-sonnet-4-5 reached end of life 2026-11-30)
# USD per million (input, output) tokens. Source: the model pages of platform.claude.com/docs
# (models/<name>/overview, "Pricing", read 2026-12-01) for every model the installed SDK
# (anthropic 2.14, `anthropic.types.Model`) lists and that has a public price; keys are ids
# without a date suffix. Cache writes (5 min) cost 1.25x input, cache reads 0.1x (same pages).
# Haiku 5.5's price holds for prompts up to 100K tokens (ours are ~2K); above, it is 5x.
# A model not listed (claude-fable-5, claude-opus-4-8, Mythos, older retired ones) needs
# --price-in/--price-out. claude-sonnet-4-5 left the SDK (anthropic 2.15) at its end of life.
PRICES_USD_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-haiku-5-5": (0.10, 0.50),
    "claude-sonnet-5-5": (2.0, 10.0),
    "claude-opus-5-5": (4.0, 20.0),
    "claude-fable-5-2": (8.0, 40.0),
    "claude-fable-5-1": (10.0, 50.0),
    "claude-sonnet-5": (2.0, 10.0),
    "claude-opus-5": (5.0, 25.0),
    "claude-opus-4-7": (5.0, 25.0),
    "claude-opus-4-6": (5.0, 25.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-haiku-4-5": (1.0, 5.0),
}
BATCH_DISCOUNT = 0.5          # Message Batches: 50% off input and output (same pages)
CACHE_WRITE_MULT, CACHE_READ_MULT = 1.25, 0.10
# Models that answer forced tool use with a 400 (see the module docstring); matched on the id
# without a date suffix.
NO_FORCED_TOOL_CHOICE = ("claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-5-5", "claude-fable-5-1",
                         "claude-fable-5-2")
# Upper bound on the tokens the API adds around our text (the tool-use system prompt is a few
# hundred tokens per the tool-use docs, plus message framing).
REQUEST_OVERHEAD_TOKENS = 1000
FATAL_ERRORS = (anthropic.AuthenticationError, anthropic.PermissionDeniedError,
                anthropic.NotFoundError, anthropic.BadRequestError)
TRANSIENT_ERRORS = (anthropic.RateLimitError, anthropic.InternalServerError,
                    anthropic.APIConnectionError)


def base_model(model: str) -> str:
    """A model id without a date suffix ("-20250929") or "-latest"."""
    return re.sub(r"-(\d{8}|latest)$", "", model.strip())


def price_for(model: str, price_in: Optional[float] = None,
              price_out: Optional[float] = None) -> tuple[float, float]:
    """(input, output) USD per million tokens for `model`.

    Explicit `price_in`/`price_out` win. Otherwise the id is looked up in PRICES_USD_PER_MTOK after
    dropping a date suffix ("-20250929") or "-latest". These are list prices; a batch costs
    `BATCH_DISCOUNT` times them.
    Raises:
        ValueError: for a model not in the table when either price is missing, or a negative price.
    """
    if price_in is not None and price_out is not None:
        if price_in < 0 or price_out < 0:
            raise ValueError("--price-in/--price-out must be >= 0 (USD per million tokens)")
        return float(price_in), float(price_out)
    base = base_model(model)
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
    def from_response(cls, usage: Any) -> Optional["Usage"]:
        """The counts of an SDK `usage` object or dict; None when it is missing or lacks the
        input/output counts (then nobody knows what was billed, and the caller charges the worst
        case)."""
        get = usage.get if isinstance(usage, dict) else lambda k, d=None: getattr(usage, k, d)
        if usage is None or get("input_tokens") is None or get("output_tokens") is None:
            return None
        try:
            return cls(*(int(get(k) or 0) for k in ("input_tokens", "output_tokens",
                                                    "cache_creation_input_tokens", "cache_read_input_tokens")))
        except (TypeError, ValueError):
            return None

    def cost_usd(self, prices: tuple[float, float], batch: bool = False) -> float:
        """USD for these tokens at `prices` (USD per million in/out), halved for a batch."""
        pin, pout = prices
        usd = (self.input_tokens * pin + self.output_tokens * pout
               + self.cache_creation_input_tokens * pin * CACHE_WRITE_MULT
               + self.cache_read_input_tokens * pin * CACHE_READ_MULT) / 1e6
        return usd * (BATCH_DISCOUNT if batch else 1.0)


class UsdBudget:
    """A hard USD cap shared by concurrent requests.

    Before a request, `reserve(worst_case_usd)` books the most it could cost (`worst_case_usd`:
    an upper bound on its input plus `max_tokens` of output); it refuses when spent + booked +
    worst case would pass `max_usd`, so no request is sent that could cross the cap.
    `settle(booked, actual)` swaps the booking for the real cost from `usage` (the booking itself
    when usage is missing).
    """

    def __init__(self, max_usd: float, spent_usd: float = 0.0, reserved_usd: float = 0.0):
        if not max_usd > 0:
            raise ValueError(f"--max-usd must be > 0, got {max_usd}")
        self.max_usd, self.spent, self.reserved = float(max_usd), float(spent_usd), float(reserved_usd)

    def reserve(self, worst_case_usd: float) -> bool:
        if self.spent + self.reserved + worst_case_usd > self.max_usd * (1 + 1e-12):
            return False
        self.reserved += worst_case_usd
        return True

    def settle(self, reserved_usd: float, actual_usd: float) -> None:
        self.reserved = max(0.0, self.reserved - reserved_usd)
        self.spent += actual_usd


def max_input_tokens(*texts: str) -> int:
    """An upper bound on the input tokens of a request made of `texts`: a token covers at least
    one character and a character at least one UTF-8 byte, so tokens <= bytes; plus
    REQUEST_OVERHEAD_TOKENS for what the API adds (tool-use system prompt, framing)."""
    return sum(len(t.encode("utf-8")) for t in texts) + REQUEST_OVERHEAD_TOKENS


def worst_case_usd(params: dict, prices: tuple[float, float], batch: bool = False) -> float:
    """The most one request (`build_request` body) can cost: `max_input_tokens` of its JSON at the
    input price plus `max_tokens` of output at the output price, halved for a batch."""
    usd = (max_input_tokens(json.dumps(params, ensure_ascii=False)) * prices[0]
           + params["max_tokens"] * prices[1]) / 1e6
    return usd * (BATCH_DISCOUNT if batch else 1.0)


def sdk_http_module():
    """The httpx-style package the installed SDK speaks (`httpx2` in anthropic>=2.x, `httpx`
    before): a custom `http_client`/`transport` must come from it, or the SDK rejects it."""
    for cls in anthropic.DefaultAsyncHttpxClient.__mro__:
        if cls.__name__ == "AsyncClient":
            return importlib.import_module(cls.__module__.partition(".")[0])
    return importlib.import_module("httpx")


def make_client(*, http_client=None, max_retries: int = 4, base_url: Optional[str] = None,
                timeout_s: float = 300.0) -> "anthropic.AsyncAnthropic":
    """`AsyncAnthropic` with the key from `get_secret("ANTHROPIC_API_KEY")` (Colab Secrets, then
    the environment), and nothing else.

    Args:
        http_client: an `AsyncClient` of `sdk_http_module()` (tests pass one with a MockTransport).
        max_retries: the SDK's own retries on 408/409/429/5xx.
    Raises:
        RuntimeError: when the key is set nowhere (the message never echoes a key).
    """
    key = get_secret("ANTHROPIC_API_KEY")
    if not key:
        raise RuntimeError("ANTHROPIC_API_KEY is not set: add it to Colab Secrets (the key icon) or "
                           "export it in the environment, or use --dry-run")
    return anthropic.AsyncAnthropic(api_key=key, max_retries=max_retries, base_url=base_url,
                                    http_client=http_client, timeout=timeout_s)


def build_request(*, model: str, system: str, user: str, tool_schema: dict, max_tokens: int = 2048,
                  temperature: Optional[float] = None) -> dict:
    """The Messages API body for one trace: the `emit_trace` tool, forced where the model allows
    (NO_FORCED_TOOL_CHOICE), and `temperature` only when given (newer models reject a
    non-default one). The same dict is a batch request's `params`."""
    forced = base_model(model) not in NO_FORCED_TOOL_CHOICE
    if not forced:
        system += "\nAnswer with exactly one emit_trace call and no other text."
    body = dict(model=model, max_tokens=max_tokens, system=system,
                messages=[{"role": "user", "content": user}],
                tools=[{"name": "emit_trace", "description": "Emit one worked tool-use trace.",
                        "input_schema": tool_schema}],
                tool_choice={"type": "tool", "name": "emit_trace"} if forced else {"type": "auto"})
    if temperature is not None:
        body["temperature"] = temperature
    return body


@dataclass
class Reply:
    """What one request produced: the `emit_trace` input (None if absent), why it is missing,
    token usage (None when the response had none) and the response's stop_reason."""
    trace: Optional[dict]
    problem: str
    usage: Optional[Usage]
    stop_reason: Optional[str]


def parse_message(msg: Any, max_tokens: int) -> Reply:
    """Read the `emit_trace` input out of a Message (SDK object or dict). Never raises: a response
    that cannot be read is a Reply with `trace=None` and the reason."""
    get = msg.get if isinstance(msg, dict) else lambda k, d=None: getattr(msg, k, d)
    try:
        usage = Usage.from_response(get("usage"))
        stop = get("stop_reason")
    except Exception:  # noqa: BLE001 - a response object we cannot read at all
        return Reply(None, f"malformed API response ({type(msg).__name__})", None, None)
    content = get("content")
    if not isinstance(content, list):
        return Reply(None, f"malformed API response: content is {type(content).__name__}, not a list",
                     usage, stop)
    bget = lambda b, k: b.get(k) if isinstance(b, dict) else getattr(b, k, None)  # noqa: E731
    blocks = [b for b in content if bget(b, "type") == "tool_use" and bget(b, "name") == "emit_trace"]
    if stop == "max_tokens":
        return Reply(None, f"response hit max_tokens={max_tokens} (trace cut off)", usage, stop)
    if not blocks:
        return Reply(None, "response has no emit_trace tool_use block", usage, stop)
    data = bget(blocks[0], "input")
    if not isinstance(data, dict):
        return Reply(None, f"emit_trace input is {type(data).__name__}, not an object", usage, stop)
    return Reply(data, "", usage, stop)


async def request_trace(client, params: dict, *, outer_retries: int = 4, backoff_s: float = 5.0) -> Reply:
    """Send one `build_request` body to the Messages API and parse the reply.

    Transient failures (rate limit, 5xx/overloaded, connection) that survive the SDK's retries are
    retried `outer_retries` more times after `backoff_s * 2**attempt` seconds. A 200 whose body is
    not valid JSON becomes a malformed Reply with no usage.
    Raises:
        anthropic.APIError: a fatal error (bad request, auth, unknown model) at once, or a
            transient one after every retry is spent.
    """
    kwargs = {k: v for k, v in params.items() if k != "temperature"}
    if "temperature" in params:   # not a create() parameter in anthropic>=2.x; older models take it
        kwargs["extra_body"] = {"temperature": params["temperature"]}
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
        except (ValueError, anthropic.APIResponseValidationError) as e:   # JSONDecodeError is a ValueError
            return Reply(None, f"malformed API response ({type(e).__name__}: {str(e)[:100]})", None, None)
    return parse_message(msg, params["max_tokens"])


# --- Message Batches ------------------------------------------------------------------------------
async def submit_batch(client, requests: list[tuple[str, dict]]) -> str:
    """Create a Message Batch of (custom_id, `build_request` body) pairs; returns the batch id.

    Raises:
        anthropic.APIError: as `messages.batches.create` does (after the SDK's retries).
    """
    batch = await client.messages.batches.create(
        requests=[{"custom_id": cid, "params": params} for cid, params in requests])
    return batch.id


async def wait_batch(client, batch_id: str, poll_s: float = 30.0) -> None:
    """Poll `batches.retrieve` every `poll_s` seconds until the batch's processing has ended.

    Transient errors while polling are logged and polled through (the batch lives on the server).
    Raises:
        anthropic.APIError: a fatal error (unknown batch id, auth).
    """
    while True:
        try:
            batch = await client.messages.batches.retrieve(batch_id)
            if batch.processing_status == "ended":
                return
            c = batch.request_counts
            log.info("batch %s: %s (%d processing, %d succeeded)", batch_id, batch.processing_status,
                     c.processing, c.succeeded)
        except FATAL_ERRORS:
            raise
        except TRANSIENT_ERRORS as e:
            log.warning("polling batch %s: %s; polling on", batch_id, type(e).__name__)
        await asyncio.sleep(poll_s)


class BatchResultsUnreadable(Exception):
    """The results file of a batch broke off or held a line that is not JSON."""


async def batch_replies(client, batch_id: str, max_tokens: int) -> AsyncIterator[tuple[str, Optional[Reply], str]]:
    """(custom_id, Reply, "") for each succeeded request of an ended batch, and (custom_id, None,
    why) for one that errored, expired or was canceled (those are not billed).

    Raises:
        BatchResultsUnreadable: after the readable results, when the file has a line that is not
            JSON (or a result of an unknown shape); the caller decides about the rest.
    """
    results = await client.messages.batches.results(batch_id)
    try:
        async for item in results:
            kind = getattr(item.result, "type", None)
            if kind == "succeeded":
                yield item.custom_id, parse_message(item.result.message, max_tokens), ""
            else:
                err = getattr(getattr(item.result, "error", None), "error", None)
                yield item.custom_id, None, f"{kind}: {getattr(err, 'message', '') or ''}"[:200]
    except (ValueError, AttributeError, TypeError) as e:   # JSONDecodeError is a ValueError
        raise BatchResultsUnreadable(f"{type(e).__name__}: {str(e)[:100]}") from None
