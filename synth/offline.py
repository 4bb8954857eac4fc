"""Offline trace generators: templated problems whose answers the real tools compute (no API key).

`generate_offline(topic, n, seed, split)` returns `n` verified tool traces, reproducible for a seed.
Every number in a trace comes from running the tool: a template builds a question and the tool
calls, the registry runs them (a later step may use an earlier step's real result), and the trace
goes through `synth.validation.validate_trace` like any Claude trace.

Train/test split is by a hash of the normalised question (`validation.question_key`): a question is
in "test" when its hash falls in the lowest `test_fraction` of the range, so the two splits can
never share a question, whatever the seeds.

Held-out phrasings (`phrasing="heldout"`): a second template family, for arithmetic
`havoc_lite.eval.arith_heldout` (other contexts, verbs, orders and question forms, with numbers
drawn in the training templates' range), for arithmetic_traps `synth.traps.HELDOUT_TRAPS` (other
kinds of trap in other sentence shapes). The hash split only separates questions of one family; a
held-out family measures whether a model learnt the arithmetic or the sentences. Every templated
accuracy should be reported both ways: in-template (`split="test"`) and held-out-template.

Topics: arithmetic (calculator; short regular word problems, 1-3 steps, for the ~1M-param smoke
model), arithmetic_traps (calculator; a planted trap, a first attempt that falls in, and the
<advocate>/<attack>/<pragmatist>/<verify> sections that catch and fix it: `verify.attack_problem`
checks the attack names the wrong result and the answer is not it; templates in `synth/traps.py`), stats_tests (python_math), algebra_calculus (symbolic_math), doe (dsl_executor),
retrieval (rag over the bundled corpus). A topic whose tool is missing from the registry raises.

CLI: `python -m synth.offline --topic arithmetic --num-examples 2000 --seed 0 --output data/x.jsonl`
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

from .validation import Deduper, markup_in, question_key, validate_trace


class _Run:
    """Runs tool calls for a template and records them as reasoning steps."""

    def __init__(self, registry):
        self.registry, self.steps = registry, []

    def __call__(self, content: str, tool: str, args: dict, role: Optional[str] = None):
        res = self.registry.execute(tool, args)
        if res.status != "success":
            raise _Skip(f"{tool} {args}: {res.error}")
        self.steps.append({"step": len(self.steps) + 1, "content": content,
                           "tool_call": {"name": tool, "args": args}, "tool_result": res.to_dict(),
                           **({"role": role} if role else {})})
        return res.result

    def say(self, content: str, role: str) -> None:
        """A step without a tool call, written in a PRIME section (`role`)."""
        self.steps.append({"step": len(self.steps) + 1, "content": content, "role": role})


class _Skip(Exception):
    """A drawn problem is not usable (e.g. a degenerate sample); draw another."""


def _fmt(x) -> str:
    """A tool number as an answer string: ints as ints, floats as the tool rounded them."""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


# --- arithmetic (calculator) ----------------------------------------------------------------------
NAMES = ["Tom", "Anna", "Ben", "Lily", "Sam", "Mia", "Leo", "Emma", "Max", "Zoe", "Jack", "Ava",
         "Noah", "Ella", "Omar", "Sara", "Ravi", "Nina", "Luis", "Kate"]
ITEMS = ["apples", "pencils", "stickers", "cookies", "marbles", "books", "cards", "eggs",
         "balloons", "shells", "stamps", "oranges", "toys", "candies", "coins"]


def _arithmetic(rng: random.Random, run: _Run) -> tuple[str, str]:
    name, other = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    a, b, c = rng.randint(2, 60), rng.randint(2, 40), rng.randint(2, 12)
    kind = rng.randrange(9)
    if kind == 0:
        q = f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have?"
        r = run(f"Add the {b} new {item} to the {a}.", "calculator", {"expression": f"{a}+{b}"})
    elif kind == 1:
        a, b = max(a, b) + c, min(a, b)
        q = f"{name} has {a} {item} and gives {b} to {other}. How many {item} does {name} have left?"
        r = run(f"Take the {b} given away from the {a}.", "calculator", {"expression": f"{a}-{b}"})
    elif kind == 2:
        q = f"{name} buys {c} bags with {b} {item} in each bag. How many {item} does {name} have?"
        r = run(f"Multiply {c} bags by {b} {item} each.", "calculator", {"expression": f"{c}*{b}"})
    elif kind == 3:
        q = f"{name} shares {b * c} {item} equally among {c} friends. How many {item} does each friend get?"
        r = run(f"Divide the {b * c} {item} by {c} friends.", "calculator", {"expression": f"{b * c}/{c}"})
    elif kind == 4:
        q = f"One of {name}'s {item} costs {c} dollars. How many dollars do {b} {item} cost?"
        r = run(f"Multiply {b} {item} by {c} dollars each.", "calculator", {"expression": f"{b}*{c}"})
    elif kind == 5:
        d = rng.randint(1, a + b - 1)
        q = (f"{name} has {a} {item}, buys {b} more and then gives {d} to {other}. "
             f"How many {item} does {name} have now?")
        s = run(f"First add the {b} new {item} to the {a}.", "calculator", {"expression": f"{a}+{b}"})
        r = run(f"Then take away the {d} given to {other}.", "calculator", {"expression": f"{s}-{d}"})
    elif kind == 6:
        d = rng.randint(1, b * c - 1)
        q = (f"{name} buys {c} boxes with {b} {item} in each box and gives away {d}. "
             f"How many {item} are left?")
        s = run(f"First multiply {c} boxes by {b} {item} each.", "calculator", {"expression": f"{c}*{b}"})
        r = run(f"Then subtract the {d} given away.", "calculator", {"expression": f"{s}-{d}"})
    elif kind == 7:
        q = (f"{name} has {a} {item} and {other} has {c} times as many. "
             f"How many {item} do they have together?")
        s = run(f"{other} has {c} times {a}.", "calculator", {"expression": f"{a}*{c}"})
        r = run(f"Add {name}'s {a} to {other}'s {s}.", "calculator", {"expression": f"{a}+{s}"})
    else:
        packs, d = rng.randint(2, 6), rng.randint(1, 9)
        q = (f"{name} has {a} {item}, buys {packs} packs of {c} {item} and then loses {d}. "
             f"How many {item} does {name} have?")
        s = run(f"The packs hold {packs} times {c} {item}.", "calculator", {"expression": f"{packs}*{c}"})
        t = run(f"Add them to the {a} {item}.", "calculator", {"expression": f"{a}+{s}"})
        r = run(f"Take away the {d} lost.", "calculator", {"expression": f"{t}-{d}"})
    return q, _fmt(r)


def _arithmetic_heldout(rng: random.Random, run: _Run) -> tuple[str, str]:
    """A held-out-phrasing problem (`eval.arith_heldout`), its calculator steps really run."""
    from havoc_lite.eval.arith_heldout import NUM_KINDS, heldout_problem
    question, steps, _ = heldout_problem(rng, rng.randrange(NUM_KINDS), small=True)
    for content, expression in steps:
        r = run(content, "calculator", {"expression": expression})
    return question, _fmt(r)


# --- arithmetic with a planted trap, worked through PRIME's sections: synth/traps.py -----------
def _arithmetic_traps(rng: random.Random, run: _Run) -> tuple[str, str]:
    from .traps import train_trap      # here, not at the top: traps.py imports this module
    return train_trap(rng, run)


def _arithmetic_traps_heldout(rng: random.Random, run: _Run) -> tuple[str, str]:
    from .traps import heldout_trap
    return heldout_trap(rng, run)


# --- statistics (python_math) ---------------------------------------------------------------------
STUDIES = [("plant heights (cm) under two fertilisers", "fertiliser A", "fertiliser B", 20, 4),
           ("reaction times (ms) before and after coffee", "before", "after", 300, 30),
           ("exam scores of two classes", "class A", "class B", 70, 8),
           ("daily sales of two shops", "shop A", "shop B", 120, 15),
           ("battery life (hours) of two phone models", "model A", "model B", 10, 1.5),
           ("commute times (minutes) by bus and by bike", "bus", "bike", 35, 6)]


def _sample(rng: random.Random, n: int, mu: float, sd: float) -> list[float]:
    return [round(rng.gauss(mu, sd), 1) for _ in range(n)]


def _verdict(p: float, alpha: float = 0.05) -> str:
    return "significant" if p < alpha else "not significant"


def _stats(rng: random.Random, run: _Run) -> tuple[str, str]:
    what, la, lb, mu, sd = rng.choice(STUDIES)
    n = rng.randint(5, 9)
    shift = rng.choice([0.0, 0.5, 1.0, 1.5]) * sd
    g1, g2 = _sample(rng, n, mu, sd), _sample(rng, n, mu + shift, sd)
    kind = rng.randrange(6)
    if kind == 0:
        q = (f"We measured {what}. {la}: {g1}. {lb}: {g2}. Is the difference in means significant "
             "at the 5% level? Use Welch's t-test.")
        r = run("Compare the two means with Welch's two-sample t-test.", "python_math",
                {"operation": "t_test", "group1": g1, "group2": g2, "equal_var": False})
        a = f"t = {r['statistic']}, p = {r['pvalue']}: {_verdict(r['pvalue'])} at the 5% level."
    elif kind == 1:
        q = (f"The same {n} subjects were measured twice. First: {g1}. Second: {g2}. "
             "Did the mean change? Use a paired t-test at the 5% level.")
        r = run("The measurements are paired, so use a paired t-test.", "python_math",
                {"operation": "t_test", "group1": g1, "group2": g2, "paired": True})
        a = f"t = {r['statistic']}, p = {r['pvalue']}: {_verdict(r['pvalue'])} at the 5% level."
    elif kind == 2:
        g3 = _sample(rng, n, mu + rng.choice([0.0, 1.0]) * sd, sd)
        q = (f"Three groups were measured ({what.split(' under ')[0].split(' of ')[0]}): "
             f"group 1: {g1}, group 2: {g2}, group 3: {g3}. Do the group means differ? "
             "Use one-way ANOVA at the 5% level.")
        r = run("Compare the three means with a one-way ANOVA.", "python_math",
                {"operation": "anova", "groups": [g1, g2, g3]})
        a = f"F = {r['statistic']}, p = {r['pvalue']}: {_verdict(r['pvalue'])} at the 5% level."
    elif kind == 3:
        q = (f"We measured {what}. {la}: {g1}. {lb}: {g2}. Run a Student t-test and, "
             "if it is significant at the 5% level, give the effect size (Cohen's d).")
        r = run("Test the difference with a Student t-test.", "python_math",
                {"operation": "t_test", "group1": g1, "group2": g2})
        if r["pvalue"] < 0.05:
            d = run("It is significant, so compute Cohen's d.", "python_math",
                    {"operation": "cohens_d", "group1": g1, "group2": g2})
            a = f"Significant (p = {r['pvalue']}); Cohen's d = {d['d']}."
        else:
            a = f"Not significant (t = {r['statistic']}, p = {r['pvalue']}), so no effect size is reported."
    elif kind == 4:
        q = f"Give the mean and median of these {what.split(' under ')[0].split(' of ')[0]}: {g1}."
        r = run("Describe the sample.", "python_math", {"operation": "describe", "data": g1})
        a = f"mean = {r['mean']}, median = {r['median']}"
    else:
        x = [round(v, 1) for v in _sample(rng, n, 10, 3)]
        slope = rng.choice([-2, -1, 0.5, 1, 2])
        y = [round(slope * xi + rng.gauss(0, 2), 1) for xi in x]
        q = f"Is there a linear correlation between x = {x} and y = {y}? Use Pearson's r at the 5% level."
        r = run("Compute Pearson's correlation.", "python_math",
                {"operation": "correlation", "x": x, "y": y, "method": "pearson"})
        a = f"r = {r['statistic']}, p = {r['pvalue']}: {_verdict(r['pvalue'])} at the 5% level."
    return q, a


# --- algebra and calculus (symbolic_math) ---------------------------------------------------------
def _poly(coeffs: dict[int, int]) -> str:
    """{3: 2, 1: -5, 0: 1} -> '2*x**3 - 5*x + 1' (sympy syntax, highest power first)."""
    out = []
    for p in sorted(coeffs, reverse=True):
        c = coeffs[p]
        if c == 0:
            continue
        mag = abs(c)
        body = ("x" if p == 1 else f"x**{p}") if p else str(mag)
        if p and mag != 1:
            body = f"{mag}*{body}"
        out.append(("- " if c < 0 else "+ ") + body if out else ("-" if c < 0 else "") + body)
    return " ".join(out) or "0"


def _symbolic(rng: random.Random, run: _Run) -> tuple[str, str]:
    kind = rng.randrange(4)
    if kind == 0:
        f = _poly({rng.randint(2, 5): rng.randint(1, 9), 1: rng.randint(-9, 9), 0: rng.randint(-9, 9)})
        q = f"What is the derivative of f(x) = {f}?"
        r = run("Differentiate f with respect to x.", "symbolic_math",
                {"operation": "diff", "expression": f, "variable": "x"})
        return q, f"f'(x) = {r['result']}"
    if kind == 1:
        r1, r2 = rng.sample(range(-9, 10), 2)
        eq = f"{_poly({2: 1, 1: -(r1 + r2), 0: r1 * r2})} = 0"
        q = f"Solve {eq} for x."
        r = run("Solve the quadratic equation.", "symbolic_math",
                {"operation": "solve", "expression": eq, "variable": "x"})
        return q, "x = " + " or x = ".join(r["result"])
    if kind == 2:
        f = _poly({rng.randint(1, 3): rng.randint(1, 6), 0: rng.randint(-5, 5)})
        lo, hi = sorted(rng.sample(range(-3, 6), 2))
        q = f"Compute the integral of {f} from x = {lo} to x = {hi}."
        r = run("Integrate over the interval.", "symbolic_math",
                {"operation": "integrate", "expression": f, "variable": "x", "lower": lo, "upper": hi})
        return q, f"The integral equals {r['result']}."
    a, c = rng.randint(1, 6), rng.randint(-9, 9)
    f = _poly({3: 1, 1: -3 * a * a, 0: c})
    q = f"Find the critical points of f(x) = {f}."
    d = run("Differentiate f to find where the slope is zero.", "symbolic_math",
            {"operation": "diff", "expression": f, "variable": "x"})
    r = run("Set the derivative to zero and solve.", "symbolic_math",
            {"operation": "solve", "expression": f"{d['result']} = 0", "variable": "x"})
    return q, "Critical points at x = " + " and x = ".join(r["result"])


# --- design of experiments (dsl_executor) ---------------------------------------------------------
FACTORS = [("temperature", 150, 200, "C"), ("pressure", 1, 5, "bar"), ("time", 10, 60, "min"),
           ("speed", 100, 300, "rpm"), ("concentration", 0.1, 0.5, "mol/L"), ("pH", 5, 8, ""),
           ("dose", 10, 50, "mg"), ("moisture", 10, 30, "%"), ("load", 2, 10, "kg"),
           ("voltage", 3, 12, "V")]


def _doe(rng: random.Random, run: _Run) -> tuple[str, str]:
    process = rng.choice(["a baking test", "an injection-moulding process", "a chemical reaction",
                          "a 3D-printing process", "a fermentation", "a coating line", "a welding cell"])
    kind = rng.randrange(4)
    k = {0: rng.randint(2, 3), 1: rng.randint(5, 7), 2: rng.randint(3, 4), 3: rng.randint(2, 4)}[kind]
    picked = rng.sample(FACTORS, k)
    factors = [{"name": n, "low": lo, "high": hi, **({"unit": u} if u else {})} for n, lo, hi, u in picked]
    names = ", ".join(f"{n} ({lo} to {hi}{' ' + u if u else ''})" for n, lo, hi, u in picked)
    if kind == 0:
        q = f"Plan a full factorial experiment for {process} with factors {names}. How many runs?"
        args, why = {"design": "full_factorial", "factors": factors}, "Few factors: every combination is affordable."
    elif kind == 1:
        q = f"I want to screen {k} factors in {process}: {names}. Which design, and how many runs?"
        args, why = {"design": "plackett_burman", "factors": factors}, "Many factors to screen: a Plackett-Burman design keeps the runs low."
    elif kind == 2:
        q = f"Plan an experiment to fit a quadratic model for {process} with {names}. Use a Box-Behnken design."
        args, why = {"design": "box_behnken", "factors": factors}, "A quadratic model needs three levels per factor; Box-Behnken avoids the extreme corners."
    else:
        n = rng.choice([8, 10, 12, 16, 20])
        q = f"Give a space-filling Latin hypercube of {n} runs for {process} with {names}."
        args, why = {"design": "latin_hypercube", "factors": factors, "samples": n, "seed": rng.randint(0, 999)}, \
            "A Latin hypercube spreads the runs over the whole range of every factor."
    r = run(why, "dsl_executor", args)
    return q, f"A {r['design'].replace('_', ' ')} design with {r['runs']} runs."


# --- retrieval (rag over the bundled corpus) ------------------------------------------------------
def _corpus_sections() -> list[tuple[str, str]]:
    """(file, heading) of every '## ' section in havoc_lite/assets/corpus."""
    root = Path(__file__).resolve().parent.parent / "havoc_lite" / "assets" / "corpus"
    try:
        import havoc_lite
        root = Path(havoc_lite.__file__).parent / "assets" / "corpus"
    except ImportError:
        pass
    out = []
    for f in sorted(root.glob("*.md")):
        out += [(f.name, ln[3:].strip()) for ln in f.read_text(encoding="utf-8").splitlines()
                if ln.startswith("## ")]
    return out


RAG_QUESTIONS = ["What do the notes say about {h}?", "Explain {h} using the local notes.",
                 "Look up {h} in the notes and summarise it.", "According to the notes, what is {h}?",
                 "Find the note on {h}. What does it say?"]


def _rag(rng: random.Random, run: _Run) -> tuple[str, str]:
    sections = _corpus_sections()
    if not sections:
        raise ValueError("offline retrieval: no '## ' sections in havoc_lite/assets/corpus")
    fname, heading = rng.choice(sections)
    q = rng.choice(RAG_QUESTIONS).format(h=heading)
    r = run(f"Search the notes for {heading}.", "rag", {"query": heading, "k": 2})
    top = r["passages"][0] if r.get("passages") else None
    if top is None:
        raise _Skip("no passage")
    first = " ".join(top["text"].split("\n", 1)[-1].split())
    sentence = first.split(". ")[0].rstrip(".") + "."
    if markup_in([q, sentence]):   # a note on the markup itself: its tags cannot go in an answer
        raise _Skip("passage quotes markup")
    return q, f"From {top['source']}: {sentence}"


GENERATORS: dict[str, tuple[str, Callable]] = {
    "arithmetic": ("calculator", _arithmetic),
    "arithmetic_traps": ("calculator", _arithmetic_traps),
    "stats_tests": ("python_math", _stats),
    "algebra_calculus": ("symbolic_math", _symbolic),
    "doe": ("dsl_executor", _doe),
    "retrieval": ("rag", _rag),
}


# Held-out template families, for evaluation only (never trained on).
HELDOUT_GENERATORS: dict[str, tuple[str, Callable]] = {
    "arithmetic": ("calculator", _arithmetic_heldout),
    "arithmetic_traps": ("calculator", _arithmetic_traps_heldout),
}


def _split_of(question: str, test_fraction: float) -> str:
    return "test" if int(question_key(question)[:8], 16) < test_fraction * 16 ** 8 else "train"


def generate_offline(topic: str, n: int, seed: int = 0, split: Literal["train", "test"] = "train",
                     registry=None, test_fraction: float = 0.1, max_draws: Optional[int] = None,
                     phrasing: Literal["train", "heldout"] = "train") -> list[dict]:
    """`n` verified tool traces for `topic` from templates; the same (topic, n, seed, split) gives
    the same traces.

    Args:
        topic: one of GENERATORS (arithmetic, stats_tests, ...).
        n: number of traces (distinct questions).
        seed: RNG seed.
        split: "train" or "test"; membership is by question hash, so the splits are disjoint.
        registry: a ToolRegistry (default `havoc_lite.tools.default_registry()`).
        test_fraction: share of the question space that belongs to "test".
        phrasing: "train" (the training templates) or "heldout" (HELDOUT_GENERATORS: sentence
            shapes no training template makes; only with split="test", and no hash filter since
            the family is disjoint as a whole).
    Returns: traces `{"id", "topic", "source": "offline", "split", "phrasing", "question",
        "reasoning", "tool_result", "answer"}`, ids `offline-{topic}-{split}-s{seed}-{k:06d}`
        (`offline-{topic}-heldout-s{seed}-{k:06d}` for held-out phrasings).
    Raises:
        ValueError: unknown topic/split, n <= 0, test_fraction outside [0, 1] (or leaving the split
            empty), phrasing="heldout" with split="train" or for a topic without held-out
            templates, a topic whose tool is not in the registry, or when the templates cannot produce
            `n` distinct questions within `max_draws` draws.
    """
    if topic not in GENERATORS:
        raise ValueError(f"unknown offline topic {topic!r}; one of {', '.join(GENERATORS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if phrasing not in ("train", "heldout"):
        raise ValueError(f"phrasing must be 'train' or 'heldout', got {phrasing!r}")
    if phrasing == "heldout" and split != "test":
        raise ValueError("held-out phrasings are for evaluation only: use --split test")
    if phrasing == "heldout" and topic not in HELDOUT_GENERATORS:
        raise ValueError(f"no held-out templates for topic {topic!r} yet; "
                         f"have: {', '.join(HELDOUT_GENERATORS)}")
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"--num-examples must be a positive integer, got {n}")
    if not 0.0 <= test_fraction <= 1.0 or (split == "test" and test_fraction == 0) \
            or (split == "train" and test_fraction == 1):
        raise ValueError(f"--test-fraction must be in [0, 1] (above 0 for --split test, below 1 for "
                         f"train), got {test_fraction}")
    if registry is None:
        from havoc_lite.tools import default_registry
        registry = default_registry()
    tool, make = (HELDOUT_GENERATORS if phrasing == "heldout" else GENERATORS)[topic]
    if tool not in registry.names:
        raise ValueError(f"topic {topic!r} needs tool {tool!r}, which the registry lacks "
                         f"(has: {', '.join(registry.names)})")
    rng = random.Random(f"{topic}:{seed}" + (":heldout" if phrasing == "heldout" else ""))
    tag = "heldout" if phrasing == "heldout" else split
    max_draws = max_draws or 50 * n + 1000
    seen, out = Deduper(), []
    for _ in range(max_draws):
        if len(out) == n:
            break
        run = _Run(registry)
        try:
            question, answer = make(rng, run)
        except _Skip:
            continue
        if (phrasing == "train" and _split_of(question, test_fraction) != split) or seen.seen(question):
            continue
        trace = {"id": f"offline-{topic}-{tag}-s{seed}-{len(out):06d}", "topic": topic,
                 "source": "offline", "split": split, "phrasing": phrasing, "question": question,
                 "reasoning": run.steps, "answer": answer}
        verdict = validate_trace(trace, registry)
        if not verdict.ok:   # a template bug; say so rather than ship a wrong trace
            raise AssertionError(f"offline {topic} template made a trace that fails validation: "
                                 f"{verdict.reason}: {verdict.detail}")
        out.append(verdict.trace)
    if len(out) < n:
        raise ValueError(f"offline {topic}: only {len(out)} distinct {split} questions in "
                         f"{max_draws} draws (asked for {n})")
    return out


def write_jsonl(traces: list[dict], path) -> None:
    """Write traces, one JSON object a line (UTF-8), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for t in traces:
            f.write(json.dumps(t, ensure_ascii=False) + "\n")


@dataclass
class OfflineArgs:
    """Write templated, tool-verified traces to a JSONL file."""
    topic: str = "arithmetic"
    """one of: arithmetic, arithmetic_traps, stats_tests, algebra_calculus, doe, retrieval"""
    num_examples: int = 2000
    seed: int = 0
    split: Literal["train", "test"] = "train"
    output: str = "data/offline_traces.jsonl"
    test_fraction: float = 0.1
    phrasing: Literal["train", "heldout"] = "train"
    """heldout: sentence shapes no training template makes (arithmetic, arithmetic_traps; needs --split test)"""


def main(argv: Optional[list[str]] = None) -> None:
    """CLI: bad options (topic, counts, fractions) are one line on stderr and exit code 2."""
    import sys
    import time

    import tyro
    args = tyro.cli(OfflineArgs, args=argv)
    t0 = time.perf_counter()
    try:
        traces = generate_offline(args.topic, args.num_examples, args.seed, args.split,
                                  test_fraction=args.test_fraction, phrasing=args.phrasing)
        write_jsonl(traces, args.output)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    print(f"wrote {len(traces)} {args.topic} {args.split} traces to {args.output} "
          f"in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
