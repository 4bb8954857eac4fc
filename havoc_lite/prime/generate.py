"""generate_with_prime: route a prompt, generate with tools and section forcing, checks.

One call does:
1. route: `router.route(prompt)` picks MINIMAL / LIGHT / MEDIUM / HEAVY (or the caller's `budget`);
2. render: a system turn with PRIME's instructions for that budget (`roles.system_prompt`, the
   registry's tool list when tools are on), then `tokenizer.render_prompt`;
3. generate: `engine.generate` with the registry (tool calls run inside the decode loop) and an
   interceptor that keeps the required sections (below);
4. read back: `markup.parse` of the decoded turn, `checks.run_checks` (re-runs every tool call),
   `roles.extract_roles`.

Section forcing (the interceptor). The turn stops at `<|end|>`, `<|eos|>` or `</answer>`. When the
model hits one of those while a required section is missing, the stop token is replaced by the
opening tag of the first missing section (after closing a section left open), so the model has to
write it; in HEAVY `<answer>` is also intercepted, so a model that jumps to the answer gets
`<advocate>` (then `<attack>`, …) instead. Each section is forced at most once per row, so a
model that keeps refusing ends anyway. Forced tags have engine_mask 1 (no loss on them if the turn
is used for training). Required: `<answer>` in every PRIME budget; `<advocate> <attack>
<pragmatist> <verify>` too in HEAVY. The `<tool>` section is never forced (a call cannot be made up).

Batching: pass a list of prompts. Rows are grouped by (budget, max_new_tokens) and each group is
one batched `engine.generate` call, so eval gets batching without giving up per-prompt routing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

from .. import engine
from ..markup import ANSWER, USER, Parsed, close_tag, open_sections, open_tag, parse, tag_ids
from .roles import extract_roles, system_prompt
from .router import ReasoningBudget, RouterConfig, Routing, make_routing, route
from .checks import CheckReport, run_checks

Prompt = Union[str, Sequence[dict], Sequence[int]]


@dataclass
class PrimeResult:
    """One PRIME generation.

    Attributes:
        prompt: the user's question as text (what the router saw).
        text: the decoded assistant turn, markup kept (stop token included).
        answer: content of the last `<answer>`; without one, the text outside any section, or None.
        routing: the `Routing` (budget, reasons, features, max_new_tokens, sections).
        tool_calls: the engine's call records: dicts with name, args, text, result (ToolResult), step.
        tool_results: the `ToolResult` of each call, in order.
        checks: `CheckReport` (`.passed`, `.checks[name]`): PRIME's named checks of the turn.
        roles: content of `<advocate>`, `<attack>`, `<pragmatist>`, `<verify>` written.
        forced_sections: sections the interceptor opened, in order.
        parsed: the `markup.Parsed` of `text`.
        tokens, engine_mask: the new ids and where the engine wrote them (1) vs the model (0).
        finish_reason: the engine's ("stop", "length", "tool_limit").
        num_tokens: len(tokens), engine-written tokens included.
        elapsed_s: wall-clock seconds (generation of its batch group + its own checks).
    """

    prompt: str
    text: str
    answer: Optional[str]
    routing: Routing
    tool_calls: list
    tool_results: list
    checks: CheckReport
    roles: dict
    forced_sections: list
    parsed: Parsed
    tokens: list = field(default_factory=list)
    engine_mask: list = field(default_factory=list)
    finish_reason: str = ""
    num_tokens: int = 0
    elapsed_s: float = 0.0

    def to_dict(self) -> dict:
        """A JSON-safe summary (for logging and eval records)."""
        return {
            "prompt": self.prompt, "text": self.text, "answer": self.answer,
            "budget": self.routing.budget.value, "reasons": self.routing.reasons,
            "tool_calls": [{"name": c.get("name"), "args": c.get("args"), **c["result"].to_dict()}
                           for c in self.tool_calls],
            "checks": self.checks.to_dict(),
            "roles": self.roles, "forced_sections": self.forced_sections,
            "finish_reason": self.finish_reason, "num_tokens": self.num_tokens,
            "elapsed_s": self.elapsed_s,
        }


PLAIN_MAX_NEW_TOKENS = 256   # enable_prime=False: the engine's default, not MINIMAL's 64


def _default_tools():
    """The process's one shared tool registry (`tools.shared_registry`)."""
    from ..tools import shared_registry
    return shared_registry()


# --- prompts ----------------------------------------------------------------------------------
def _is_single(prompt: Any) -> bool:
    """A single prompt is a str, a list of message dicts, or a list of ints (rendered ids)."""
    if isinstance(prompt, str):
        return True
    if isinstance(prompt, Sequence) and len(prompt) and all(isinstance(m, dict) for m in prompt):
        return True
    return (isinstance(prompt, Sequence) and len(prompt) > 0
            and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt))


def _question_of(prompt: Prompt, tokenizer) -> str:
    """The text the router reads: the string, the last user message, or for rendered ids the
    last `<|user|>` turn (all the text if there is none)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt[0], dict):
        users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
        if not users:
            raise ValueError("generate_with_prime: the messages have no 'user' message to answer")
        return users[-1]
    ids = list(prompt)
    user_id = tokenizer.special_ids.get(USER)   # a pretrained base's chat template has none of ours
    if user_id is not None and user_id in ids:
        start = len(ids) - ids[::-1].index(user_id)
        end = ids.index(tokenizer.end_id, start) if tokenizer.end_id in ids[start:] else len(ids)
        ids = ids[start:end]
    return tokenizer.decode(ids, skip_special=True)


def _render(prompt: Prompt, tokenizer, instructions: Optional[str]) -> list[int]:
    """Prompt ids: rendered ids pass through; otherwise a system turn (caller's `system` first,
    then PRIME's instructions) is merged in and `render_prompt` adds `<|assistant|>`."""
    if not isinstance(prompt, str) and len(prompt) and not isinstance(prompt[0], dict):
        return list(prompt)
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else \
        [dict(m) for m in prompt]
    if instructions:
        if messages[0].get("role") == "system":
            messages[0]["content"] = messages[0]["content"].rstrip() + "\n\n" + instructions
        else:
            messages.insert(0, {"role": "system", "content": instructions})
    return tokenizer.render_prompt(messages)


def _fit_prompt(p: Prompt, tokenizer, routing: Routing, registry, max_seq_len: int,
                system: Optional[str], prime_system: bool, describe_tools: bool) -> list[int]:
    """Render `p` with the longest system turn that leaves room to answer.

    Tries PRIME's instructions with the registry's full description (`describe_tools`), then with
    the tool names only, then the caller's `system` alone; a candidate fits when the prompt plus
    min(max_new_tokens, 64) tokens is within `max_seq_len`. A shortened or dropped system turn is
    noted in `routing.reasons`.

    Raises:
        ValueError: even the shortest rendering has max_seq_len tokens or more.
    """
    options: list[tuple[str, Optional[str]]] = []
    if prime_system:
        names = registry.names if registry is not None else ()
        if describe_tools and registry is not None and routing.tools_enabled:
            options.append(("full", system_prompt(routing.sections, registry.describe(), names)))
        options.append(("compact", system_prompt(routing.sections, None, names)))
    options.append(("none", None))
    room = min(routing.max_new_tokens, 64)
    for k, (label, instructions) in enumerate(options):
        if system:
            instructions = system.strip() + ("\n\n" + instructions if instructions else "")
        ids = _render(p, tokenizer, instructions)
        last = k == len(options) - 1
        if len(ids) + room <= max_seq_len or (last and len(ids) < max_seq_len):
            if k > 0:
                routing.reasons.append(f"PRIME system turn {options[0][0]} -> {label}: the longer "
                                       f"one did not fit max_seq_len={max_seq_len}")
            return ids
    raise ValueError(f"generate_with_prime: the {routing.budget.value} prompt renders to "
                     f"{len(ids)} tokens even without PRIME's system turn; max_seq_len is "
                     f"{max_seq_len}: shorten the prompt")


# --- the interceptor --------------------------------------------------------------------------
class SectionForcer:
    """`engine.generate` interceptor that opens required sections the model skipped (see the
    module docstring). `forced[row]` lists the sections opened for each row."""

    def __init__(self, tokenizer, required: Sequence[str], intercept_answer: bool):
        tid = tokenizer.token_id
        self.required = tuple(required)
        self.tags = tag_ids(tid)
        self.tid = tid
        self.answer_open = tid(open_tag(ANSWER))
        self.stops = {tokenizer.end_id, tokenizer.eos_id, tid(close_tag(ANSWER))}
        self.triggers = self.stops | ({self.answer_open} if intercept_answer else set())
        self.forced: dict[int, list[str]] = {}

    @property
    def stop_ids(self) -> list[int]:
        """Ids to pass to `engine.generate(stop_ids=…)`: the stops, plus `<answer>` when it is
        intercepted (so the engine lets this class replace it)."""
        return sorted(self.triggers)

    def __call__(self, row: int, generated: list) -> Optional[tuple[list[int], bool]]:
        last = generated[-1] if generated else None
        if last not in self.triggers:
            return None
        opened, current = open_sections(self.tags[i] for i in generated[:-1] if i in self.tags)
        done = opened | set(self.forced.get(row, ()))
        closing = [self.tid(close_tag(current))] if current and last != self.tid(close_tag(current)) else []
        if last == self.answer_open:
            missing = [s for s in self.required if s != ANSWER and s not in done]
            if not missing:   # nothing skipped: let the model's <answer> through
                return (closing + [self.answer_open], bool(closing))
        else:
            missing = [s for s in self.required if s not in done]
            if not missing:
                return None   # a real stop
        self.forced.setdefault(row, []).append(missing[0])
        return (closing + [self.tid(open_tag(missing[0]))], True)


# --- generate ---------------------------------------------------------------------------------
def generate_with_prime(model, tokenizer, prompt: Union[Prompt, Sequence[Prompt]],
                        enable_prime: bool = True, budget: Union[ReasoningBudget, str, None] = None,
                        max_new_tokens: Optional[int] = None, tools: Any = None,
                        temperature: float = 0.0, seed: Optional[int] = None,
                        system: Optional[str] = None,
                        stream: Optional[Callable[[int, list], None]] = None, *,
                        top_k: Optional[int] = None, top_p: Optional[float] = None,
                        router_config: Optional[RouterConfig] = None, prime_system: bool = True,
                        max_tool_calls: int = 8, rerun_tools: bool = True,
                        describe_tools: bool = False) -> Union[PrimeResult, list[PrimeResult]]:
    """Generate an answer with PRIME: routing, tool calls, forced sections, checks.

    Args:
        model: a `HavocModel` (or anything `engine.generate` accepts).
        tokenizer: the `HavocTokenizer` the model was trained with.
        prompt: a question (str), a conversation (list of {"role", "content"}), or prompt ids
            already rendered (list of int; used as they are: no system turn is added); or a LIST of
            any of these for a batch, which returns a list of results in order.
        enable_prime: False = plain generation: MINIMAL budget with 256 new tokens, no tools, no
            PRIME system turn, no forcing (checks and roles are still filled in).
        budget: force a budget ("minimal" | "light" | "medium" | "heavy") instead of routing.
        max_new_tokens: overrides the budget's token allowance (tokens, engine-written included).
        tools: a `ToolRegistry`; None = `tools.default_registry()` (one per process); False = none.
        temperature, top_k, top_p, seed: sampling, as `engine.generate` (0 = greedy).
        system: the caller's system text, placed before PRIME's instructions.
            PRIME's instructions (`roles.system_prompt`) name the tools; `describe_tools=True` puts
            the registry's full `describe()` there instead. A system turn that leaves no room
            (prompt + min(max_new_tokens, 64) > max_seq_len) is shortened, then dropped, and
            `routing.reasons` says so.
        stream: `stream(row, token_ids)` as tokens are added (`row` indexes the batch).
        router_config: thresholds for `route`.
        prime_system: False = send only `system` (for a model trained without PRIME's system turn).
        max_tool_calls: per row, as `engine.generate`.
        rerun_tools: re-run tool calls in the checks (`tool_results_match`).

    Returns:
        A `PrimeResult`, or a list of them for a list of prompts.

    Raises:
        ValueError: an unknown budget, an empty prompt list, messages without a user turn, or a
            prompt that does not fit `model.config.max_seq_len` even without a system turn.
    """
    single = _is_single(prompt)
    prompts = [prompt] if single else list(prompt)
    if not prompts:
        raise ValueError("generate_with_prime: no prompts given")
    registry = None if tools is False else (tools if tools is not None else _default_tools())

    plans = []   # (question, routing, ids)
    for p in prompts:
        question = _question_of(p, tokenizer)
        if not enable_prime:
            routing = make_routing(ReasoningBudget.MINIMAL, ["PRIME disabled"], config=router_config,
                                   max_new_tokens=PLAIN_MAX_NEW_TOKENS)
            routing.sections = ()
        elif budget is not None:
            routing = make_routing(budget, [f"budget {ReasoningBudget.parse(budget).value} set by caller"],
                                   config=router_config)
        else:
            routing = route(question, router_config)
        if max_new_tokens is not None:
            routing.max_new_tokens = int(max_new_tokens)
        ids = _fit_prompt(p, tokenizer, routing, registry, model.config.max_seq_len,
                          system, enable_prime and prime_system, describe_tools)
        plans.append((question, routing, ids))

    # One batched engine call per (budget, max_new_tokens) group.
    groups: dict[tuple, list[int]] = {}
    for i, (_, routing, _) in enumerate(plans):
        groups.setdefault((routing.budget, routing.max_new_tokens), []).append(i)
    results: list[Optional[PrimeResult]] = [None] * len(plans)
    for (bud, n_new), rows in groups.items():
        routing0 = plans[rows[0]][1]
        use_tools = registry if (enable_prime and routing0.tools_enabled) else None
        forcer = None
        stop_ids = [tokenizer.end_id, tokenizer.eos_id]
        if enable_prime:
            required = routing0.forced_sections
            forcer = SectionForcer(tokenizer, required, intercept_answer=bud is ReasoningBudget.HEAVY)
            stop_ids = forcer.stop_ids
        row_stream = None
        if stream is not None:
            row_stream = lambda r, ids, rows=rows: stream(rows[r], ids)  # noqa: E731
        gens = engine.generate(
            model, [plans[i][2] for i in rows], max_new_tokens=n_new, temperature=temperature,
            top_k=top_k, top_p=top_p, stop_ids=stop_ids, seed=seed, stream=row_stream,
            tools=use_tools, tokenizer=tokenizer, max_tool_calls=max_tool_calls,
            interceptor=forcer)
        for r, (i, gen) in enumerate(zip(rows, gens)):
            t0 = time.perf_counter()
            question, routing, _ = plans[i]
            forced = forcer.forced.get(r, []) if forcer is not None else []
            results[i] = _read_back(question, routing, gen, tokenizer,
                                    registry if rerun_tools else None, forced, enable_prime)
            results[i].elapsed_s = gen.elapsed_s + (time.perf_counter() - t0)
    return results[0] if single else results


def _read_back(question: str, routing: Routing, gen, tokenizer, registry, forced: list,
               enable_prime: bool) -> PrimeResult:
    text = tokenizer.decode(gen.tokens)
    parsed = parse(text)
    required = routing.forced_sections if enable_prime else ()
    checks = run_checks(parsed, registry, prompt=question, required_sections=required)
    answer = parsed.answer if parsed.answer is not None else (parsed.outside or None)
    return PrimeResult(
        prompt=question, text=text, answer=answer, routing=routing,
        tool_calls=list(gen.tool_calls), tool_results=[c["result"] for c in gen.tool_calls],
        checks=checks,
        roles=extract_roles(parsed), forced_sections=list(forced), parsed=parsed,
        tokens=list(gen.tokens), engine_mask=list(gen.engine_mask),
        finish_reason=gen.finish_reason, num_tokens=gen.num_tokens)


def generate_with_prime_batch(model, tokenizer, prompts: Sequence[Prompt], **kwargs) -> list[PrimeResult]:
    """`generate_with_prime` over a list of prompts (always returns a list)."""
    if _is_single(prompts):
        raise ValueError("generate_with_prime_batch: pass a list of prompts, got a single prompt")
    return generate_with_prime(model, tokenizer, list(prompts), **kwargs)
