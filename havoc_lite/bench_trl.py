"""`python -m havoc_lite.bench --vs trl`: packed SFT, ours against TRL's `SFTTrainer`, same work.

Both sides train the same model shape from the same weights (ours exported to a Hugging Face
`LlamaForCausalLM` with `export.to_hf_llama`) on the same calculator traces, tokenised once by our
tokenizer with the same loss mask (assistant tokens, never `<tool_result>`), packed best-fit into
rows of `seq_len` tokens, AdamW at the same lr, batch size, gradient clip and precision (`dtype`:
fp32 on both sides, or bf16 autocast on both; TRL's `SFTConfig` turns bf16 on by default, which on a
CPU with bf16 matmuls made its side of the first version of this comparison run in bf16 against our
fp32):
  - ours: `data.PackedSFTLoader` + `HavocModel(x, positions=..., targets=...)` (block-diagonal SDPA,
    chunked loss), as `havoc_lite.train` runs packed SFT;
  - TRL: `SFTTrainer` with `packing=True` (its default "bfd" strategy: best-fit decreasing, which
    also switches on padding-free batches with `position_ids`) and `completion_only_loss`, on
    transformers' SDPA attention, as a user of TRL on this machine would run it.

The figure is loss-bearing tokens per second (targets that are not -100), counted on the batches
each side actually trained on, over the steps after `warmup` untimed ones. The two sides run one
after the other in one process, `reps` times alternately, and the median is reported, so load on a
shared machine hits both alike. Slow (TRL's dataset preparation and Trainer start-up are not timed,
but they take tens of seconds), so it is not part of the test suite.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from .config import ModelConfig
from .optim import adamw


def build_traces(num_traces: int, vocab_size: int, seed: int, workdir: Path):
    """(tokenizer, examples): `num_traces` offline calculator traces as messages, and a
    `vocab_size`-piece tokenizer trained on them (with the markup tokens), as the smoke run builds."""
    from synth.offline import generate_offline

    from .data import render_trace, trace_to_messages
    from .tokenizer import train_tokenizer
    traces = generate_offline("arithmetic", num_traces, seed=seed)
    tok = train_tokenizer([t["question"] + "\n" + render_trace(t) for t in traces], workdir / "tokenizer",
                          vocab_size=vocab_size)
    return tok, [trace_to_messages(t) for t in traces]


def _hf_tokenizer(vocab_size: int, pad_id: int, eos_id: int):
    """A stand-in `PreTrainedTokenizerFast` over the same ids: the dataset is already tokenised,
    and TRL only reads the pad and eos ids from its processing class."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    vocab = {f"<id{i}>": i for i in range(vocab_size)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<id0>"))
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token=f"<id{pad_id}>", eos_token=f"<id{eos_id}>")


def _ours(model, loader, steps: int, warmup: int, lr: float, grad_clip: float, clock,
          bf16: bool = False) -> tuple[float, int, float]:
    """(seconds, loss-bearing tokens, last loss) of `steps` timed packed SFT steps after `warmup`,
    under bf16 autocast if `bf16` (as `havoc_lite.train` runs with dtype bfloat16)."""
    opt = adamw(model.parameters(), "cpu", lr=lr, weight_decay=0.0)  # fused, as TRL's default optim
    model.train()
    t0, tokens, loss = None, 0, float("nan")
    for i in range(warmup + steps):
        if i == warmup:
            t0 = clock()
        x, y, pos = loader.next_batch()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss_t = model(x, positions=pos, targets=y)
        loss_t.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            tokens += int((y != -100).sum())
        loss = loss_t.item()
    return clock() - t0, tokens, loss


def _trl(hf_dir: str, dataset, hf_tok, seq_len: int, batch_size: int, steps: int, warmup: int, lr: float,
         grad_clip: float, out_dir: str, clock, bf16: bool = False) -> tuple[float, int, float, bool]:
    """(seconds, loss-bearing tokens, last loss, whether TRL trained in bf16) of TRL SFTTrainer's
    steps after `warmup`; `bf16` is passed to `SFTConfig` explicitly (its default is True)."""
    import transformers
    from transformers import PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    model = transformers.LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="sdpa")
    args = SFTConfig(output_dir=out_dir, max_steps=warmup + steps, per_device_train_batch_size=batch_size,
                     learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                     max_grad_norm=grad_clip, packing=True, max_length=seq_len, completion_only_loss=True,
                     bf16=bf16, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                     dataloader_num_workers=0, disable_tqdm=True, seed=0)
    counted = {"tokens": 0, "calls": 0}

    class Clock(TrainerCallback):
        t0 = t1 = None
        loss = float("nan")

        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == warmup:
                Clock.t0 = clock()

        def on_step_end(self, a, state, control, **kw):
            Clock.t1 = clock()

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                Clock.loss = float(logs["loss"])

    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=hf_tok,
                         callbacks=[Clock()])
    trainer.remove_callback(PrinterCallback)     # its per-step dicts; the loss still reaches Clock
    collate = trainer.data_collator

    def counting(examples):             # count the targets of the batches TRL really trains on
        batch = collate(examples)
        counted["calls"] += 1
        if counted["calls"] > warmup:
            counted["tokens"] += int((batch["labels"][:, 1:] != -100).sum())   # HF shifts labels by one
        return batch
    trainer.data_collator = counting
    trainer.train()
    return Clock.t1 - Clock.t0, counted["tokens"], Clock.loss, bool(trainer.args.bf16)


def run(preset: str = "tiny", seq_len: int = 160, batch_size: int = 16, steps: int = 20, warmup: int = 3,
        reps: int = 3, num_traces: int = 3000, vocab_size: int = 2048, lr: float = 1e-4, grad_clip: float = 1.0,
        clock: str = "cpu", seed: int = 0, verbose: bool = True, dtype: str = "float32") -> dict:
    """Loss-bearing tokens/s of packed SFT, ours and TRL's, medians over `reps` alternating runs,
    both sides in `dtype` ("float32", or "bfloat16": autocast on both).

    Returns {"tokens_per_s": {"ours", "trl"}, "ratio" (ours / TRL), "loss_tokens_per_step",
    "trl_bf16" (what TRL's trainer ran with), ...}.
    Raises ImportError (with the pip command) when `trl` is not installed; ValueError for another dtype.
    """
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"--vs trl: dtype must be float32 or bfloat16, got {dtype!r}")
    bf16 = dtype == "bfloat16"
    try:
        import trl
    except ImportError as e:
        raise ImportError("`--vs trl` needs TRL: pip install trl") from e
    from datasets import Dataset

    from .bench import _CLOCKS
    from .data import PackedSFTLoader
    from .export import to_hf_llama
    from .model import HavocModel
    log = print if verbose else (lambda *a, **k: None)
    now = _CLOCKS[clock]
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        tok, examples = build_traces(num_traces, vocab_size, seed, work)
        cfg = ModelConfig.from_preset(preset, vocab_size=tok.vocab_size, pad_id=tok.pad_id,
                                      max_seq_len=max(seq_len, 256))
        torch.manual_seed(seed)
        init = HavocModel(cfg)
        to_hf_llama(init, work / "hf")
        state = {k: v.clone() for k, v in init.state_dict().items()}

        # the same rendered examples (ids, loss mask, cut at seq_len + 1) for TRL
        probe = PackedSFTLoader(examples, tok, seq_len, batch_size, seed=seed)
        rendered = [probe._render(m)[:2] for m in examples]
        rendered = [(ids, mask) for ids, mask in rendered if any(mask[1:])]
        dataset = Dataset.from_dict({"input_ids": [ids for ids, _ in rendered],
                                     "completion_mask": [mask for _, mask in rendered]})
        hf_tok = _hf_tokenizer(tok.vocab_size, tok.pad_id, tok.eos_id)
        log(f"havoc_lite.bench --vs trl {trl.__version__}: preset {preset} ({init.num_parameters():,} params, "
            f"vocab {tok.vocab_size}), {len(rendered)} traces, packed rows of {seq_len} tokens, batch "
            f"{batch_size}, {steps} timed steps after {warmup}, {dtype} on both sides, "
            f"{torch.get_num_threads()} threads, {clock} clock")
        res = {"ours": [], "trl": []}
        per_step = {"ours": [], "trl": []}
        losses = {}
        for r in range(reps):
            model = HavocModel(cfg)
            model.load_state_dict(state)
            loader = PackedSFTLoader(examples, tok, seq_len, batch_size, seed=seed + r)
            s, n, losses["ours"] = _ours(model, loader, steps, warmup, lr, grad_clip, now, bf16=bf16)
            res["ours"].append(n / s)
            per_step["ours"].append(n / steps)
            s, n, losses["trl"], trl_bf16 = _trl(str(work / "hf"), dataset.shuffle(seed=seed + r), hf_tok,
                                                 seq_len, batch_size, steps, warmup, lr, grad_clip,
                                                 str(work / "trl"), now, bf16=bf16)
            res["trl"].append(n / s)
            per_step["trl"].append(n / steps)
            log(f"  rep {r + 1}: ours {res['ours'][-1]:,.0f}, TRL {res['trl'][-1]:,.0f} loss tokens/s")
    tps = {k: statistics.median(v) for k, v in res.items()}
    out = {"preset": preset, "vocab_size": cfg.vocab_size, "seq_len": seq_len, "batch_size": batch_size, "steps": steps, "reps": reps,
           "clock": clock, "dtype": dtype, "trl_bf16": trl_bf16, "trl": trl.__version__, "tokens_per_s": tps, "ratio": tps["ours"] / tps["trl"],
           "loss_tokens_per_step": {k: statistics.median(v) for k, v in per_step.items()},
           "last_loss": losses}
    log(f"packed SFT, loss-bearing tokens/s: ours {tps['ours']:,.0f}, TRL SFTTrainer {tps['trl']:,.0f}, "
        f"ratio {out['ratio']:.2f}x; loss tokens per step: ours {out['loss_tokens_per_step']['ours']:,.0f}, "
        f"TRL {out['loss_tokens_per_step']['trl']:,.0f}")
    return out
