"""torchrun set-up, DDP / FSDP2 wrapping and rank-0 helpers.

One process per GPU under `torchrun --nproc_per_node=N -m havoc_lite.train ...` (RANK, LOCAL_RANK
and WORLD_SIZE come from torchrun). Models that fit one GPU use DistributedDataParallel (each rank
holds a full copy, gradients are all-reduced); the large presets use FSDP2
(`torch.distributed.fsdp.fully_shard`): parameters, gradients and AdamW states are sharded over the
ranks, each block is all-gathered in bf16 just before it runs (`MixedPrecisionPolicy`), and
gradients are reduce-scattered in fp32.

Checkpoints are always consolidated (a full, unsharded state dict gathered to CPU with
`torch.distributed.checkpoint.state_dict`), so a run saved on 4 GPUs resumes on 1, 2 or 8, and a
step folder is a plain `HavocModel.from_pretrained` folder. The same functions work on an unwrapped
model in a single process.
"""
from __future__ import annotations

import atexit
import contextlib
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.nn as nn

# Presets at or above this many parameters are sharded with FSDP under distributed="auto": their
# fp32 weights + grads + AdamW states (16 bytes/param) no longer fit one 80 GB GPU with activations.
FSDP_MIN_PARAMS = 2_000_000_000


@dataclass
class DistInfo:
    """Where this process sits: `rank` of `world_size`, its `local_rank` and torch `device`."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" -> cuda if available, else mps, else cpu; anything else is checked and passed to
    torch.device.

    Raises:
        ConfigError: a name torch does not know (`tpu`), or a device this machine or torch build
            does not have (`cuda` on a CPU-only build or a machine without a GPU, `cuda:3` with
            two GPUs, `mps` off Apple silicon): one line, found before any work is done.
    """
    from .errors import ConfigError
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {device!r}: not a device name; use auto, cpu, cuda, cuda:N "
                          "or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA (a CPU-only wheel)" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise ConfigError(f"--device {device}: {why}; use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
    elif dev.type == "mps" and not _mps_available():
        raise ConfigError(f"--device {device}: MPS is not available on this machine; use cpu or auto")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {device!r}: havoc_lite runs on cpu, cuda or mps")
    return dev


def setup(device: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1), else a no-op.

    Backend: nccl on CUDA (one GPU per LOCAL_RANK), gloo on CPU (used by the tests).

    Raises:
        RuntimeError: under torchrun with fewer visible GPUs than LOCAL_RANK + 1.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(device=resolve_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPUs are "
                               "visible; use --nproc_per_node <= the number of GPUs")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                rank=rank, world_size=world_size)
        # A script that builds a Trainer itself under torchrun may never call cleanup(); a process
        # group left alive at interpreter exit can abort in its C++ destructor ("terminate called
        # without an active exception", SIGABRT), failing the launch after the work succeeded.
        atexit.register(cleanup, sync=False)   # at exit a rank may have died: never wait for it
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=dev)


def cleanup(sync: bool = True) -> None:
    """Destroy the process group (a no-op in a single process). With `sync`, wait first until
    every rank gets here: a rank whose gloo threads are still finishing a collective when another
    rank tears down can abort at exit ("terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        if sync:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (returns a new tensor; identity in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return x
    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / dist.get_world_size()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s Python object on every rank (identity in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def choose_strategy(strategy: str, num_params: int, info: DistInfo) -> str:
    """"none" in a single process; "auto" -> "fsdp" from FSDP_MIN_PARAMS params, else "ddp"."""
    if not info.enabled:
        return "none"
    if strategy == "auto":
        return "fsdp" if num_params >= FSDP_MIN_PARAMS else "ddp"
    return strategy


def wrap_model(model: nn.Module, strategy: str, info: DistInfo,
               param_dtype: Optional[torch.dtype] = torch.bfloat16) -> nn.Module:
    """Wrap for data parallelism. `strategy` is "none", "ddp" or "fsdp" (see `choose_strategy`).

    FSDP2: each transformer block is its own shard group (all-gathered just before it runs), then
    the root (embedding, tied head, final norm). `param_dtype` is the compute dtype of the gathered
    weights (None keeps fp32); gradients are reduced in fp32.
    """
    if strategy == "none":
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [info.device.index] if info.device.type == "cuda" else None
        return DDP(model, device_ids=ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        for block in model.layers:
            fully_shard(block, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        return model
    raise ValueError(f"distributed strategy {strategy!r}; choose none|ddp|fsdp")


def unwrap(model: nn.Module) -> nn.Module:
    """The HavocModel inside a DDP wrapper and/or torch.compile (FSDP2 wraps in place)."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def no_sync(model: nn.Module, sync: bool):
    """Context for a gradient-accumulation micro-step: skip the gradient all-reduce unless `sync`."""
    if sync:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):              # DDP
        return model.no_sync()
    inner = unwrap(model)
    if hasattr(inner, "set_requires_gradient_sync"):  # FSDP2 module

        @contextlib.contextmanager
        def _fsdp():
            inner.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                inner.set_requires_gradient_sync(True)
        return _fsdp()
    return contextlib.nullcontext()


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(**kw)


def full_model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded model weights on CPU, keyed by HavocModel names (collective under FSDP: every
    rank must call it)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    return get_model_state_dict(unwrap(model), options=_options(full_state_dict=True, cpu_offload=True))


def full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Unsharded AdamW state on CPU keyed by parameter name, so it loads on any number of GPUs."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    return get_optimizer_state_dict(unwrap(model), optimizer,
                                    options=_options(full_state_dict=True, cpu_offload=True))


def load_full_state(model: nn.Module, optimizer: Optional[torch.optim.Optimizer],
                    model_state: Optional[dict[str, torch.Tensor]], optim_state: Optional[dict[str, Any]]) -> None:
    """Load full (unsharded) states saved by the two functions above, sharding them as needed.
    `model_state` None leaves the weights as they are (a LoRA run loads its adapters itself).

    The saved param groups' `fused`/`foreach` flags are replaced by this optimizer's own, so a
    checkpoint written on CUDA (fused AdamW) resumes on CPU and back.
    """
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict
    inner = unwrap(model)
    if model_state is not None:
        set_model_state_dict(inner, model_state, options=_options(full_state_dict=True))
    if optimizer is not None and optim_state is not None:
        current = optimizer.param_groups[0]
        for group in optim_state["param_groups"]:
            for flag in ("fused", "foreach", "capturable"):
                if flag in current:
                    group[flag] = current[flag]
        set_optimizer_state_dict(inner, optimizer, optim_state, options=_options(full_state_dict=True))
