"""The batches a `Trainer` trains on: endless, sharded over processes, resumable at any batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from mp_layers.training.config import TrainerConfig
from mp_layers.training.sampler import ResumableBatchSampler


def endless_batches(
    data: Any,
    accelerator: Accelerator,
    config: TrainerConfig,
    *,
    start: int,
    collate_fn: Callable[[list[Any]], Any],
) -> Iterator[Any]:
    """Endless batches of `data` for this process, starting after `start` consumed batches.

    A map-style dataset is batched by the deterministic, sharded `ResumableBatchSampler` (exact
    resume); a `DataLoader` is sharded by Accelerate and resumed by skipping consumed batches."""
    if isinstance(data, DataLoader):
        prepared = accelerator.prepare_data_loader(data)
        epoch, skip = divmod(start, len(prepared))
        while True:
            prepared.set_epoch(epoch)
            yield from accelerator.skip_first_batches(prepared, skip) if skip else prepared
            epoch, skip = epoch + 1, 0
    sampler = ResumableBatchSampler(
        num_samples=len(data),
        batch_size=config.batch_size,
        seed=config.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        start_batch=start,
    )
    loader: DataLoader[Any] = DataLoader(
        data,
        batch_sampler=sampler,
        collate_fn=collate_fn,
        num_workers=config.num_workers,
        pin_memory=accelerator.device.type == "cuda",
        # Its own generator: creating the iterator must not draw from the global RNG, or a
        # resumed run's random stream would be shifted by one draw.
        generator=torch.Generator().manual_seed(config.seed + start),
    )
    yield from loader
