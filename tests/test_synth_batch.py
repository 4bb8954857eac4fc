"""Issue 12, Claude synthesis: Message Batches (half price, kept on the server across a kill),
runs from inside a running event loop (a notebook), the cost estimate for a confirmation box, and
the default model. Against the fake endpoint of tests/synth_fake.py."""
import asyncio
import json
import sys
import typing
from pathlib import Path

import anthropic
import pytest

from synth.claude import BATCH_DISCOUNT, DEFAULT_MODEL, PRICES_USD_PER_MTOK, Usage, price_for
from synth.generate import GenerateArgs, estimate_total, run_generation, side_paths
from synth_fake import KEY, Fake, api_key, registry, args, good_trace, lines, message, outcomes

OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}




def billed(fake: Fake, model: str = "claude-haiku-4-5") -> float:
    """What the server charges for the batch results it produced (half the list price)."""
    return sum(Usage.from_response(u).cost_usd(price_for(model), batch=True) for u in fake.billed_usage)


def test_batch_run_is_half_price_and_verified(tmp_path, registry):
    def reply(i, n):
        return (529, OVERLOADED) if i == 1 else (200, message(good_trace(i)))   # one errored result
    fake = Fake(reply, polls_to_end=3)
    rep = run_generation(args(tmp_path, num_examples=5, batch=True), http_client=fake.client(), registry=registry)
    # polled until it ended (3), plus the retrieve the SDK's results() makes
    assert list(fake.batches) == ["msgbatch_0000"] and fake.polls == ["msgbatch_0000"] * 4
    n = len(fake.batches["msgbatch_0000"])
    assert n >= 6 and rep["kept"] == n - 1 >= 5 and rep["api_errors"] == 1 and rep["stop_reason"] == "done"
    assert rep["usd_spent"] == pytest.approx(billed(fake)) and rep["batch_ids"] == ["msgbatch_0000"]
    list_price = sum(Usage.from_response(u).cost_usd(price_for("claude-haiku-4-5")) for u in fake.billed_usage)
    assert rep["usd_spent"] == pytest.approx(BATCH_DISCOUNT * list_price)
    recs = {r["id"]: r for r in outcomes(tmp_path / "traces.jsonl")}
    assert recs["arithmetic-s0-000001"]["outcome"] == "api_error" and recs["arithmetic-s0-000001"]["usd"] == 0
    kept = lines(tmp_path / "traces.jsonl")
    assert all(t["tool_result"]["result"] == int(t["answer"].split()[0]) for t in kept)   # re-run by the tool


class Crash(BaseException):
    """Stands in for a killed process (a Colab disconnect): nothing inside catches it."""


def test_killed_batch_is_polled_again_not_resubmitted(tmp_path, registry):
    def kill(batch_id, n):
        if n == 1:
            raise Crash()
    fake = Fake(lambda i, n: (200, message(good_trace(i))), polls_to_end=2, on_poll=kill)
    with pytest.raises(Crash):
        run_generation(args(tmp_path, num_examples=4, batch=True), http_client=fake.client(), registry=registry)
    ledger = lines(side_paths(tmp_path / "traces.jsonl")[0])
    assert [r["batch"] for r in ledger if "batch" in r] == ["msgbatch_0000"]   # the id is on disk
    assert not (tmp_path / "traces.jsonl").exists() or not lines(tmp_path / "traces.jsonl")

    fake.on_poll = None                                     # the same server, a new process
    rep = run_generation(args(tmp_path, num_examples=4, batch=True, resume=True), http_client=fake.client(),
                         registry=registry)
    assert list(fake.batches) == ["msgbatch_0000"]           # nothing submitted twice
    assert fake.results_fetched == ["msgbatch_0000"] and rep["batch_ids"] == ["msgbatch_0000"]
    kept = lines(tmp_path / "traces.jsonl")
    assert rep["kept"] == len(kept) == len(fake.batches["msgbatch_0000"]) >= 4
    assert len({t["id"] for t in kept}) == len(kept)
    assert rep["usd_spent"] == pytest.approx(billed(fake))  # paid once, at half price
    assert not [r for r in outcomes(tmp_path / "traces.jsonl") if r["outcome"] == "interrupted"]


def test_kill_before_the_batch_id_arrives_and_a_vanished_batch_are_charged(tmp_path, registry):
    out = tmp_path / "traces.jsonl"

    def kill(bid):
        raise Crash()
    fake = Fake(lambda i, n: (200, message(good_trace(i))), on_create=kill)
    with pytest.raises(Crash):     # the server made the batch; the process died before hearing its id
        run_generation(args(tmp_path, num_examples=3, batch=True), http_client=fake.client(), registry=registry)
    fake.on_create = None
    rep = run_generation(args(tmp_path, num_examples=3, batch=True, resume=True, max_usd=5.0),
                         http_client=fake.client(), registry=registry)
    orphan = [r for r in outcomes(out) if r["outcome"] == "interrupted"]
    n0 = len(fake.batches["msgbatch_0000"])
    assert len(orphan) == n0 and all(r["usd"] > 0 for r in orphan)   # unknown, so its worst case
    assert rep["kept"] >= 3 and list(fake.batches) == ["msgbatch_0000", "msgbatch_0001"]
    assert rep["usd_spent"] == pytest.approx(sum(r["usd"] for r in orphan) + billed(fake), abs=1e-6)

    # a batch the server no longer has (deleted, results expired) does not block the output forever
    out2 = tmp_path / "b" / "traces.jsonl"
    fake2 = Fake(lambda i, n: (200, message(good_trace(i))), on_poll=lambda bid, n: kill(bid))
    with pytest.raises(Crash):
        run_generation(args(tmp_path / "b", num_examples=2, batch=True), http_client=fake2.client(), registry=registry)
    fake2.batches.clear()
    fake2.on_poll = None
    rep2 = run_generation(args(tmp_path / "b", num_examples=2, batch=True, resume=True), http_client=fake2.client(),
                          registry=registry)
    assert rep2["kept"] >= 2 and rep2["interrupted"] >= 2 and rep2["stop_reason"] == "done"
    assert list(fake2.batches) == ["msgbatch_0001"]
    assert len(lines(out2)) == rep2["kept"]


def test_unreadable_batch_results_charge_the_rest_and_go_on(tmp_path, registry):
    fake = Fake(lambda i, n: (200, message(good_trace(i))))
    fake.garble_results = True
    rep = run_generation(args(tmp_path, num_examples=3, batch=True, max_attempts=40), http_client=fake.client(),
                         registry=registry)
    first = len(fake.batches["msgbatch_0000"])
    recs = outcomes(tmp_path / "traces.jsonl")
    batch0 = [r for r in recs if r["attempt"] == recs[0]["attempt"]]
    assert [r["outcome"] for r in batch0] == ["kept"] + ["interrupted"] * (first - 1)
    assert all("results unreadable" in r["detail"] and r["usd"] > 0 for r in batch0[1:])
    assert rep["kept"] >= 3 and rep["stop_reason"] == "done" and len(fake.batches) > 1   # later rounds
    assert rep["interrupted"] == sum(r["outcome"] == "interrupted" for r in recs)
    assert rep["usd_spent"] == pytest.approx(sum(r["usd"] for r in recs), abs=1e-6)


def test_runs_inside_a_running_event_loop(tmp_path, registry):
    """A notebook cell runs inside the kernel's event loop, where asyncio.run() raises."""
    fake = Fake(lambda i, n: (200, message(good_trace(i))))

    async def cell():
        asyncio.get_running_loop()
        return run_generation(args(tmp_path, num_examples=2), http_client=fake.client(), registry=registry)
    rep = asyncio.run(cell())
    assert rep["kept"] == 2 and rep["stop_reason"] == "done"


def test_estimate_total_matches_the_dry_runs(tmp_path, registry, capsys):
    topics = ["arithmetic", "stats_tests"]
    est = estimate_total(topics, 50, model="claude-haiku-4-5", batch=True, max_usd=0.5, registry=registry)
    direct = estimate_total(topics, 50, model="claude-haiku-4-5", batch=False, registry=registry)
    dry = [run_generation(GenerateArgs(topic=t, num_examples=50, model="claude-haiku-4-5", dry_run=True,
                                       output=str(tmp_path / f"{t}.jsonl")), registry=registry) for t in topics]
    capsys.readouterr()
    assert est["typical_usd"] == pytest.approx(sum(d["typical_usd"] for d in dry), abs=1e-3)
    assert est["worst_case_usd"] == pytest.approx(sum(d["worst_case_usd"] for d in dry), abs=1e-3)
    assert est["worst_case_usd"] == pytest.approx(BATCH_DISCOUNT * direct["worst_case_usd"], rel=1e-3)
    assert est["capped_usd"] == pytest.approx(sum(min(d["worst_case_usd"], 0.5) for d in dry), abs=1e-3)
    assert 0 < est["typical_usd"] < est["worst_case_usd"] and set(est["topics"]) == set(topics)
    with pytest.raises(ValueError, match="--price-in"):
        estimate_total(topics, 10, model="claude-unknown-9", registry=registry)


def test_default_model_is_current_and_priced(tmp_path, registry):
    from anthropic.types import Model
    sdk_models = typing.get_args(typing.get_args(Model)[0])
    deprecated = getattr(getattr(anthropic, "_data", None), "deprecated_models", None)
    assert GenerateArgs().model == DEFAULT_MODEL in sdk_models and DEFAULT_MODEL in PRICES_USD_PER_MTOK
    if deprecated is not None:
        assert DEFAULT_MODEL not in deprecated.DEPRECATED_MODELS
    assert all(m in sdk_models for m in PRICES_USD_PER_MTOK)
    assert GenerateArgs().batch                               # bulk generation goes through batches
    # the current models answer forced tool use with a 400: the request asks instead of forcing
    for model, choice in ((DEFAULT_MODEL, {"type": "auto"}),
                          ("claude-haiku-4-5", {"type": "tool", "name": "emit_trace"})):
        fake = Fake(lambda i, n: (200, message(good_trace(i))))
        rep = run_generation(args(tmp_path / model, num_examples=1, model=model), http_client=fake.client(),
                             registry=registry)
        body = fake.bodies[0]
        assert rep["kept"] == 1 and body["model"] == model and body["tool_choice"] == choice
        assert ("exactly one emit_trace call" in body["system"]) == (choice["type"] == "auto")


def test_colab_secret_and_notebook_kernel(tmp_path, monkeypatch):
    """In a real kernel (nbclient), the key comes from a fake `google.colab.userdata` and a batch
    run goes through the kernel's running event loop against the fake endpoint."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    tests_dir, root = Path(__file__).parent, Path(__file__).parents[1]
    code = f"""
import sys, types, json
sys.path[:0] = [{str(root)!r}, {str(tests_dir)!r}]
colab = types.ModuleType("google.colab"); colab.userdata = types.SimpleNamespace(get=lambda k: {KEY!r} if k == "ANTHROPIC_API_KEY" else None)
sys.modules["google"] = types.ModuleType("google"); sys.modules["google.colab"] = colab
from synth_fake import Fake, args, good_trace, message
from synth.generate import run_generation
fake = Fake(lambda i, n: (200, message(good_trace(i))))
rep = run_generation(args(__import__("pathlib").Path({str(tmp_path)!r}), num_examples=2, batch=True),
                     http_client=fake.client())
assert fake.keys == {{{KEY!r}}}, fake.keys
print(json.dumps({{"kept": rep["kept"], "stop": rep["stop_reason"], "batches": list(fake.batches)}}))
"""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    from jupyter_client.kernelspec import KernelSpecManager
    if "python3" not in KernelSpecManager().find_kernel_specs():
        pytest.skip("no python3 Jupyter kernel installed (tests/test_notebooks.py installs one)")
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=120, shutdown_kernel="immediate").execute()
    out = json.loads(nb.cells[0].outputs[-1]["text"].strip().splitlines()[-1])
    assert out["kept"] >= 2 and out["stop"] == "done" and out["batches"] == ["msgbatch_0000"]
    assert KEY not in json.dumps(nb.cells[0].outputs) and sys.modules.get("google.colab") is None
