"""The markup, in one place: the special tokens, the section tags, rendering and parsing sections,
stripping chat tokens, and which tokens of an assistant turn the model wrote (docs/architecture.md,
"Markup and loss masks"). Changing a tag's spelling is a change to this file alone.

Tokens (position in `SPECIAL_TOKENS` == id in our sentencepiece tokenizer):
`<|bos|> <|eos|> <|pad|> <unk> <|system|> <|user|> <|assistant|> <|end|>` (`chat_token`), then an
opening and closing tag per section of `SECTION_TAGS` (`MARKUP_TOKENS`, what `HFTokenizer` adds to
a pretrained vocabulary).

The model writes flat, non-nested sections:
`<reason>…</reason> <tool>{json}</tool> <tool_result>{json}</tool_result> <advocate>…</advocate>
<attack>…</attack> <pragmatist>…</pragmatist> <verify>…</verify> <answer>…</answer>`.
A sampled model gets this wrong in every way: unclosed tags, stray closing tags, text between
sections, truncation mid-section, broken JSON. `parse` never raises on such text: it keeps what it can
and lists each defect in `Parsed.problems`, so PRIME's checks can report it as a named check.

Rules (one pass, left to right over the tags; `parse` on text, `open_sections` on token ids):
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
from typing import Callable, Iterable, Optional, Sequence

# --- names and tokens -----------------------------------------------------------------------------
REASON, TOOL, TOOL_RESULT, ANSWER = "reason", "tool", "tool_result", "answer"
ADVOCATE, ATTACK, PRAGMATIST, VERIFY = "advocate", "attack", "pragmatist", "verify"
# Order fixes the token ids (SPECIAL_TOKENS below): append, never reorder.
SECTION_TAGS = (REASON, TOOL, TOOL_RESULT, ADVOCATE, ATTACK, PRAGMATIST, VERIFY, ANSWER)
ROLE_TAGS = (ADVOCATE, ATTACK, PRAGMATIST)
# The sections a tool-trace step may be written in instead of <reason> (its "role" field)
STEP_ROLES = (*ROLE_TAGS, VERIFY)
ROLES = ("system", "user", "assistant")   # chat roles, each with its own token in our tokenizer


def open_tag(name: str) -> str:
    """`<name>`: the opening tag of section `name` (one of `SECTION_TAGS`)."""
    return f"<{name}>"


def close_tag(name: str) -> str:
    """`</name>`: the closing tag of section `name`."""
    return f"</{name}>"


def chat_token(name: str) -> str:
    """`<|name|>`: a chat-structure token of our tokenizer ("bos", "eos", "pad", a role, "end")."""
    return f"<|{name}|>"


BOS, EOS, PAD, END = chat_token("bos"), chat_token("eos"), chat_token("pad"), chat_token("end")
SYSTEM, USER, ASSISTANT = (chat_token(r) for r in ROLES)
UNK = "<unk>"   # sentencepiece's own unknown piece (never produced: byte fallback covers all)
# Position in this list == token id of `HavocTokenizer`.
SPECIAL_TOKENS: list[str] = ([BOS, EOS, PAD, UNK] + [chat_token(r) for r in ROLES] + [END]
                             + [t for name in SECTION_TAGS for t in (open_tag(name), close_tag(name))])
CONTROL_SYMBOLS = SPECIAL_TOKENS[4:]  # everything sentencepiece does not reserve itself
# The reasoning and tool markup, without the chat-structure tokens: what HFTokenizer adds to a
# pretrained model's vocabulary (its own chat template provides the structure).
MARKUP_TOKENS = SPECIAL_TOKENS[8:]

TAG_RE = re.compile(r"<(/?)(" + "|".join(SECTION_TAGS) + r")>")
"""A section tag in text: group 1 is "/" for a closing tag, group 2 the section name."""
# Ours, plus the turn tokens of the pretrained bases' chat templates (ChatML: SmolLM2, Qwen2.5;
# Llama-3 headers), which `HFTokenizer.decode` keeps as literal strings.
_TEMPLATE_TOKENS = [f"<|{t}|>" for t in ("im_start", "im_end", "endoftext", "eot_id", "start_header_id",
                                         "end_header_id", "begin_of_text", "end_of_text")]
_CHAT_TOKEN_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS[:8] + _TEMPLATE_TOKENS if t != UNK))


# --- rendering ------------------------------------------------------------------------------------
def wrap(name: str, content: str) -> str:
    """`<name>content</name>`: one section as the model writes it."""
    return f"{open_tag(name)}{content}{close_tag(name)}"


def section_bodies(text: str, name: str) -> list[str]:
    """The contents of every closed `<name>…</name>` in `text`, in order, as written (no parse
    rules: graders read the first `<answer>` of any output this way)."""
    return re.findall(re.escape(open_tag(name)) + "(.*?)" + re.escape(close_tag(name)), text, re.DOTALL)


# --- token ids --------------------------------------------------------------------------------------
def tag_ids(token_id: Callable[[str], int]) -> dict[int, tuple[bool, str]]:
    """{id: (closing, section name)} of every section tag, from a tokenizer's `token_id`."""
    return {token_id(tag(name)): (tag is close_tag, name)
            for name in SECTION_TAGS for tag in (open_tag, close_tag)}


def open_sections(tags: Iterable[tuple[bool, str]]) -> tuple[set[str], Optional[str]]:
    """(every section opened, the section still open) after `tags` ((closing, name) in order),
    with `parse`'s rules: an opening tag closes any open section; a closing tag closes only its
    own section."""
    opened, current = set(), None
    for closing, name in tags:
        if not closing:
            current = name
            opened.add(name)
        elif name == current:
            current = None
    return opened, current


def assistant_mask(ids: Sequence[int], special_ids: dict[str, int]) -> list[int]:
    """Loss mask for one assistant turn's ids: 1 everywhere except <tool_result> … </tool_result>
    (inclusive), which the engine writes. An unclosed <tool_result> masks to the end of the turn;
    only its own closing tag ends it (everything between was written by the engine).
    Shared by both tokenizer backends (`special_ids` maps markup strings to ids)."""
    open_id, close_id = special_ids[open_tag(TOOL_RESULT)], special_ids[close_tag(TOOL_RESULT)]
    mask, inside = [], False
    for i in ids:
        if i == open_id:
            inside = True
        mask.append(0 if inside else 1)
        if i == close_id:
            inside = False
    return mask


# --- parsing ----------------------------------------------------------------------------------------
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
    for m in TAG_RE.finditer(text):
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
