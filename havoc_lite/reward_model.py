"""A reward model: an outcome reward model (ORM) that scores (question, solution) pairs.

The backbone is a HavocModel (the `3b-reward` preset at full size, `tiny` in tests); a scalar
head reads the final-norm hidden state of the last real token (Cobbe et al. 2021, "Training
Verifiers to Solve Math Word Problems", who score the final token; Ouyang et al. 2022 likewise for
reward models). Training is binary cross-entropy on (question, solution, correct?) triples, such as
the samples RAFT produces with their grader outcomes, or planted-error pairs (a right answer and
a perturbed one). Used to rank samples for best-of-n and as the report's "reward model catches obvious
errors" number.

Inputs are the chat rendering of [user: question, assistant: solution] (`tokenizer.render_chat`),
so the model sees exactly the markup the generator wrote.
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .model import HavocModel

Triple = tuple  # (question: str, solution: str, correct: bool)


class RewardModel(nn.Module):
    """HavocModel backbone + linear head on the last token: `forward(ids [B,T], lengths [B]) ->
    logits [B]` (float32; sigmoid gives P(correct)). Right padding is fine: causal attention keeps
    padding out of the last real token's state."""

    def __init__(self, cfg: ModelConfig, backbone: Optional[HavocModel] = None):
        super().__init__()
        self.backbone = backbone if backbone is not None else HavocModel(cfg)
        self.config = self.backbone.config
        self.head = nn.Linear(self.config.d_model, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_preset(cls, name: str = "3b-reward", **overrides) -> "RewardModel":
        return cls(ModelConfig.from_preset(name, **overrides))

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Final-norm hidden states [B, T, d] (the LM head is skipped: at 70k vocab it would cost
        more than the rest)."""
        m = self.backbone
        T = input_ids.shape[1]
        if T > m.config.max_seq_len:
            raise ValueError(f"sequence of {T} tokens is longer than max_seq_len={m.config.max_seq_len}")
        cos, sin = m.rope_cos[:T][None, None], m.rope_sin[:T][None, None]
        x = m.drop(m.embed_tokens(input_ids))
        for layer in m.layers:
            x = layer(x, cos, sin)
        return m.norm(x)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.hidden_states(input_ids)
        last = h[torch.arange(h.shape[0], device=h.device), lengths.to(h.device) - 1]
        return self.head(last).squeeze(-1).float()

    # --- save / load ----------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path) -> None:
        """The backbone as a model folder plus `reward_head.safetensors`."""
        from safetensors.torch import save_file
        self.backbone.save_pretrained(out_dir)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()},
                  str(Path(out_dir) / "reward_head.safetensors"))

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str = "cpu",
                        dtype: Optional[torch.dtype] = None) -> "RewardModel":
        """Load a reward-model folder; a plain model folder (no head file) gets a fresh zero head.

        Raises FileNotFoundError / ValueError as `HavocModel.from_pretrained`."""
        from safetensors.torch import load_file
        backbone = HavocModel.from_pretrained(model_dir, device="cpu")
        rm = cls(backbone.config, backbone)
        head = Path(model_dir) / "reward_head.safetensors"
        if head.is_file():
            rm.head.load_state_dict(load_file(str(head)))
        return rm.to(device=device, dtype=dtype) if dtype else rm.to(device)

    # --- scoring --------------------------------------------------------------------------------
    def encode(self, tokenizer, question: str, solution: str) -> list[int]:
        """Token ids of the rendered [user, assistant] pair, cut to max_seq_len from the left
        (the end, where the answer is, is what matters)."""
        ids, _ = tokenizer.render_chat([{"role": "user", "content": question},
                                        {"role": "assistant", "content": solution}])
        return ids[-self.config.max_seq_len:]

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
    opt = torch.optim.AdamW(rm.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
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
