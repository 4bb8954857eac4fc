"""A fake Anthropic endpoint for the synth tests: an `httpx` MockTransport that answers the
Messages API and the Message Batches API (create, retrieve, results) from a script, so retries,
parsing, usage and cost go through the real `anthropic` SDK code. No network."""
import json
import re

import pytest

from synth.claude import sdk_http_module
from synth.generate import GenerateArgs, side_paths

KEY = "sk-ant-test-DO-NOT-LEAK-7f3a91c2"
hx = sdk_http_module()


def good_trace(i: int, stated=None, answer=None) -> dict:
    a, b = i + 2, 3 + i % 5
    step = {"content": f"Add {b} to {a}.", "tool_call": {"name": "calculator", "args": {"expression": f"{a}+{b}"}}}
    if stated is not None:
        step["tool_result"] = {"status": "success", "result": stated}
    return {"question": f"Problem {i}: Tom has {a} apples and buys {b} more. How many apples does he have?",
            "reasoning": [step], "answer": answer if answer is not None else f"{a + b} apples"}


def message(input_obj=None, in_tok=800, out_tok=300, stop="tool_use", text=None) -> dict:
    content = [{"type": "text", "text": text}] if text is not None else \
        [{"type": "tool_use", "id": "toolu_01", "name": "emit_trace", "input": input_obj}]
    return {"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": in_tok, "output_tokens": out_tok}}


def index_of(body: dict) -> int:
    """The example index of a Messages request body (from its user prompt)."""
    assert body["tool_choice"] in ({"type": "tool", "name": "emit_trace"}, {"type": "auto"})
    assert body["tools"][0]["name"] == "emit_trace"
    return int(re.search(r"Write example #(\d+)\.", body["messages"][0]["content"]).group(1))


class Fake:
    """A scripted endpoint: `reply(i, n)` -> (status, body) for example index i on call n (body: a
    dict sent as JSON, or bytes sent as they are). Batches: `POST /v1/messages/batches` stores the
    requests; `GET .../{id}` reports "in_progress" for the first `polls_to_end - 1` polls of that id,
    then "ended"; `GET .../{id}/results` answers each stored request with `reply` (a 200 becomes a
    succeeded result, anything else an errored one). `on_poll(batch_id, n)` and `on_create(batch_id)`
    may raise (a kill; on_create after the server made the batch).
    The state (`batches`, `billed`) is the server's: give the same Fake to a re-run."""

    def __init__(self, reply, polls_to_end: int = 1, on_poll=None, on_create=None):
        self.reply, self.calls, self.indices, self.keys = reply, 0, [], set()
        self.polls_to_end, self.on_poll, self.on_create = polls_to_end, on_poll, on_create
        self.batches: dict[str, list] = {}
        self.created = 0
        self.garble_results = False
        self.polls: list[str] = []
        self.results_fetched: list[str] = []
        self.billed_usage: list[dict] = []   # usage of every 200 the server produced
        self.bodies: list[dict] = []         # Messages API request bodies (direct requests)

    def __call__(self, request):
        # the SDK sends the key as x-api-key (1.x) or as a bearer token (2.x)
        self.keys.add(request.headers.get("x-api-key")
                      or request.headers.get("authorization", "").removeprefix("Bearer "))
        path = request.url.path
        if path == "/v1/messages/batches" and request.method == "POST":
            bid = f"msgbatch_{self.created:04d}"
            self.created += 1
            self.batches[bid] = json.loads(request.content)["requests"]
            if self.on_create:
                self.on_create(bid)
            return hx.Response(200, json=self.batch_json(bid, ended=False))
        m = re.fullmatch(r"/v1/messages/batches/([^/]+)(/results)?", path)
        if m and m.group(2):
            self.results_fetched.append(m.group(1))
            out = []
            for r in self.batches[m.group(1)]:
                status, body = self.answer(index_of(r["params"]))
                result = {"type": "succeeded", "message": body} if status == 200 else \
                    {"type": "errored", "error": body}
                out.append(json.dumps({"custom_id": r["custom_id"], "result": result}))
            if self.garble_results:     # a line that is not JSON after the first result
                out.insert(1, '{"custom_id": "arithmetic-s0-0000')
            return hx.Response(200, content=("\n".join(out) + "\n").encode(),
                               headers={"content-type": "application/binary"})
        if m:
            bid = m.group(1)
            if bid not in self.batches:
                return hx.Response(404, json={"type": "error", "error": {"type": "not_found_error",
                                                                         "message": "no such batch"}})
            self.polls.append(bid)
            if self.on_poll:
                self.on_poll(bid, self.polls.count(bid))
            return hx.Response(200, json=self.batch_json(bid, ended=self.polls.count(bid) >= self.polls_to_end))
        self.bodies.append(json.loads(request.content))
        status, body = self.answer(index_of(self.bodies[-1]))
        headers = {"retry-after-ms": "1"} if status != 200 else {}
        if isinstance(body, bytes):
            return hx.Response(status, content=body, headers={"content-type": "application/json", **headers})
        return hx.Response(status, json=body, headers=headers)

    def answer(self, i: int):
        self.calls += 1
        self.indices.append(i)
        status, body = self.reply(i, self.calls)
        if status == 200 and isinstance(body, dict) and isinstance(body.get("usage"), dict):
            self.billed_usage.append(body["usage"])
        return status, body

    def batch_json(self, bid: str, ended: bool) -> dict:
        n = len(self.batches[bid])
        return {"id": bid, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
                "request_counts": {"processing": 0 if ended else n, "succeeded": n if ended else 0,
                                   "errored": 0, "canceled": 0, "expired": 0},
                "created_at": "2026-12-01T06:00:00Z", "expires_at": "2026-12-02T06:00:00Z",
                "ended_at": "2026-12-01T06:05:00Z" if ended else None, "archived_at": None,
                "cancel_initiated_at": None,
                "results_url": f"https://api.anthropic.com/v1/messages/batches/{bid}/results" if ended else None}

    def client(self):
        return hx.AsyncClient(transport=hx.MockTransport(self))


def args(tmp_path, **kw) -> GenerateArgs:
    """Run options for the tests: the arithmetic topic, a priced model, direct requests."""
    base = dict(topic="arithmetic", num_examples=3, output=str(tmp_path / "traces.jsonl"),
                model="claude-haiku-4-5", max_usd=1.0, concurrency=2, max_tokens=1024,
                backoff_s=0.001, max_retries=2, batch=False, poll_s=0.0)
    base.update(kw)
    return GenerateArgs(**base)


def lines(path) -> list[dict]:
    return [json.loads(x) for x in open(path, encoding="utf-8")]


def outcomes(out) -> list[dict]:
    """The ledger's outcome lines (one per finished request; reservations and batch lines left out)."""
    return [r for r in lines(side_paths(out)[0]) if "id" in r]


# Shared fixtures: a test module imports them by name (pytest collects fixtures from its namespace).
@pytest.fixture(scope="module")
def registry():
    from havoc_lite.tools import default_registry
    reg = default_registry()
    yield reg
    reg.close()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
