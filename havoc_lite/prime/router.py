"""Reasoning-budget router (`ReasoningBudget`): how much reasoning machinery a prompt gets.

Four budgets, cheapest first:
- MINIMAL: a direct `<answer>`; no tools.
- LIGHT:   `<reason>` then `<answer>`; no tools.
- MEDIUM:  `<reason>`, tool calls, `<answer>`.
- HEAVY:   `<reason>`, tool calls, `<advocate>`, `<attack>`, `<pragmatist>`, `<verify>`, `<answer>`;
           the engine opens any of the last five the model skips (in every budget, a missing
           `<answer>` is opened).

The choice is a short list of rules over surface features of the prompt, checked in order; the first
that fires wins and every rule that fired is recorded in `Routing.reasons`:
1. HEAVY  if it has >= `heavy_min_cues` adversarial cues ("should we", "prove", "compare", "trade-off",
          "is it better", …): questions where the first answer is likely to need a challenge; or if
          it has statistics/design-of-experiments terms and at least `heavy_min_words` words.
2. MEDIUM if it needs computation: an arithmetic expression ("48/2"), >= `medium_min_numbers`
          numbers, or a math / statistics / DOE term ("percent", "t-test", "factorial design").
3. LIGHT  if it has a multi-step or explanation cue ("step by step", "why", "explain", "first … then")
          or at least `light_min_words` words.
4. MINIMAL otherwise (short factual or conversational prompts).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from ..markup import ANSWER, REASON, STEP_ROLES, TOOL
from ..numbers import find_literals


class ReasoningBudget(str, Enum):
    MINIMAL = "minimal"
    LIGHT = "light"
    MEDIUM = "medium"
    HEAVY = "heavy"

    @classmethod
    def parse(cls, value: "ReasoningBudget | str") -> "ReasoningBudget":
        """ReasoningBudget from an enum member or its name in any case ("heavy", "HEAVY").

        Raises:
            ValueError: naming the allowed budgets.
        """
        if isinstance(value, ReasoningBudget):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ValueError(f"unknown budget {value!r}; choose one of "
                             f"{[b.value for b in cls]}") from None


# Sections each budget writes, in order. `tool` is allowed, never forced (a call cannot be invented).
BUDGET_SECTIONS: dict[ReasoningBudget, tuple[str, ...]] = {
    ReasoningBudget.MINIMAL: (ANSWER,),
    ReasoningBudget.LIGHT: (REASON, ANSWER),
    ReasoningBudget.MEDIUM: (REASON, TOOL, ANSWER),
    ReasoningBudget.HEAVY: (REASON, TOOL, *STEP_ROLES, ANSWER),
}
# Sections the engine forces open when the model tries to finish without them: the answer always,
# and in HEAVY every role and <verify> (in this order).
FORCED_SECTIONS: dict[ReasoningBudget, tuple[str, ...]] = {
    ReasoningBudget.MINIMAL: (ANSWER,),
    ReasoningBudget.LIGHT: (ANSWER,),
    ReasoningBudget.MEDIUM: (ANSWER,),
    ReasoningBudget.HEAVY: (*STEP_ROLES, ANSWER),
}

_ADVERSARIAL = ("should we", "should i", "prove", "compare", "trade-off", "tradeoff", "trade off",
                "pros and cons", "is it better", "which is better", "justify", "critique",
                "argue", "recommend", "worth it", "evaluate whether", "disprove", "versus", " vs ",
                "is it true that", "convince", "decide whether", "or should")
_MATH = ("how many", "how much", "how old", "how long", "how far", "percent", "%", "total", "sum",
         "product", "average", "mean", "median", "ratio", "fraction", "solve", "equation",
         "derivative", "integral", "integrate", "simplify", "factor", "calculate", "compute",
         "square root", "sqrt", "probability", "remainder", "multiply", "divide", "times", "minus",
         "plus")
_STATS = ("t-test", "t test", "p-value", "pvalue", "p value", "anova", "regression",
          "correlation", "standard deviation", "variance", "confidence interval", "chi-square",
          "chi square", "significant", "hypothesis", "normal distribution", "sample size",
          "statistic")
_DOE = ("design of experiments", "doe", "factorial", "fractional factorial", "latin hypercube",
        "box-behnken", "central composite", "plackett", "response surface", "experimental design",
        "design an experiment", "screening design", "main effects", "interaction effects")
_MULTI_STEP = ("step by step", "step-by-step", "first", "then", "after that", "finally", "explain",
               "why", "how does", "how do", "describe", "walk me through", "reason", "because",
               "plan", "outline", "summarize", "summarise")
_EXPRESSION_RE = re.compile(r"\d\s*[-+*/^×÷]\s*\(?\s*\d")


@dataclass
class RouterConfig:
    """Thresholds and word lists of the router (see the module docstring for the rules).

    Attributes:
        light_min_words: prompts this long (words) get at least LIGHT.
        medium_min_numbers: this many numbers in the prompt means computation: at least MEDIUM.
        heavy_min_cues: adversarial cues needed for HEAVY.
        heavy_min_words: a statistics / DOE prompt at least this long goes to HEAVY.
        max_new_tokens: generation budget (tokens) of each budget.
    """

    light_min_words: int = 25
    medium_min_numbers: int = 2
    heavy_min_cues: int = 1
    heavy_min_words: int = 60
    max_new_tokens: dict = field(default_factory=lambda: {
        ReasoningBudget.MINIMAL: 64, ReasoningBudget.LIGHT: 256, ReasoningBudget.MEDIUM: 512, ReasoningBudget.HEAVY: 1024})
    adversarial_terms: tuple[str, ...] = _ADVERSARIAL
    math_terms: tuple[str, ...] = _MATH
    stats_terms: tuple[str, ...] = _STATS
    doe_terms: tuple[str, ...] = _DOE
    multi_step_terms: tuple[str, ...] = _MULTI_STEP


@dataclass
class Routing:
    """The router's decision.

    Attributes:
        budget: the chosen `ReasoningBudget`.
        reasons: one line per rule that fired (or "forced by caller").
        features: the numbers and matched terms the rules looked at.
        max_new_tokens: tokens the generation may add.
        sections: sections this budget writes, in order.
    """

    budget: ReasoningBudget
    reasons: list[str]
    features: dict
    max_new_tokens: int
    sections: tuple[str, ...]

    @property
    def tools_enabled(self) -> bool:
        return "tool" in self.sections

    @property
    def forced_sections(self) -> tuple[str, ...]:
        """Sections the engine opens if the model skips them (`FORCED_SECTIONS`)."""
        return FORCED_SECTIONS[self.budget]


def _matches(text: str, terms: tuple[str, ...]) -> list[str]:
    """Terms found in `text` (lower-cased, padded with spaces); word-bounded for plain words so
    'sum' does not match 'summer' and 'doe' not 'does'."""
    found = []
    for term in terms:
        if re.fullmatch(r"[a-z][a-z ]*[a-z]", term):
            if re.search(r"\b" + re.escape(term) + r"\b", text):
                found.append(term)
        elif term in text:
            found.append(term)
    return found


def prompt_features(prompt: str, config: Optional[RouterConfig] = None) -> dict:
    """Surface features of a prompt: word/char/number counts and the terms of each list it uses."""
    config = config or RouterConfig()
    text = " " + " ".join(prompt.lower().split()) + " "
    return {
        "n_chars": len(prompt),
        "n_words": len(prompt.split()),
        "n_numbers": len(find_literals(prompt, "prime")),
        "has_expression": bool(_EXPRESSION_RE.search(prompt)),
        "adversarial": _matches(text, config.adversarial_terms),
        "math": _matches(text, config.math_terms),
        "stats": _matches(text, config.stats_terms),
        "doe": _matches(text, config.doe_terms),
        "multi_step": _matches(text, config.multi_step_terms),
    }


def make_routing(budget: "ReasoningBudget | str", reasons: list[str], features: Optional[dict] = None,
                 config: Optional[RouterConfig] = None,
                 max_new_tokens: Optional[int] = None) -> Routing:
    """A `Routing` for a given budget (used for caller-forced budgets)."""
    config = config or RouterConfig()
    budget = ReasoningBudget.parse(budget)
    return Routing(budget=budget, reasons=list(reasons), features=dict(features or {}),
                   max_new_tokens=int(max_new_tokens or config.max_new_tokens[budget]),
                   sections=BUDGET_SECTIONS[budget])


def route(prompt: str, config: Optional[RouterConfig] = None) -> Routing:
    """Choose a budget for `prompt` (rules in the module docstring).

    Args:
        prompt: the user's message.
        config: thresholds and term lists; `RouterConfig()` by default.

    Returns:
        `Routing` with the budget, the reasons, the features, `max_new_tokens` and the sections.

    Raises:
        TypeError: `prompt` is not a string.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"route() needs the prompt as a string, got {type(prompt).__name__}")
    config = config or RouterConfig()
    f = prompt_features(prompt, config)
    domain = f["stats"] + f["doe"]
    heavy, medium, light = [], [], []
    if len(f["adversarial"]) >= config.heavy_min_cues:
        heavy.append(f"adversarial cue(s) {f['adversarial']} (>= {config.heavy_min_cues})")
    if domain and f["n_words"] >= config.heavy_min_words:
        heavy.append(f"statistics/DOE terms {domain} in a {f['n_words']}-word prompt "
                     f"(>= {config.heavy_min_words})")
    if f["has_expression"]:
        medium.append("arithmetic expression in the prompt")
    if f["n_numbers"] >= config.medium_min_numbers:
        medium.append(f"{f['n_numbers']} numbers (>= {config.medium_min_numbers})")
    if f["math"] or domain:
        medium.append(f"math/statistics/DOE terms {f['math'] + domain}")
    if f["multi_step"]:
        light.append(f"multi-step/explanation cue(s) {f['multi_step']}")
    if f["n_words"] >= config.light_min_words:
        light.append(f"{f['n_words']} words (>= {config.light_min_words})")
    for budget, fired in ((ReasoningBudget.HEAVY, heavy), (ReasoningBudget.MEDIUM, medium), (ReasoningBudget.LIGHT, light)):
        if fired:
            return make_routing(budget, heavy + medium + light, f, config)
    return make_routing(ReasoningBudget.MINIMAL, [f"no cue fired ({f['n_words']} words, "
                                         f"{f['n_numbers']} numbers)"], f, config)


# 40 prompts (10 per budget) labelled by hand with what a person would give each one, written
# after the rules above and never used to tune them: the router's held-out accuracy.
HELDOUT_PROMPTS = Path(__file__).parent.parent / "assets" / "router_heldout.jsonl"


def evaluate_router(rows: Optional[list[dict]] = None, config: Optional[RouterConfig] = None) -> dict:
    """Accuracy of `route` on labelled prompts.

    Args:
        rows: [{"prompt", "budget"}]; default the held-out set `HELDOUT_PROMPTS`.
        config: thresholds for `route`.
    Returns: {"n", "accuracy", "per_budget": {budget: accuracy}, "confusion": {"label->routed": count},
        "mistakes": [{"prompt", "label", "routed"}]}.
    Raises: ValueError for an empty set or a label that is not a budget.
    """
    if rows is None:
        rows = [json.loads(line) for line in open(HELDOUT_PROMPTS, encoding="utf-8")]
    if not rows:
        raise ValueError("evaluate_router: no labelled prompts")
    confusion: dict[str, int] = {}
    mistakes, per = [], {b.value: [0, 0] for b in ReasoningBudget}
    for row in rows:
        label, routed = ReasoningBudget.parse(row["budget"]).value, route(row["prompt"], config).budget.value
        key = f"{label}->{routed}"
        confusion[key] = confusion.get(key, 0) + 1
        per[label][0] += label == routed
        per[label][1] += 1
        if label != routed:
            mistakes.append({"prompt": row["prompt"], "label": label, "routed": routed})
    return {"n": len(rows), "accuracy": round(1 - len(mistakes) / len(rows), 3),
            "per_budget": {b: round(c / n, 3) for b, (c, n) in per.items() if n},
            "confusion": dict(sorted(confusion.items())), "mistakes": mistakes}
