"""Adversarial roles: what each HEAVY section is for, the system prompt that asks for them, and
extraction of what the model wrote in them.

The roles are a structured self-debate (in the spirit of Du et al. 2023, "Improving Factuality and
Reasoning in Language Models through Multiagent Debate", collapsed into one model and one turn):
the advocate argues for the working answer, the attack looks for the flaw, the pragmatist weighs
the two, and verify checks the chosen answer against the tool results before `<answer>`.
"""
from __future__ import annotations

from typing import Optional, Sequence

from ..markup import (ADVOCATE, ANSWER, ATTACK, PRAGMATIST, REASON, STEP_ROLES, TOOL, TOOL_RESULT, VERIFY,
                      Parsed, open_tag, wrap)

ROLE_INSTRUCTIONS: dict[str, str] = {
    ADVOCATE: "argue for the working answer: the strongest evidence for it, citing tool results.",
    ATTACK: "look for the flaw: a misread quantity, a wrong assumption, an arithmetic slip, a "
              "missing case. Name it or say none was found.",
    PRAGMATIST: "weigh the advocate against the attack and say what to conclude and what stays "
                  "uncertain.",
    VERIFY: "check the chosen answer against the tool results and the question's constraints.",
}

_FORMAT = {
    REASON: f"Think in {wrap(REASON, '…')}.",
    TOOL: (f'Call a tool with {wrap(TOOL, """{"tool": NAME, "args": {…}}""")}; its result comes back in '
           f"{wrap(TOOL_RESULT, '…')}. Use tools for every calculation."),
    ANSWER: f"End with the final answer alone in {wrap(ANSWER, '…')}.",
}


def system_prompt(sections: tuple[str, ...], tools_description: Optional[str] = None,
                  tool_names: Sequence[str] = ()) -> str:
    """The PRIME instructions for a budget's `sections` (see `router.BUDGET_SECTIONS`).

    Returns the text for the system turn: format lines for reason/answer; when tools are enabled,
    the registry's full `describe()` if given (long: ~2,000 characters for `default_registry()`),
    else the call format and the `tool_names`; one line per adversarial role present.
    """
    lines = [_FORMAT[REASON]] if REASON in sections else []
    if TOOL in sections:  # the registry's description already says how to call
        if tools_description:
            lines.append(tools_description.strip())
        else:
            lines.append(_FORMAT[TOOL] + (f" Tools: {', '.join(tool_names)}." if tool_names else ""))
    roles = [s for s in STEP_ROLES if s in sections]
    if roles:
        lines.append("Before answering, write each of these sections:")
        lines += [f"{open_tag(r)}: {ROLE_INSTRUCTIONS[r]}" for r in roles]
    lines.append(_FORMAT[ANSWER])
    return "\n".join(lines)


def extract_roles(parsed: Parsed) -> dict[str, str]:
    """Content of each role section and `<verify>` (several sections of one role are joined with a
    blank line); roles the model did not write are absent."""
    found = {}
    for role in STEP_ROLES:
        parts = [p for p in parsed.get(role) if p]
        if parts or parsed.has(role):
            found[role] = "\n\n".join(parts)
    return found
