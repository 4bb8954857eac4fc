"""User mistakes on the command lines of eval, chat, smoke and memory (issue 16, items 9 and 10):
each is one line `error: ...` on stderr and exit code 2, found before any work; a bug would keep
its traceback (`errors.user_error_message`)."""
from __future__ import annotations

import pytest
import torch


def one_line(capsys, rc: int, *needles: str) -> str:
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny untrained model folder with its tokenizer inside."""
    from havoc_lite.config import ModelConfig
    from havoc_lite.eval.gsm8k import ASSET_TEST
    from havoc_lite.model import HavocModel
    from havoc_lite.tokenizer import train_tokenizer
    d = tmp_path_factory.mktemp("model")
    tok = train_tokenizer([ASSET_TEST], d, vocab_size=400)
    torch.manual_seed(0)
    HavocModel(ModelConfig.from_preset("tiny", vocab_size=tok.vocab_size, n_layers=1)).save_pretrained(d)
    return d


def test_bugs_keep_their_traceback_and_user_errors_do_not():
    from havoc_lite.errors import ConfigError, run_cli, user_error_message
    assert user_error_message(ConfigError("--x must be >= 1")) == "--x must be >= 1"
    assert user_error_message(FileNotFoundError("no such file: a.jsonl")) == "no such file: a.jsonl"
    assert user_error_message(TypeError("unsupported operand")) is None
    assert user_error_message(AttributeError("x")) is None

    def buggy(argv):
        return None + 1
    with pytest.raises(TypeError):
        run_cli(buggy, [])


@pytest.mark.parametrize("flags, needle", [
    (["--model", "/nope"], "/nope"),
    (["--tokenizer", "/nope/tok"], "no tokenizer found"),
    (["--data", "/nope.jsonl"], "--data /nope.jsonl"),
    (["--benchmarks", "nope"], "--benchmarks 'nope'"),
    (["--benchmarks", "prompts"], "--prompts FILE"),
    (["--grader", "nope"], "--grader 'nope'"),
    (["--k", "5"], "--k 5: each k must be in [1, --samples=1]"),
    (["--k", "one"], "--k 'one'"),
    (["--samples", "0"], "--samples must be >= 1"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--temperature", "-1"], "--temperature"),
])
def test_eval_errors_are_one_line(model_dir, tmp_path, capsys, flags, needle):
    from havoc_lite.eval.__main__ import cli
    base = {"--model": str(model_dir), "--output": str(tmp_path / "r.json"), "--device": "cpu",
            "--limit": "1", "--latency-probes": "0", "--max-new-tokens": "2"}
    base.update(dict(zip(flags[::2], flags[1::2])))
    argv = [x for kv in base.items() for x in kv]
    one_line(capsys, cli(argv), needle)
    assert not (tmp_path / "r.json").exists()


def test_eval_refuses_compiled_decode_with_prime(tmp_path):
    """PRIME drives its own decoding, so --compile-decode with --prime is refused before loading."""
    from havoc_lite.errors import ConfigError
    from havoc_lite.eval.__main__ import EvalArgs, check_args
    from havoc_lite.eval.runner import make_generate_fn
    with pytest.raises(ConfigError, match="--compile-decode does not apply to --prime"):
        check_args(EvalArgs(model="m", prime=True, compile_decode=True, output=str(tmp_path / "r.json")))
    with pytest.raises(ValueError, match="compile_decode does not apply to prime"):
        make_generate_fn(None, None, prime=True, compile_decode=True)


def test_eval_and_chat_refuse_truncated_weights(model_dir, tmp_path, capsys):
    import shutil
    from havoc_lite.chat import main as chat
    from havoc_lite.eval.__main__ import cli
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    f = bad / "model.safetensors"
    f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2])          # a download cut in half
    one_line(capsys, cli(["--model", str(bad), "--output", str(tmp_path / "r.json"), "--device", "cpu"]),
             "cannot load the model", "truncated")
    one_line(capsys, chat(["--model", str(bad), "-p", "hi", "--device", "cpu"]), "truncated")


def test_chat_refuses_nonsense_values(model_dir, capsys):
    from havoc_lite.chat import main as chat
    one_line(capsys, chat(["--model", str(model_dir), "-p", "hi", "--temperature", "-1"]),
             "--temperature must be >= 0")
    one_line(capsys, chat(["--model", str(model_dir), "-p", "hi", "--max-new-tokens", "0"]),
             "--max-new-tokens")


def test_eval_output_folder_must_be_writable(model_dir, tmp_path, capsys):
    from havoc_lite.eval.__main__ import cli
    (tmp_path / "a_file").write_text("x")
    one_line(capsys, cli(["--model", str(model_dir), "--output", str(tmp_path / "a_file" / "r.json")]),
             "--output folder", "not writable")


def test_smoke_bad_device_and_unwritable_out(tmp_path, capsys):
    from havoc_lite.smoke import main as smoke
    one_line(capsys, smoke(["--device", "tpu", "--out", str(tmp_path / "s")]), "--device 'tpu'")
    (tmp_path / "a_file").write_text("x")
    one_line(capsys, smoke(["--device", "cpu", "--out", str(tmp_path / "a_file" / "s")]),
             "--out", "not writable")


@pytest.mark.parametrize("flags, needle", [
    (["--gpu", "nope"], "unknown GPU 'nope'"),
    (["--gpu", "-8"], "positive number of GiB"),
    (["--mfu", "0", "--tokens", "1e9"], "--mfu must be in (0, 1]"),
    (["--tokens", "-1"], "--tokens must be a positive number"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--fsdp", "0"], "--fsdp must be >= 1"),
    (["--seq-len", "0"], "--seq-len must be >= 1"),
])
def test_memory_refuses_nonsense(capsys, flags, needle):
    from havoc_lite.memory import main as memory
    one_line(capsys, memory(["--preset", "tiny", *flags]), needle)
