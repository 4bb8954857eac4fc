"""How much a pipeline run does: one `Sizes` for the smoke run and the notebooks.

A size says how many: vocabulary pieces, optimizer steps, traces, problems, samples. How to train
(batch, sequence length, lr, warm-up, ...) is not here but in the configs a size names
(`pretrain_config`, `sft_config`, `polish_config`: `havoc_lite/configs/*.yaml`); a run with fewer
steps than its config shortens only the warm-up (`TrainConfig.scaled_to`).

    SMOKE_RUN     python -m havoc_lite.smoke (also the ablation and PRIME's measurement): minutes
    SMOKE_QUICK   python -m havoc_lite.smoke --quick: a pipeline check in seconds (the tests)
    NOTEBOOK_CPU  the notebooks' smoke mode: every notebook on a CPU in minutes (CI runs them)
    A100          the notebooks on one Colab A100 (40 GB): the 50m preset, hours of training
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .config import TrainConfig


@dataclass
class Sizes:
    """Counts of one pipeline run (see the module docstring); fields a pipeline does not use keep
    their defaults."""

    vocab_size: int                 # tokenizer pieces (an upper bound on a small corpus)
    pretrain_steps: int
    sft_steps: int
    preset: str = "tiny"            # model preset (`config.PRESETS`)
    pretrain_config: str = "pretrain_smoke"
    sft_config: str = "sft_smoke"
    polish_config: str = "polish_tiny"
    polish_steps: int = 0
    polish_examples: int = 0
    save_every: int = 0             # pretraining checkpoints (0: the pipeline's own choice)
    pretrain_docs: int = 0          # hub documents for pretraining text (0: bundled text only)
    offline_traces: int = 0         # offline traces per topic (the smoke run: arithmetic only)
    claude_traces: int = 0          # per topic, only with ANTHROPIC_API_KEY
    gsm8k_traces: int = 0           # GSM8K train problems converted to calculator traces for SFT
    test_problems: int = 0          # unseen templated problems per eval set (in-template, held-out)
    eval_limit: Optional[int] = None  # GSM8K test problems scored (None: all of the data)
    eval_data: Optional[str] = None   # None: the bundled 100; "hub": openai/gsm8k test (1,319)
    eval_samples: int = 1           # samples per problem for pass@k
    raft_prompts: int = 0
    raft_samples: int = 0
    raft_cycles: int = 0
    max_new_tokens: int = 160
    gen_batch_size: int = 8
    resume_check_steps: int = 0     # smoke: steps compared bit for bit after a resume
    min_in_template: float = 0.0    # smoke pass bars: accuracy with the calculator
    min_heldout: float = 0.0

    # Batch and sequence lengths are the configs' (one place for hyperparameters); these read them.
    @property
    def batch_size(self) -> int:
        """Pretraining batch (sequences), from `pretrain_config`."""
        return TrainConfig.load(self.pretrain_config).batch_size

    @property
    def seq_len(self) -> int:
        """Pretraining sequence length (tokens), from `pretrain_config`."""
        return TrainConfig.load(self.pretrain_config).seq_len

    @property
    def sft_seq_len(self) -> int:
        """SFT / polish / RAFT sequence length (tokens), from `sft_config`."""
        return TrainConfig.load(self.sft_config).seq_len


# Measured on 2 CPU cores: the tiny model goes from ~3 % to ~80 % in-template accuracy with the
# calculator between SFT steps 300 and 400 (it has to learn to copy numbers into the call); on
# held-out phrasings it stays near 0 (1 of 60 at step 600, seed 0).
SMOKE_RUN = Sizes(vocab_size=2048, pretrain_steps=120, sft_steps=600, resume_check_steps=10,
                  offline_traces=3000, gsm8k_traces=200, test_problems=60, eval_limit=20,
                  min_in_template=0.5, min_heldout=0.0)
SMOKE_QUICK = Sizes(vocab_size=1024, pretrain_steps=40, sft_steps=60, resume_check_steps=4,
                    offline_traces=400, gsm8k_traces=50, test_problems=12, eval_limit=4)
# The notebooks' smoke mode trains with the smoke run's configs, for fewer steps.
NOTEBOOK_CPU = Sizes(vocab_size=1024, pretrain_steps=8, sft_steps=8, save_every=4, offline_traces=40,
                     claude_traces=2, polish_steps=3, polish_examples=40, eval_limit=4, eval_samples=2,
                     raft_prompts=4, raft_samples=2, raft_cycles=1, max_new_tokens=48, gen_batch_size=8)
A100 = Sizes(preset="50m", vocab_size=32000, pretrain_config="pretrain_50m", pretrain_steps=2000,
             pretrain_docs=60_000, save_every=250, offline_traces=3000, claude_traces=200,
             sft_config="sft_50m", sft_steps=1000, polish_steps=200, polish_examples=5000,
             eval_limit=None, eval_data="hub", eval_samples=8, raft_prompts=500, raft_samples=8,
             raft_cycles=3, max_new_tokens=256, gen_batch_size=64)
