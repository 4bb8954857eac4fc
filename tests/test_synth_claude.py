"""synth.generate against a fake Anthropic endpoint (a MockTransport replaying Messages API JSON).

No network: the SDK's own HTTP client is built on a mock transport, so retries, parsing, usage and
cost go through the real `anthropic` code paths.
"""
import json

import pytest

from synth.claude import UsdBudget, Usage, price_for
from synth.generate import load_topic, run_generation, side_paths
from synth_fake import KEY, Fake, api_key, registry, args, good_trace, lines, message, outcomes



ERR = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def test_429_is_retried_then_succeeds(tmp_path, registry):
    fake = Fake(lambda i, n: (429, ERR) if n == 1 else (200, message(good_trace(i))))
    rep = run_generation(args(tmp_path, num_examples=1, concurrency=1), http_client=fake.client(),
                         registry=registry)
    assert fake.calls == 2 and rep["kept"] == 1 and rep["stop_reason"] == "done"
    t = lines(tmp_path / "traces.jsonl")[0]
    assert t["id"] == "arithmetic-s0-000000" and t["tool_result"] == {"status": "success", "result": 5}


def test_overloaded_outlasting_sdk_retries_uses_own_backoff(tmp_path, registry):
    # max_retries=0: the SDK gives up at once; our loop retries the 529s
    fake = Fake(lambda i, n: (529, OVERLOADED) if n <= 2 else (200, message(good_trace(i))))
    rep = run_generation(args(tmp_path, num_examples=1, concurrency=1, max_retries=0),
                         http_client=fake.client(), registry=registry)
    assert fake.calls == 3 and rep["kept"] == 1


def test_malformed_traces_are_rejected_with_reason(tmp_path, registry):
    def reply(i, n):
        if i == 0:
            return 200, message(text="Sure! Here is a problem...", stop="end_turn")   # no tool_use
        if i == 1:
            t = good_trace(i)
            del t["answer"]
            return 200, message(t)
        if i == 2:
            return 200, message(good_trace(i), stop="max_tokens")                   # cut off
        t = good_trace(i)
        t["reasoning"][0]["tool_call"]["name"] = "python_math"                        # wrong tool
        return 200, message(t)

    rep = run_generation(args(tmp_path, num_examples=1, max_attempts=4), http_client=Fake(reply).client(),
                         registry=registry)
    assert rep["kept"] == 0 and rep["rejected"]["malformed"] == 4 and rep["stop_reason"] == "max_attempts"
    details = " ".join(e["detail"] for e in rep["reject_examples"]["malformed"])
    assert "no emit_trace" in details and "answer" in details and "max_tokens" in details
    ledger = outcomes(tmp_path / "traces.jsonl")
    assert sorted(r["id"] for r in ledger) == [f"arithmetic-s0-{i:06d}" for i in range(4)]
    assert not (tmp_path / "traces.jsonl").read_text()
    assert json.loads(side_paths(tmp_path / "traces.jsonl")[1].read_text())["rejected"]["malformed"] == 4


def test_wrong_stated_result_is_corrected_or_rejected(tmp_path, registry):
    def reply(i, n):
        a, b = i + 2, 3 + i % 5
        if i == 0:   # the answer follows the wrong stated result: reject
            return 200, message(good_trace(i, stated=a + b + 1, answer=f"{a + b + 1} apples"))
        return 200, message(good_trace(i, stated=a + b + 1))   # stated wrong, answer right: correct

    rep = run_generation(args(tmp_path, num_examples=1, concurrency=1, max_attempts=2),
                         http_client=Fake(reply).client(), registry=registry)
    assert rep["kept"] == 1 and rep["corrected_tool_results"] == 1
    assert rep["rejected"]["answer_mismatch"] == 1
    t = lines(tmp_path / "traces.jsonl")[0]
    assert t["id"] == "arithmetic-s0-000001"
    assert t["reasoning"][0]["tool_result"] == {"status": "success", "result": 7} == t["tool_result"]


def test_budget_stop_no_request_could_cross_cap(tmp_path, registry):
    pin, pout = price_for("claude-haiku-4-5")
    fake = Fake(lambda i, n: (200, message(good_trace(i), in_tok=2000, out_tok=900)))
    a = args(tmp_path, num_examples=100, concurrency=3, max_usd=0.05, max_tokens=1024)
    rep = run_generation(a, http_client=fake.client(), registry=registry)
    per_request = (2000 * pin + 900 * pout) / 1e6
    assert rep["stop_reason"] == "budget"
    assert rep["usd_spent"] == pytest.approx(fake.calls * per_request)
    assert rep["usd_spent"] <= a.max_usd
    # it stopped only when the worst case of one more request (>= max_tokens of output) no longer fit
    assert rep["usd_spent"] + 1024 * pout / 1e6 > a.max_usd - 3 * (2000 * pin + 1024 * pout) / 1e6
    kept = lines(tmp_path / "traces.jsonl")
    assert len(kept) == fake.calls == rep["kept"] and len({t["id"] for t in kept}) == len(kept)


def test_usage_crossing_cap_stops_new_requests(tmp_path, registry):
    # the second response reports far more tokens than expected: spend jumps over the cap
    fake = Fake(lambda i, n: (200, message(good_trace(i), out_tok=300 if n == 1 else 20_000)))
    a = args(tmp_path, num_examples=50, concurrency=1, max_usd=0.06, max_tokens=1024)
    rep = run_generation(a, http_client=fake.client(), registry=registry)
    assert fake.calls == 2 and rep["stop_reason"] == "budget"
    assert rep["usd_spent"] > a.max_usd                    # reported usage is what was billed
    assert len(lines(tmp_path / "traces.jsonl")) == 2     # both traces intact, nothing after


class Crash(BaseException):
    """Stands in for a killed process: not an Exception, so nothing inside catches it."""


def test_killed_run_resumes_without_loss_or_duplicates(tmp_path, registry):
    out = tmp_path / "traces.jsonl"

    def crashing(i, n):
        if n == 5:
            raise Crash()
        return 200, message(good_trace(i))

    first = Fake(crashing)
    with pytest.raises(Crash):
        run_generation(args(tmp_path, num_examples=8, concurrency=2), http_client=first.client(),
                       registry=registry)
    before = lines(out)
    assert 1 <= len(before) < 8
    with open(out, "a", encoding="utf-8") as f:          # a write torn by the kill
        f.write('{"id": "arithmetic-s0-0000')
    with pytest.raises(FileExistsError):                   # no silent overwrite without --resume
        run_generation(args(tmp_path, num_examples=8), http_client=first.client(), registry=registry)

    second = Fake(lambda i, n: (200, message(good_trace(i))))
    rep = run_generation(args(tmp_path, num_examples=8, concurrency=2, resume=True),
                         http_client=second.client(), registry=registry)
    after = lines(out)
    ids = [t["id"] for t in after]
    assert rep["kept"] == len(after) == 8 and len(set(ids)) == 8
    assert after[:len(before)] == before                   # nothing done before was lost or rewritten
    done_first = {t["id"] for t in before}
    assert not done_first & {f"arithmetic-s0-{i:06d}" for i in second.indices}   # no repeat requests
    ledger_ids = [r["id"] for r in outcomes(out) if r["outcome"] != "interrupted"]
    assert len(ledger_ids) == len(set(ledger_ids)) and set(ids) <= set(ledger_ids)
    assert rep["stop_reason"] == "done"


def test_key_never_written_or_logged(tmp_path, registry, capsys, caplog):
    caplog.set_level("INFO")
    fake = Fake(lambda i, n: (429, ERR) if n == 1 else (200, message(
        good_trace(i) if i else {"question": "q", "reasoning": []})))
    run_generation(args(tmp_path, num_examples=2, concurrency=1, max_attempts=4),
                   http_client=fake.client(), registry=registry)
    assert fake.keys == {KEY}                              # the key did reach the endpoint
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err + caplog.text
    for p in tmp_path.iterdir():
        assert KEY not in p.read_text(encoding="utf-8"), p


def test_fatal_error_stops_with_files_intact(tmp_path, registry):
    body = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
    fake = Fake(lambda i, n: (200, message(good_trace(i))) if n == 1 else (401, body))
    with pytest.raises(RuntimeError, match="AuthenticationError"):
        run_generation(args(tmp_path, num_examples=5, concurrency=1), http_client=fake.client(),
                       registry=registry)
    assert len(lines(tmp_path / "traces.jsonl")) == 1 and fake.calls == 2


def test_dry_run_sends_nothing_and_needs_no_key(tmp_path, registry, capsys, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    rep = run_generation(args(tmp_path, dry_run=True, num_examples=10), registry=registry)
    out = capsys.readouterr().out
    assert rep["dry_run"] and "Nothing was sent" in out and "emit_trace" in out
    assert 0 < rep["typical_usd"] < rep["worst_case_usd"]
    assert not list(tmp_path.iterdir())


def test_missing_key_is_a_clear_error(tmp_path, registry, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(RuntimeError, match="ANTHROPIC_API_KEY"):
        run_generation(args(tmp_path), registry=registry)


def test_prices_and_budget():
    assert price_for("claude-sonnet-4-6-20260217") == (3.0, 15.0)   # a date suffix is ignored
    assert price_for("my-local-model", 0.5, 1.5) == (0.5, 1.5)
    with pytest.raises(ValueError, match="--price-in"):
        price_for("claude-unknown-9")
    u = Usage(input_tokens=1_000_000, output_tokens=2_000_000, cache_read_input_tokens=1_000_000)
    assert u.cost_usd((3.0, 15.0)) == pytest.approx(3.0 + 30.0 + 0.3)
    b = UsdBudget(1.0)
    assert b.reserve(0.6) and not b.reserve(0.5)
    b.settle(0.6, 0.2)
    assert b.reserve(0.5) and b.spent == pytest.approx(0.2)


def test_bad_topic_spec_names_file_and_field(tmp_path):
    spec = tmp_path / "mine.yaml"
    spec.write_text("name: mine\ndescription: d\ntool: calculator\nsystem_prompt: s\n"
                    "complexity_levels: [{name: one}]\ncategories: [{name: c, description: d}]\n")
    with pytest.raises(ValueError, match=r"mine\.yaml.*complexity_levels\[0\]\.description"):
        load_topic(str(spec))
    spec.write_text("name: mine\ndescription: d\ntool: calculator\nsystem_prompt: s\n"
                    "complexity_levels: [{name: one, description: x}]\ncategories: []\n")
    with pytest.raises(ValueError, match=r"mine\.yaml.*'categories'"):
        load_topic(str(spec))
    with pytest.raises(ValueError, match="unknown topic"):
        load_topic("no_such_topic")
    for name in ("arithmetic", "stats_tests", "algebra_calculus", "doe", "retrieval"):
        assert load_topic(name).name == name
