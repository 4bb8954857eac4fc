"""`python -m havoc_lite.eval.lm_eval_check`: the kit's GSM8K figures beside lm-evaluation-harness's.

The same model is scored twice on the same local GSM8K problems, greedy, with the same prompt:
1. the kit: `evaluate_gsm8k(prompt_style="text", shots=0, tools=None)`, i.e. "Q: {question}\\nA:",
   `<|bos|>` first, output cut at "\\n\\nQ:"; strict and flexible as `eval.extract` defines them;
2. `lm-eval` (EleutherAI's harness, `hf` backend, CPU) on the model exported by
   `export.to_hf_llama`, with a task YAML written here over the same JSONL (no hub access): the same
   prompt and stop strings, the harness's own gsm8k-cot extraction ("strict-match": "The answer is
   N.", "flexible-extract": its last-number regex) and `exact_match`.
The accuracies are compared, then every problem where the two disagree is listed with its reason,
found by re-applying each side's rule to the other side's text:
- `generation`: the two generated texts differ (not counting markup tokens, which the harness
  decodes away);
- `markup`: the kit read `<answer>N</answer>` or `#### N`, marks lm-eval's strict regex ignores;
- `strict regex`: lm-eval's "The answer is (\\-?[0-9\\.\\,]+)." needs one character after the number,
  the kit's accepts the end of the text, "final answer" and a "$";
- `flexible regex`: lm-eval's "(-?[$0-9.,]{2,})|(-?[0-9]+)" also matches runs of "." or "," and takes
  the last of them; the kit takes the last well-formed number;
- `normalisation`: both read the same number written differently ("10.00" vs "10"): the kit compares
  numbers, lm-eval strings.
`--data` takes another GSM8K-format JSONL; `--templated N` writes N unseen `synth.offline`
arithmetic problems (test side of the hash split; `--phrasing heldout` for the held-out shapes) in
that format first (`offline_as_gsm8k`) and scores those: problems a small model can solve without
tools, so the two can be compared on a model that scores above 0.
Writes `<out>/comparison.json` (accuracies, per-problem rows, reasons). Needs `pip install lm-eval`
(not a dependency of the kit: it is large); without it, one line and exit 2.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..markup import ANSWER, END, close_tag, open_tag

TASK = "havoc_gsm8k_text"
LM_EVAL_STRICT = r"The answer is (\-?[0-9\.\,]+)."
LM_EVAL_FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
LM_EVAL_IGNORE = [",", "\\$", "(?s).*#### ", "\\.$"]
STOP = "\n\nQ:"


def task_yaml(data_jsonl: Path, max_new_tokens: int) -> str:
    """lm-eval task config over a local GSM8K JSONL, same layout and extraction as gsm8k-cot."""
    cfg = {
        "task": TASK, "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(Path(data_jsonl).resolve())}},
        "test_split": "test", "output_type": "generate_until",
        "doc_to_text": "Q: {{question}}\nA:", "doc_to_target": "{{answer.split('####')[-1].strip()}}",
        "num_fewshot": 0, "target_delimiter": " ",
        "generation_kwargs": {"until": [STOP, END], "do_sample": False, "max_gen_toks": max_new_tokens},
        "filter_list": [
            {"name": "strict-match", "filter": [{"function": "regex", "regex_pattern": LM_EVAL_STRICT},
                                                {"function": "take_first"}]},
            {"name": "flexible-extract", "filter": [{"function": "regex", "group_select": -1,
                                                     "regex_pattern": LM_EVAL_FLEXIBLE},
                                                    {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": True, "ignore_punctuation": False,
                         "regexes_to_ignore": LM_EVAL_IGNORE}],
        "metadata": {"version": 1.0},
    }
    return json.dumps(cfg, indent=2)   # JSON is YAML


def _lm_eval_extract(text: str, pattern: str, group_select: int) -> str:
    """lm-eval's RegexFilter: the `group_select`-th match, first non-empty group; "[invalid]"."""
    matches = re.findall(pattern, text)
    if not matches:
        return "[invalid]"
    m = matches[group_select]
    if isinstance(m, tuple):
        m = [g for g in m if g][0]
    return m.strip()


def _lm_eval_norm(s: str) -> str:
    for r in LM_EVAL_IGNORE:
        s = re.sub(r, "", s)
    return s.lower()


def without_markup(text: str, specials: tuple[str, ...] = ()) -> str:
    """The text the harness sees: special tokens are decoded away there, the kit's markup and
    `specials` (a Hugging Face tokenizer's own, e.g. SmolLM2's "<|im_end|>")."""
    from ..markup import SPECIAL_TOKENS
    for t in (*SPECIAL_TOKENS, *specials):
        text = text.replace(t, "")
    return text.strip()


def tokenizer_specials(tokenizer) -> tuple[str, ...]:
    """The special tokens of a Hugging Face backed tokenizer (`.hf`); () for the kit's own."""
    return tuple(getattr(getattr(tokenizer, "hf", None), "all_special_tokens", ()) or ())


def explain(kit: dict, harness: dict, specials: tuple[str, ...] = ()) -> str:
    """Why the kit and lm-eval disagree on one problem (`kit`: its record; `harness`: lm-eval's;
    `specials`: the model tokenizer's own special tokens, see `without_markup`)."""
    from .extract import extract_strict
    k_text = without_markup(kit["output"], specials)
    if k_text != harness["text"].strip():
        return "generation"
    if kit["which"] == "strict":
        marks = re.escape(open_tag(ANSWER)) + ".*?" + re.escape(close_tag(ANSWER)) + r"|####\s*\S+"
        if re.search(re.escape(open_tag(ANSWER)) + "|####", kit["output"]) \
                and extract_strict(re.sub(marks, "", kit["output"])) is None:
            return "markup"
        return "strict regex"
    if _lm_eval_extract(k_text, LM_EVAL_FLEXIBLE, -1) != harness["extracted"]:
        return "flexible regex"
    return "normalisation"


def run_kit(model, tokenizer, examples: list[dict], max_new_tokens: int, out: Path) -> dict:
    from .gsm8k import evaluate_gsm8k
    summary = evaluate_gsm8k(model, tokenizer, examples, shots=0, prompt_style="text", tools=None,
                             max_new_tokens=max_new_tokens, batch_size=10,
                             output_jsonl=out / "kit_samples.jsonl", progress=False)
    by_id = {}
    for line in open(out / "kit_samples.jsonl", encoding="utf-8"):
        row = json.loads(line)
        by_id[row["id"]] = row
    return {"summary": summary, "rows": [by_id[e["id"]] for e in examples]}


def run_lm_eval(hf_dir: Path, data_jsonl: Path, n: int, max_new_tokens: int, out: Path) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    tasks = out / "lm_eval_tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    (tasks / f"{TASK}.yaml").write_text(task_yaml(data_jsonl, max_new_tokens))
    res = simple_evaluate(model="hf", model_args=f"pretrained={hf_dir},dtype=float32,add_bos_token=True",
                          tasks=[TASK], task_manager=TaskManager(include_path=str(tasks)), limit=n,
                          batch_size=1, device="cpu", log_samples=True, random_seed=0,
                          numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
    metrics = res["results"][TASK]
    per = {}
    for s in res["samples"][TASK]:
        row = per.setdefault(s["doc_id"], {"text": s["resps"][0][0]})
        row[s["filter"]] = {"extracted": s["filtered_resps"][0], "correct": bool(s["exact_match"])}
    return {"strict": metrics["exact_match,strict-match"], "flexible": metrics["exact_match,flexible-extract"],
            "rows": [per[i] for i in sorted(per)]}


def offline_as_gsm8k(traces: list[dict]) -> list[dict]:
    """`synth.offline` traces as GSM8K rows {"question", "answer": "<each step with its expression
    and value>\n#### <answer>"}: the format `load_gsm8k` and the harness's task read."""
    rows = []
    for t in traces:
        steps = []
        for s in t["reasoning"]:
            call, res = s.get("tool_call"), s.get("tool_result")
            value = f" {call['args']['expression']} = {res['result']}" if call and res else ""
            steps.append(s["content"] + value)
        rows.append({"question": t["question"], "answer": "\n".join(steps) + f"\n#### {t['answer']}"})
    return rows


@dataclass
class CheckArgs:
    """Score one model on local GSM8K with the kit and with lm-evaluation-harness."""
    model: str                          # our folder, a HF folder, a .gguf or a hub id (`hub.load_model`)
    tokenizer: Optional[str] = None     # default: the model folder's own (`tokenizer.load_tokenizer`)
    data: str = ""                      # GSM8K JSONL; default the bundled 100 test problems
    templated: int = 0
    """score this many unseen synth.offline arithmetic problems (written as GSM8K JSONL) instead"""
    phrasing: str = "train"             # with --templated: "train" (in-template) or "heldout"
    seed: int = 0                       # with --templated
    limit: int = 100
    max_new_tokens: int = 64
    out: str = "checkpoints/lm_eval_check"


def compare(args: CheckArgs) -> dict:
    """Run both, compare, explain each disagreement; returns what `comparison.json` holds."""
    from ..export import to_hf_llama
    from ..hub import load_model
    from ..tokenizer import load_tokenizer
    from .gsm8k import ASSET_TEST, load_gsm8k
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else ASSET_TEST
    if args.templated:
        from synth.offline import generate_offline
        traces = generate_offline("arithmetic", args.templated, seed=args.seed, split="test", phrasing=args.phrasing)
        data = out / "templated.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in offline_as_gsm8k(traces)), encoding="utf-8")
    examples = load_gsm8k(data, limit=args.limit)
    data_copy = out / "gsm8k.jsonl"    # the same rows, for the harness to load itself
    data_copy.write_text("".join(json.dumps({"question": e["question"], "answer": e["answer"]}) + "\n"
                                 for e in examples), encoding="utf-8")
    model = load_model(args.model).eval()
    tokenizer = load_tokenizer(args.tokenizer or args.model)
    hf_dir = to_hf_llama(model, out / "hf", tokenizer=tokenizer)
    cfg_path = hf_dir / "tokenizer_config.json"     # the harness adds <|bos|> as the kit does
    if cfg_path.exists():
        tok_cfg = json.loads(cfg_path.read_text())
        tok_cfg["add_bos_token"] = True
        cfg_path.write_text(json.dumps(tok_cfg, indent=2))
    specials = tokenizer_specials(tokenizer)
    kit = run_kit(model, tokenizer, examples, args.max_new_tokens, out)
    harness = run_lm_eval(hf_dir, data_copy, len(examples), args.max_new_tokens, out)
    m = kit["summary"]["metrics"]
    result = {"n": len(examples), "kit": {"strict": m["strict"]["accuracy"], "flexible": m["flexible"]["accuracy"]},
              "lm_eval": {"strict": harness["strict"], "flexible": harness["flexible"]}, "disagreements": [],
              "same_text": 0, "problems": [], "extraction_differences": []}
    for i, (k, h) in enumerate(zip(kit["rows"], harness["rows"])):
        same = without_markup(k["output"], specials) == h["text"].strip()
        result["same_text"] += same
        result["problems"].append({"problem": i, "same_text": same, "kit_text": k["output"],
                                   "lm_eval_text": h["text"], "kit": k["answers"],
                                   "lm_eval": {f: h[f]["extracted"] for f in ("strict-match", "flexible-extract")}})
        for which, hname in (("strict", "strict-match"), ("flexible", "flexible-extract")):
            theirs = h[hname]["extracted"]
            theirs = None if theirs == "[invalid]" else _lm_eval_norm(theirs)
            if k["answers"].get(which) != theirs:   # read differently, whether or not it changed a score
                result["extraction_differences"].append({
                    "problem": i, "which": which, "kit": k["answers"].get(which), "lm_eval": h[hname]["extracted"],
                    "reason": explain({"output": k["output"], "which": which},
                                      {"text": h["text"], "extracted": h[hname]["extracted"]}, specials)})
        for which, hname in (("strict", "strict-match"), ("flexible", "flexible-extract")):
            k_ok = bool(k["checks"][which])
            if k_ok != h[hname]["correct"]:
                rec = {"output": k["output"], "which": which}
                result["disagreements"].append({
                    "problem": i, "which": which, "kit_correct": k_ok, "lm_eval_correct": h[hname]["correct"],
                    "kit_extracted": k["answers"].get(which), "lm_eval_extracted": h[hname]["extracted"],
                    "reason": explain(rec, {"text": h["text"], "extracted": h[hname]["extracted"]}, specials)})
    result["equal"] = result["kit"] == result["lm_eval"]
    result["explained"] = all(d["reason"] != "generation" for d in result["disagreements"])
    (out / "comparison.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: Optional[list[str]] = None) -> int:
    """Command line; a missing lm-eval or model is one line and exit 2 (`errors.run_cli`)."""
    from ..errors import run_cli
    return run_cli(_main, argv)


def _main(argv: Optional[list[str]] = None) -> int:
    import tyro
    from ..errors import ConfigError
    args = tyro.cli(CheckArgs, args=argv, prog="python -m havoc_lite.eval.lm_eval_check")
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ConfigError("lm-eval is not installed: pip install lm-eval") from None
    r = compare(args)
    print(f"generated texts identical (markup aside) on {r['same_text']} of {r['n']} problems")
    print(f"{r['n']} problems  kit strict {r['kit']['strict']:.3f} flexible {r['kit']['flexible']:.3f}  |  "
          f"lm-eval strict {r['lm_eval']['strict']:.3f} flexible {r['lm_eval']['flexible']:.3f}")
    reasons = {}
    for d in r["extraction_differences"]:
        reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
    print(f"answers read differently (scores aside) on {len(r['extraction_differences'])} extractions: {reasons}")
    for d in r["disagreements"]:
        print(f"  problem {d['problem']} {d['which']}: kit {d['kit_extracted']!r} ({d['kit_correct']}) vs "
              f"lm-eval {d['lm_eval_extracted']!r} ({d['lm_eval_correct']}): {d['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
