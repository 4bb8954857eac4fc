"""GSM8K (Cobbe et al. 2021): loading, prompts, and `evaluate_gsm8k`.

Prompts come in two styles:
- "chat": a conversation rendered by the tokenizer's chat template; k-shot puts the exemplars in
  as earlier user/assistant turns whose answers use our markup (`<reason>…</reason><answer>N</answer>`);
- "text": plain "Q: …\\nA: … The answer is N." blocks joined by blank lines, exactly the layout of
  lm-evaluation-harness's gsm8k-cot task, for base models that never saw the chat markup.
The exemplars are the 8 chain-of-thought exemplars of Wei et al. 2022 ("Chain-of-Thought Prompting
Elicits Reasoning in Large Language Models", Table 20), as gsm8k-cot uses them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..markup import ANSWER, REASON, wrap
from .extract import extract_gold

ASSET_TEST = Path(__file__).resolve().parent.parent / "assets" / "gsm8k_test_100.jsonl"

# (question, chain of thought, answer): Wei et al. 2022, verbatim.
COT_EXEMPLARS: list[tuple[str, str, str]] = [
    ("There are 15 trees in the grove. Grove workers will plant trees in the grove today. After "
     "they are done, there will be 21 trees. How many trees did the grove workers plant today?",
     "There are 15 trees originally. Then there were 21 trees after some more were planted. So "
     "there must have been 21 - 15 = 6.", "6"),
    ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the "
     "parking lot?",
     "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5.", "5"),
    ("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have "
     "left in total?",
     "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. "
     "After eating 35, they had 74 - 35 = 39.", "39"),
    ("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many "
     "lollipops did Jason give to Denny?",
     "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny "
     "20 - 12 = 8.", "8"),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys "
     "does he have now?",
     "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more "
     "toys. 5 + 4 = 9.", "9"),
    ("There were nine computers in the server room. Five more computers were installed each day, "
     "from monday to thursday. How many computers are now in the server room?",
     "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 "
     "= 20 computers were added. 9 + 20 is 29.", "29"),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. "
     "How many golf balls did he have at the end of wednesday?",
     "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After "
     "losing 2 more, he had 35 - 2 = 33 golf balls.", "33"),
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has "
     "23 - 15 dollars left. 23 - 15 is 8.", "8"),
]

SYSTEM_PROMPT = ("Solve the math word problem step by step. Use the calculator tool for arithmetic "
                 f"when it helps, and put the final number in {wrap(ANSWER, '')}.")


def load_gsm8k(path: Optional[str | Path] = None, split: str = "test",
               limit: Optional[int] = None) -> list[dict]:
    """GSM8K examples as dicts {"id", "question", "answer" (full solution), "gold" (normalised)}.

    Args:
        path: a local JSONL of {"question", "answer"} lines; "hub" loads
            `datasets.load_dataset("openai/gsm8k", "main")[split]`; None uses the packaged
            100-problem test slice (`assets/gsm8k_test_100.jsonl`).
        split: hub split ("train" | "test"); ignored for local files.
        limit: keep the first `limit` examples.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: a line is not JSON, lacks a field, or has no `#### N` (message names file:line).
    """
    rows: list[dict] = []
    if path == "hub":
        from datasets import load_dataset
        ds = load_dataset("openai/gsm8k", "main", split=split)
        for i, ex in enumerate(ds):
            if limit is not None and i >= limit:
                break
            rows.append({"id": f"gsm8k-{split}-{i}", "question": ex["question"], "answer": ex["answer"],
                         "gold": extract_gold(ex["answer"])})
        return rows
    path = Path(path) if path is not None else ASSET_TEST
    if not path.is_file():
        raise FileNotFoundError(f"GSM8K file {path} not found (pass path='hub' to download)")
    from ..data.readers import iter_jsonl  # the kit's one JSONL reader (errors name file:line)
    for lineno, ex in iter_jsonl(path):
        if limit is not None and len(rows) >= limit:
            break
        where = f"{path}:{lineno}"
        for field in ("question", "answer"):
            if not isinstance(ex.get(field), str):
                raise ValueError(f"{where}: missing string field {field!r}")
        try:
            gold = extract_gold(ex["answer"])
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e
        rows.append({"id": ex.get("id", f"{path.stem}-{lineno}"), "question": ex["question"],
                     "answer": ex["answer"], "gold": gold})
    return rows


def build_messages(question: str, shots: int = 0, system: Optional[str] = SYSTEM_PROMPT) -> list[dict]:
    """Chat messages for one question with `shots` (0..8) Wei et al. exemplars as earlier turns."""
    if not 0 <= shots <= len(COT_EXEMPLARS):
        raise ValueError(f"shots must be in [0, {len(COT_EXEMPLARS)}], got {shots}")
    messages = [{"role": "system", "content": system}] if system else []
    for q, cot, ans in COT_EXEMPLARS[:shots]:
        messages.append({"role": "user", "content": q})
        messages.append({"role": "assistant", "content": wrap(REASON, cot) + wrap(ANSWER, ans)})
    messages.append({"role": "user", "content": question})
    return messages


def build_text_prompt(question: str, shots: int = 8) -> str:
    """lm-evaluation-harness gsm8k-cot layout: "Q: {q}\\nA: {cot} The answer is {n}." blocks
    separated by blank lines, ending in "Q: {question}\\nA:"."""
    if not 0 <= shots <= len(COT_EXEMPLARS):
        raise ValueError(f"shots must be in [0, {len(COT_EXEMPLARS)}], got {shots}")
    blocks = [f"Q: {q}\nA: {cot} The answer is {ans}." for q, cot, ans in COT_EXEMPLARS[:shots]]
    blocks.append(f"Q: {question}\nA:")
    return "\n\n".join(blocks)


def evaluate_gsm8k(model=None, tokenizer=None, examples: Optional[Sequence[dict]] = None, *,
                   path: Optional[str | Path] = None, limit: Optional[int] = None, shots: int = 0,
                   prompt_style: str = "chat", prime: bool = False, samples: int = 1,
                   k: Sequence[int] = (1,), temperature: float = 0.0, top_p: Optional[float] = None,
                   max_new_tokens: int = 256, batch_size: int = 16, tools: Any = "default",
                   output_jsonl: Optional[str | Path] = None, seed: int = 0,
                   generate_fn: Optional[Callable] = None, progress: bool = True) -> dict:
    """Accuracy of a model on GSM8K with strict and flexible extraction, pass@k and maj@k.

    Args:
        model, tokenizer: a HavocModel and HavocTokenizer (unused when `generate_fn` is given).
        examples: rows from `load_gsm8k`; else loaded from `path`/`limit`.
        shots: number of Wei et al. exemplars (0 = zero-shot chat).
        prompt_style: "chat" (our markup) or "text" (lm-eval gsm8k-cot "Q:/A:" layout).
        prime: generate through `havoc_lite.prime.generate_with_prime` instead of the plain engine.
        samples: samples per question (n of pass@k); k: the k values reported (each <= samples).
        tools: "default" -> `tools.default_registry()`, None -> no tools, or a ToolRegistry.
        output_jsonl: per-sample records (prompt, output, extracted answers, correctness, tool
            calls, latency) are written here.
        generate_fn: a `runner.GenerateFn` to use instead of the model (tests, other backends).

    Returns:
        the `runner.run_eval` summary: {"metrics": {"strict": {...}, "flexible": {...}, "tools": ...,
        "latency": ..., "tokens_per_s"}, "num_examples", "samples", ...}.
    """
    from .runner import make_generate_fn, run_eval
    from .graders import GSM8KGrader

    if examples is None:
        examples = load_gsm8k(path, limit=limit)
    if prompt_style not in ("chat", "text"):
        raise ValueError(f"prompt_style must be 'chat' or 'text', got {prompt_style!r}")
    items = []
    for ex in examples:
        prompt = (build_messages(ex["question"], shots) if prompt_style == "chat"
                  else build_text_prompt(ex["question"], shots))
        items.append({**ex, "prompt": prompt})
    if generate_fn is None:
        generate_fn = make_generate_fn(model, tokenizer, max_new_tokens=max_new_tokens,
                                       temperature=temperature, top_p=top_p, tools=tools,
                                       prime=prime, batch_size=batch_size)
    summary = run_eval(items, GSM8KGrader(), generate_fn, samples=samples, k=k,
                       batch_size=batch_size, output_jsonl=output_jsonl, seed=seed, progress=progress)
    summary["config"] = {"benchmark": "gsm8k", "shots": shots, "prompt_style": prompt_style,
                         "prime": prime, "temperature": temperature, "max_new_tokens": max_new_tokens}
    return summary
