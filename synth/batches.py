"""The Message Batches path of `synth.generate` (half price; `--no-batch` sends requests one by one).

A round books each request's worst case in the ledger before the batch exists, submits the round
as one batch, polls it until it ends and records every result; a batch a killed run left on the
server is polled again first, and one that is gone is charged its worst case and redone. `run` is
`synth.generate`'s run state (its ledger, budget, pending indices and `record`).
"""
from __future__ import annotations

import logging
import math

import anthropic

from .claude import (FATAL_ERRORS, BatchResultsUnreadable, batch_replies, submit_batch, wait_batch,
                     worst_case_usd)
from .spec import trace_id

log = logging.getLogger("synth")
BATCH_OVERSHOOT = 1.25           # a batch round asks for 25% more than still needed (some are rejected)
MAX_BATCH_REQUESTS = 100_000     # the API's limit on requests per batch


async def finish_batch(run, client, batch_id: str, attempt: str, usd: dict[str, float]) -> None:
    """Poll a batch until it ends, then record each of its results that has no outcome yet
    (`usd`: those ids and their booked worst case)."""
    run.batch_ids.append(batch_id)
    await wait_batch(client, batch_id, run.args.poll_s)
    index = {trace_id(run.spec, run.args.seed, i): i for i in range(run.max_attempts)}
    left = dict(usd)
    try:
        async for cid, reply, error in batch_replies(client, batch_id, run.args.max_tokens):
            if cid in left and cid in index:
                await run.record(index[cid], reply, left.pop(cid), attempt, batch=True, error=error)
    except BatchResultsUnreadable as e:   # the rest may have been billed: charge their worst case
        log.warning("batch %s: results unreadable after %d of %d (%s); charging the other %d their "
                    "worst case and trying them again", batch_id, len(usd) - len(left), len(usd), e, len(left))
        for cid, w in sorted(left.items()):
            run.interrupted(cid, w, attempt, f"batch {batch_id}: results unreadable ({e})")
        left = {}
    for cid, w in sorted(left.items()):   # no result for it: the server never ran it (not billed)
        await run.record(index[cid], None, w, attempt, error="no result in the batch")
    run.ledger.batch_done(batch_id)


async def run_batches(run, client) -> None:
    """Finish any batch a killed run left on the server, then submit rounds of requests as one
    batch each until enough traces are kept, the indices run out or the budget is spent. A round
    asks for BATCH_OVERSHOOT times what is still needed; every trace it returns that passes is
    kept (it is paid for), so a run may keep a few more than --num-examples."""
    args = run.args
    for b in run.ledger.open_batches:
        log.info("polling batch %s left by an earlier run (%d results to record)", b.batch_id, len(b.usd))
        try:
            await finish_batch(run, client, b.batch_id, b.attempt, b.usd)
        except anthropic.NotFoundError:   # deleted, or its results are gone (29 days): what it cost is unknown
            log.warning("batch %s is no longer on the server: charging its %d unrecorded requests their "
                        "worst case and trying them again", b.batch_id, len(b.usd))
            for tid, w in b.usd.items():
                run.interrupted(tid, w, b.attempt, f"batch {b.batch_id} not found on the server")
            run.ledger.batch_done(b.batch_id)
    pending = run.pending()
    while run.state["kept"] < args.num_examples:
        need = args.num_examples - run.state["kept"]
        size = min(math.ceil(need * BATCH_OVERSHOOT) + 2, MAX_BATCH_REQUESTS)
        usd, requests = {}, []
        for i in pending:
            params = run.params(i)
            worst = worst_case_usd(params, run.prices, batch=True)
            if not run.budget.reserve(worst):
                run.stop["reason"] = "budget"
                break
            tid = trace_id(run.spec, args.seed, i)
            usd[tid] = worst
            requests.append((tid, params))
            if len(requests) == size:
                break
        if not requests:
            run.stop["reason"] = run.stop["reason"] or "max_attempts"
            return
        attempt = run.attempt_id()
        run.ledger.reserve(attempt, usd)                       # before the batch exists
        try:
            batch_id = await submit_batch(client, requests)
        except anthropic.APIError as e:   # not created: nothing billed
            for tid, w in usd.items():
                await run.record(int(tid.rsplit("-", 1)[1]), None, w, attempt, error=f"{type(e).__name__}: {e}")
            run.stop["reason"] = "fatal_api_error" if isinstance(e, FATAL_ERRORS) else "api_errors"
            run.stop["error"] = f"{type(e).__name__}: {e}"
            return
        run.ledger.batch_created(attempt, batch_id)
        log.info("submitted batch %s: %d requests, at most $%.4f", batch_id, len(requests), sum(usd.values()))
        await finish_batch(run, client, batch_id, attempt, usd)
        if run.stop["reason"]:
            return
