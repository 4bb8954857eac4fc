"""The fair ablation's tool-free traces: same problems and answers, the arithmetic written out."""
import json

from havoc_lite.ablation import strip_tool_calls
from havoc_lite.data import gsm8k_to_trace, render_trace
from havoc_lite.eval.gsm8k import ASSET_TEST
from havoc_lite.tools import default_registry
from synth.offline import generate_offline


def test_stripped_traces_state_each_real_result_and_keep_the_answer():
    calc = default_registry()
    traces = generate_offline("arithmetic", 50, seed=0)
    traces += [gsm8k_to_trace(json.loads(line)) for line in list(open(ASSET_TEST, encoding="utf-8"))[:20]]
    for t in traces:
        original = render_trace(t)
        plain = strip_tool_calls(t)
        assert render_trace(t) == original       # the input trace is not modified
        text = render_trace(plain)
        assert "<tool>" not in text and "<tool_result>" not in text
        assert plain["answer"] == t["answer"] and plain["question"] == t["question"]
        assert len(plain["reasoning"]) == len(t["reasoning"])
        for before, after in zip(t["reasoning"], plain["reasoning"]):
            call = before.get("tool_call")
            if call is None:
                assert after["content"] == before["content"]
                continue
            expr = call["args"]["expression"]
            value = calc.execute("calculator", {"expression": expr}).result
            stated = after["content"].rsplit(" = ", 1)
            assert stated[0].endswith(expr) and float(stated[1].rstrip(".")) == float(value), after


def test_a_missing_smoke_run_is_one_line_and_exit_2(tmp_path, capsys):
    from havoc_lite import ablation
    from havoc_lite.prime import measure
    for main in (ablation.main, measure.main):
        assert main(["--from-smoke", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--from-smoke" in err[0] and "tokenizer is missing" in err[0]
        assert not (tmp_path / "o").exists()
