"""SFT formats: every kind of JSONL record (prompt/completion, chat, tool trace, GSM8K, text) turned
into messages, and the one tool-trace renderer.

A conversation ("messages") is a list of {"role": "system"|"user"|"assistant", "content": str};
every SFT source is turned into messages and rendered by HavocTokenizer.render_chat.
"""
from __future__ import annotations

import re

from ..errors import DataError
from ..markup import ANSWER, REASON, STEP_ROLES, TOOL, TOOL_RESULT, open_tag, wrap
from .readers import PathLike, iter_jsonl, list_data_files

_GSM8K_CALL = re.compile(r"<<([^<>=]*)=([^<>]*)>>")


def _tool_result_json(value, where: str) -> str:
    """The JSON between <tool_result> tags: a ToolResult-shaped dict as is, any other value as a
    success result (ToolResult.to_json, so the text matches what the engine writes)."""
    from ..tools import ToolResult
    if isinstance(value, dict) and value.get("status") in ("success", "error"):
        if value["status"] == "success":
            return ToolResult("success", result=value.get("result")).to_json()
        return ToolResult("error", error=str(value.get("error", ""))).to_json()
    if isinstance(value, dict) and "status" in value:
        raise DataError(f"{where}: tool_result status must be 'success' or 'error', got {value['status']!r}")
    return ToolResult("success", result=value).to_json()


def render_trace(trace: dict, where: str = "trace") -> str:
    """The assistant turn of a tool trace (the ONE renderer PRIME, synth and eval rely on).

    For each reasoning step: `<reason>{content}</reason>` (or `<advocate>`, `<attack>`,
    `<pragmatist>`, `<verify>` when the step has that `role`: PRIME's sections), then if it has a `tool_call`
    `<tool>{format_call(name, args)}</tool><tool_result>{json}</tool_result>` using the step's
    own `tool_result`, else (for the last call only) the trace's top-level `tool_result`. Ends
    with `<answer>{answer}</answer>`.

    Raises:
        DataError: naming `where` and the step, for a missing field or a call without a result.
    """
    from ..tools import format_call
    if not isinstance(trace, dict):
        raise DataError(f"{where}: a tool trace must be a JSON object")
    steps = trace.get("reasoning")
    if not isinstance(steps, list):
        raise DataError(f"{where}: tool trace needs a list 'reasoning'")
    if "answer" not in trace or trace["answer"] is None:
        raise DataError(f"{where}: tool trace has no 'answer'")
    calls = [i for i, st in enumerate(steps) if isinstance(st, dict) and st.get("tool_call") is not None]
    parts = []
    for i, st in enumerate(steps):
        if not isinstance(st, dict) or not isinstance(st.get("content"), str):
            raise DataError(f"{where}: reasoning step {i} needs a string 'content'")
        tag = st.get("role") or REASON
        if tag not in (REASON, *STEP_ROLES):
            raise DataError(f"{where}: reasoning step {i} has role {tag!r}; one of {', '.join(STEP_ROLES)} "
                            f"(or none for {open_tag(REASON)})")
        parts.append(wrap(tag, st['content']))
        call = st.get("tool_call")
        if call is None:
            continue
        if not (isinstance(call, dict) and isinstance(call.get("name"), str) and isinstance(call.get("args", {}), dict)):
            raise DataError(f"{where}: reasoning step {i} tool_call needs a string 'name' and a dict 'args'")
        if "tool_result" in st:
            result = st["tool_result"]
        elif i == calls[-1] and "tool_result" in trace:
            result = trace["tool_result"]
        else:
            raise DataError(f"{where}: reasoning step {i} calls {call['name']!r} but has no tool_result")
        parts.append(wrap(TOOL, format_call(call['name'], call.get('args', {})))
                     + wrap(TOOL_RESULT, _tool_result_json(result, f'{where} step {i}')))
    parts.append(wrap(ANSWER, trace['answer']))
    return "".join(parts)


def trace_to_messages(trace: dict, system: str | None = None, where: str = "trace") -> list[dict]:
    """A tool trace -> [system?, user(question), assistant(render_trace)]. Raises DataError."""
    if not isinstance(trace, dict) or not isinstance(trace.get("question"), str):
        raise DataError(f"{where}: tool trace needs a string 'question'")
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": trace["question"]},
                   {"role": "assistant", "content": render_trace(trace, where)}]


def _annotated_number(text: str):
    """'24' -> 24, '0.2' -> 0.2, '1,000' -> 1000; calculator formatting (int when integral,
    else 10 significant digits); None if not a number."""
    from ..tools.calculator import format_number
    text = text.strip().replace(",", "")
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    try:
        return format_number(value)
    except ValueError:  # ToolError on inf / nan
        return None


def gsm8k_to_trace(example: dict, where: str = "gsm8k") -> dict:
    """GSM8K {"question", "answer"} -> tool trace.

    Each `<<48/2=24>>` annotation becomes a calculator call `{"expression": "48/2"}` whose
    tool_result is `{"status": "success", "result": 24}` (the annotated value, int when
    integral); the text before it is that step's reasoning, the text after the last one a final
    step, and `#### 72` the answer "72". An annotation whose value is not a number is dropped
    (GSM8K repeats the value right after it).

    Raises:
        DataError: naming `where`, for a missing question/answer or no `####` line.
    """
    q, a = example.get("question"), example.get("answer")
    if not isinstance(q, str) or not isinstance(a, str):
        raise DataError(f"{where}: GSM8K record needs string 'question' and 'answer'")
    solution, sep, final = a.rpartition("####")
    if not sep:
        raise DataError(f"{where}: GSM8K answer has no '#### N' line (N: the final answer)")
    steps, text, pos = [], "", 0
    for m in _GSM8K_CALL.finditer(solution):
        text += solution[pos:m.start()]
        pos = m.end()
        expr, value = m.group(1).strip(), _annotated_number(m.group(2))
        if not expr or value is None:
            continue
        result = {"status": "success", "result": value}
        steps.append({"step": len(steps) + 1, "content": text.strip(),
                      "tool_call": {"name": "calculator", "args": {"expression": expr}}, "tool_result": result})
        text = ""
    text += solution[pos:]
    if text.strip():
        steps.append({"step": len(steps) + 1, "content": text.strip()})
    calls = [s for s in steps if "tool_call" in s]
    trace = {"question": q, "reasoning": steps, "answer": final.strip()}
    if calls:
        trace["tool_result"] = calls[-1]["tool_result"]
    return trace


SFT_KINDS = ("prompt_completion", "chat", "trace", "gsm8k", "text")


def detect_kind(record: dict) -> str | None:
    """Which JSONL kind (README, "Data formats") a record is, from its fields; None if none fits."""
    if "messages" in record:
        return "chat"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    if "reasoning" in record and "question" in record:
        return "trace"
    if "question" in record and "answer" in record:
        return "gsm8k"
    if "text" in record:
        return "text"
    return None


def record_to_messages(record: dict, kind: str = "auto", where: str = "record") -> list[dict]:
    """One JSONL record of any SFT kind -> messages.

    prompt/completion -> user + assistant; chat -> its messages (roles and content checked);
    tool trace -> `trace_to_messages`; GSM8K -> `gsm8k_to_trace` then `trace_to_messages`;
    plain text -> one assistant message (loss on all of it).

    Raises:
        DataError: naming `where`, for an unknown kind or a missing / mistyped field.
    """
    if kind == "auto":
        kind = detect_kind(record)
        if kind is None:
            raise DataError(f"{where}: cannot tell the record kind from its fields {sorted(record)}; expected "
                            "messages | prompt+completion | question+reasoning | question+answer | text")
    if kind == "prompt_completion":
        p, c = record.get("prompt"), record.get("completion")
        if not isinstance(p, str) or not isinstance(c, str):
            raise DataError(f"{where}: prompt/completion record needs string 'prompt' and 'completion'")
        msgs = [{"role": "user", "content": p}, {"role": "assistant", "content": c}]
        if isinstance(record.get("system"), str):
            msgs.insert(0, {"role": "system", "content": record["system"]})
        return msgs
    if kind == "chat":
        msgs = record.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f"{where}: chat record needs a non-empty list 'messages'")
        out = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                    or not isinstance(m.get("content"), str):
                raise DataError(f"{where}: message {i} needs role system|user|assistant and string content")
            out.append({"role": m["role"], "content": m["content"]})
        return out
    if kind == "trace":
        return trace_to_messages(record, where=where)
    if kind == "gsm8k":
        return trace_to_messages(gsm8k_to_trace(record, where), where=where)
    if kind == "text":
        if not isinstance(record.get("text"), str):
            raise DataError(f"{where}: text record needs a string 'text'")
        return [{"role": "assistant", "content": record["text"]}]
    raise DataError(f"{where}: unknown kind {kind!r}; expected 'auto' or one of {SFT_KINDS}")


def load_jsonl_examples(path: PathLike, kind: str = "auto") -> list[list[dict]]:
    """Every record of a JSONL file (or folder of them) as messages (see `record_to_messages`).

    Raises DataError naming file and line for bad JSON, bad UTF-8, or a bad record; an empty
    file is a DataError too.
    """
    examples = []
    for f in list_data_files(path):
        for lineno, obj in iter_jsonl(f):
            examples.append(record_to_messages(obj, kind, where=f"{f}:{lineno}"))
    if not examples:
        raise DataError(f"load_jsonl_examples: no record in {path}")
    return examples

