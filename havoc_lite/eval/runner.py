"""The general evaluation loop: prompts -> samples -> grades -> per-sample JSONL + summary.

`run_eval` knows nothing about models: it calls a `GenerateFn`
    generate_fn(prompts: list[messages | str], seed: int) -> list[Sample]
so tests can feed it canned outputs and `make_generate_fn` plugs in the engine (batched, KV cache,
tools) or PRIME. Records are written as they are produced, so an interrupted run keeps its work.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tqdm.auto import tqdm

from .metrics import (latency_stats, majority_answer, mean_pass_at_k, tokens_per_second,
                      tool_success_rate, tool_use_rate)


@dataclass
class Sample:
    """One generated answer. text: decoded output (markup kept); tool_calls: dicts with `name`,
    `args`, `status` ("success"|"error"), `result` or `error`; num_tokens: new tokens (engine-written
    ones included); elapsed_s: wall-clock seconds of the call that produced it."""
    text: str
    tool_calls: list = field(default_factory=list)
    num_tokens: int = 0
    elapsed_s: float = 0.0
    finish_reason: str = ""
    tokens: list = field(default_factory=list)
    engine_mask: list = field(default_factory=list)


GenerateFn = Callable[[list, int], list]


def tool_call_record(call: dict) -> dict:
    """A JSON-safe view of an engine tool-call dict (its `result` is a ToolResult)."""
    result = call.get("result")
    out = {"name": call.get("name"), "args": call.get("args")}
    if result is not None and hasattr(result, "to_dict"):
        out.update(result.to_dict())
    elif isinstance(result, dict):
        out.update(result)
    return out


def _render(tokenizer, prompt) -> list[int]:
    if isinstance(prompt, str):
        return tokenizer.encode(prompt, bos=True)
    return tokenizer.render_prompt(prompt)


def make_generate_fn(model, tokenizer, *, max_new_tokens: int = 256, temperature: float = 0.0,
                     top_k: Optional[int] = None, top_p: Optional[float] = None, tools: Any = "default",
                     prime: bool = False, batch_size: int = 16, stop_at_text: Sequence[str] = ("\n\nQ:",),
                     compile_decode: bool = False, **prime_kwargs) -> GenerateFn:
    """A GenerateFn over a HavocModel: prompts rendered by the tokenizer (chat messages through
    `render_prompt`, plain strings through `encode(bos=True)`), generated `batch_size` at a time in
    one KV-cached `engine.generate` call each (stop at `<|end|>`/`<|eos|>`), tool calls executed.

    tools: "default" -> `tools.shared_registry()`, None -> no tools, else a ToolRegistry.
    prime: use `havoc_lite.prime.generate_with_prime` (extra keyword args go to it).
    stop_at_text: a plain-text prompt's output is cut at these strings (lm-eval's `until`).
    compile_decode: the engine's decode step under torch.compile (`engine.generate(compile=True)`).
    Raises ValueError for `prime` with `compile_decode` (PRIME drives its own decoding).
    """
    if prime and compile_decode:
        raise ValueError("compile_decode does not apply to prime generation")
    from .. import engine
    if tools == "default":    # one worker process per Python process, not one per call
        from ..tools import shared_registry
        tools = shared_registry()
    stop_ids = [tokenizer.end_id, tokenizer.eos_id]

    def generate_fn(prompts: list, seed: int = 0) -> list[Sample]:
        out: list[Sample] = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            kw = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                      top_p=top_p, seed=seed + start)
            if prime:  # PRIME renders the conversation itself (adding its own system turn)
                from ..prime import generate_with_prime
                gens = generate_with_prime(model, tokenizer, list(chunk),
                                           tools=tools if tools is not None else False, **kw, **prime_kwargs)
            else:
                ids = [_render(tokenizer, p) for p in chunk]
                gens = engine.generate(model, ids, stop_ids=stop_ids, tools=tools,
                                       tokenizer=tokenizer if tools is not None else None,
                                       compile=compile_decode, **kw)
            for p, g in zip(chunk, gens):
                tokens = list(getattr(g, "tokens", []))
                text = tokenizer.decode(tokens)
                if isinstance(p, str):
                    for stop in stop_at_text:
                        text = text.split(stop, 1)[0]
                out.append(Sample(text=text, tool_calls=[tool_call_record(c) for c in g.tool_calls],
                                  num_tokens=g.num_tokens, elapsed_s=g.elapsed_s,
                                  finish_reason=g.finish_reason, tokens=tokens,
                                  engine_mask=list(getattr(g, "engine_mask", []))))
        return out

    return generate_fn


def run_eval(items: Sequence[dict], grader: Callable, generate_fn: GenerateFn, *, samples: int = 1,
             k: Sequence[int] = (1,), batch_size: int = 16,
             output_jsonl: Optional[str | Path] = None, seed: int = 0, progress: bool = True) -> dict:
    """Generate `samples` outputs per item, grade each, write per-sample records, summarise.

    Args:
        items: dicts with "prompt" (chat messages or a string), an "id", and what the grader needs.
        grader: `grader(item, text, tool_calls) -> Grade` (see graders.py).
        generate_fn: see the module docstring; called with up to `batch_size` prompts at a time.
        samples: n samples per item; k: pass@k / maj@k values to report (each <= samples).
        output_jsonl: one line per sample: id, sample, prompt, output, answers, checks, passed,
            reward, tool_calls, num_tokens, latency_s.

    Returns:
        {"num_examples", "samples", "k", "metrics": {check: {"accuracy", "pass@k"…, "maj@k"…},
         "reward_mean", "tools": {"use_rate", "success_rate", "num_calls"}, "latency": {p50_s…},
         "tokens_per_s", "total_tokens", "wall_s"}, "per_example": [{"id", "n", "passed"}]}.

    Raises:
        ValueError: k outside [1, samples], or an item without "prompt" (naming its index).
    """
    ks = sorted(set(int(x) for x in k))
    if samples < 1 or not ks or ks[0] < 1 or ks[-1] > samples:
        raise ValueError(f"need 1 <= k <= samples, got k={ks}, samples={samples}")
    grades: list[list] = [[] for _ in items]
    tool_calls, latencies, total_tokens = [], [], 0
    sink = None
    if output_jsonl is not None:
        Path(output_jsonl).parent.mkdir(parents=True, exist_ok=True)
        sink = open(output_jsonl, "w", encoding="utf-8")
    t_start = time.perf_counter()
    try:
        for i, s, out, v, dt in sample_and_grade(items, grader, generate_fn, samples=samples,
                                                  batch_size=batch_size, seed=seed, progress=progress):
            grades[i].append(v)
            latency = out.elapsed_s or dt
            latencies.append(latency)
            tool_calls.append(out.tool_calls)
            total_tokens += out.num_tokens
            if sink:
                sink.write(json.dumps({
                    "id": items[i].get("id", i), "sample": s, "prompt": items[i]["prompt"],
                    "output": out.text, "answers": v.answers, "checks": v.checks,
                    "passed": v.passed, "reward": v.reward, "tool_calls": out.tool_calls,
                    "num_tokens": out.num_tokens, "finish_reason": out.finish_reason,
                    "latency_s": round(latency, 4)}, ensure_ascii=False, default=str) + "\n")
                sink.flush()
    finally:
        if sink:
            sink.close()
    wall = time.perf_counter() - t_start  # generation + grading, wall clock
    return summarize(items, grades, ks, tool_calls, latencies, total_tokens, wall)


def sample_and_grade(items: Sequence[dict], grader: Callable, generate_fn: GenerateFn, *,
                      samples: int = 1, batch_size: int = 16, seed: int = 0, progress: bool = True):
    """Yield (item index, sample index, Sample, Grade, batch seconds) for `samples` generations
    of every item, `batch_size` prompts per `generate_fn` call (seeded `seed` + offset)."""
    for i, item in enumerate(items):
        if "prompt" not in item:
            raise ValueError(f"item {i} (id={item.get('id')!r}) has no 'prompt'")
    jobs = [(i, s) for i in range(len(items)) for s in range(samples)]
    bar = tqdm(total=len(jobs), desc="generate+grade", disable=not progress)
    try:
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start:start + batch_size]
            t0 = time.perf_counter()
            outs = generate_fn([items[i]["prompt"] for i, _ in batch], seed + start)
            dt = time.perf_counter() - t0
            if len(outs) != len(batch):
                raise RuntimeError(f"generate_fn returned {len(outs)} samples for {len(batch)} prompts")
            for (i, s), out in zip(batch, outs):
                yield i, s, out, grader(items[i], out.text, out.tool_calls), dt
            bar.update(len(batch))
    finally:
        bar.close()


def summarize(items, grades, ks, tool_calls, latencies, total_tokens, wall) -> dict:
    """The summary dict of `run_eval` from per-item grade lists."""
    names = ["passed"] + sorted({n for vs in grades for v in vs for n in v.checks})
    metrics: dict[str, Any] = {}
    for name in names:
        ok = [[v.passed if name == "passed" else v.checks.get(name, False) for v in vs] for vs in grades]
        counts = [(len(o), sum(o)) for o in ok]
        m = {"accuracy": sum(c for _, c in counts) / max(sum(n for n, _ in counts), 1)}
        for k in ks:
            m[f"pass@{k}"] = mean_pass_at_k(counts, k)
        if name != "passed" and any(name in v.answers for vs in grades for v in vs):
            for k in ks:
                hits = []
                for vs in grades:
                    answers = [v.answers.get(name) for v in vs[:k]]
                    maj = majority_answer(answers)
                    hits.append(maj is not None and any(v.checks.get(name) for v in vs[:k]
                                                         if v.answers.get(name) == maj))
                m[f"maj@{k}"] = sum(hits) / max(len(hits), 1)
        metrics[name] = m
    rewards = [v.reward for vs in grades for v in vs]
    metrics["reward_mean"] = sum(rewards) / max(len(rewards), 1)
    metrics["tools"] = {"use_rate": tool_use_rate(tool_calls), "success_rate": tool_success_rate(tool_calls),
                        "num_calls": sum(len(c) for c in tool_calls)}
    metrics["latency"] = latency_stats(latencies)
    metrics["tokens_per_s"] = tokens_per_second(total_tokens, wall)
    metrics["total_tokens"], metrics["wall_s"] = total_tokens, wall
    return {"num_examples": len(items), "samples": len(grades[0]) if grades else 0, "k": ks,
            "metrics": metrics,
            "per_example": [{"id": it.get("id", i), "n": len(vs), "passed": sum(v.passed for v in vs)}
                            for i, (it, vs) in enumerate(zip(items, grades))]}


def measure_latency(generate_fn: GenerateFn, prompts: Sequence, repeats: int = 1) -> dict:
    """Single-query latency (batch of one, what a user waits for): p50/p95 seconds over
    `prompts` x `repeats` calls, plus tokens/s."""
    times, tokens = [], 0
    for r in range(repeats):
        for p in prompts:
            t0 = time.perf_counter()
            out = generate_fn([p], r)
            times.append(time.perf_counter() - t0)
            tokens += out[0].num_tokens
    return {**latency_stats(times), "tokens_per_s": tokens_per_second(tokens, sum(times)),
            "n": len(times)}


def write_json(obj: dict, path: str | Path) -> None:
    """Write `obj` as indented JSON (parents created), atomically via a temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def load_prompt_items(path: str | Path, system: Optional[str] = None, limit: Optional[int] = None) -> list[dict]:
    """Read a prompts JSONL into run_eval items. Each line holds "messages" (chat), "prompt" (a
    string: a plain-text prompt) or "question" (made into a user turn, after `system` if given),
    plus whatever the grader needs ("answer", "gold", "tests"); "id" defaults to file:line.

    Raises:
        FileNotFoundError: no such file. ValueError: bad JSON or no prompt field (names file:line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {path} not found")
    items = []
    from ..data.readers import iter_jsonl  # the kit's one JSONL reader (errors name file:line)
    for lineno, row in iter_jsonl(path):
        if limit is not None and len(items) >= limit:
            break
        if "messages" in row:
            prompt = [m for m in row["messages"] if m.get("role") != "assistant"]
        elif isinstance(row.get("prompt"), str):
            prompt = row["prompt"]
        elif isinstance(row.get("question"), str):
            prompt = ([{"role": "system", "content": system}] if system else []) + \
                [{"role": "user", "content": row["question"]}]
        else:
            raise ValueError(f"{path}:{lineno}: needs 'messages', 'prompt' or 'question'")
        items.append({"id": f"{path.name}:{lineno}", **row, "prompt": prompt})
    return items
