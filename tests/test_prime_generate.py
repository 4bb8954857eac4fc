"""generate_with_prime end to end: a scripted stand-in model through the real engine, tokenizer
and tools; HEAVY section forcing; batching; plain mode; a random tiny HavocModel."""
import json

import pytest
import torch
import torch.nn as nn

from havoc_lite.config import ModelConfig
from havoc_lite.model import HavocModel
from havoc_lite.prime import (ReasoningBudget, SectionForcer, extract_roles, generate_with_prime,
                              generate_with_prime_batch)
from havoc_lite.markup import SECTION_TAGS, parse
from havoc_lite.tokenizer import train_tokenizer
from havoc_lite.tools import default_registry, format_call

QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many "
            "clips in May. How many clips did Natalia sell altogether in April and May?")
CALC = [("reason", "April 48, May half of it: add them."),
        ("tool", format_call("calculator", {"expression": "48 + 48/2"})),
        ("answer", "72")]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from importlib.resources import files
    assets = files("havoc_lite") / "assets"
    text = (assets / "tinyshakespeare_200k.txt").read_text()[:20000]
    gsm = [json.loads(line) for line in (assets / "gsm8k_train_500.jsonl").read_text().splitlines()[:100]]
    docs = [text] + [g["question"] + " " + g["answer"] for g in gsm]
    return train_tokenizer(docs, tmp_path_factory.mktemp("tok"), vocab_size=600)


@pytest.fixture(scope="module")
def tools():
    return default_registry()


class ScriptedModel(nn.Module):
    """A stand-in LM that writes a fixed plan of sections whatever the engine injects or forces.

    Same forward signature as HavocModel; `config` is a ModelConfig. It keeps no state between
    calls: the token ids it has seen are stored in the KV cache itself (slot k[0, b, 0, pos, 0]),
    so they follow the engine's row compaction. The policy, from the generated ids after the last
    <|assistant|>: inside an open section, write the plan's content for it (or "ok" for a section
    the plan lacks, e.g. one the engine forced), then close it; outside, open the next plan
    section not yet opened; when the plan is done, write <|end|>. `plans` maps a word of the
    prompt to a plan, so one model can answer a batch of different prompts.
    """

    def __init__(self, tok, plans: dict):
        super().__init__()
        self.tok = tok
        self.config = ModelConfig.from_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=2048,
                                              n_layers=1)
        self.anchor = nn.Parameter(torch.zeros(1))     # engine reads device/dtype from here
        self.plans = {key: [(t, tok.encode(c)) for t, c in plan] for key, plan in plans.items()}
        self.open_ids = {tok.token_id(f"<{t}>"): t for t in SECTION_TAGS}
        self.close_ids = {tok.token_id(f"</{t}>"): t for t in SECTION_TAGS}
        self.filler = tok.encode("ok")

    def next_token(self, ctx: list) -> int:
        tok = self.tok
        if tok.assistant_id not in ctx:
            return tok.end_id    # a prompt position: the engine never samples from it
        start = len(ctx) - ctx[::-1].index(tok.assistant_id)
        prompt_text = tok.decode(ctx[:start])
        plan = next(p for key, p in self.plans.items() if key in prompt_text)
        current, n, counts = None, 0, {}
        for i in ctx[start:]:
            if i in self.open_ids:
                current, n = self.open_ids[i], 0
                counts[current] = counts.get(current, 0) + 1
            elif i in self.close_ids:
                current = None
            elif current is not None:
                n += 1
        if current is not None:
            same = [c for t, c in plan if t == current]
            content = same[counts[current] - 1] if counts[current] <= len(same) else self.filler
            return content[n] if n < len(content) else tok.token_id(f"</{current}>")
        seen = {}
        for tag, _ in plan:
            seen[tag] = seen.get(tag, 0) + 1
            if counts.get(tag, 0) < seen[tag]:
                return tok.token_id(f"<{tag}>")
        return tok.end_id

    def forward(self, input_ids, positions=None, kv_cache=None):
        B, T = input_ids.shape
        logits = torch.zeros(B, T, self.config.vocab_size)
        for b in range(B):
            for t in range(T):
                if kv_cache is None:
                    ctx = input_ids[b, :t + 1].tolist()
                else:
                    p = int(positions[b, t])
                    kv_cache.k[0][b, 0, p, 0] = float(input_ids[b, t])
                    ctx = kv_cache.k[0][b, 0, :p + 1, 0].long().tolist()
                logits[b, t, self.next_token(ctx)] = 100.0
        return logits


def sections_in_order(result):
    return [s.tag for s in result.parsed.sections]


def test_medium_calculator_end_to_end(tok, tools):
    model = ScriptedModel(tok, {"Natalia": CALC})
    streamed = []
    r = generate_with_prime(model, tok, QUESTION, tools=tools,
                            stream=lambda row, ids: streamed.extend(ids))
    assert r.routing.budget is ReasoningBudget.MEDIUM and r.routing.reasons
    # the calculator really ran inside the decode loop and its result was injected
    assert [c["name"] for c in r.tool_calls] == ["calculator"]
    assert r.tool_results[0].status == "success" and r.tool_results[0].result == 72
    assert '<tool_result>{"status": "success", "result": 72}</tool_result>' in r.text
    assert sections_in_order(r) == ["reason", "tool", "tool_result", "answer"]
    assert r.answer == "72" and r.finish_reason == "stop" and r.forced_sections == []
    assert r.checks.passed, r.checks.to_dict()
    assert r.checks["answer_supported"].passed and r.checks["tool_results_match"].passed
    # engine_mask marks exactly the injected <tool_result>…</tool_result>
    res_open, res_close = tok.token_id("<tool_result>"), tok.token_id("</tool_result>")
    a, b = r.tokens.index(res_open), r.tokens.index(res_close)
    assert r.engine_mask == [0] * a + [1] * (b - a + 1) + [0] * (len(r.tokens) - b - 1)
    assert streamed == r.tokens and r.num_tokens == len(r.tokens)
    assert r.elapsed_s > 0
    json.dumps(r.to_dict())


def test_wrong_scripted_answer_fails_the_checks(tok, tools):
    plan = CALC[:2] + [("answer", "73")]
    r = generate_with_prime(ScriptedModel(tok, {"Natalia": plan}), tok, QUESTION, tools=tools)
    assert r.tool_results[0].result == 72
    assert r.checks.failed == ["answer_supported"]


def test_heavy_forces_every_missing_section(tok, tools):
    # the model skips the roles and verify, and jumps straight to <answer>
    model = ScriptedModel(tok, {"Should we": CALC})
    prompt = "Should we trust this? " + QUESTION
    r = generate_with_prime(model, tok, prompt, tools=tools)
    assert r.routing.budget is ReasoningBudget.HEAVY
    assert r.forced_sections == ["advocate", "attack", "pragmatist", "verify"]
    assert sections_in_order(r) == ["reason", "tool", "tool_result", "advocate", "attack",
                                    "pragmatist", "verify", "answer"]
    assert r.answer == "72" and r.checks.passed, r.checks.to_dict()
    assert r.checks["sections_present"].passed
    assert set(r.roles) == {"advocate", "attack", "pragmatist", "verify"}
    # the forced opening tags are engine-written, the model's own role text is not
    for tag in ("<advocate>", "<attack>", "<pragmatist>", "<verify>"):
        i = r.tokens.index(tok.token_id(tag))
        assert r.engine_mask[i] == 1 and r.engine_mask[i + 1] == 0
    assert r.engine_mask[r.tokens.index(tok.token_id("<answer>"))] == 0
    # without PRIME's forcing the same model never writes the roles
    plain = generate_with_prime(model, tok, prompt, tools=tools, budget="medium")
    assert plain.forced_sections == [] and not plain.roles


def test_missing_answer_is_opened_and_sections_left_open_are_closed(tok, tools):
    model = ScriptedModel(tok, {"Natalia": CALC[:2]})       # never writes <answer>
    r = generate_with_prime(model, tok, QUESTION, tools=tools)
    assert r.forced_sections == ["answer"] and r.answer == "ok"
    assert r.checks["answer_present"].passed and r.checks["well_formed"].passed
    # the interceptor on its own: <|end|> inside an open <attack> closes it, then opens <pragmatist>
    forcer = SectionForcer(tok, ("advocate", "attack", "pragmatist"), intercept_answer=True)
    ids = [tok.token_id("<advocate>"), 50, tok.token_id("</advocate>"), tok.token_id("<attack>"), 51,
           tok.end_id]
    assert forcer(0, ids) == ([tok.token_id("</attack>"), tok.token_id("<pragmatist>")], True)
    assert forcer(0, ids[:-1]) is None                      # not a trigger: nothing to do
    assert forcer(1, ids[:3] + [tok.token_id("<answer>")]) == ([tok.token_id("<attack>")], True)


def test_batch_matches_single_calls_and_keeps_order(tok, tools):
    plans = {"Natalia": CALC, "capital": [("answer", "Paris")],
             "Should we": CALC, "Explain": [("reason", "Light scatters."), ("answer", "Rayleigh")]}
    model = ScriptedModel(tok, plans)
    prompts = ["What is the capital of France?", QUESTION, "Should we trust it? " + QUESTION,
               "Explain why the sky is blue."]
    batch = generate_with_prime_batch(model, tok, prompts, tools=tools)
    assert [r.routing.budget.value for r in batch] == ["minimal", "medium", "heavy", "light"]
    assert [r.answer for r in batch] == ["Paris", "72", "72", "Rayleigh"]
    for p, r in zip(prompts, batch):
        single = generate_with_prime(model, tok, p, tools=tools)
        assert single.text == r.text and single.tokens == r.tokens
        assert [t.to_dict() for t in single.tool_results] == [t.to_dict() for t in r.tool_results]
    assert batch[0].tool_calls == [] and batch[3].tool_calls == []


def test_plain_mode_and_prerendered_ids(tok, tools):
    model = ScriptedModel(tok, {"Natalia": CALC})
    r = generate_with_prime(model, tok, QUESTION, enable_prime=False, tools=tools)
    assert r.routing.budget is ReasoningBudget.MINIMAL and r.routing.reasons == ["PRIME disabled"]
    assert r.routing.max_new_tokens == 256
    # no tools in plain mode: the call is written but never executed
    assert r.tool_calls == [] and "<tool_result>" not in r.text and r.text.endswith("<|end|>")
    assert r.checks["tool_calls_succeeded"].passed is False
    # prompt ids rendered by the caller (as eval does) go through unchanged, routed on the user turn
    ids = [tok.render_prompt([{"role": "user", "content": QUESTION}])]
    [r2] = generate_with_prime(model, tok, ids, tools=tools)
    assert r2.prompt == QUESTION and r2.routing.budget is ReasoningBudget.MEDIUM and r2.answer == "72"


def test_errors_are_clear(tok, tools):
    model = ScriptedModel(tok, {"x": CALC})
    model.config.max_seq_len = 64
    with pytest.raises(ValueError, match="even without PRIME's system turn"):
        generate_with_prime(model, tok, QUESTION * 2, tools=tools)
    with pytest.raises(ValueError, match="unknown budget"):
        generate_with_prime(model, tok, "x", budget="huge", tools=tools)
    with pytest.raises(ValueError, match="no prompts"):
        generate_with_prime(model, tok, [], tools=tools)
    with pytest.raises(ValueError, match="no 'user' message"):
        generate_with_prime(model, tok, [{"role": "system", "content": "x"}], tools=tools)


def test_random_tiny_havoc_model_runs_every_budget(tok, tools):
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=1024, n_layers=2)
    model = HavocModel(cfg).eval()
    prompts = ["Hello", "Explain tides.", QUESTION, "Should we compare 3 and 4?"]
    results = generate_with_prime(model, tok, prompts, tools=tools, max_new_tokens=8,
                                  temperature=1.0, seed=0)
    assert [r.routing.budget.value for r in results] == ["minimal", "light", "medium", "heavy"]
    for r in results:
        assert 0 < r.num_tokens <= 8 and r.finish_reason in ("stop", "length", "tool_limit")
        assert set(r.checks.checks) >= {"well_formed", "answer_present"}
        # the record accounts for exactly what the engine ran and the model wrote
        parsed = parse(r.text)
        assert len(r.tool_calls) == len(r.tool_results) == len(parsed.tool_calls)
        assert r.roles == extract_roles(parsed)
        assert json.loads(json.dumps(r.to_dict()))["tool_calls"] == [
            {"name": c["name"], "args": c["args"], **c["result"].to_dict()} for c in r.tool_calls]
