"""Parse an assistant turn into its PRIME sections (docs/architecture.md, "Markup and loss masks").

The model writes flat, non-nested sections:
`<reason>…</reason> <tool>{json}</tool> <tool_result>{json}</tool_result> <advocate>…</advocate>
<attack>…</attack> <pragmatist>…</pragmatist> <verify>…</verify> <answer>…</answer>`.
A sampled model gets this wrong in every way: unclosed tags, stray closing tags, text between
sections, truncation mid-section, broken JSON. `parse` never raises on such text: it keeps what it can
and lists each defect in `Parsed.problems`, so the verifier can report it as a named check.

Rules (one pass, left to right over the tags):
- an opening tag while another section is open closes the open one (problem "unclosed <x>");
- a closing tag that matches no open section is ignored (problem "stray </x>");
- text at the end of an unclosed section still belongs to it (problem "unclosed <x> at end");
- non-blank text outside every section is kept in `Parsed.outside` (problem "text outside sections");
- chat control tokens (`<|end|>`, `<|eos|>`, …) are removed first: they end the turn, not a section.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Optional

SECTION_TAGS = ("reason", "tool", "tool_result", "advocate", "attack", "pragmatist", "verify", "answer")
ROLE_TAGS = ("advocate", "attack", "pragmatist")

_TAG_RE = re.compile(r"<(/?)(" + "|".join(SECTION_TAGS) + r")>")
# Ours, plus the turn tokens of the pretrained bases' chat templates (ChatML: SmolLM2, Qwen2.5;
# Llama-3 headers), which `HFTokenizer.decode` keeps as literal strings.
_CHAT_TOKEN_RE = re.compile(r"<\|(?:bos|eos|pad|system|user|assistant|end|im_start|im_end|endoftext|"
                            r"eot_id|start_header_id|end_header_id|begin_of_text|end_of_text)\|>")


def close_tag(name: str) -> str:
    return f"</{name}>"


@dataclass
class Section:
    """One `<tag>content</tag>` span. `start`/`end` are character offsets of the content in the
    cleaned text; `closed` is False when the closing tag was missing."""

    tag: str
    content: str
    start: int
    end: int
    closed: bool = True


@dataclass
class ToolCall:
    """A `<tool>` section paired with the `<tool_result>` that follows it (if any).

    `name`/`args` are None and `call_error` says why when the JSON is malformed (the reason
    `havoc_lite.tools.parse_call` gives). `result` is the parsed result JSON (a dict such as
    `{"status": "success", "result": 24}`), None when there is no result section or it is not JSON
    (then `result_error` says why). `step` is the index of this call among the tool calls.
    """

    step: int
    call_text: str
    name: Optional[str] = None
    args: Optional[dict] = None
    call_error: Optional[str] = None
    result_text: Optional[str] = None
    result: Optional[dict] = None
    result_error: Optional[str] = None

    @property
    def succeeded(self) -> bool:
        return isinstance(self.result, dict) and self.result.get("status") == "success"


@dataclass
class Parsed:
    """Result of `parse`: sections in order, tool calls paired with results, defects found."""

    text: str
    sections: list[Section] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    outside: str = ""

    def get(self, tag: str) -> list[str]:
        """Contents of every `tag` section, in order."""
        return [s.content for s in self.sections if s.tag == tag]

    def first(self, tag: str) -> Optional[str]:
        found = self.get(tag)
        return found[0] if found else None

    def has(self, tag: str) -> bool:
        return any(s.tag == tag for s in self.sections)

    @property
    def answer(self) -> Optional[str]:
        """Content of the last `<answer>` section (a model that answers twice means the last)."""
        found = self.get("answer")
        return found[-1] if found else None

    @property
    def tags(self) -> list[str]:
        return [s.tag for s in self.sections]


def strip_chat_tokens(text: str) -> str:
    """Remove `<|end|>`, `<|eos|>` and the other chat control tokens (they are not sections)."""
    return _CHAT_TOKEN_RE.sub("", text)


def parse(text: str) -> Parsed:
    """Split an assistant turn into sections; never raises (defects go to `Parsed.problems`).

    Args:
        text: the decoded assistant output (special tokens kept as their literal tag strings).

    Returns:
        `Parsed` with `sections`, `tool_calls` (each `<tool>` paired with the next `<tool_result>`
        that comes before any other `<tool>`), `problems` (human-readable strings) and `outside`.
    """
    text = strip_chat_tokens(text)
    out = Parsed(text=text)
    outside: list[str] = []
    open_name: Optional[str] = None
    open_at = 0          # content start of the open section
    cursor = 0           # end of the last consumed tag
    for m in _TAG_RE.finditer(text):
        closing, name = m.group(1) == "/", m.group(2)
        if open_name is None:
            outside.append(text[cursor:m.start()])
            if closing:
                out.problems.append(f"stray {close_tag(name)} at char {m.start()}")
            else:
                open_name, open_at = name, m.end()
        elif closing and name == open_name:
            out.sections.append(Section(name, text[open_at:m.start()].strip(), open_at, m.start()))
            open_name = None
        elif closing:
            out.problems.append(f"stray {close_tag(name)} inside <{open_name}> at char {m.start()}")
            continue  # keep the section open, the stray tag stays part of nothing
        else:
            out.problems.append(f"unclosed <{open_name}> (closed by <{name}> at char {m.start()})")
            out.sections.append(Section(open_name, text[open_at:m.start()].strip(), open_at,
                                        m.start(), closed=False))
            open_name, open_at = name, m.end()
        cursor = m.end()
    if open_name is not None:
        out.problems.append(f"unclosed <{open_name}> at end of text")
        out.sections.append(Section(open_name, text[open_at:].strip(), open_at, len(text),
                                    closed=False))
    else:
        outside.append(text[cursor:])
    out.outside = " ".join(s.strip() for s in outside if s.strip())
    if out.outside:
        out.problems.append(f"text outside sections: {out.outside[:60]!r}")
    out.tool_calls = _pair_tool_calls(out.sections, out.problems)
    return out


def _pair_tool_calls(sections: list[Section], problems: list[str]) -> list[ToolCall]:
    from havoc_lite.tools import parse_call  # the one place that reads the call JSON

    calls: list[ToolCall] = []
    for sec in sections:
        if sec.tag == "tool":
            call = ToolCall(step=len(calls), call_text=sec.content)
            try:
                call.name, call.args = parse_call(sec.content)
            except ValueError as e:
                call.call_error = str(e)
                problems.append(f"tool call {call.step}: {e}")
            calls.append(call)
        elif sec.tag == "tool_result":
            if not calls or calls[-1].result_text is not None:
                problems.append("<tool_result> without a preceding <tool>")
                continue
            call = calls[-1]
            call.result_text = sec.content
            try:
                value = json.loads(sec.content)
                if not isinstance(value, dict) or "status" not in value:
                    raise ValueError("not an object with a 'status' field")
                call.result = value
            except ValueError as e:
                call.result_error = f"result is not valid JSON: {e}"
                problems.append(f"tool result {call.step}: {call.result_error}")
    return calls
