"""`python -m havoc_lite.chat`: rendering of streamed turns, one-shot -p, the stdin loop, errors."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from havoc_lite.chat import ChatSession, StreamPrinter, main, render_turn, strip_chat_tokens
from havoc_lite.config import ModelConfig
from havoc_lite.model import HavocModel
from havoc_lite.prime import generate_with_prime
from havoc_lite.tokenizer import train_tokenizer
from havoc_lite.tools import format_call

ASSETS = Path(__file__).parents[1] / "havoc_lite" / "assets"
TURN = ("<reason>Half of 48 is 48/2.</reason>"
        f"<tool>{format_call('calculator', {'expression': '48/2'})}</tool>"
        '<tool_result>{"status": "success", "result": 24}</tool_result>'
        "<verify>24 + 24 = 48</verify><answer>24 eggs are left.</answer><|end|>")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A random tiny model with a small tokenizer trained on bundled text, saved together."""
    out = tmp_path_factory.mktemp("chat_model")
    text = (ASSETS / "tinyshakespeare_200k.txt").read_text(encoding="utf-8")[:60_000]
    gsm = [json.loads(line)["question"] for line in open(ASSETS / "gsm8k_train_500.jsonl", encoding="utf-8")]
    tok = train_tokenizer([text] + gsm[:200], out, vocab_size=512)
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", vocab_size=tok.vocab_size, n_layers=2, max_seq_len=512)
    HavocModel(cfg).save_pretrained(out)
    return out


def test_render_turn_folds_sections_and_shows_tool_calls():
    folded = render_turn(TURN, show_sections=False)
    assert "[reason …]" in folded and "[verify …]" in folded
    assert "Half of 48" not in folded and "24 + 24" not in folded       # folded away
    assert '[tool] calculator({"expression": "48/2"}) -> 24' in folded
    assert folded.rstrip().endswith("Answer: 24 eggs are left.")
    shown = render_turn(TURN, show_sections=True)
    assert "<reason>Half of 48 is 48/2.</reason>" in shown and "<|end|>" not in shown
    error = render_turn('<tool>{"tool": "calc"}</tool><tool_result>{"status": "error", '
                        '"error": "unknown tool calc"}</tool_result>', False)
    assert "-> error: unknown tool calc" in error


@pytest.mark.parametrize("show", [False, True])
def test_stream_prints_each_prefix_once(model_dir, show):
    """Token by token, each rendering extends the last (so streaming never rewrites), and what the
    printer wrote adds up to the rendering of the whole turn."""
    from havoc_lite.tokenizer import HavocTokenizer
    tok = HavocTokenizer.load(model_dir)
    ids = tok.encode(TURN, allow_special=True)
    previous = ""
    for n in range(1, len(ids) + 1):
        current = render_turn(tok.decode(ids[:n]), show)
        assert current.startswith(previous), (n, previous, current)
        previous = current
    buf = io.StringIO()
    printer = StreamPrinter(tok, show, buf)
    for k in range(0, len(ids), 3):
        printer(0, ids[k:k + 3])
    printer.finish()
    assert buf.getvalue() == render_turn(TURN, show) + "\n"


def test_one_shot_prints_the_answer(model_dir, capsys):
    code = main(["--model", str(model_dir), "-p", "What is 48/2?", "--budget", "MINIMAL",
                 "--max-new-tokens", "12", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0
    # The same greedy generation in-process gives the answer the command printed.
    from havoc_lite.loading import load_model_and_tokenizer
    model, tok, _ = load_model_and_tokenizer(str(model_dir), device="cpu")
    r = generate_with_prime(model, tok, [{"role": "user", "content": "What is 48/2?"}],
                            budget="minimal", max_new_tokens=12)
    expected = r.answer if r.answer is not None else render_turn(r.text, False).strip()
    assert out == expected + "\n"
    assert r.routing.budget.value == "minimal" and "[chat]" in err


def test_session_keeps_and_resets_the_conversation(model_dir):
    from havoc_lite.loading import load_model_and_tokenizer
    model, tok, _ = load_model_and_tokenizer(str(model_dir), device="cpu")
    s = ChatSession(model, tok, budget="light", max_new_tokens=8, tools=False, out=io.StringIO())
    first = s.ask("What is 2+3?")
    s.ask("And times 4?")
    assert [m["role"] for m in s.messages] == ["user", "assistant", "user", "assistant"]
    assert s.messages[1]["content"] == strip_chat_tokens(first.text).strip()
    assert strip_chat_tokens("<|assistant|>a<|end|>b<|eos|>") == "ab"
    assert strip_chat_tokens("42<|im_end|>") == strip_chat_tokens("42<|eot_id|>") == "42"   # a base's template
    s.reset()
    assert s.messages == []
    with pytest.raises(ValueError, match="budget"):
        ChatSession(model, tok, budget="huge")


def test_interactive_loop_over_stdin(model_dir):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run([sys.executable, "-m", "havoc_lite.chat", "--model", str(model_dir),
                           "--max-new-tokens", "8", "--device", "cpu", "--no-tools"],
                          input="/reset\nWhat is 2+3?\n/quit\nnever read\n", capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "(conversation cleared)" in out
    assert out.count("model> ") == 1                         # one question answered, then /quit
    assert out.index("(conversation cleared)") < out.index("model> ")


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "no_such_model"
    assert main(["--model", str(missing), "-p", "hi"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "model.safetensors" in err


def test_long_conversation_drops_oldest_turns(model_dir):
    from havoc_lite.tokenizer import HavocTokenizer
    tok = HavocTokenizer.load(model_dir)
    torch.manual_seed(0)
    model = HavocModel(ModelConfig.from_preset("tiny", vocab_size=tok.vocab_size, n_layers=1,
                                               max_seq_len=128)).eval()
    out = io.StringIO()
    s = ChatSession(model, tok, budget="minimal", max_new_tokens=16, tools=False, out=out)
    history = []
    for k in range(6):   # six earlier exchanges, far longer than the context together
        history += [{"role": "user", "content": f"Question {k}: what is {k} times {k + 1}?"},
                    {"role": "assistant", "content": f"<answer>{k} times {k + 1} is {k * (k + 1)}.</answer>"}]
    assert len(tok.render_prompt(history)) > 128
    s.messages = list(history)
    s.ask("And the next one?")
    assert "oldest turn dropped" in out.getvalue()
    kept = s.messages[:-2]
    assert kept == history[len(history) - len(kept):] and len(kept) < len(history)   # newest kept
    assert s.messages[-2] == {"role": "user", "content": "And the next one?"}
    assert len(tok.render_prompt(kept + [s.messages[-2]])) < 128   # what fitted the context



def test_no_prime_system_sends_no_system_turn(model_dir, monkeypatch):
    """With prime_system=False (`--no-prime-system`) the prompt is the bare user turn, as the smoke
    run's model was trained; by default PRIME's instructions come first in a system turn."""
    from havoc_lite import engine
    from havoc_lite.loading import load_model_and_tokenizer
    model, tok, _ = load_model_and_tokenizer(str(model_dir), device="cpu")
    prompts, real = [], engine.generate
    monkeypatch.setattr(engine, "generate", lambda m, p, **kw: prompts.append(p[0]) or real(m, p, **kw))
    for prime_system in (False, True):
        ChatSession(model, tok, budget="medium", max_new_tokens=4, tools=False, prime_system=prime_system,
                    out=io.StringIO()).ask("What is 2+3?")
    bare = tok.render_prompt([{"role": "user", "content": "What is 2+3?"}])
    assert prompts[0] == bare
    assert tok.special_ids["<|system|>"] in prompts[1] and prompts[1][-len(bare) + 1:] == bare[1:]
