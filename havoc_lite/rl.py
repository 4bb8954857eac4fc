"""GRPO with tools in the loop: policy-gradient RL against a grader (Shao et al. 2024,
"DeepSeekMath", section 4.1; the token-level loss of DAPO, Yu et al. 2025).

One step:
1. take `prompts_per_step` prompts (a seeded shuffle per epoch) and sample `group_size` answers to
   each with the engine at `temperature`, tools executed inside the rollout;
2. score each answer: the correctness reward of a grader (GSM8K answer, tool answer, pytest: the
   eval graders), plus an optional separate format reward, minus an optional length penalty.
   A grader that raises scores 0 and the error is logged; the run goes on;
3. advantage of answer j in a group: A_j = (r_j - mean(r)) / (std(r) + eps) (unbiased std, as TRL;
   `scale_rewards=False` keeps only the centring, as Dr. GRPO / nanochat). A group whose rewards
   are all equal gets A = 0 exactly;
4. loss, summed over every token the MODEL sampled and divided by their count in the batch:
   -min(ρ·A, clip(ρ, 1-ε, 1+ε)·A) + β·k3, with ρ = π(t)/π_old(t) and k3 = π_ref/π - log(π_ref/π) - 1
   (Schulman's k3 KL estimator, off by default: β = 0 as in DAPO and nanochat). The tokens the
   engine wrote (`<tool_result>…</tool_result>`) are context, never targets. With `ppo_epochs` = 1
   and one minibatch the update is on-policy and ρ = 1; more passes reuse the samples, and the clip
   keeps them near π_old. Log-probabilities are those of the sampling distribution: logits / T.

Resume is exact, as the Trainer's: the checkpoint holds the weights, AdamW, the prompt order
position, every RNG state and the history, and each step's sampling seed is a function of the seed
and the step, so N steps + resume + N steps equals 2N steps bit for bit on CPU (tested). Checkpoints
are the Trainer's layout (`checkpoint.save_checkpoint`: step folders, `latest`, sha256, Drive
staging), so a step folder is also a model folder.

    python -m havoc_lite.rl --config grpo_tiny --checkpoint checkpoints/sft --prompts p.jsonl

Exit codes: 0 done, 2 a bad option or missing input (one line naming it).
"""
from __future__ import annotations

import copy
import json
import math
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

import torch

from . import checkpoint as ckpt
from .eval.metrics import wilson_interval
from .grpo import (
    SafeGrader,
    build_batch,
    format_score,
    group_advantages,
    policy_loss,
    token_logprobs,
)
from .grpo_config import GrpoConfig
from .optim import adamw


# --- prompt order ---------------------------------------------------------------------------------
class PromptOrder:
    """Prompts in a fresh seeded shuffle each epoch; `state_dict()` resumes it exactly.

    With `skip_prob` > 0, a prompt whose last group got all-equal rewards (`record(i, False)`) is
    passed over with that probability when its turn comes (GRESO's selective rollouts, Zheng et al.
    2025, "Act Only When It Pays"): such a group gives no gradient, and a prompt a model already
    always solves (or always fails) usually does so again. The draw for each turn is a function of
    (seed, epoch, position), so a resumed run skips the same prompts.
    """

    def __init__(self, n: int, seed: int, skip_prob: float = 0.0):
        if n <= 0:
            raise ValueError("no prompts to train on")
        self.n, self.seed, self.epoch, self.pos = n, seed, 0, 0
        self.skip_prob, self.zero_variance = skip_prob, set()
        self.skipped = 0
        self._order = self._shuffle()

    def _shuffle(self) -> list[int]:
        order = list(range(self.n))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def _skips(self, i: int) -> bool:
        if i not in self.zero_variance or not self.skip_prob:
            return False
        u = random.Random(f"{self.seed}/{self.epoch}/{self.pos}").random()
        return u < self.skip_prob

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.pos == self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._shuffle()
            i = self._order[self.pos]
            if self._skips(i):
                self.skipped += 1
            else:
                out.append(i)
            self.pos += 1
        return out

    def record(self, i: int, informative: bool) -> None:
        """Note whether prompt `i`'s latest group had a reward difference (a gradient)."""
        if informative:
            self.zero_variance.discard(i)
        else:
            self.zero_variance.add(i)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "zero_variance": sorted(self.zero_variance),
                "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self.zero_variance = set(state.get("zero_variance", []))
        self.skipped = int(state.get("skipped", 0))
        self._order = self._shuffle()


# --- the policy: our folders, pretrained models, LoRA ----------------------------------------------
def load_policy(src: str, tokenizer: Optional[str] = None) -> tuple:
    """(model in float32, tokenizer, ids of rows the tokenizer added) for GRPO's start.

    `src`: one of our model folders (or an out_dir with `latest`; the tokenizer is looked up next
    to it unless given), or anything `hub.load_model` reads (a Hugging Face folder, a hub id, a
    `.gguf` file), whose own tokenizer gets the markup (`HFTokenizer`) and whose embeddings grow to
    fit it (`init_from.fit_vocab`). Raises FileNotFoundError / ValueError naming the source.
    """
    from .hub import is_havoc_folder
    from .init_from import fit_vocab, load_init_model
    from .loading import load_model_and_tokenizer, resolve_model_dir
    from .tokenizer import load_tokenizer
    try:
        own = resolve_model_dir(src)
    except FileNotFoundError:
        own = None
    if own is not None and is_havoc_folder(own):
        if tokenizer:
            from .model import HavocModel
            model, tok = HavocModel.from_pretrained(own), load_tokenizer(tokenizer)
        else:
            model, tok, _ = load_model_and_tokenizer(str(own), None, "cpu", "float32")
    else:
        from .hf_tokenizer import HFTokenizer
        model = load_init_model(src)
        tok = load_tokenizer(tokenizer) if tokenizer else HFTokenizer.from_pretrained(src)
    new_ids = fit_vocab(model, tok)
    return model.float(), tok, new_ids


def attach_lora(model: torch.nn.Module, cfg: GrpoConfig, train_tokens: Sequence[int] = ()) -> dict:
    """Freeze the base and add LoRA adapters (havoc_lite.lora.apply_lora, in place). Returns what a
    checkpoint records: the settings plus the base's source and sha256 fingerprint (so that
    `python -m havoc_lite.merge --run OUT_DIR` can fold the adapters in). Raises ValueError for bad
    settings, or when this checkout has no LoRA module."""
    try:
        from .lora import apply_lora, base_fingerprint, lora_settings
    except ImportError as e:
        raise ValueError(f"lora_r={cfg.lora_r} needs havoc_lite/lora.py ({e})") from e
    settings = lora_settings(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets, None,
                             source="GrpoConfig", train_tokens=train_tokens)
    fingerprint = base_fingerprint(model)
    apply_lora(model, **settings)
    return {**settings, "base": {"source": cfg.checkpoint, "sha256": fingerprint}}


# --- the run --------------------------------------------------------------------------------------
def heldout_pass_at_1(model, tokenizer, items, grader, *, max_new_tokens: int, batch_size: int,
                      tools="default") -> dict:
    """Greedy pass@1 on `items` with its 95 % Wilson interval: {"pass@1", "ci95", "n"}."""
    from .raft import greedy_pass_at_1
    p = greedy_pass_at_1(model, tokenizer, items, grader, max_new_tokens=max_new_tokens,
                         batch_size=batch_size, tools=tools)
    n = len(items)
    return {"pass@1": p, "ci95": wilson_interval(round(p * n), n), "n": n}


class GrpoRunner:
    """Holds the policy, optimizer, prompt order and reference, and runs GRPO steps.

    Args:
        cfg: the run's GrpoConfig (validated here).
        model, tokenizer: a HavocModel and its tokenizer (`HavocTokenizer` or anything with the same
            interface); default: loaded from `cfg.checkpoint` / `cfg.tokenizer`.
        items: training prompts (run_eval items: "prompt" + what the grader needs); default:
            `cfg.prompts`. eval_items: held-out items; default: `cfg.eval_prompts`.
        grader: `grader(item, text, tool_calls) -> Grade`; default: `cfg.grader`.
        tools: "default" (the default registry), None (no tools) or a ToolRegistry.

    Resume (`cfg.resume`) happens in the constructor.
    Raises:
        ValueError / FileNotFoundError: bad options, missing files, a resume with other LoRA settings.
    """

    def __init__(self, cfg: GrpoConfig, model=None, tokenizer=None, items=None, eval_items=None,
                 grader=None, tools="default"):
        from .distributed import resolve_device
        from .eval.runner import load_prompt_items
        from .eval.graders import get_grader
        from .precision import resolve_dtype
        from .rng import seed_everything
        cfg.validate()
        self.cfg = cfg
        seed_everything(cfg.seed)
        self.device = resolve_device(cfg.device)
        # bf16 autocast where asked (or native on the GPU); "auto" never picks fp16 (no loss scaler here)
        amp = resolve_dtype(cfg.dtype, self.device)
        self.amp_dtype = torch.bfloat16 if amp == torch.bfloat16 else torch.float32
        new_ids: list = []
        if model is None or tokenizer is None:
            if not cfg.checkpoint:
                raise ValueError("GrpoConfig.checkpoint is not set (--checkpoint DIR)")
            model, tokenizer, new_ids = load_policy(cfg.checkpoint, cfg.tokenizer)
        if items is None:
            if not cfg.prompts:
                raise ValueError("GrpoConfig.prompts is not set (--prompts FILE)")
            items = load_prompt_items(cfg.prompts, system=cfg.system, limit=cfg.limit)
        if eval_items is None and cfg.eval_prompts:
            eval_items = load_prompt_items(cfg.eval_prompts, system=cfg.system)
        self.items, self.eval_items, self.tokenizer = list(items), eval_items, tokenizer
        self.grader = SafeGrader(grader or get_grader(cfg.grader))
        if tools == "default":
            from .tools import shared_registry
            tools = shared_registry()
        self.tools = tools

        model.to(self.device)
        # The reference is the starting policy, frozen; kept only when the KL term is on.
        self.ref = copy.deepcopy(model).eval().requires_grad_(False) if cfg.kl_coef > 0 else None
        # LoRA: adapters (and the rows of markup tokens new to a pretrained vocabulary) train,
        # the base stays frozen; checkpoints hold the adapters only, as the Trainer's do.
        self.lora = attach_lora(model, cfg, new_ids) if cfg.lora_r > 0 else None
        if self.lora is not None:   # the frozen base in the autocast dtype (half the memory), adapters fp32
            from .lora import cast_for_training
            cast_for_training(model, self.amp_dtype)
        self.model = model
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters")
        self.optimizer = adamw(params, self.device, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                               weight_decay=cfg.weight_decay)
        self.order = PromptOrder(len(self.items), cfg.seed, cfg.skip_zero_variance)
        self.step, self.history, self.wandb_id = 0, [], None
        self.resumed_from = ckpt.resolve_resume(cfg.resume, cfg.out_dir)
        if self.resumed_from is not None:
            self._load(self.resumed_from)

    def autocast(self):
        """A fresh autocast context for sampling and forward passes (a no-op in float32)."""
        from .precision import autocast
        return autocast(self.device, self.amp_dtype)

    # --- checkpoints ----------------------------------------------------------------------------
    def save(self) -> Path:
        """Checkpoint the current step (Trainer layout; Drive paths staged on local disk)."""
        from .rng import rng_state
        state = {"step": self.step, "optimizer": self.optimizer.state_dict(), "rng": rng_state(),
                 "data": self.order.state_dict(), "wandb_run_id": self.wandb_id,
                 "history_json": json.dumps(self.history)}
        meta = {"phase": "grpo", "grpo_config": asdict(self.cfg),
                "saved_at": time.strftime("%Y-%m-%d %H:%M:%S")}
        model_state = self.model.state_dict()
        if self.lora is not None:   # adapters only; meta says how to rebuild and merge them
            from .config import TrainConfig
            from .lora import lora_state_dict
            model_state = {k: v.to("cpu", copy=True) for k, v in lora_state_dict(self.model).items()}
            cfg = self.cfg
            meta["lora"] = self.lora
            meta["train_config"] = TrainConfig(
                phase="sft", init_from=cfg.checkpoint, tokenizer=cfg.tokenizer, lora_r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, lora_targets=cfg.lora_targets,
                out_dir=cfg.out_dir, seed=cfg.seed).to_dict()
        return ckpt.save_checkpoint(self.cfg.out_dir, self.step, model_state,
                                    self.model.config, state, meta, keep_last=self.cfg.keep_last,
                                    staging_dir=self.cfg.staging_dir or "auto")

    def _load(self, folder: Path) -> None:
        from .rng import set_rng_state
        model_state, state, meta = ckpt.load_checkpoint(folder)
        saved = meta.get("lora")
        if (saved is None) != (self.lora is None) or (saved and saved != json.loads(json.dumps(self.lora))):
            raise ValueError(f"{folder}: saved with LoRA settings {saved}, this run has {self.lora}; "
                             "resume with the same lora_* options and base, or use another out_dir")
        if self.lora is not None:
            from .lora import load_lora_state_dict
            load_lora_state_dict(self.model, model_state, source=str(folder))
        else:
            self.model.load_state_dict(model_state, strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.order.load_state_dict(state["data"])
        self.step = int(state["step"])
        self.history = json.loads(state["history_json"])
        self.wandb_id = state.get("wandb_run_id")
        set_rng_state(state["rng"])
        print(f"[grpo] resumed from {folder} at step {self.step}")

    # --- one step -------------------------------------------------------------------------------
    def rollout(self, indices: Sequence[int]) -> list[dict]:
        """Sample `group_size` answers for each prompt index (seeded by the step) and score them.
        Returns one dict per answer, grouped by prompt in order: item, prompt_ids, tokens,
        engine_mask, reward, correct, format, passed, tool_calls, finish_reason, text."""
        from .eval.runner import make_generate_fn, sample_and_grade
        cfg, tok = self.cfg, self.tokenizer
        gen = make_generate_fn(self.model, tok, max_new_tokens=cfg.max_new_tokens,
                               temperature=cfg.temperature, top_p=cfg.top_p, tools=self.tools,
                               batch_size=cfg.gen_batch_size, compile_decode=cfg.compile_decode)
        items = [self.items[i] for i in indices]
        rows = []
        with self.autocast():
            graded = list(sample_and_grade(items, self.grader, gen, samples=cfg.group_size,
                                           batch_size=cfg.gen_batch_size,
                                           seed=cfg.seed * 1_000_003 + 7919 * self.step, progress=False))
        for i, _, s, v, _ in graded:
            prompt = items[i]["prompt"]
            prompt_ids = tok.encode(prompt, bos=True) if isinstance(prompt, str) else tok.render_prompt(prompt)
            fmt = format_score(s.text, s.tool_calls, s.finish_reason)
            sampled = len(s.engine_mask) - sum(s.engine_mask)
            reward = v.reward + cfg.format_weight * fmt - cfg.length_penalty * sampled / cfg.max_new_tokens
            rows.append({"item": indices[i], "prompt_ids": prompt_ids, "tokens": s.tokens,
                         "engine_mask": s.engine_mask, "reward": reward, "correct": v.reward,
                         "format": fmt, "passed": bool(v.passed), "tool_calls": s.tool_calls,
                         "finish_reason": s.finish_reason, "text": s.text, "sampled": sampled})
        return rows

    def _logprobs(self, model, rows: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, tgt, mask = build_batch([r["prompt_ids"] for r in rows], [r["tokens"] for r in rows],
                                     [r["engine_mask"] for r in rows], self.tokenizer.pad_id)
        ids, tgt, mask = ids.to(self.device), tgt.to(self.device), mask.to(self.device)
        with self.autocast():
            logits = model(ids)
        return token_logprobs(logits, tgt, self.cfg.temperature), mask

    def update(self, rows: list[dict], advantages: torch.Tensor) -> dict:
        """`ppo_epochs` passes of `minibatches` AdamW updates over the step's answers.
        Returns {"loss", "clip_frac", "kl", "grad_norm"} averaged over the updates."""
        cfg, model = self.cfg, self.model
        B, mb = len(rows), cfg.train_batch_size
        for r, a in zip(rows, advantages.tolist()):
            r["adv"] = a
        # Rows with A = 0 add nothing to the policy-gradient term; without a KL term they are
        # skipped (their tokens still count in the normaliser, as in TRL/DAPO).
        def active(rr):
            return [r for r in rr if r["adv"] != 0.0 or self.ref is not None]
        needed = active(rows)
        frozen = [("ref_logp", self.ref)] if self.ref is not None else []
        if cfg.ppo_epochs > 1 or cfg.minibatches > 1:   # π_old: the policy that sampled
            frozen.append(("old_logp", model))
        with torch.no_grad():
            for key, net in frozen:
                for s in range(0, len(needed), mb):
                    chunk = needed[s:s + mb]
                    lp, _ = self._logprobs(net, chunk)
                    for r, row_lp in zip(chunk, lp):
                        r[key] = row_lp[:_row_len(r)].cpu()
        model.train()
        totals = {"loss": 0.0, "tokens": 0.0, "clipped": 0.0, "kl": 0.0, "grad_norm": 0.0, "updates": 0}
        bounds = [round(k * B / cfg.minibatches) for k in range(cfg.minibatches + 1)]
        for _ in range(cfg.ppo_epochs):
            for k in range(cfg.minibatches):
                mini = rows[bounds[k]:bounds[k + 1]]
                n_tok = sum(r["sampled"] for r in mini)
                self.optimizer.zero_grad(set_to_none=True)
                loss_sum = 0.0
                todo = active(mini)
                for s in range(0, len(todo), mb):
                    chunk = todo[s:s + mb]
                    logp, mask = self._logprobs(model, chunk)
                    T = logp.shape[1]
                    old = _stack(chunk, "old_logp", T).to(self.device) if "old_logp" in chunk[0] else logp.detach()
                    ref = _stack(chunk, "ref_logp", T).to(self.device) if self.ref is not None else None
                    adv = torch.tensor([r["adv"] for r in chunk], device=self.device)
                    loss, st = policy_loss(logp, old, adv, mask, clip_eps=cfg.clip_eps, ref_logp=ref,
                                           kl_coef=cfg.kl_coef, normalizer=n_tok)
                    loss.backward()
                    loss_sum += float(loss.detach())
                    for key in ("tokens", "clipped", "kl"):
                        totals[key] += st[key]
                params = [p for p in model.parameters() if p.requires_grad]
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                if todo and math.isfinite(float(norm)):
                    for g in self.optimizer.param_groups:
                        g["lr"] = cfg.lr * min(1.0, (self.step + 1) / max(cfg.warmup_steps, 1))
                    self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                totals["loss"] += loss_sum
                totals["grad_norm"] += float(norm) if todo else 0.0
                totals["updates"] += 1
        u = max(totals["updates"], 1)
        return {"loss": totals["loss"] / u, "grad_norm": totals["grad_norm"] / u,
                "clip_frac": totals["clipped"] / max(totals["tokens"], 1.0),
                "kl": totals["kl"] / max(totals["tokens"], 1.0) if self.ref is not None else None}

    def train_step(self) -> dict:
        """Sample, score, normalise, update: one RL step. Returns its logged statistics."""
        cfg = self.cfg
        t0 = time.perf_counter()
        self.grader.errors = []
        indices = self.order.take(cfg.prompts_per_step)
        rows = self.rollout(indices)
        t1 = time.perf_counter()
        rewards = torch.tensor([r["reward"] for r in rows]).view(cfg.prompts_per_step, cfg.group_size)
        spread = (rewards.max(1).values > rewards.min(1).values).tolist()   # a group with a gradient
        for i, informative in zip(indices, spread):
            self.order.record(i, informative)
        adv = group_advantages(rewards, scale=cfg.scale_rewards).view(-1)
        upd = self.update(rows, adv)
        t2 = time.perf_counter()
        calls = [c for r in rows for c in r["tool_calls"]]
        n = len(rows)
        stats = {
            "step": self.step + 1, "reward_mean": float(rewards.mean()),
            "correct_mean": sum(r["correct"] for r in rows) / n,
            "pass_rate": sum(r["passed"] for r in rows) / n,
            "format_mean": sum(r["format"] for r in rows) / n,
            "response_tokens": sum(len(r["tokens"]) for r in rows) / n,
            "sampled_tokens": sum(r["sampled"] for r in rows) / n,
            "truncated_frac": sum(r["finish_reason"] != "stop" for r in rows) / n,
            "tool_call_rate": sum(bool(r["tool_calls"]) for r in rows) / n,
            "tool_success": (sum(c.get("status") == "success" for c in calls) / len(calls)) if calls else None,
            "zero_adv_groups": spread.count(False),
            "prompts_skipped": self.order.skipped,
            "grader_errors": len(self.grader.errors),
            "sample_s": t1 - t0, "train_s": t2 - t1, **upd}
        if self.grader.errors:
            print(f"[grpo] step {self.step + 1}: {len(self.grader.errors)} grader error(s), "
                  f"scored 0; first: {self.grader.errors[0]}", file=sys.stderr)
        return stats

    def evaluate(self) -> Optional[dict]:
        if not self.eval_items:
            return None
        with self.autocast():
            return heldout_pass_at_1(self.model, self.tokenizer, self.eval_items, self.grader,
                                     max_new_tokens=self.cfg.max_new_tokens,
                                     batch_size=self.cfg.eval_batch_size, tools=self.tools)

    def train(self) -> list[dict]:
        """Run steps up to `max_steps` (or `stop_at_step`), evaluating, logging and checkpointing.
        Returns the history: one stats dict per step (eval rows have `eval_pass@1`, step 0 the start)."""
        from .tracking import Tracker
        cfg = self.cfg
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(Path(cfg.out_dir))
        tracker = Tracker(cfg.wandb_mode, cfg.wandb_project, cfg.wandb_run_name, asdict(cfg),
                          run_id=self.wandb_id)
        self.wandb_id = tracker.run_id
        end = min(cfg.max_steps, cfg.stop_at_step or cfg.max_steps)
        if self.step == 0 and self.eval_items and not any(h.get("step") == 0 for h in self.history):
            ev = self.evaluate()
            self.history.append({"step": 0, "eval_pass@1": ev["pass@1"], "eval_ci95": ev["ci95"]})
            print(f"[grpo] start: held-out pass@1 {ev['pass@1']:.3f} "
                  f"(95% CI {ev['ci95'][0]:.3f}-{ev['ci95'][1]:.3f}, n={ev['n']})")
        saved = self.resumed_from
        try:
            while self.step < end:
                stats = self.train_step()
                self.step += 1
                if (cfg.eval_every and self.step % cfg.eval_every == 0) or (self.step == cfg.max_steps and self.eval_items):
                    ev = self.evaluate()
                    if ev is not None:
                        stats.update({"eval_pass@1": ev["pass@1"], "eval_ci95": ev["ci95"]})
                self.history.append(stats)
                tracker.log({f"grpo/{k}": v for k, v in stats.items()
                             if isinstance(v, (int, float)) and k != "step"}, step=self.step)
                if self.step % cfg.log_every == 0 or self.step == end:
                    print(_log_line(stats), flush=True)
                if self.step % cfg.save_every == 0 or self.step == cfg.max_steps:
                    saved = self.save()
        finally:
            tracker.finish()
        if saved is not None:
            from .eval.runner import write_json
            write_json({"config": asdict(cfg), "history": self.history, "checkpoint": str(saved)},
                       Path(cfg.out_dir) / "stats.json")
        return self.history


def _row_len(row: dict) -> int:
    return len(row["prompt_ids"]) + len(row["tokens"]) - 1


def _stack(rows: Sequence[dict], key: str, T: int) -> torch.Tensor:
    """Per-row 1-D tensors stored under `key`, right-padded with 0 to [len(rows), T]."""
    out = torch.zeros(len(rows), T)
    for b, r in enumerate(rows):
        out[b, :len(r[key])] = r[key]
    return out


def _log_line(s: dict) -> str:
    parts = [f"[grpo] step {s['step']}", f"reward {s['reward_mean']:.3f}", f"pass {s['pass_rate']:.3f}",
             f"len {s['sampled_tokens']:.0f}", f"tools {s['tool_call_rate']:.2f}"]
    if s.get("tool_success") is not None:
        parts.append(f"tool ok {s['tool_success']:.2f}")
    if s.get("kl") is not None:
        parts.append(f"kl {s['kl']:.4f}")
    parts += [f"clip {s['clip_frac']:.3f}", f"grad norm {s['grad_norm']:.3f}",
              f"sample {s['sample_s']:.1f}s", f"train {s['train_s']:.1f}s"]
    if "eval_pass@1" in s:
        lo, hi = s["eval_ci95"]
        parts.append(f"held-out pass@1 {s['eval_pass@1']:.3f} ({lo:.3f}-{hi:.3f})")
    return ", ".join(parts)


def run_grpo(cfg: GrpoConfig, **kwargs) -> list[dict]:
    """`GrpoRunner(cfg, **kwargs).train()`."""
    return GrpoRunner(cfg, **kwargs).train()


def parse_args(argv: Optional[list[str]] = None) -> GrpoConfig:
    """`--config NAME|PATH` (a YAML in havoc_lite/configs/rl/ or a file), then field overrides."""
    import tyro
    args = list(sys.argv[1:] if argv is None else argv)
    base, rest, i = GrpoConfig(), [], 0
    while i < len(args):
        if args[i] == "--config" and i + 1 < len(args):
            base, i = GrpoConfig.load(args[i + 1]), i + 2
        elif args[i].startswith("--config="):
            base, i = GrpoConfig.load(args[i].split("=", 1)[1]), i + 1
        else:
            rest.append(args[i])
            i += 1
    return tyro.cli(GrpoConfig, default=base, args=rest, prog="python -m havoc_lite.rl",
                    description="GRPO with tools in the loop against a grader.")


def main(argv: Optional[list[str]] = None) -> int:
    try:
        cfg = parse_args(argv)
        run_grpo(cfg)
    except (FileNotFoundError, ValueError, ckpt.CheckpointError) as e:
        print(f"[grpo] error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
