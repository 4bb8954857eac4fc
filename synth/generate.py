"""`python -m synth.generate`: verified tool-use traces from Claude.

    python -m synth.generate --topic stats_tests --num-examples 1000 \
        --output data/tool_traces.jsonl --max-usd 5              # Message Batches, half price
    python -m synth.generate --topic arithmetic --num-examples 20 --no-batch --concurrency 4

For each index i = 0, 1, 2, ... the run asks Claude (the `emit_trace` tool, see `synth.claude`)
for one trace in a category and complexity chosen round-robin from the topic spec, validates it with
the real tools (`synth.validation`), and appends kept traces to `--output`. By default the requests go
as Message Batches (half price; the run polls until the batch ends, usually minutes, at most 24 h);
`--no-batch` sends them one by one, `--concurrency` at a time. It stops when `--num-examples`
traces are kept, `--max-attempts` indices are used, or one more request could cross `--max-usd`.

Files (next to `--output`, e.g. data/tool_traces.jsonl):
  tool_traces.jsonl          kept traces, append-only, flushed and fsynced after each one
  tool_traces.ledger.jsonl   `synth.ledger`: each request's worst case booked before it is sent,
                             the batch id once the server has it, and one line per outcome (kept
                             or the reject reason, tokens, USD); fsynced
  tool_traces.report.json    counts kept / rejected per reason, tokens, cost (rewritten atomically)

Ids are `{topic}-s{seed}-{i:06d}`, so `--resume` knows exactly which indices are done (kept or
rejected) and sends only the others, and a batch still on the server is polled again rather than
sent twice. A crash or a Colab disconnect never duplicates a line; requests in flight at a kill are
charged their worst case (they may have been billed) and tried again. The USD cap counts the spend
of earlier runs in the ledger. Exit codes: 0 done (or budget / max-attempts reached), 1 stopped on
API errors, 2 bad input or a fatal API error.

From a notebook: `run_generation(GenerateArgs(...))` works inside Jupyter's running event loop;
`estimate_total(topics, num_examples, model, batch=True)` gives the cost of a cell's topics for a
confirmation box before anything is spent.

Topic specs: `--topic NAME` reads `synth/topics/NAME.yaml`; `--topic path/to/spec.yaml` reads a
spec of your own with the same fields (name, description, tool, system_prompt, complexity_levels,
categories with name/description/examples).
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import anthropic

from .aio import run_sync
from .batches import run_batches
from .claude import (BATCH_DISCOUNT, DEFAULT_MODEL, FATAL_ERRORS, Reply, Usage, UsdBudget, build_request,
                     make_client, price_for, request_trace, worst_case_usd)
from .ledger import Ledger, append_line, read_jsonl_repair
from .spec import TopicSpec, load_topic, trace_schema, system_prompt, plan, user_prompt, trace_id
from .validation import REJECT_REASONS, Deduper, Verdict, validate_trace

log = logging.getLogger("synth")
TOOL_USE_OVERHEAD_TOKENS = 400   # the system prompt the API adds for tool use (a few hundred tokens)
TYPICAL_OUTPUT_TOKENS = 1000     # a trace of a few steps (+ some thinking); only for the estimates


# --- files ----------------------------------------------------------------------------------------
def side_paths(output: Path) -> tuple[Path, Path]:
    """(ledger, report) paths next to the output file."""
    return output.with_name(output.stem + ".ledger.jsonl"), output.with_name(output.stem + ".report.json")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --- the run --------------------------------------------------------------------------------------
@dataclass
class GenerateArgs:
    """Generate verified tool-use traces with Claude (key: ANTHROPIC_API_KEY in Colab Secrets or
    the environment)."""
    topic: str = "stats_tests"
    """topic name (synth/topics/NAME.yaml) or a path to your own spec"""
    num_examples: int = 100
    """traces to keep"""
    output: str = "data/tool_traces.jsonl"
    model: str = DEFAULT_MODEL
    max_usd: float = 5.0
    """hard cap on spend, USD, across resumed runs of this output"""
    batch: bool = True
    """send through the Message Batches API (half price, results within 24 h, usually minutes);
    --no-batch sends requests one by one (--concurrency at a time) for quick runs"""
    concurrency: int = 4
    """requests in flight at once without --batch"""
    resume: bool = False
    """continue an existing output: skip indices already kept or rejected, poll a batch still on
    the server"""
    dry_run: bool = False
    """print the prompts and the cost estimate; send nothing"""
    seed: int = 0
    price_in: Optional[float] = None
    """USD per million input tokens (required for a model without a price on file)"""
    price_out: Optional[float] = None
    """USD per million output tokens"""
    max_tokens: int = 4096
    """output cap per request, thinking included (it bounds the worst-case cost too)"""
    temperature: Optional[float] = None
    """sampling temperature, sent only when given (newer models reject a non-default one)"""
    max_attempts: Optional[int] = None
    """indices to try at most (default 2 * num_examples + 10)"""
    max_retries: int = 4
    """SDK retries on 429/5xx/overloaded"""
    backoff_s: float = 5.0
    """first wait of our own retry loop after the SDK's retries (doubles each time)"""
    poll_s: float = 30.0
    """seconds between two polls of a batch"""
    base_url: Optional[str] = None


def _check_args(args: GenerateArgs) -> None:
    for name in ("num_examples", "concurrency", "max_tokens"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if args.max_attempts is not None and args.max_attempts <= 0:
        raise ValueError(f"--max-attempts must be > 0, got {args.max_attempts}")
    if not args.max_usd > 0:
        raise ValueError(f"--max-usd must be > 0, got {args.max_usd}")
    if not args.poll_s >= 0:
        raise ValueError(f"--poll-s must be >= 0, got {args.poll_s}")


def _estimate(args: GenerateArgs, spec: TopicSpec, system: str, schema: dict,
              prices: tuple[float, float]) -> dict:
    """Typical and worst-case USD of a run of `args` on `spec` (batch discount applied when
    `args.batch`). Typical: every index kept, chars/3 input tokens, TYPICAL_OUTPUT_TOKENS output.
    Worst: every one of max_attempts requests at `worst_case_usd`."""
    params = build_request(model=args.model, system=system, user=user_prompt(spec, 0, args.seed),
                           tool_schema=schema, max_tokens=args.max_tokens, temperature=args.temperature)
    in_tok = math.ceil(len(json.dumps(params)) / 3) + TOOL_USE_OVERHEAD_TOKENS   # chars/3: on the high side
    mult = BATCH_DISCOUNT if args.batch else 1.0
    n = args.num_examples
    typical = mult * n * (in_tok * prices[0] + TYPICAL_OUTPUT_TOKENS * prices[1]) / 1e6
    worst = (args.max_attempts or 2 * n + 10) * worst_case_usd(params, prices, args.batch)
    return {"input_tokens_per_request": in_tok, "typical_usd": round(typical, 4),
            "worst_case_usd": round(worst, 4), "capped_at_usd": args.max_usd, "batch": args.batch}


def estimate_total(topics: list[str], num_examples: int, model: str = DEFAULT_MODEL, batch: bool = True,
                   max_usd: Optional[float] = None, max_tokens: int = 4096, price_in: Optional[float] = None,
                   price_out: Optional[float] = None, registry=None) -> dict:
    """The estimated cost of generating `num_examples` traces for each topic, for a confirmation
    checkbox before spending. Sends nothing and needs no key.

    Args:
        topics: topic names or spec paths, as `--topic` takes them.
        max_usd: the per-topic `--max-usd` the runs will get; the total can never pass
            `len(topics) * max_usd`.
    Returns: {"topics": {name: {"typical_usd", "worst_case_usd", ...}}, "typical_usd",
        "worst_case_usd", "capped_usd" (the most the runs can spend: the worst case, capped by
        max_usd per topic), "model", "batch", "prices" (USD per million in/out, before the batch
        discount)}.
    Raises:
        ValueError: an unknown topic, a model with no price on file (pass price_in/price_out).
    """
    prices = price_for(model, price_in, price_out)
    if registry is None:
        from havoc_lite.tools import default_registry
        registry = default_registry()
    per = {}
    for topic in topics:
        spec = load_topic(topic)
        args = GenerateArgs(topic=topic, num_examples=num_examples, model=model, batch=batch,
                            max_tokens=max_tokens, max_usd=max_usd or 1.0)
        per[spec.name] = _estimate(args, spec, system_prompt(spec, registry), trace_schema(spec.tool, spec.roles), prices)
    worst = sum(e["worst_case_usd"] for e in per.values())
    capped = sum(min(e["worst_case_usd"], max_usd) if max_usd else e["worst_case_usd"] for e in per.values())
    return {"topics": per, "typical_usd": round(sum(e["typical_usd"] for e in per.values()), 4),
            "worst_case_usd": round(worst, 4), "capped_usd": round(capped, 4), "model": model,
            "batch": batch, "prices": {"input": prices[0], "output": prices[1]}}


class _Run:
    """One generation run: the files, the budget, the counts, and how a reply becomes a line."""

    def __init__(self, args: GenerateArgs, spec: TopicSpec, registry, system: str, schema: dict,
                 prices: tuple[float, float]):
        self.args, self.spec, self.registry, self.system, self.schema = args, spec, registry, system, schema
        self.prices = prices
        self.out_path = Path(args.output)
        ledger_path, self.report_path = side_paths(self.out_path)
        if not args.resume and ((self.out_path.exists() and self.out_path.stat().st_size) or ledger_path.exists()):
            raise FileExistsError(f"{self.out_path} (or its ledger) already exists: pass --resume to "
                                  "continue it, or choose another --output")
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        kept_rows = read_jsonl_repair(self.out_path)
        self.ledger = Ledger(ledger_path)
        self.fout = open(self.out_path, "a", encoding="utf-8")
        self.dedupe = Deduper(r["question"] for r in kept_rows if isinstance(r.get("question"), str))
        self.kept_ids = {r.get("id") for r in kept_rows}
        self.state = {"kept": len(kept_rows), "rejected": {r: 0 for r in REJECT_REASONS}, "corrected": 0,
                      "requests": 0, "api_errors": 0, "interrupted": 0, "input_tokens": 0,
                      "output_tokens": 0, "examples": {}}
        for r in self.ledger.outcomes:
            self._count(r)
        self.budget = UsdBudget(args.max_usd, self.ledger.spent, self.ledger.reserved)
        self.max_attempts = args.max_attempts or 2 * args.num_examples + 10
        self.stop: dict = {"reason": None, "error": None}
        self.batch_ids: list[str] = []
        self.run_tag = os.urandom(4).hex()
        self.n_attempts = 0
        self.bar = None   # a tqdm bar while running

    def _count(self, r: dict) -> None:
        o = r.get("outcome")
        if o == "api_error":
            self.state["api_errors"] += 1
        elif o == "interrupted":
            self.state["interrupted"] += 1
        else:
            self.state["requests"] += 1
            if o != "kept":
                self.state["rejected"][o or "malformed"] = self.state["rejected"].get(o or "malformed", 0) + 1
                ex = self.state["examples"].setdefault(o or "malformed", [])
                if len(ex) < 5:
                    ex.append({"id": r.get("id"), "detail": str(r.get("detail", ""))[:300]})
        self.state["corrected"] += int(r.get("corrected", 0))
        self.state["input_tokens"] += int(r.get("input_tokens", 0))
        self.state["output_tokens"] += int(r.get("output_tokens", 0))

    def attempt_id(self) -> str:
        self.n_attempts += 1
        return f"{self.run_tag}-{self.n_attempts}"

    def params(self, i: int) -> dict:
        return build_request(model=self.args.model, system=self.system, user=user_prompt(self.spec, i, self.args.seed),
                             tool_schema=self.schema, max_tokens=self.args.max_tokens,
                             temperature=self.args.temperature)

    def pending(self):
        """Indices not done yet (a kill's in-flight ones and API errors are tried again)."""
        done = self.ledger.done | self.kept_ids
        return (i for i in range(self.max_attempts) if trace_id(self.spec, self.args.seed, i) not in done)

    async def record(self, i: int, reply: Optional[Reply], worst: float, attempt: str, *,
                     batch: bool = False, error: str = "") -> bool:
        """Validate one reply, append the trace if kept, and its outcome to the ledger; settle the
        budget on `usage` (the worst case when there is none; nothing for an API error, which is
        not billed). Returns whether the trace was kept."""
        tid = trace_id(self.spec, self.args.seed, i)
        if reply is None:      # an API error: not billed, the index stays to do
            self.budget.settle(worst, 0.0)
            rec = {"id": tid, "outcome": "api_error", "detail": error[:300], "usd": 0.0, "attempt": attempt}
            self.ledger.outcome(rec)
            self._count(rec)
            return False
        usd = worst if reply.usage is None else reply.usage.cost_usd(self.prices, batch)
        if reply.usage is not None and usd > worst * (1 + 1e-9):
            log.warning("request %s cost $%.5f, more than its booked worst case $%.5f", tid, usd, worst)
        self.budget.settle(worst, usd)
        cat, lvl, _ = plan(self.spec, i, self.args.seed)
        if reply.trace is None:
            verdict = Verdict(False, None, "malformed", reply.problem)
        else:
            raw = {k: reply.trace[k] for k in ("question", "reasoning", "answer", "tool_result") if k in reply.trace}
            trace = {"id": tid, "topic": self.spec.name, "source": f"claude:{self.args.model}",
                     "category": cat.name, "complexity": lvl.name, **raw}
            verdict = await asyncio.to_thread(validate_trace, trace, self.registry, allowed_tools=[self.spec.tool])
            if verdict.ok and self.dedupe.seen(verdict.trace["question"]):
                verdict = Verdict(False, None, "duplicate", "question seen before (normalised hash)")
        if verdict.ok:
            append_line(self.fout, verdict.trace)
            self.state["kept"] += 1
            self.kept_ids.add(tid)
            if self.bar is not None:
                self.bar.update(1)
        u = reply.usage or Usage()
        rec = {"id": tid, "outcome": "kept" if verdict.ok else verdict.reason,
               "detail": verdict.detail[:300], "corrected": verdict.corrected,
               "input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
               "cache_read_input_tokens": u.cache_read_input_tokens,
               "cache_creation_input_tokens": u.cache_creation_input_tokens,
               "usage_missing": reply.usage is None, "usd": usd, "attempt": attempt}
        if batch:
            rec["batch"] = True
        self.ledger.outcome(rec)
        self._count(rec)
        write_atomic(self.report_path, json.dumps(self.report(), indent=2))
        return verdict.ok

    def interrupted(self, tid: str, worst: float, attempt: str, why: str) -> None:
        """Close a booked request whose outcome is unknown: charged its worst case (it may have
        been billed), its index tried again."""
        rec = {"id": tid, "outcome": "interrupted", "usd": worst, "attempt": attempt, "detail": why[:300]}
        self.ledger.outcome(rec)
        self._count(rec)
        self.budget.settle(worst, worst)

    def report(self) -> dict:
        st = self.state
        return {"topic": self.spec.name, "model": self.args.model, "output": str(self.out_path),
                "batch": self.args.batch, "batch_ids": self.batch_ids,
                "kept": st["kept"], "rejected_total": sum(st["rejected"].values()),
                "rejected": st["rejected"], "corrected_tool_results": st["corrected"],
                "requests": st["requests"], "api_errors": st["api_errors"], "interrupted": st["interrupted"],
                "input_tokens": st["input_tokens"], "output_tokens": st["output_tokens"],
                "usd_spent": round(self.budget.spent, 6), "max_usd": self.args.max_usd,
                "price_usd_per_mtok": {"input": self.prices[0], "output": self.prices[1]},
                "stop_reason": self.stop["reason"], "reject_examples": st["examples"]}

    def close(self) -> dict:
        if self.stop["reason"] is None:
            self.stop["reason"] = "done" if self.state["kept"] >= self.args.num_examples else "interrupted"
        rep = self.report()
        write_atomic(self.report_path, json.dumps(rep, indent=2))
        self.fout.close()
        self.ledger.close()
        if self.stop["error"]:
            rep["error"] = self.stop["error"]
        return rep


async def _direct(run: _Run, client) -> None:
    """Requests one by one, `concurrency` at a time, until enough are kept, the indices run out,
    the budget cannot cover one more worst case, or the API keeps failing."""
    args, budget = run.args, run.budget
    pending, inflight, consecutive_errors = run.pending(), [0], [0]

    async def one(i: int) -> None:
        params = run.params(i)
        worst = worst_case_usd(params, run.prices)
        if not budget.reserve(worst):
            run.stop["reason"] = run.stop["reason"] or "budget"
            return
        attempt = run.attempt_id()
        run.ledger.reserve(attempt, {trace_id(run.spec, args.seed, i): worst})   # before sending
        try:
            reply = await request_trace(client, params, backoff_s=args.backoff_s)
        except FATAL_ERRORS as e:
            await run.record(i, None, worst, attempt, error=f"{type(e).__name__}: {e}")
            run.stop["reason"], run.stop["error"] = "fatal_api_error", f"{type(e).__name__}: {e}"
            return
        except anthropic.APIError as e:   # transient errors after every retry
            await run.record(i, None, worst, attempt, error=f"{type(e).__name__}: {e}")
            consecutive_errors[0] += 1
            log.warning("request %s failed after retries: %s", i, type(e).__name__)
            if consecutive_errors[0] >= max(3, 2 * args.concurrency):
                run.stop["reason"], run.stop["error"] = "api_errors", f"{type(e).__name__}: {e}"
            return
        consecutive_errors[0] = 0
        await run.record(i, reply, worst, attempt)

    async def worker() -> None:
        while run.stop["reason"] is None and run.state["kept"] + inflight[0] < args.num_examples:
            i = next(pending, None)
            if i is None:
                run.stop["reason"] = run.stop["reason"] or "max_attempts"
                return
            inflight[0] += 1     # counted until its outcome is recorded, so workers never overshoot
            try:
                await one(i)
            finally:
                inflight[0] -= 1

    await asyncio.gather(*(worker() for _ in range(max(1, args.concurrency))))


async def _run(run: _Run, client) -> dict:
    from tqdm.auto import tqdm
    args = run.args
    run.bar = tqdm(total=args.num_examples, initial=min(run.state["kept"], args.num_examples),
                   desc=f"synth {run.spec.name}", unit="trace", disable=None)
    try:
        if args.batch:
            await run_batches(run, client)
        else:
            await _direct(run, client)
    except FATAL_ERRORS as e:   # polling a batch the server does not know, a revoked key
        run.stop["reason"], run.stop["error"] = "fatal_api_error", f"{type(e).__name__}: {e}"
    finally:
        run.bar.close()
        await client.close()
        rep = run.close()
    return rep


def run_generation(args: GenerateArgs, *, http_client=None, registry=None) -> dict:
    """Run (or dry-run) a generation and return the report dict (also written as JSON).

    Works from a script and from a notebook cell (whose event loop is already running: the run
    then goes on a worker thread, `synth.aio.run_sync`).

    Args:
        args: the CLI options.
        http_client: an `AsyncClient` for the SDK (tests pass one with a mock transport).
        registry: a ToolRegistry (default `havoc_lite.tools.default_registry()`).
    Raises:
        ValueError: bad topic spec (file + field), unknown tool, unknown model price, bad option.
        FileExistsError: output exists and --resume was not given.
        RuntimeError: ANTHROPIC_API_KEY unset (not for --dry-run), or a fatal API error (bad
            request, authentication, unknown model) after the files are closed intact.
    """
    _check_args(args)
    spec = load_topic(args.topic)
    prices = price_for(args.model, args.price_in, args.price_out)
    if registry is None:
        from havoc_lite.tools import default_registry
        registry = default_registry()
    if spec.tool not in registry.names:
        raise ValueError(f"{spec.path}: field 'tool' names {spec.tool!r}, which is not a registered "
                         f"tool ({', '.join(registry.names)})")
    system, schema = system_prompt(spec, registry), trace_schema(spec.tool, spec.roles)
    if args.dry_run:
        est = _estimate(args, spec, system, schema, prices)
        print(f"=== system prompt ===\n{system}\n\n=== emit_trace input_schema ===\n"
              f"{json.dumps(schema, indent=2)}")
        for i in range(min(2, args.num_examples)):
            print(f"\n=== user prompt #{i} (id {trace_id(spec, args.seed, i)}) ===\n{user_prompt(spec, i, args.seed)}")
        print(f"\n=== cost estimate ({args.model}, ${prices[0]}/${prices[1]} per M tokens in/out"
              f"{', batch: half price' if args.batch else ''}) ===\n"
              f"~{est['input_tokens_per_request']} input tokens a request; {args.num_examples} traces "
              f"at ~{TYPICAL_OUTPUT_TOKENS} output tokens: ~${est['typical_usd']:.2f}; worst case "
              f"(every attempt, max_tokens={args.max_tokens}): ${est['worst_case_usd']:.2f}; "
              f"hard cap --max-usd ${args.max_usd:.2f}. Nothing was sent.")
        return {"dry_run": True, **est}
    # the client first: a missing key fails before any file is touched
    client = make_client(http_client=http_client, max_retries=args.max_retries, base_url=args.base_url)
    run = _Run(args, spec, registry, system, schema, prices)
    rep = run_sync(_run(run, client))
    if rep["stop_reason"] == "fatal_api_error":
        raise RuntimeError(f"the API refused the request ({rep.get('error')}); files are intact")
    return rep


def main(argv: Optional[list[str]] = None) -> None:
    """CLI. Exit 0 when the run ends normally (done, budget, max_attempts), 1 when it stopped on
    API errors, 2 on bad input or a fatal API error, each with one line on stderr."""
    import tyro
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = tyro.cli(GenerateArgs, args=argv)
    try:
        rep = run_generation(args)
    except (ValueError, FileExistsError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    if rep.get("dry_run"):
        return
    print(f"kept {rep['kept']} traces in {rep['output']}; rejected {rep['rejected_total']} "
          f"({', '.join(f'{k}: {v}' for k, v in rep['rejected'].items() if v)}); "
          f"spent ${rep['usd_spent']:.4f} of ${rep['max_usd']:.2f}; stopped: {rep['stop_reason']}")
    if rep["stop_reason"] in ("api_errors", "interrupted"):
        print(f"error: the run stopped on API errors ({rep.get('error', 'see the log')}); "
              "re-run with --resume to continue", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
