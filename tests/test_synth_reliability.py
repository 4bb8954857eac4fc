"""Issue 16 items 5, 7, 9 and 10 (synth parts): the USD cap under big inputs, missing usage and
kills; malformed API responses; one-line errors and exit codes. Against the fake endpoint."""
import json

import pytest

from synth import generate, offline
from synth.claude import Usage, build_request, price_for, worst_case_usd
from synth.generate import load_topic, run_generation, side_paths, system_prompt, trace_schema, user_prompt
from synth_fake import KEY, Fake, api_key, registry, args, good_trace, lines, message, outcomes




def request_bytes(registry, i: int) -> int:
    """UTF-8 bytes of the request text for index i: no tokenizer makes more tokens than that."""
    spec = load_topic("arithmetic")
    body = build_request(model="claude-haiku-4-5", system=system_prompt(spec, registry),
                         user=user_prompt(spec, i, 0), tool_schema=trace_schema(spec.tool), max_tokens=1024)
    return len(json.dumps(body, ensure_ascii=False).encode())


def test_big_inputs_never_cross_the_cap(tmp_path, registry):
    # every response bills as many input tokens as the request has bytes (the most possible) and
    # max_tokens of output; input is the expensive part here, as with a long prompt
    fake = Fake(lambda i, n: (200, message(good_trace(i), in_tok=request_bytes(registry, i), out_tok=1024)))
    a = args(tmp_path, num_examples=100, concurrency=3, max_usd=0.04, price_in=5.0, price_out=1.0)
    rep = run_generation(a, http_client=fake.client(), registry=registry)
    billed = sum(Usage.from_response(u).cost_usd((5.0, 1.0)) for u in fake.billed_usage)
    assert rep["stop_reason"] == "budget" and fake.calls >= 2
    assert rep["usd_spent"] == pytest.approx(billed)
    assert billed <= a.max_usd


def test_missing_usage_is_charged_the_worst_case(tmp_path, registry):
    def reply(i, n):
        m = message(good_trace(i))
        del m["usage"]
        return 200, m
    a = args(tmp_path, num_examples=2, concurrency=1, max_usd=1.0)
    rep = run_generation(a, http_client=Fake(reply).client(), registry=registry)
    spec = load_topic("arithmetic")
    worst = [worst_case_usd(build_request(model=a.model, system=system_prompt(spec, registry),
                                          user=user_prompt(spec, i, 0), tool_schema=trace_schema("calculator"),
                                          max_tokens=a.max_tokens), price_for(a.model)) for i in range(2)]
    recs = outcomes(tmp_path / "traces.jsonl")
    assert [r["usd"] for r in recs] == pytest.approx(worst) and all(r["usage_missing"] for r in recs)
    assert rep["kept"] == 2 and rep["usd_spent"] == pytest.approx(sum(worst)) and min(worst) > 0


class Crash(BaseException):
    """Stands in for a killed process: not an Exception, so nothing inside catches it."""


def test_requests_in_flight_at_a_kill_are_charged(tmp_path, registry):
    out = tmp_path / "traces.jsonl"

    def crashing(i, n):
        if n == 4:     # the server bills this request, then the process dies before reading it
            fake.billed_usage.append(message(good_trace(i))["usage"])
            raise Crash()
        return 200, message(good_trace(i))
    fake = Fake(crashing)
    with pytest.raises(Crash):
        run_generation(args(tmp_path, num_examples=8, concurrency=2), http_client=fake.client(), registry=registry)
    second = Fake(lambda i, n: (200, message(good_trace(i))))
    rep = run_generation(args(tmp_path, num_examples=8, concurrency=2, resume=True),
                         http_client=second.client(), registry=registry)
    prices = price_for("claude-haiku-4-5")
    billed = sum(Usage.from_response(u).cost_usd(prices) for u in fake.billed_usage + second.billed_usage)
    assert rep["usd_spent"] >= billed                     # the ledger never under-counts the server
    interrupted = [r for r in outcomes(out) if r["outcome"] == "interrupted"]
    assert 1 <= len(interrupted) <= 2 and rep["interrupted"] == len(interrupted)
    assert rep["kept"] == 8 == len(lines(out)) and len({t["id"] for t in lines(out)}) == 8


def test_malformed_api_responses_reject_one_request_and_go_on(tmp_path, registry):
    def reply(i, n):
        if i == 1:
            return 200, b'{"id": "msg_01", "type": "mess'                       # invalid JSON in a 200
        if i == 2:
            return 200, {**message(good_trace(i)), "content": None}             # content: null
        return 200, message(good_trace(i))
    rep = run_generation(args(tmp_path, num_examples=3, concurrency=1, max_attempts=5),
                         http_client=Fake(reply).client(), registry=registry)
    assert rep["kept"] == 3 and rep["rejected"]["malformed"] == 2 and rep["stop_reason"] == "done"
    recs = {r["id"][-1]: r for r in outcomes(tmp_path / "traces.jsonl")}
    assert "malformed API response" in recs["1"]["detail"] and recs["1"]["usage_missing"]
    assert "content is NoneType" in recs["2"]["detail"] and recs["2"]["input_tokens"] == 800


def test_offline_cli_bad_values_are_one_line_exit_2(tmp_path, capsys):
    for argv, words in ((["--topic", "nope"], "unknown offline topic"),
                        (["--test-fraction", "2"], "--test-fraction"),
                        (["--num-examples", "-1"], "--num-examples")):
        with pytest.raises(SystemExit) as e:
            offline.main(argv + ["--output", str(tmp_path / "x.jsonl")])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and words in err and len(err.splitlines()) == 1, (argv, err)
    assert not (tmp_path / "x.jsonl").exists()


def test_generate_cli_exit_codes(tmp_path, capsys, monkeypatch):
    base = ["--topic", "arithmetic", "--model", "claude-haiku-4-5", "--no-batch", "--concurrency", "1",
            "--output", str(tmp_path / "t.jsonl")]
    with pytest.raises(SystemExit) as e:
        generate.main(base + ["--num-examples", "0"])
    assert e.value.code == 2 and "--num-examples" in capsys.readouterr().err
    # nothing listens on port 9: every request is a connection error, the run stops on API errors
    with pytest.raises(SystemExit) as e:
        generate.main(base + ["--base-url", "http://127.0.0.1:9", "--max-retries", "0", "--backoff-s", "0.001"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "stopped on API errors" in err and KEY not in err
    rep = json.loads(side_paths(tmp_path / "t.jsonl")[1].read_text())
    assert rep["stop_reason"] == "api_errors" and rep["kept"] == 0 and rep["usd_spent"] == 0
