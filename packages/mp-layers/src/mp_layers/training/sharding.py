"""FSDP for the `Trainer`: selecting FSDP2 through Accelerate, gathering full weights, and sharded
checkpoints written with `torch.distributed.checkpoint` (DCP).

Under FSDP each process holds a shard of every parameter, gradient and optimizer state. What
needs whole weights (the EMA copies, sampling, `model.safetensors`) gets them from
`gather_full_state`, a collective that leaves the full state dict on the main process only. The
resumable state (model and optimizer shards) is written by every process into one folder and can
be read back on another number of processes (DCP re-shards on load).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch import nn
from torch.optim import Optimizer

from mp_layers.training.config import TrainerConfig

SHARDED_DIR = "sharded"


def fsdp_from_environment() -> bool:
    """Whether `accelerate launch` was given an FSDP configuration (`distributed_type: FSDP`)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def world_size_from_environment() -> int:
    """The number of processes the launcher started (`WORLD_SIZE`, set by torchrun and by
    `accelerate launch`), 1 without a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def cpu_processes() -> bool:
    """Whether several processes were launched on a machine without an accelerator. Accelerate
    (1.15) joins CPU processes into one gloo group only when told `cpu=True`; otherwise each
    process silently trains alone on the whole data, so the Trainer says it for them."""
    has_accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else False
    return world_size_from_environment() > 1 and not (has_accelerator or torch.cuda.is_available())


def wants_fsdp(config: TrainerConfig) -> bool:
    """FSDP is used when asked for (`config.distributed == 'fsdp'` or an Accelerate config file)
    and there is more than one process; one process trains the plain model either way."""
    asked = config.distributed == "fsdp" or fsdp_from_environment()
    return asked and world_size_from_environment() > 1


def fsdp_plugin() -> FullyShardedDataParallelPlugin:
    """The FSDP2 plugin: from the Accelerate config file's settings when `accelerate launch` set
    them (they must say `fsdp_version: 2`), else FSDP2 with sharded state dicts and parameters
    resharded after the forward pass (ZeRO-3-like)."""
    if fsdp_from_environment():
        plugin = FullyShardedDataParallelPlugin()
        if plugin.fsdp_version != 2:
            raise ValueError(
                "distributed: the Trainer supports FSDP2 only; expected fsdp_version: 2 in the "
                f"Accelerate config, got fsdp_version {plugin.fsdp_version}"
            )
        return plugin
    return FullyShardedDataParallelPlugin(
        fsdp_version=2, state_dict_type="SHARDED_STATE_DICT", reshard_after_forward=True
    )


def ensure_fsdp(accelerator: Accelerator, plugin: FullyShardedDataParallelPlugin) -> None:
    """Make `accelerator` shard with `plugin` on CPU processes too.

    accelerate 1.15 selects FSDP only for accelerator devices (its state sets
    `DistributedType.FSDP` for MULTI_GPU / NPU / XPU / ...); CPU processes (gloo) silently fall back
    to DDP. FSDP2's `fully_shard` itself runs on CPU tensors with gloo, so the state is switched to
    FSDP here before `prepare` (on a GPU this is a no-op)."""
    if accelerator.distributed_type == DistributedType.MULTI_CPU:
        accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = plugin
    if accelerator.distributed_type != DistributedType.FSDP:
        raise ValueError(
            "distributed: expected Accelerate to run FSDP for distributed='fsdp', got "
            f"{accelerator.distributed_type}"
        )


def gather_full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict of an FSDP `model`, on the CPU of the main process; an empty
    dict on the others. Collective: call on every process."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    return {name: value for name, value in state.items() if isinstance(value, torch.Tensor)}


def save_sharded(folder: Path, model: nn.Module, optimizer: Optimizer) -> None:
    """Write this process's shards of `model` and `optimizer` into `folder` (a DCP checkpoint:
    one `__{rank}_0.distcp` file per process and a `.metadata`). Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(folder))


def load_sharded(folder: Path, model: nn.Module, optimizer: Optimizer) -> None:
    """Read `save_sharded`'s folder into `model` and `optimizer`, re-sharding when the number of
    processes changed. Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state: dict[str, Any] = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(
        model,
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optimizer"],
    )
