"""`python -m synth.generate`: verified tool-use traces from Claude.

    python -m synth.generate --topic stats_tests --num-examples 1000 \
        --output data/tool_traces.jsonl --model claude-sonnet-4-5 --max-usd 5 --concurrency 4

For each index i = 0, 1, 2, ... the run asks Claude (forced `emit_trace` tool use, see
`synth.claude`) for one trace in a category and complexity chosen round-robin from the topic spec,
verifies it with the real tools (`synth.verify`), and appends kept traces to `--output`. It stops
when `--num-examples` traces are kept, `--max-attempts` indices are used, or the next request
could cross `--max-usd`.

Files (next to `--output`, e.g. data/tool_traces.jsonl):
  tool_traces.jsonl          kept traces, append-only, flushed and fsynced after each one
  tool_traces.ledger.jsonl   one line per finished request: id, outcome (kept or the reject
                             reason), detail, tokens, USD; also fsynced
  tool_traces.report.json    counts kept / rejected per reason, tokens, cost (rewritten atomically)

Ids are `{topic}-s{seed}-{i:06d}`, so `--resume` knows exactly which indices are done (kept or
rejected) and sends only the others: a crash or a Colab disconnect loses at most the requests in
flight and never duplicates a line. The USD cap counts the spend of earlier runs in the ledger.

Topic specs: `--topic NAME` reads `synth/topics/NAME.yaml`; `--topic path/to/spec.yaml` reads a
spec of your own with the same fields (name, description, tool, system_prompt, complexity_levels,
categories with name/description/examples).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import anthropic
import yaml

from .claude import (FATAL_ERRORS, Budget, Reply, estimate_input_tokens, make_client, price_for,
                     request_trace)
from .verify import REJECT_REASONS, Deduper, Verdict, verify_trace

log = logging.getLogger("synth")
TOPICS_DIR = Path(__file__).parent / "topics"
TOOL_USE_OVERHEAD_TOKENS = 400   # the system prompt the API adds for tool use (a few hundred tokens)
TYPICAL_OUTPUT_TOKENS = 700      # a trace of a few steps; used only for the dry-run estimate
SCENARIOS = ["a school", "a hospital", "a farm", "a factory", "a bakery", "a sports club",
             "a shop", "a laboratory", "a city council", "a family trip", "a library", "a garden",
             "a logistics company", "a restaurant", "a research station", "a software team"]


# --- topic specs ----------------------------------------------------------------------------------
@dataclass
class Level:
    name: str
    description: str


@dataclass
class Category:
    name: str
    description: str
    examples: list[str] = field(default_factory=list)


@dataclass
class TopicSpec:
    """A topic: what to ask Claude for, and which tool the traces must call."""
    name: str
    description: str
    tool: str
    system_prompt: str
    complexity_levels: list[Level]
    categories: list[Category]
    path: str = ""


def _need_str(d: dict, key: str, where: str, path: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"{path}: field '{where}{key}' must be a non-empty string")
    return v.strip()


def load_topic(topic: str) -> TopicSpec:
    """Read a topic spec by name (synth/topics/NAME.yaml) or by path to a YAML file.

    Raises:
        ValueError: naming the file and the field when the spec is missing, not YAML, or has a
            missing/mistyped field.
    """
    p = Path(topic)
    if not (p.suffix in (".yaml", ".yml") or os.sep in topic or "/" in topic):
        p = TOPICS_DIR / f"{topic}.yaml"
        if not p.exists():
            names = sorted(x.stem for x in TOPICS_DIR.glob("*.yaml"))
            raise ValueError(f"unknown topic {topic!r}: not one of {', '.join(names)} and not a path "
                             "to a .yaml spec")
    if not p.exists():
        raise ValueError(f"{p}: topic spec file not found")
    path = str(p)
    try:
        d = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: a topic spec must be a YAML mapping")
    levels_raw, cats_raw = d.get("complexity_levels"), d.get("categories")
    if not isinstance(levels_raw, list) or not levels_raw:
        raise ValueError(f"{path}: field 'complexity_levels' must be a non-empty list")
    if not isinstance(cats_raw, list) or not cats_raw:
        raise ValueError(f"{path}: field 'categories' must be a non-empty list")
    levels, cats = [], []
    for i, lv in enumerate(levels_raw):
        if not isinstance(lv, dict):
            raise ValueError(f"{path}: field 'complexity_levels[{i}]' must be a mapping with name, description")
        w = f"complexity_levels[{i}]."
        levels.append(Level(_need_str(lv, "name", w, path), _need_str(lv, "description", w, path)))
    for i, c in enumerate(cats_raw):
        if not isinstance(c, dict):
            raise ValueError(f"{path}: field 'categories[{i}]' must be a mapping with name, description, examples")
        w = f"categories[{i}]."
        ex = c.get("examples", [])
        if not isinstance(ex, list) or not all(isinstance(e, str) for e in ex):
            raise ValueError(f"{path}: field '{w}examples' must be a list of strings")
        cats.append(Category(_need_str(c, "name", w, path), _need_str(c, "description", w, path), ex))
    return TopicSpec(_need_str(d, "name", "", path), _need_str(d, "description", "", path),
                     _need_str(d, "tool", "", path), _need_str(d, "system_prompt", "", path),
                     levels, cats, path)


# --- prompts --------------------------------------------------------------------------------------
def trace_schema(tool: str) -> dict:
    """The `input_schema` of the forced `emit_trace` tool: the DESIGN.md trace, one tool."""
    return {
        "type": "object",
        "properties": {
            "question": {"type": "string", "description": "the problem, self-contained, with all its data"},
            "reasoning": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "properties": {
                    "content": {"type": "string", "description": "one short reasoning step"},
                    "tool_call": {"type": "object", "description": f"a call of {tool}, if this step computes",
                                  "properties": {"name": {"type": "string", "enum": [tool]},
                                                 "args": {"type": "object"}},
                                  "required": ["name", "args"]},
                    "tool_result": {"type": "object", "description": "the result you expect the call "
                                    "to return (it is replaced by the real one)"}},
                "required": ["content"]}},
            "answer": {"type": "string", "description": "the final answer, stating the numbers the "
                       "last tool call returned"},
        },
        "required": ["question", "reasoning", "answer"],
    }


def system_prompt(spec: TopicSpec, registry) -> str:
    """Topic guidance + the tool's signature (from the registry) + the trace rules."""
    doc = [ln for ln in registry.describe().splitlines() if ln.startswith(f"- {spec.tool}(")]
    return (
        "You write training data for a small language model that learns to solve problems by "
        f"calling tools. Topic: {spec.description}\n\n{spec.system_prompt.strip()}\n\n"
        f"The tool (arguments with ? are optional):\n{doc[0] if doc else spec.tool}\n\n"
        "Answer by calling emit_trace once with one worked example:\n"
        "- question: a new, self-contained problem with all the numbers it needs.\n"
        "- reasoning: short steps. A step that computes has a tool_call {\"name\": \"" + spec.tool +
        "\", \"args\": {...}} with arguments valid for the tool, and tool_result: the result you "
        "expect it to return. Never do by hand what the tool can compute.\n"
        "- answer: the final answer, quoting the numbers the last tool call returned.\n"
        "Keep it concise; do not mention that this is training data.")


def plan(spec: TopicSpec, index: int, seed: int) -> tuple[Category, Level, str]:
    """Category, level and scenario for request `index`: categories round-robin, then levels, so
    every pair is covered evenly; the scenario (for variety) is drawn from a seeded RNG."""
    cat = spec.categories[index % len(spec.categories)]
    lvl = spec.complexity_levels[(index // len(spec.categories)) % len(spec.complexity_levels)]
    scenario = random.Random(f"{spec.name}:{seed}:{index}").choice(SCENARIOS)
    return cat, lvl, scenario


def user_prompt(spec: TopicSpec, index: int, seed: int) -> str:
    cat, lvl, scenario = plan(spec, index, seed)
    ex = "".join(f"\n- {e}" for e in cat.examples)
    return (f"Category: {cat.name}: {cat.description}\nComplexity: {lvl.name}: {lvl.description}\n"
            f"Setting: {scenario}.\n" + (f"Examples of the category (write a different problem):{ex}\n" if ex else "")
            + f"Write example #{index}.")


def trace_id(spec: TopicSpec, seed: int, index: int) -> str:
    return f"{spec.name}-s{seed}-{index:06d}"


# --- files ----------------------------------------------------------------------------------------
def side_paths(output: Path) -> tuple[Path, Path]:
    """(ledger, report) paths next to the output file."""
    return output.with_name(output.stem + ".ledger.jsonl"), output.with_name(output.stem + ".report.json")


def read_jsonl_repair(path: Path) -> list[dict]:
    """Read a JSONL file we append to; a final line cut off by a crash is removed from the file
    (it was never complete, so its index is simply redone).

    Raises:
        ValueError: naming the file and line for a corrupt line that is not the last one.
    """
    if not path.exists():
        return []
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        keep = raw.rfind(b"\n") + 1
        log.warning("%s: removing an incomplete last line (%d bytes) left by an interrupted run",
                    path, len(raw) - keep)
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        raw = raw[:keep]
    rows = []
    for n, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not valid JSON ({e.msg}); fix or remove that line") from None
    return rows


def append_line(f, obj: dict) -> None:
    """Append one JSON line and make it durable (flush + fsync) before going on."""
    f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --- the run --------------------------------------------------------------------------------------
@dataclass
class GenerateArgs:
    """Generate verified tool-use traces with Claude (key from ANTHROPIC_API_KEY)."""
    topic: str = "stats_tests"
    """topic name (synth/topics/NAME.yaml) or a path to your own spec"""
    num_examples: int = 100
    """traces to keep"""
    output: str = "data/tool_traces.jsonl"
    model: str = "claude-sonnet-4-5"
    max_usd: float = 5.0
    """hard cap on spend, USD, across resumed runs of this output"""
    concurrency: int = 4
    resume: bool = False
    """continue an existing output: skip indices already kept or rejected"""
    dry_run: bool = False
    """print the prompts and the cost estimate; send nothing"""
    seed: int = 0
    price_in: Optional[float] = None
    """USD per million input tokens (required for a model without a price on file)"""
    price_out: Optional[float] = None
    """USD per million output tokens"""
    max_tokens: int = 2048
    temperature: Optional[float] = None
    """sampling temperature, sent only when given (newer models fix it; the API default is 1)"""
    max_attempts: Optional[int] = None
    """indices to try at most (default 2 * num_examples + 10)"""
    max_retries: int = 4
    """SDK retries on 429/5xx/overloaded"""
    backoff_s: float = 5.0
    """first wait of our own retry loop after the SDK's retries (doubles each time)"""
    base_url: Optional[str] = None


def _estimate(args: GenerateArgs, spec: TopicSpec, system: str, schema: dict,
              prices: tuple[float, float]) -> dict:
    in_tok = estimate_input_tokens(system, json.dumps(schema), user_prompt(spec, 0, args.seed)) \
        + TOOL_USE_OVERHEAD_TOKENS
    n = args.num_examples
    typical = n * (in_tok * prices[0] + TYPICAL_OUTPUT_TOKENS * prices[1]) / 1e6
    worst = (args.max_attempts or 2 * n + 10) * (in_tok * prices[0] + args.max_tokens * prices[1]) / 1e6
    return {"input_tokens_per_request": in_tok, "typical_usd": round(typical, 4),
            "worst_case_usd": round(worst, 4), "capped_at_usd": args.max_usd}


async def _run(args: GenerateArgs, spec: TopicSpec, registry, system: str, schema: dict,
               prices: tuple[float, float], http_client) -> dict:
    out_path = Path(args.output)
    ledger_path, report_path = side_paths(out_path)
    if not args.resume and ((out_path.exists() and out_path.stat().st_size) or ledger_path.exists()):
        raise FileExistsError(f"{out_path} (or its ledger) already exists: pass --resume to continue "
                              "it, or choose another --output")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    kept_rows, ledger = read_jsonl_repair(out_path), read_jsonl_repair(ledger_path)
    done = {r.get("id") for r in kept_rows} | {r.get("id") for r in ledger}
    dedupe = Deduper(r["question"] for r in kept_rows if isinstance(r.get("question"), str))
    state = {"kept": len(kept_rows), "rejected": {r: 0 for r in REJECT_REASONS}, "corrected": 0,
             "requests": len(ledger), "api_errors": 0, "input_tokens": 0, "output_tokens": 0,
             "examples": {}}
    spent = 0.0
    for r in ledger:
        if r.get("outcome") != "kept":
            state["rejected"][r.get("outcome", "malformed")] = state["rejected"].get(r.get("outcome"), 0) + 1
        state["corrected"] += int(r.get("corrected", 0))
        state["input_tokens"] += int(r.get("input_tokens", 0))
        state["output_tokens"] += int(r.get("output_tokens", 0))
        spent += float(r.get("usd", 0.0))
    budget = Budget(args.max_usd, spent)
    max_attempts = args.max_attempts or 2 * args.num_examples + 10
    in_est = estimate_input_tokens(system, json.dumps(schema), user_prompt(spec, 0, args.seed)) \
        + TOOL_USE_OVERHEAD_TOKENS
    seen_in = [0]
    pending = (i for i in range(max_attempts) if trace_id(spec, args.seed, i) not in done)
    inflight, stop = [0], {"reason": None, "error": None}

    def report() -> dict:
        return {"topic": spec.name, "model": args.model, "output": str(out_path),
                "kept": state["kept"], "rejected_total": sum(state["rejected"].values()),
                "rejected": state["rejected"], "corrected_tool_results": state["corrected"],
                "requests": state["requests"], "api_errors": state["api_errors"],
                "input_tokens": state["input_tokens"], "output_tokens": state["output_tokens"],
                "usd_spent": round(budget.spent, 6), "max_usd": args.max_usd,
                "price_usd_per_mtok": {"input": prices[0], "output": prices[1]},
                "stop_reason": stop["reason"], "reject_examples": state["examples"]}

    from tqdm.auto import tqdm
    bar = tqdm(total=args.num_examples, initial=min(state["kept"], args.num_examples),
               desc=f"synth {spec.name}", unit="trace", disable=None)
    client = make_client(http_client=http_client, max_retries=args.max_retries, base_url=args.base_url)
    consecutive_errors = [0]

    with open(out_path, "a", encoding="utf-8") as fout, open(ledger_path, "a", encoding="utf-8") as fled:
        async def one(i: int) -> None:
            inflight[0] += 1     # counted until its outcome is recorded, so workers never overshoot
            try:
                await _one(i)
            finally:
                inflight[0] -= 1

        async def _one(i: int) -> None:
            worst = (max(in_est, int(seen_in[0] * 1.2)) * prices[0] + args.max_tokens * prices[1]) / 1e6
            if not budget.reserve(worst):
                stop["reason"] = stop["reason"] or "budget"
                return
            try:
                reply: Reply = await request_trace(
                    client, model=args.model, system=system, user=user_prompt(spec, i, args.seed),
                    tool_schema=schema, max_tokens=args.max_tokens, temperature=args.temperature,
                    backoff_s=args.backoff_s)
            except FATAL_ERRORS as e:
                budget.settle(worst, 0.0)
                stop["reason"], stop["error"] = "fatal_api_error", f"{type(e).__name__}: {e}"
                return
            except anthropic.APIError as e:  # transient errors after every retry: the index stays undone
                budget.settle(worst, 0.0)
                state["api_errors"] += 1
                consecutive_errors[0] += 1
                log.warning("request %s failed after retries: %s", i, type(e).__name__)
                if consecutive_errors[0] >= max(3, 2 * args.concurrency):
                    stop["reason"], stop["error"] = "api_errors", f"{type(e).__name__}: {e}"
                return
            consecutive_errors[0] = 0
            usd = reply.usage.cost_usd(prices)
            budget.settle(worst, usd)
            seen_in[0] = max(seen_in[0], reply.usage.input_tokens + reply.usage.cache_read_input_tokens
                             + reply.usage.cache_creation_input_tokens)
            tid = trace_id(spec, args.seed, i)
            cat, lvl, _ = plan(spec, i, args.seed)
            if reply.trace is None:
                verdict = Verdict(False, None, "malformed", reply.problem)
            else:
                raw = {k: reply.trace[k] for k in ("question", "reasoning", "answer", "tool_result")
                       if k in reply.trace}
                trace = {"id": tid, "topic": spec.name, "source": f"claude:{args.model}",
                         "category": cat.name, "complexity": lvl.name, **raw}
                verdict = await asyncio.to_thread(verify_trace, trace, registry, allowed_tools=[spec.tool])
                if verdict.ok and dedupe.seen(verdict.trace["question"]):
                    verdict = Verdict(False, None, "duplicate", "question seen before (normalised hash)")
            if verdict.ok:
                append_line(fout, verdict.trace)
                state["kept"] += 1
                state["corrected"] += verdict.corrected
                bar.update(1)
            else:
                state["rejected"][verdict.reason] = state["rejected"].get(verdict.reason, 0) + 1
                ex = state["examples"].setdefault(verdict.reason, [])
                if len(ex) < 5:
                    ex.append({"id": tid, "detail": verdict.detail[:300]})
            state["requests"] += 1
            state["input_tokens"] += reply.usage.input_tokens
            state["output_tokens"] += reply.usage.output_tokens
            append_line(fled, {"id": tid, "outcome": "kept" if verdict.ok else verdict.reason,
                               "detail": verdict.detail[:300], "corrected": verdict.corrected,
                               "input_tokens": reply.usage.input_tokens,
                               "output_tokens": reply.usage.output_tokens,
                               "cache_read_input_tokens": reply.usage.cache_read_input_tokens,
                               "cache_creation_input_tokens": reply.usage.cache_creation_input_tokens,
                               "usd": usd})
            write_atomic(report_path, json.dumps(report(), indent=2))

        async def worker() -> None:
            while stop["reason"] is None and state["kept"] + inflight[0] < args.num_examples:
                i = next(pending, None)
                if i is None:
                    stop["reason"] = stop["reason"] or "max_attempts"
                    return
                await one(i)

        try:
            await asyncio.gather(*(worker() for _ in range(max(1, args.concurrency))))
        finally:
            bar.close()
            await client.close()
            if stop["reason"] is None:
                stop["reason"] = "done" if state["kept"] >= args.num_examples else "interrupted"
            rep = report()
            write_atomic(report_path, json.dumps(rep, indent=2))
    if stop["error"]:
        rep["error"] = stop["error"]
    return rep


def run_generation(args: GenerateArgs, *, http_client=None, registry=None) -> dict:
    """Run (or dry-run) a generation and return the report dict (also written as JSON).

    Args:
        args: the CLI options.
        http_client: an `AsyncClient` for the SDK (tests pass one with a mock transport).
        registry: a ToolRegistry (default `havoc_lite.tools.default_registry()`).
    Raises:
        ValueError: bad topic spec (file + field), unknown tool, unknown model price.
        FileExistsError: output exists and --resume was not given.
        RuntimeError: ANTHROPIC_API_KEY unset (not for --dry-run), or a fatal API error (bad
            request, authentication, unknown model) after the files are closed intact.
    """
    spec = load_topic(args.topic)
    prices = price_for(args.model, args.price_in, args.price_out)
    if args.num_examples <= 0 or args.concurrency <= 0:
        raise ValueError("--num-examples and --concurrency must be positive")
    if registry is None:
        from havoc_lite.tools import default_registry
        registry = default_registry()
    if spec.tool not in registry.names:
        raise ValueError(f"{spec.path}: field 'tool' names {spec.tool!r}, which is not a registered "
                         f"tool ({', '.join(registry.names)})")
    system, schema = system_prompt(spec, registry), trace_schema(spec.tool)
    if args.dry_run:
        est = _estimate(args, spec, system, schema, prices)
        print(f"=== system prompt ===\n{system}\n\n=== emit_trace input_schema ===\n"
              f"{json.dumps(schema, indent=2)}")
        for i in range(min(2, args.num_examples)):
            print(f"\n=== user prompt #{i} (id {trace_id(spec, args.seed, i)}) ===\n{user_prompt(spec, i, args.seed)}")
        print(f"\n=== cost estimate ({args.model}, ${prices[0]}/${prices[1]} per M tokens in/out) ===\n"
              f"~{est['input_tokens_per_request']} input tokens a request; {args.num_examples} traces "
              f"at ~{TYPICAL_OUTPUT_TOKENS} output tokens: ~${est['typical_usd']:.2f}; worst case "
              f"(every attempt, max_tokens={args.max_tokens}): ${est['worst_case_usd']:.2f}; "
              f"hard cap --max-usd ${args.max_usd:.2f}. Nothing was sent.")
        return {"dry_run": True, **est}
    rep = asyncio.run(_run(args, spec, registry, system, schema, prices, http_client))
    if rep["stop_reason"] == "fatal_api_error":
        raise RuntimeError(f"the API refused the request ({rep.get('error')}); files are intact")
    return rep


def main(argv: Optional[list[str]] = None) -> None:
    import tyro
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = tyro.cli(GenerateArgs, args=argv)
    try:
        rep = run_generation(args)
    except (ValueError, FileExistsError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    if not rep.get("dry_run"):
        print(f"kept {rep['kept']} traces in {rep['output']}; rejected {rep['rejected_total']} "
              f"({', '.join(f'{k}: {v}' for k, v in rep['rejected'].items() if v)}); "
              f"spent ${rep['usd_spent']:.4f} of ${rep['max_usd']:.2f}; stopped: {rep['stop_reason']}")


if __name__ == "__main__":
    main()
