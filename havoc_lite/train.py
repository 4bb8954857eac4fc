"""Trainer for the three phases (pretrain | sft | polish) and the `python -m havoc_lite.train` CLI.

    python -m havoc_lite.train --config pretrain_tiny --max-steps 200 --resume auto
    torchrun --nproc_per_node=8 -m havoc_lite.train --config pretrain_1b

One loop serves all phases; only the data differs (token shards for pretraining, rendered
conversations with a loss mask for SFT/polish). Each optimizer step runs `grad_accum_steps`
micro-batches under autocast (bf16 on CUDA, fp16 + GradScaler where bf16 is missing), clips the
global gradient norm, sets the warm-up + cosine learning rate and steps AdamW. A step whose loss
or gradient norm is not finite is skipped (no update); `max_bad_steps` of them in a row stop the
run with a checkpoint of the last good weights on disk.

Resume is exact: the checkpoint holds model, optimizer, schedule position, tokens seen, every RNG
state and the loader's position, so N steps + resume + N steps equals 2N uninterrupted steps
(bitwise on CPU fp32; tested).

From a pretrained model (`init_from`: a hub id, a Hugging Face folder, a `.gguf` file or our own
folder, loaded by `hub.load_model`, with its own tokenizer through `HFTokenizer` and the markup rows
added) a run may train LoRA adapters only (`lora_r > 0`, `havoc_lite.lora`; `quantize: nf4` for
QLoRA). Its checkpoints then hold the adapters and their AdamW state, plus the base's source and
sha256 fingerprint in meta.json; a resume with other LoRA settings or onto another base is refused.

    python -m havoc_lite.train --config sft_smollm2_1.7b_lora --out-dir runs/lora --resume auto
    python -m havoc_lite.merge --run runs/lora --out runs/lora_merged
"""
from __future__ import annotations

import math
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from . import checkpoint as ckpt
from . import distributed as dist_utils
from . import lora_resume
from .config import TrainConfig
from .data.from_config import build_loaders
from .errors import run_cli
from .init_from import fit_vocab, load_init_model, load_run_tokenizer
from .model import HavocModel
from .optim import lr_at, make_optimizer
from .precision import enable_tf32, resolve_dtype
from .rng import rng_state, seed_everything, set_rng_state
from .tracking import Tracker

# Per-step and per-eval lists of a run's history (`Trainer.train()` returns them for one session;
# `Trainer.history` holds the whole run, kept in every checkpoint so plots continue after a resume).
HISTORY_KEYS = ("step", "loss", "lr", "grad_norm", "tokens_per_s", "eval_step", "eval_loss", "eval_ppl")


class TrainingDiverged(RuntimeError):
    """`max_bad_steps` consecutive steps had a non-finite loss or gradient norm."""


# --- data -------------------------------------------------------------------------------------
def _unpack(batch, device) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """(x, y, positions or None) on `device` from a loader's (x, y) or packed (x, y, positions)."""
    x, y, *rest = batch
    pos = rest[0].to(device, non_blocking=True) if rest else None
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True), pos


# --- trainer ----------------------------------------------------------------------------------
class Trainer:
    """Train a HavocModel for one phase.

    Args:
        cfg: the run's TrainConfig.
        model: a HavocModel to train; default: `init_from` (sft/polish) or a fresh `cfg.model`
            preset sized to the tokenizer's vocabulary, initialised from `cfg.seed`.
        tokenizer: a HavocTokenizer; default: loaded from `cfg.tokenizer` if set.
        train_loader / eval_loader: objects with `next_batch() -> (x [B, T], y [B, T])` (aligned
            targets, -100 ignored), `state_dict()` and `load_state_dict()`; default: built from the
            config by `build_loaders`. The eval loader is rewound to its initial state before every
            evaluation, so every eval sees the same batches.

    Under torchrun the process group is set up here; pass loaders built with this process's
    rank/world_size (see `self.dist`). Resume (`cfg.resume`) happens in the constructor.
    """

    def __init__(self, cfg: TrainConfig, model: Optional[HavocModel] = None, tokenizer=None,
                 train_loader=None, eval_loader=None):
        cfg.validate()
        self.cfg = cfg
        self.dist = dist_utils.setup(cfg.device)
        self.device = self.dist.device
        self.is_main = self.dist.is_main
        if self.is_main:   # found now, not at the first save after the compute
            ckpt.check_writable(cfg.out_dir, "--out-dir")
        seed_everything(cfg.seed)
        lora_resume.precheck(cfg)

        if tokenizer is None:
            tokenizer = load_run_tokenizer(cfg)
        self.tokenizer = tokenizer
        self.new_token_ids: list[int] = []   # rows the tokenizer added to a pretrained vocabulary
        if model is None:
            model = self._build_model()
        self.lora: Optional[dict[str, Any]] = None   # settings + base identity of a LoRA run
        if cfg.lora_r:
            self._add_lora(model)
        self.model_config = model.config
        if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but the model's vocab_size is "
                             f"{model.config.vocab_size} (init_from={cfg.init_from}); use the tokenizer "
                             "the model was trained with")
        if train_loader is None:
            train_loader, built_eval = build_loaders(cfg, tokenizer, self.dist.rank, self.dist.world_size)
            eval_loader = eval_loader if eval_loader is not None else built_eval
        self.train_loader, self.eval_loader = train_loader, eval_loader
        self._eval_start = eval_loader.state_dict() if eval_loader is not None else None

        # Precision: autocast dtype; fp16 needs loss scaling (bf16 has fp32's exponent range).
        self.amp_dtype = resolve_dtype(cfg.dtype, self.device)
        # a LoRA run's frozen base is replicated (DDP), only its small adapters are all-reduced
        self.strategy = dist_utils.choose_strategy(cfg.distributed if self.lora is None else "ddp",
                                                   model.num_parameters(), self.dist)
        use_autocast = self.amp_dtype != torch.float32 and self.strategy != "fsdp"
        self.autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if use_autocast
                         else nullcontext())
        self.scaler = (torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16
                       and self.device.type == "cuda" else None)

        model.gradient_checkpointing = cfg.gradient_checkpointing
        model.neftune_noise_alpha = cfg.neftune_noise_alpha
        if self.device.type == "cuda":
            enable_tf32()
        # FSDP shards first and moves only each rank's shard to the GPU (fully_shard moves a CPU
        # module's shards to the mesh's device), so no rank ever holds the whole model on its GPU.
        if self.strategy != "fsdp":
            model.to(self.device)
        mp_dtype = self.amp_dtype if self.amp_dtype != torch.float32 else None
        self.model = dist_utils.wrap_model(model, self.strategy, self.dist, param_dtype=mp_dtype)
        self.raw_model = dist_utils.unwrap(self.model)
        self.optimizer = make_optimizer(self.raw_model, cfg, self.device)
        if cfg.compile:
            self.model = torch.compile(self.model)

        self.step, self.tokens_seen, self.bad_steps, self.skipped_steps = 0, 0, 0, 0
        self.last_loss = float("nan")
        self._past_history: dict[str, list] = {k: [] for k in HISTORY_KEYS}   # from the checkpoint
        self._session: dict[str, list] = {k: [] for k in HISTORY_KEYS}        # this train() call
        wandb_id = None
        self.resumed_from = self._resume_folder()
        if self.resumed_from is not None:
            wandb_id = self._load(self.resumed_from)
        self.tracker = Tracker(cfg.wandb_mode, cfg.wandb_project, cfg.wandb_run_name, cfg.to_dict(),
                               run_id=wandb_id, enabled=self.is_main)

    # --- construction helpers -----------------------------------------------------------------
    def _build_model(self) -> HavocModel:
        cfg, tok = self.cfg, self.tokenizer
        if cfg.init_from:
            model = load_init_model(cfg.init_from)
            self.new_token_ids = fit_vocab(model, tok)
            if self.is_main:
                added = f", {len(self.new_token_ids)} markup rows added" if self.new_token_ids else ""
                print(f"[train] initialised from {cfg.init_from} ({model.num_parameters() / 1e6:.1f}M params{added})")
            return model
        overrides = {}
        if tok is not None:
            overrides = dict(vocab_size=tok.vocab_size, bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id)
        overrides.setdefault("max_seq_len", max(cfg.seq_len, cfg.model_config().max_seq_len))
        return HavocModel(cfg.model_config(**overrides))

    def _add_lora(self, model: HavocModel) -> None:
        """Freeze `model`, add the configured adapters (and trainable rows for the markup tokens the
        tokenizer added), and record the base's identity for the checkpoints."""
        from .lora import apply_lora, base_fingerprint, cast_for_training, lora_settings
        cfg = self.cfg
        if cfg.distributed == "fsdp":
            raise ValueError("TrainConfig: LoRA (lora_r > 0) runs with distributed=ddp or auto, not fsdp "
                             "(the frozen base is not sharded here)")
        settings = lora_settings(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets, cfg.quantize,
                                 source="TrainConfig", train_tokens=self.new_token_ids)
        amp_dtype = resolve_dtype(cfg.dtype, self.device)
        if amp_dtype == torch.float32:
            model.float()                  # no autocast: frozen and trainable weights both fp32
        fingerprint = base_fingerprint(model)
        apply_lora(model, **settings)
        cast_for_training(model, amp_dtype)
        self.lora = {**settings, "base": {"source": cfg.init_from, "sha256": fingerprint}}
        if self.is_main:
            n = sum(p.numel() for p in model.parameters() if p.requires_grad)
            print(f"[train] LoRA r={settings['r']} alpha={settings['alpha']:g} on {','.join(settings['targets'])}"
                  f"{' over a 4-bit NF4 base' if settings['quantize'] else ''}: {n / 1e6:.2f}M trainable parameters")

    def _resume_folder(self) -> Optional[Path]:
        """The verified step folder to resume (None: start fresh). Refuses (CheckpointError) when
        every checkpoint in out_dir is corrupt; points a stale or corrupt `latest` at the folder."""
        folder = None
        if self.is_main:
            folder = ckpt.resolve_resume(self.cfg.resume, self.cfg.out_dir)
            if folder is not None and ckpt.repair_latest(self.cfg.out_dir, folder):
                warnings.warn(f"{self.cfg.out_dir}/latest did not name {folder.name}, the newest "
                              "checkpoint that verifies; rewritten")
        folder = dist_utils.broadcast_object(str(folder) if folder else None)
        return Path(folder) if folder else None

    def _load(self, folder: Path) -> Optional[str]:
        ckpt.check_resumable(folder, self.model_config, ckpt.tokenizer_identity(self.tokenizer))
        model_state, state, meta = ckpt.load_checkpoint(folder)
        lora_resume.check(folder, meta, self.lora, self.cfg.lora_r)
        if self.lora is not None:   # adapters only: the frozen base came from init_from
            from .lora import load_lora_state_dict
            load_lora_state_dict(self.raw_model, model_state, source=str(folder))
            model_state = None
        dist_utils.load_full_state(self.model, self.optimizer, model_state, state["optimizer"])
        self.step, self.tokens_seen = int(state["step"]), int(state["tokens_seen"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.last_loss = float(meta.get("loss", float("nan")))
        self.train_loader.load_state_dict(state["data"])
        self._past_history = {k: list((state.get("history") or {}).get(k, [])) for k in HISTORY_KEYS}
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.is_main:
            set_rng_state(state["rng"])
        else:  # other ranks: a distinct but reproducible stream (dropout masks differ per rank)
            seed_everything(self.cfg.seed + 1000 * self.dist.rank + self.step)
        if self.is_main:
            print(f"[train] resumed from {folder} at step {self.step} "
                  f"({self.tokens_seen:,} tokens seen)")
        return state.get("wandb_run_id")

    # --- saving -------------------------------------------------------------------------------
    def save(self) -> Optional[Path]:
        """Checkpoint the current step into `cfg.out_dir` (collective; rank 0 writes)."""
        if self.lora is not None:   # adapters only (megabytes): the base is init_from, named in meta
            from .lora import lora_state_dict
            model_state = {k: v.to("cpu", copy=True) for k, v in lora_state_dict(self.raw_model).items()}
        else:
            model_state = dist_utils.full_model_state_dict(self.model)
        optim_state = dist_utils.full_optimizer_state_dict(self.model, self.optimizer)
        path = None
        if self.is_main:
            train_state = {
                "step": self.step, "tokens_seen": self.tokens_seen, "optimizer": optim_state,
                "rng": rng_state(), "data": self.train_loader.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "wandb_run_id": self.tracker.run_id if hasattr(self, "tracker") else None,
                "skipped_steps": self.skipped_steps, "world_size": self.dist.world_size,
                "history": self.history,
            }
            meta = {"loss": self.last_loss, "tokens_seen": self.tokens_seen, "phase": self.cfg.phase,
                    "tokenizer_sha256": ckpt.tokenizer_identity(self.tokenizer),
                    "train_config": self.cfg.to_dict(), "saved_at": time.strftime("%Y-%m-%d %H:%M:%S")}
            if self.lora is not None:
                meta["lora"] = self.lora
            path = ckpt.save_checkpoint(self.cfg.out_dir, self.step, model_state, self.model_config,
                                        train_state, meta, keep_last=self.cfg.keep_last,
                                        staging_dir=self.cfg.staging_dir or "auto")
        dist_utils.barrier()
        return path

    @property
    def history(self) -> dict[str, list]:
        """The whole run's history (`HISTORY_KEYS` lists): what the resumed checkpoint held, then
        this session's steps. Saved in every checkpoint, so a loss plot drawn after a disconnect and
        a resume shows the run from step 1."""
        return {k: self._past_history[k] + self._session[k] for k in HISTORY_KEYS}

    # --- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> Optional[dict[str, float]]:
        """Mean loss and perplexity (exp of the mean token loss) over `eval_batches` held-out
        batches, the same batches every time; None without an eval loader."""
        if self.eval_loader is None:
            return None
        self.eval_loader.load_state_dict(self._eval_start)
        self.model.eval()
        losses = []
        for _ in range(self.cfg.eval_batches):
            x, y, pos = _unpack(self.eval_loader.next_batch(), self.device)
            with self.autocast:
                losses.append(self.model(x, positions=pos, targets=y))
        self.model.train()
        loss = dist_utils.all_reduce_mean(torch.stack(losses).mean()).item()
        return {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50.0))}

    # --- training -----------------------------------------------------------------------------
    def train_step(self) -> tuple[float, float, int]:
        """One optimizer step over `grad_accum_steps` micro-batches.

        Returns:
            (loss, grad_norm, tokens): the mean loss over ranks and micro-batches, the global
            gradient L2 norm before clipping, and tokens processed on all ranks. When either is
            not finite the update is skipped (gradients dropped).
        """
        cfg, model = self.cfg, self.model
        lr = lr_at(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total, tokens = torch.zeros((), device=self.device), 0
        for micro in range(cfg.grad_accum_steps):
            x, y, pos = _unpack(self.train_loader.next_batch(), self.device)
            tokens += x.numel()
            with dist_utils.no_sync(model, sync=micro == cfg.grad_accum_steps - 1), self.autocast:
                # the loss is computed chunk by chunk inside forward: no [B, T, V] logits
                loss = model(x, positions=pos, targets=y) / cfg.grad_accum_steps
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            total += loss.detach()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), max_norm)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: DTensor norm
            grad_norm = grad_norm.full_tensor()
        loss_value = dist_utils.all_reduce_mean(total).item()
        norm_value = float(grad_norm)
        # With a GradScaler an inf gradient is normal (the scale is too high): the scaler skips
        # the update and lowers the scale, so only the loss decides what counts as a bad step.
        bad = not math.isfinite(loss_value) or (self.scaler is None and not math.isfinite(norm_value))
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.update()
        else:
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss_value, norm_value, tokens * self.dist.world_size

    def train(self, on_step: Optional[Callable[["Trainer"], None]] = None) -> dict[str, Any]:
        """Run from the current step to `max_steps` (or `stop_at_step`).

        `on_step(trainer)`, if given, runs on rank 0 after every completed step (after its eval and
        save): the notebooks' live loss plot and sample generations (`colab.LiveMonitor`). It must
        leave the model in train mode and must not draw from the global RNG (exact resume).

        Returns:
            history: per-step lists `step`, `loss`, `lr`, `grad_norm`, `tokens_per_s`; eval lists
            `eval_step`, `eval_loss`, `eval_ppl`; `final_step`, `tokens_seen`, `skipped_steps`,
            `stopped` ("max_steps" | "stop_at_step"), `checkpoint` (last folder saved).

        Raises:
            TrainingDiverged: after `max_bad_steps` consecutive non-finite steps; a checkpoint of
                the last good weights is saved first and named in the message.
        """
        cfg = self.cfg
        hist: dict[str, Any] = {k: [] for k in HISTORY_KEYS}
        self._session = hist
        self.model.train()
        end = min(cfg.max_steps, cfg.stop_at_step or cfg.max_steps)
        bar = None
        if cfg.progress and self.is_main:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.max_steps, initial=self.step, desc=f"{cfg.phase}", dynamic_ncols=True)
        # A run resumed exactly at its last checkpoint does not rewrite that folder at the end.
        at_resume_point = self.resumed_from is not None and self.resumed_from.name == ckpt.step_dir_name(self.step)
        last_saved = self.step if at_resume_point else None
        saved_path = self.resumed_from if at_resume_point else None
        try:
            while self.step < end:
                t0 = time.perf_counter()
                lr = lr_at(self.step, cfg)
                loss, norm, tokens = self.train_step()
                dt = time.perf_counter() - t0
                self.step += 1
                self.tokens_seen += tokens
                tps = tokens / max(dt, 1e-9)
                if not (math.isfinite(loss) and (self.scaler is not None or math.isfinite(norm))):
                    self.bad_steps += 1
                    self.skipped_steps += 1
                    if self.is_main:
                        print(f"[train] step {self.step}: non-finite loss/grad norm ({loss}, {norm}); "
                              f"update skipped ({self.bad_steps}/{cfg.max_bad_steps} in a row)")
                    if self.bad_steps >= cfg.max_bad_steps:
                        saved_path = self.save()
                        raise TrainingDiverged(
                            f"{self.bad_steps} consecutive non-finite steps (last at step {self.step}); "
                            f"stopped. The weights are those of the last good update, saved in "
                            f"{saved_path or cfg.out_dir}. Lower lr, raise warmup_steps or check the data.")
                    continue
                self.bad_steps = 0
                self.last_loss = loss
                for k, v in (("step", self.step), ("loss", loss), ("lr", lr), ("grad_norm", norm),
                             ("tokens_per_s", tps)):
                    hist[k].append(v)
                metrics = {"train/loss": loss, "train/lr": lr, "train/grad_norm": norm,
                           "train/tokens_per_s": tps, "train/tokens_seen": self.tokens_seen}
                if self.device.type == "cuda":
                    metrics["train/max_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
                if self.step % cfg.log_every == 0 or self.step == end:
                    self.tracker.log(metrics, step=self.step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}")
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    self._eval_and_log(hist)
                if self.step % cfg.save_every == 0:
                    saved_path, last_saved = self.save(), self.step
                if on_step is not None and self.is_main:
                    on_step(self)
        finally:
            if bar is not None:
                bar.close()
        stopped = "max_steps" if self.step >= cfg.max_steps else "stop_at_step"
        if stopped == "max_steps":
            if cfg.eval_every and (not hist["eval_step"] or hist["eval_step"][-1] != self.step):
                self._eval_and_log(hist)
            if last_saved != self.step:
                saved_path = self.save()
            self.tracker.summary(final_step=self.step, tokens_seen=self.tokens_seen)
        self.tracker.finish()
        hist.update(final_step=self.step, tokens_seen=self.tokens_seen, skipped_steps=self.skipped_steps,
                    stopped=stopped, checkpoint=str(saved_path) if saved_path else None)
        return hist

    def _eval_and_log(self, hist: dict[str, Any]) -> None:
        result = self.evaluate()
        if result is None:
            return
        hist["eval_step"].append(self.step)
        hist["eval_loss"].append(result["eval_loss"])
        hist["eval_ppl"].append(result["eval_ppl"])
        self.tracker.log({"eval/loss": result["eval_loss"], "eval/ppl": result["eval_ppl"]}, step=self.step)
        if self.is_main and not self.cfg.progress:
            print(f"[eval] step {self.step}: loss {result['eval_loss']:.4f} ppl {result['eval_ppl']:.2f}")


# --- CLI ----------------------------------------------------------------------------------------
def parse_args(argv: Optional[list[str]] = None) -> TrainConfig:
    """`--config NAME|PATH` (a YAML in havoc_lite/configs/ or a file) then field overrides via tyro
    (`--max-steps 2000 --resume auto`, `--model-overrides n_layers 2`)."""
    import tyro
    args = list(sys.argv[1:] if argv is None else argv)
    config_name = None
    rest = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--config" and i + 1 < len(args):
            config_name, i = args[i + 1], i + 2
            continue
        if a.startswith("--config="):
            config_name, i = a.split("=", 1)[1], i + 1
            continue
        rest.append(a)
        i += 1
    base = TrainConfig.load(config_name) if config_name else TrainConfig()
    return tyro.cli(TrainConfig, default=base, args=rest, prog="python -m havoc_lite.train",
                    description="Train a havoc_lite model. Start with --config NAME (see havoc_lite/configs/).")


def main(argv: Optional[list[str]] = None) -> int:
    """The CLI. Exit codes: 0 done, 1 diverged, 2 a user error (bad flag or config, missing or
    corrupt data/checkpoint, a resume refused, an unwritable or full disk) printed as one line
    by `errors.run_cli`; a bug keeps its traceback."""
    return run_cli(_main, argv, prog="[train]")


def _main(argv: Optional[list[str]] = None) -> int:
    try:
        cfg = parse_args(argv)
        trainer = Trainer(cfg)
        hist = trainer.train()
    except TrainingDiverged as e:
        print(f"[train] stopped: {e}", file=sys.stderr)
        return 1
    finally:
        dist_utils.cleanup()
    if trainer.is_main:
        last = hist["loss"][-1] if hist["loss"] else trainer.last_loss
        print(f"[train] {hist['stopped']} at step {hist['final_step']}: loss {last:.4f}, "
              f"{hist['tokens_seen']:,} tokens, checkpoint {hist['checkpoint']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
