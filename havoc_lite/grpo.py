"""The GRPO objective, as pure functions the run loop (`rl.py`) calls: rewards, group-normalised
advantages, the batch of sampled tokens with the engine-written ones masked, and the clipped
token-level policy loss with the optional k3 KL term. Formulas and sources: `rl.py`'s docstring
(Shao et al. 2024; Yu et al. 2025; Schulman's k3 estimator)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .eval.graders import Grade
from .markup import ANSWER, section_bodies


# --- rewards --------------------------------------------------------------------------------------
class SafeGrader:
    """Wraps a grader so that one that raises gives a failed Grade (reward 0) instead of
    stopping the run. `errors` collects "ExceptionType: message" for the step's log."""

    def __init__(self, grader: Callable):
        self.grader, self.errors = grader, []

    def __call__(self, item: dict, text: str, tool_calls: Sequence[dict]) -> Grade:
        try:
            return self.grader(item, text, tool_calls)
        except Exception as e:   # a grader bug must not kill hours of RL
            msg = f"{type(e).__name__}: {e}"
            self.errors.append(msg)
            return Grade(False, 0.0, {}, {}, {"error": msg})


def format_score(text: str, tool_calls: Sequence[dict], finish_reason: str) -> float:
    """Well-formedness of one answer in [0, 1]: the mean of three checks, an `<answer>…</answer>`
    is present, every tool call parsed (a name came out of it), and the answer stopped by itself
    (finish_reason "stop"). Kept apart from correctness (weighted by `format_weight`)."""
    has_answer = bool(section_bodies(text, ANSWER))
    parsed = all(c.get("name") is not None for c in tool_calls)
    return (float(has_answer) + float(parsed) + float(finish_reason == "stop")) / 3.0


def group_advantages(rewards: torch.Tensor, scale: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """GRPO's group-normalised advantages (Shao et al. 2024, eq. in section 4.1.2).

    Args:
        rewards: [P, G] float, G answers to each of P prompts.
        scale: divide the centred rewards by the group's unbiased std (+ eps).

    Returns:
        [P, G] float64: (r - mean) / (std + eps); exactly 0 for a group whose rewards are all equal
        (never NaN). Raises ValueError for G < 2.
    """
    r = rewards.double()
    if r.dim() != 2 or r.shape[1] < 2:
        raise ValueError(f"rewards must be [P, G] with G >= 2, got {tuple(r.shape)}")
    centred = r - r.mean(dim=1, keepdim=True)
    same = (r.max(dim=1, keepdim=True).values - r.min(dim=1, keepdim=True).values) == 0
    if scale:
        centred = centred / (r.std(dim=1, keepdim=True) + eps)
    return centred.masked_fill(same, 0.0)


# --- the loss -------------------------------------------------------------------------------------
def build_batch(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                engine_masks: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded training rows from (prompt ids, generated ids, engine mask) triples.

    Returns (input_ids [B, T], targets [B, T], loss_mask [B, T] float) with T = the longest
    prompt + response minus one: position t predicts targets[t] = sequence[t + 1]. loss_mask is 1
    where the target is a token the model sampled (engine_mask 0) and 0 on prompt tokens,
    engine-written tokens and padding; targets are -100 where the mask is 0.
    """
    seqs = [list(p) + list(r) for p, r in zip(prompts, responses)]
    T = max(len(s) for s in seqs) - 1
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    tgt = torch.full((len(seqs), T), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), T))
    for b, (p, r, em, s) in enumerate(zip(prompts, responses, engine_masks, seqs)):
        ids[b, :len(s) - 1] = torch.tensor(s[:-1])
        for j, (tok, written) in enumerate(zip(r, em)):
            if not written:
                t = len(p) + j - 1
                tgt[b, t], mask[b, t] = tok, 1.0
    return ids, tgt, mask


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature)[target] per position: logits [B, T, V], targets [B, T]
    (-100 allowed) -> [B, T] float (0 where the target is -100)."""
    B, T, V = logits.shape
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    lp = -F.cross_entropy((logits / temperature).reshape(B * T, V), targets.reshape(-1),
                          ignore_index=-100, reduction="none")
    return lp.view(B, T)


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, *, clip_eps: float = 0.2, ref_logp: Optional[torch.Tensor] = None,
                kl_coef: float = 0.0, normalizer: Optional[float] = None) -> tuple[torch.Tensor, dict]:
    """The clipped, token-level GRPO objective (PPO's clip, Schulman et al. 2017; k3 KL, Schulman 2020).

    Args:
        logp: [B, T] log π_θ of each target token (with grad). old_logp: [B, T] log π_old (no grad).
        advantages: [B], one per sequence. mask: [B, T], 1 on the tokens the model sampled.
        ref_logp: [B, T] log π_ref, needed when kl_coef > 0.
        normalizer: the loss is Σ mask · per-token loss / normalizer (default Σ mask): pass the
            token count of the whole minibatch when it is split into micro-batches.

    Returns:
        (loss, stats): stats holds float sums over masked tokens: `tokens`, `clipped` (tokens whose
        ratio left [1-ε, 1+ε] in the direction the advantage pushes, so they carry no gradient),
        `kl` (k3 summed; 0 without a reference).
    """
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None].to(logp.dtype)
    unclipped, clipped = ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv
    per_token = -torch.minimum(unclipped, clipped)
    kl = torch.zeros_like(logp)
    if ref_logp is not None:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1
        if kl_coef > 0:
            per_token = per_token + kl_coef * kl
    n = float(mask.sum()) if normalizer is None else float(normalizer)
    loss = (per_token * mask).sum() / max(n, 1.0)
    with torch.no_grad():
        was_clipped = ((ratio > 1 + clip_eps) & (adv > 0)) | ((ratio < 1 - clip_eps) & (adv < 0))
        stats = {"tokens": float(mask.sum()), "clipped": float((was_clipped.float() * mask).sum()),
                 "kl": float((kl * mask).sum())}
    return loss, stats
