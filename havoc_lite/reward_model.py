"""An outcome reward model (ORM) that scores (question, solution) pairs.

The backbone is a HavocModel (the `3b-verifier` preset at full size, `tiny` in tests); a scalar
head reads the final-norm hidden state of the last real token (Cobbe et al. 2021, "Training
Verifiers to Solve Math Word Problems", who score the final token; Ouyang et al. 2022 likewise for
reward models). Training is binary cross-entropy on (question, solution, correct?) triples, such as
the samples RAFT produces with their grader outcomes, or planted-error pairs (a right answer and
a perturbed one). Used to rank samples for best-of-n and as the report's "reward model catches obvious
errors" number.

Inputs are the chat rendering of [user: question, assistant: solution] (`tokenizer.render_chat`),
so the model sees exactly the markup the generator wrote.

Train one from a policy checkpoint (the backbone starts from it, so it shares its tokenizer), then
hand it to the eval report:

    python -m havoc_lite.reward_model --model checkpoints/smoke/sft_run --data traces.jsonl --out checkpoints/rm
    python -m havoc_lite.eval --model checkpoints/smoke/sft_run --reward-model checkpoints/rm ...

`--data` is JSONL of labelled triples {"question", "solution", "correct"}, or of correct examples
(tool traces, GSM8K rows) from which planted-error pairs are made (`planted_error_pairs`).
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .model import HavocModel
from .optim import adamw

Triple = tuple  # (question: str, solution: str, correct: bool)


class RewardModel(nn.Module):
    """HavocModel backbone + linear head on the last token: `forward(ids [B,T], lengths [B]) ->
    logits [B]` (float32; sigmoid gives P(correct)). Right padding is fine: causal attention keeps
    padding out of the last real token's state."""

    def __init__(self, cfg: ModelConfig, backbone: Optional[HavocModel] = None,
                 max_tokens: Optional[int] = None):
        super().__init__()
        self.max_tokens = max_tokens      # score only the last max_tokens tokens (None: max_seq_len)
        self.backbone = backbone if backbone is not None else HavocModel(cfg)
        self.config = self.backbone.config
        self.head = nn.Linear(self.config.d_model, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_preset(cls, name: str = "3b-verifier", **overrides) -> "RewardModel":
        return cls(ModelConfig.from_preset(name, **overrides))

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """input_ids [B, T] (right-padded), lengths [B] -> logits [B] float32. The backbone's LM
        head is skipped (`return_hidden`): at a 70k vocab it would cost more than the rest.
        Raises ValueError for a sequence longer than max_seq_len (the backbone's check)."""
        last = self.backbone(input_ids, logits_index=lengths.to(input_ids.device) - 1, return_hidden=True)
        return self.head(last).squeeze(-1).float()

    # --- save / load ----------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path) -> None:
        """The backbone as a model folder plus `reward_head.safetensors` and `reward_config.json`
        (max_tokens)."""
        from safetensors.torch import save_file
        self.backbone.save_pretrained(out_dir)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()},
                  str(Path(out_dir) / "reward_head.safetensors"))
        (Path(out_dir) / "reward_config.json").write_text(json.dumps({"max_tokens": self.max_tokens}) + "\n")

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str = "cpu",
                        dtype: Optional[torch.dtype] = None) -> "RewardModel":
        """Load a reward-model folder; a plain model folder (no head file) gets a fresh zero head.

        Raises FileNotFoundError / ValueError as `HavocModel.from_pretrained`."""
        from safetensors.torch import load_file
        backbone = HavocModel.from_pretrained(model_dir, device="cpu")
        extra = Path(model_dir) / "reward_config.json"
        max_tokens = json.loads(extra.read_text()).get("max_tokens") if extra.is_file() else None
        rm = cls(backbone.config, backbone, max_tokens=max_tokens)
        head = Path(model_dir) / "reward_head.safetensors"
        if head.is_file():
            rm.head.load_state_dict(load_file(str(head)))
        return rm.to(device=device, dtype=dtype) if dtype else rm.to(device)

    # --- scoring --------------------------------------------------------------------------------
    def encode(self, tokenizer, question: str, solution: str) -> list[int]:
        """Token ids of the rendered [user, assistant] pair, cut to max_seq_len (or `max_tokens`)
        from the left (the end, where the answer is, is what matters)."""
        ids, _ = tokenizer.render_chat([{"role": "user", "content": question},
                                        {"role": "assistant", "content": solution}])
        return ids[-min(self.config.max_seq_len, self.max_tokens or self.config.max_seq_len):]

    def _batch(self, seqs: Sequence[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        T = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
        return ids.to(device), torch.tensor([len(s) for s in seqs], device=device)

    @torch.no_grad()
    def score(self, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> list[float]:
        """P(correct) for each (question, solution)."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = []
        for start in range(0, len(pairs), batch_size):
            seqs = [self.encode(tokenizer, q, s) for q, s in pairs[start:start + batch_size]]
            ids, lengths = self._batch(seqs, tokenizer.pad_id, device)
            out += torch.sigmoid(self(ids, lengths)).tolist()
        self.train(was_training)
        return out

    def rank(self, tokenizer, question: str, solutions: Sequence[str]) -> list[int]:
        """Indices of `solutions`, best first (best-of-n picks `rank(...)[0]`)."""
        scores = self.score(tokenizer, [(question, s) for s in solutions])
        return sorted(range(len(solutions)), key=lambda i: -scores[i])

    def catch_rate(self, tokenizer, triples: Sequence[Triple], threshold: float = 0.5) -> dict:
        """`metrics.catch_rate` of the rule "flag when P(correct) < threshold" on labelled triples,
        plus the ROC AUC (threshold-free; scipy's Mann-Whitney U / (n_wrong · n_right))."""
        from scipy.stats import mannwhitneyu
        from .eval.metrics import catch_rate
        scores = self.score(tokenizer, [(q, s) for q, s, _ in triples])
        wrong = [not ok for _, _, ok in triples]
        out = catch_rate([p < threshold for p in scores], wrong)
        right_s = [p for p, w in zip(scores, wrong) if not w]
        wrong_s = [p for p, w in zip(scores, wrong) if w]
        if right_s and wrong_s:
            out["auc"] = float(mannwhitneyu(right_s, wrong_s).statistic / (len(right_s) * len(wrong_s)))
        return out


def train_reward_model(rm: RewardModel, tokenizer, triples: Sequence[Triple], *, steps: int = 200,
                       batch_size: int = 16, lr: float = 1e-3, weight_decay: float = 0.0,
                       grad_clip: float = 1.0, seed: int = 0, log_every: int = 0) -> dict:
    """Fit the reward model with BCE on (question, solution, correct) triples; AdamW, constant lr
    after a 10 % linear warm-up. Batches are drawn with replacement from a seeded stream.

    Returns: {"loss": per-step losses}.
    Raises: ValueError on an empty set or one with a single label.
    """
    labels = {bool(ok) for _, _, ok in triples}
    if len(labels) < 2:
        raise ValueError(f"train_reward_model needs both correct and incorrect examples, got {labels}")
    device = next(rm.parameters()).device
    seqs = [rm.encode(tokenizer, q, s) for q, s, _ in triples]
    ys = torch.tensor([float(ok) for _, _, ok in triples])
    opt = adamw(rm.parameters(), device, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(seed)
    warmup = max(1, steps // 10)
    rm.train()
    losses = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / warmup)
        idx = torch.randint(len(seqs), (batch_size,), generator=gen).tolist()
        ids, lengths = rm._batch([seqs[i] for i in idx], tokenizer.pad_id, device)
        loss = F.binary_cross_entropy_with_logits(rm(ids, lengths), ys[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(rm.parameters(), grad_clip)
        opt.step()
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"[reward_model] step {step + 1}/{steps} bce {sum(losses[-log_every:]) / log_every:.4f}")
    rm.eval()
    return {"loss": losses}


# --- planted errors -------------------------------------------------------------------------------
def perturb_number(value: str, rng: random.Random) -> str:
    """A different, plausible-looking number: off by 1-9, off by a factor of 10, or one digit
    changed. Integers stay integers."""
    from .numbers import normalize_number
    base = normalize_number(value)
    if base is None:
        raise ValueError(f"perturb_number: {value!r} is not a number")
    x = float(base)
    for _ in range(100):
        kind = rng.randrange(3)
        if kind == 0:
            y = x + rng.choice([-1, 1]) * rng.randint(1, 9)
        elif kind == 1:
            y = x * 10 if rng.random() < 0.5 or abs(x) < 10 else x / 10
        else:
            digits = list(base.lstrip("-"))
            pos = [i for i, c in enumerate(digits) if c.isdigit()]
            i = rng.choice(pos)
            digits[i] = str((int(digits[i]) + rng.randint(1, 9)) % 10)
            y = float(("-" if base.startswith("-") else "") + "".join(digits))
        out = normalize_number(repr(int(y)) if y == int(y) else f"{y:.10g}")
        if out is not None and out != base:
            return out
    raise ValueError(f"perturb_number: could not perturb {value!r}")


def solution_text(example: dict, tokenizer=None) -> str:
    """The assistant text of an example: a tool trace through `data.trace_to_messages` (the one
    renderer), a GSM8K row's solution as written."""
    if "reasoning" in example:
        from .data import trace_to_messages
        return trace_to_messages(example)[-1]["content"]
    return example["answer"]


_HASHES = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)


def planted_error_pairs(examples: Sequence[dict], seed: int = 0, wrong_fraction: float = 0.5) -> list[Triple]:
    """(question, solution, correct) triples from correct examples (tool traces or GSM8K rows):
    each example appears once, a seeded `wrong_fraction` of them with the final answer replaced
    by `perturb_number` of it (in the trace's `answer`, or after GSM8K's `####`)."""
    rng = random.Random(seed)
    out = []
    for ex in examples:
        wrong = rng.random() < wrong_fraction
        if "reasoning" in ex:
            ex2 = dict(ex, answer=perturb_number(ex["answer"], rng)) if wrong else ex
            text = solution_text(ex2)
        else:
            text = ex["answer"]
            if wrong:
                m = _HASHES.search(text)
                text = text[:m.start(1)] + perturb_number(m.group(1), rng)
        out.append((ex["question"], text, not wrong))
    return out


# --- command line ---------------------------------------------------------------------------------
def read_triples(path: str | Path, seed: int = 0) -> list[Triple]:
    """Labelled triples from JSONL: rows {"question", "solution", "correct"} are taken as they are;
    rows of correct examples (a tool trace with "reasoning"/"answer", or a GSM8K row with
    "question"/"answer") become `planted_error_pairs` (half of them with a wrong answer).

    Raises: FileNotFoundError; DataError naming the file and line for a row of neither kind.
    """
    from .data.readers import iter_jsonl
    from .errors import DataError
    labelled, examples = [], []
    for lineno, row in iter_jsonl(path):
        if {"question", "solution", "correct"} <= row.keys():
            labelled.append((str(row["question"]), str(row["solution"]), bool(row["correct"])))
        elif {"question", "answer"} <= row.keys() and ("reasoning" in row or _HASHES.search(str(row["answer"]))):
            examples.append(row)
        else:
            raise DataError(f"{path}:{lineno}: a reward-model row needs question/solution/correct, or a "
                            f"correct example (a trace with reasoning, or a GSM8K answer with ####); "
                            f"keys: {sorted(row)}")
    return labelled + planted_error_pairs(examples, seed=seed)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m havoc_lite.reward_model",
                                 description="Train an outcome reward model from a policy checkpoint.")
    ap.add_argument("--model", required=True, help="policy model folder or run dir: the backbone starts from it")
    ap.add_argument("--tokenizer", default=None, help="tokenizer (default: found next to --model)")
    ap.add_argument("--data", required=True, help="JSONL: labelled triples, or correct examples to plant errors in")
    ap.add_argument("--out", required=True, help="output folder (loadable by `eval --reward-model`)")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-tokens", type=int, default=None,
                    help="score only each pair's last N tokens (default: the model's max_seq_len)")
    ap.add_argument("--held-out", type=float, default=0.2, help="share of the triples kept out of training")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    return ap


def main(argv: Optional[list[str]] = None) -> dict:
    """Fit a reward model and report catch-rate and AUC on held-out triples before and after;
    writes `<out>/` (backbone, head, `reward_config.json`) and `<out>/report.json`.

    Raises: ConfigError for out-of-range flags; DataError / FileNotFoundError for bad data."""
    from .errors import ConfigError
    from .loading import load_model_and_tokenizer
    args = build_parser().parse_args(argv)
    for name, ok in (("--steps", args.steps > 0), ("--batch-size", args.batch_size > 0), ("--lr", args.lr > 0),
                     ("--held-out", 0 < args.held_out < 1),
                     ("--max-tokens", args.max_tokens is None or args.max_tokens > 1)):
        if not ok:
            raise ConfigError(f"{name} is out of range (got {getattr(args, name[2:].replace('-', '_'))})")
    triples = read_triples(args.data, seed=args.seed)
    random.Random(args.seed).shuffle(triples)
    n_test = max(1, round(len(triples) * args.held_out))
    test, train = triples[:n_test], triples[n_test:]
    model, tok, model_dir = load_model_and_tokenizer(args.model, args.tokenizer, device=args.device,
                                                     dtype="float32")
    torch.manual_seed(args.seed)
    rm = RewardModel(model.config, model, max_tokens=args.max_tokens).to(next(model.parameters()).device)
    before = rm.catch_rate(tok, test)
    hist = train_reward_model(rm, tok, train, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                              seed=args.seed, log_every=max(1, args.steps // 10))
    after = rm.catch_rate(tok, test)
    out = Path(args.out)
    rm.save_pretrained(out)
    report = {"from": str(model_dir), "data": str(args.data), "train": len(train), "held_out": len(test),
              "before": before, "after": after, "final_bce": sum(hist["loss"][-10:]) / min(10, len(hist["loss"]))}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"held-out ({len(test)}): AUC {before.get('auc', float('nan')):.3f} -> {after.get('auc', float('nan')):.3f}, "
          f"catch-rate {after['catch_rate']:.3f} at false-alarm {after['false_alarm_rate']:.3f}; wrote {out}")
    return report


if __name__ == "__main__":
    from .errors import run_cli
    sys.exit(run_cli(main, prog="python -m havoc_lite.reward_model"))
