"""Topic specs (`synth/topics/*.yaml` or a spec file of your own) and the prompts built from them:
the system prompt, the round-robin plan of category and complexity for index i, the user prompt,
the `emit_trace` tool schema and the trace id."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

TOPICS_DIR = Path(__file__).parent / "topics"
SCENARIOS = ["a school", "a hospital", "a farm", "a factory", "a bakery", "a sports club",
             "a shop", "a laboratory", "a city council", "a family trip", "a library", "a garden",
             "a logistics company", "a restaurant", "a research station", "a software team"]


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
    roles: bool = False     # steps may be written in PRIME's sections (`role`: advocate, attack, ...)


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
    roles = d.get("roles", False)
    if not isinstance(roles, bool):
        raise ValueError(f"{path}: field 'roles' must be true or false")
    return TopicSpec(_need_str(d, "name", "", path), _need_str(d, "description", "", path),
                     _need_str(d, "tool", "", path), _need_str(d, "system_prompt", "", path),
                     levels, cats, path, roles)


# --- prompts --------------------------------------------------------------------------------------
def trace_schema(tool: str, roles: bool = False) -> dict:
    """The `input_schema` of the forced `emit_trace` tool: the tool-trace record of docs/architecture.md, one tool; with
    `roles`, a step may name the PRIME section it is written in (checked by
    `validation.attack_problem`: the attack must name a result of the first attempt, the answer fix it)."""
    schema = {
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
    if roles:
        from havoc_lite.markup import STEP_ROLES
        schema["properties"]["reasoning"]["items"]["properties"]["role"] = {
            "type": "string", "enum": list(STEP_ROLES),
            "description": "the PRIME section of this step; omit for plain reasoning"}
    return schema


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
