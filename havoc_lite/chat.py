"""`python -m havoc_lite.chat`: a terminal chat over a checkpoint, streaming, with tools and PRIME.

    python -m havoc_lite.chat --model checkpoints/sft            # a checkpoint out_dir (`latest`)
    python -m havoc_lite.chat --model checkpoints/sft/step_000600 --budget heavy --show-sections
    python -m havoc_lite.chat --model DIR -p "A farmer has 48 eggs and sells half. How many are left?"

Each turn goes through `prime.generate_with_prime` (budget routed per question, or fixed with
`--budget`); tokens are decoded and printed as they arrive (the engine's `stream` callback), tool
calls are shown as they run (name, args, result), and PRIME's sections are either shown as the
model writes them (`--show-sections`) or folded to one line each (`--fold-sections`, default).
The conversation is kept across turns (oldest turns are dropped when it no longer fits the model's
context). Commands: `/reset` forgets the conversation, `/quit` (or end of input) leaves.

With `-p PROMPT` one question is answered and the answer alone goes to stdout (progress goes to
stderr), so scripts can use it. Exit codes: 0 done, 2 bad arguments or a missing model/tokenizer.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Optional, TextIO

from .markup import ADVOCATE, ANSWER, ATTACK, PRAGMATIST, REASON, TAG_RE, TOOL, TOOL_RESULT, VERIFY, strip_chat_tokens

# Sections folded to one line in --fold-sections mode (the answer is always shown in full).
FOLDED = (REASON, ADVOCATE, ATTACK, PRAGMATIST, VERIFY)
BUDGETS = ("auto", "minimal", "light", "medium", "heavy")




def _call_text(call_json: str) -> str:
    """`[tool] name(args)` from the JSON inside `<tool>…</tool>` (raw text when malformed)."""
    try:
        call = json.loads(call_json)
        return f"\n  [tool] {call.get('tool')}({json.dumps(call.get('args'), ensure_ascii=False)})"
    except (json.JSONDecodeError, AttributeError):
        return f"\n  [tool] <malformed call> {call_json.strip()}"


def _result_text(result_json: str) -> str:
    """` -> result` or ` -> error: why` from the JSON inside `<tool_result>…</tool_result>`."""
    try:
        res = json.loads(result_json)
        if res.get("status") == "success":
            return f" -> {json.dumps(res.get('result'), ensure_ascii=False)}"
        return f" -> error: {res.get('error')}"
    except (json.JSONDecodeError, AttributeError):
        return f" -> {result_json.strip()}"


def render_turn(text: str, show_sections: bool) -> str:
    """What the terminal shows for a (possibly partial) decoded assistant turn.

    The rendering of a prefix of `text` is a prefix of the rendering of `text` (open sections show
    their header at once; closing adds only a suffix), so a stream can print just the new part.
    Show mode: the markup as written (chat tokens dropped). Fold mode: `[reason …]` per folded
    section, one `[tool] name(args) -> result` line per call (the call shows when `</tool>`
    is written, the result when the engine has appended it), the answer after `Answer: `, and text
    outside any section as written.
    """
    text = strip_chat_tokens(text)
    if show_sections:
        return text
    out: list[str] = []
    pos, section, start = 0, None, 0
    for m in TAG_RE.finditer(text):
        closing, name = m.group(1) == "/", m.group(2)
        if section is None and not closing:
            out.append(text[pos:m.start()])
            section, start = name, m.end()
            if name in FOLDED:
                out.append(f"\n  [{name} …]")
            elif name == ANSWER:
                out.append("\nAnswer: ")
        elif section == name and closing:
            body = text[start:m.start()]
            out.append(body if name == ANSWER else _call_text(body) if name == TOOL
                       else _result_text(body) if name == TOOL_RESULT else "")
            section, pos = None, m.end()
    if section is None:
        out.append(text[pos:])
    elif section == ANSWER:
        out.append(text[start:])
    return "".join(out)


class StreamPrinter:
    """`stream(row, ids)` callback for the engine: decodes the turn so far and prints what is new.

    Prints only when the new rendering extends what is already printed (a multi-byte character
    split across tokens is held back until it is complete); `finish()` prints the rest.
    """

    def __init__(self, tokenizer, show_sections: bool, out: TextIO):
        self.tok, self.show, self.out = tokenizer, show_sections, out
        self.ids: list[int] = []
        self.printed = ""

    def __call__(self, row: int, token_ids: list) -> None:
        self.ids.extend(int(i) for i in token_ids)
        self._flush(final=False)

    def _flush(self, final: bool) -> None:
        shown = render_turn(self.tok.decode(self.ids), self.show)
        if "\ufffd" in shown[len(self.printed):] and not final:
            return   # an incomplete UTF-8 sequence: wait for its next byte
        if shown.startswith(self.printed):
            new = shown[len(self.printed):]
        else:   # cannot happen for well-formed renderings; print the differing tail afresh
            new = "\n" + shown[len(_common_prefix(shown, self.printed)):]
        if new:
            self.out.write(new)
            self.out.flush()
            self.printed = shown

    def finish(self) -> None:
        self._flush(final=True)
        self.out.write("\n")
        self.out.flush()


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


class ChatSession:
    """A conversation with a model through PRIME. `ask(question)` returns the `PrimeResult` and
    appends both turns to `messages`; `reset()` clears them.

    Args:
        model, tokenizer: a `HavocModel` and its `HavocTokenizer`.
        budget: "auto" (routed per question) or a budget name (case-insensitive).
        show_sections: print PRIME's sections as written (True) or fold them (False).
        tools: a `ToolRegistry`, None for `tools.default_registry()`, False for no tools.
        max_new_tokens: per turn (None: the budget's allowance).
        system: a system turn kept at the start of the conversation.
        prime_system: add PRIME's own instructions to the system turn (False for a model trained
            without them, such as the smoke run's).
    Raises:
        ValueError: an unknown budget.
    """

    def __init__(self, model, tokenizer, *, budget: str = "auto", show_sections: bool = False,
                 tools=None, max_new_tokens: Optional[int] = None, temperature: float = 0.0,
                 system: Optional[str] = None, prime_system: bool = True, out: TextIO = sys.stdout):
        if budget.lower() not in BUDGETS:
            raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
        self.model, self.tok = model, tokenizer
        self.budget = None if budget.lower() == "auto" else budget.lower()
        self.show, self.tools, self.out = show_sections, tools, out
        self.max_new_tokens, self.temperature, self.system = max_new_tokens, temperature, system
        self.prime_system = prime_system
        self.messages: list[dict] = []

    def reset(self) -> None:
        self.messages = []

    def _conversation(self, question: str) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.messages + [{"role": "user", "content": question}]

    def ask(self, question: str):
        """Answer `question` in the context of the conversation, streaming to `out`.

        Raises:
            ValueError: the question alone does not fit the model's context.
        """
        from .prime import generate_with_prime
        while True:
            printer = StreamPrinter(self.tok, self.show, self.out)
            try:
                result = generate_with_prime(
                    self.model, self.tok, self._conversation(question), budget=self.budget,
                    max_new_tokens=self.max_new_tokens, tools=self.tools,
                    temperature=self.temperature, stream=printer, prime_system=self.prime_system)
                break
            except ValueError as e:
                if "max_seq_len" not in str(e) or not self.messages:
                    raise
                self.messages = self.messages[2:]   # forget the oldest exchange and try again
                self.out.write("(conversation too long for the model's context: oldest turn dropped)\n")
        printer.finish()
        reply = strip_chat_tokens(result.text).strip()
        self.messages += [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
        return result


def build_parser() -> argparse.ArgumentParser:
    # argparse rather than tyro: the interface needs `-p` and the --show/--fold pair by name.
    ap = argparse.ArgumentParser(prog="python -m havoc_lite.chat",
                                 description="Chat with a havoc_lite checkpoint in the terminal.")
    ap.add_argument("--model", required=True,
                    help="model folder (model.safetensors + config.json) or a checkpoint out_dir with `latest`")
    ap.add_argument("--tokenizer", default=None,
                    help="tokenizer folder or .model file (default: in the model folder or its parent)")
    ap.add_argument("--budget", default="auto", type=str.lower, choices=BUDGETS,
                    help="PRIME budget: auto (routed per question) or MINIMAL|LIGHT|MEDIUM|HEAVY")
    sections = ap.add_mutually_exclusive_group()
    sections.add_argument("--show-sections", dest="show_sections", action="store_true",
                          help="print PRIME's sections as the model writes them")
    sections.add_argument("--fold-sections", dest="show_sections", action="store_false",
                          help="fold each section to one line (default)")
    ap.set_defaults(show_sections=False)
    ap.add_argument("-p", "--prompt", default=None, help="answer this one prompt, print the answer, exit")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="per turn (default: the budget's)")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--system", default=None, help="a system turn for the whole conversation")
    ap.add_argument("--no-tools", action="store_true", help="generate without executing tools")
    ap.add_argument("--no-prime-system", dest="prime_system", action="store_false",
                    help="leave PRIME's instructions out of the system turn (for a model trained without "
                         "them, e.g. the smoke run's)")
    ap.add_argument("--device", default="auto")
    return ap


HELP = "commands: /reset (forget the conversation), /quit (leave), /help"


def repl(session: ChatSession, read: Callable[[str], str] = input) -> None:
    """The interactive loop: read a line, answer it; `/reset`, `/quit`, `/help`; EOF quits."""
    session.out.write(f"havoc_lite chat — {HELP}\n")
    while True:
        try:
            line = read("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            session.out.write("\n")
            return
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return
        if line == "/reset":
            session.reset()
            session.out.write("(conversation cleared)\n")
            continue
        if line == "/help":
            session.out.write(HELP + "\n")
            continue
        if line.startswith("/"):
            session.out.write(f"unknown command {line.split()[0]}; {HELP}\n")
            continue
        session.out.write("model> ")
        try:
            session.ask(line)
        except ValueError as e:   # e.g. a question longer than the context: say so, keep going
            session.out.write(f"\n(error: {e})\n")


def main(argv: Optional[list[str]] = None) -> int:
    """The command line. A user error (bad flag value, a missing, truncated or mismatched model or
    tokenizer, a question too long for the context in -p mode) is one line and exit 2."""
    from .errors import run_cli
    return run_cli(_main, argv)


def check_args(args: argparse.Namespace) -> None:
    """Refuse flag values that describe no generation (ConfigError naming the flag)."""
    from .errors import ConfigError
    if not args.temperature >= 0:
        raise ConfigError(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")


def _main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    from .loading import load_model_and_tokenizer
    model, tok, model_dir = load_model_and_tokenizer(args.model, args.tokenizer, args.device)
    one_shot = args.prompt is not None
    session = ChatSession(model, tok, budget=args.budget, show_sections=args.show_sections,
                          tools=False if args.no_tools else None, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, system=args.system,
                          prime_system=args.prime_system, out=sys.stderr if one_shot else sys.stdout)
    if one_shot:
        print(f"[chat] {model_dir} ({model.num_parameters() / 1e6:.1f}M params)", file=sys.stderr)
        result = session.ask(args.prompt)
        answer = result.answer if result.answer is not None else render_turn(result.text, False).strip()
        print(answer)
        return 0
    print(f"[chat] {model_dir} ({model.num_parameters() / 1e6:.1f}M params), budget {args.budget}, "
          f"sections {'shown' if args.show_sections else 'folded'}")
    repl(session)
    return 0


if __name__ == "__main__":
    sys.exit(main())
