"""The batches a `Trainer` trains on: endless, sharded over processes, resumable at any batch."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset, IterableDataset

from mp_layers.training.config import TrainerConfig
from mp_layers.training.sampler import ResumableBatchSampler
from mp_layers.typecheck import typechecked


class EpochItems(Dataset[Any]):
    """An epoch-aware dataset (one with `set_epoch`, as `VideoFolder`) indexed by `(epoch,
    index)` pairs: each worker process sets its own copy's epoch before loading, so random clips
    follow the sampler's epochs in persistent workers too."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if getattr(self.data, "epoch", None) != epoch:
            self.data.set_epoch(epoch)
        return self.data[index]


class EpochSubset(Dataset[Any]):
    """`torch.utils.data.Subset` for epoch-aware datasets: `set_epoch` reaches the dataset, so
    a split of a `VideoFolder` still draws new clips every epoch."""

    @typechecked
    def __init__(self, data: Any, indices: Sequence[int]) -> None:
        self.data, self.indices = data, list(indices)

    @property
    def epoch(self) -> Any:
        return getattr(self.data, "epoch", None)

    def set_epoch(self, epoch: int) -> None:
        self.data.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.data[self.indices[index]]


def seed_worker(worker_id: int) -> None:
    """Seed Python's and numpy's RNGs in a DataLoader worker from torch's per-worker seed (which
    the loader's generator fixes), for transforms that draw from them."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - the legacy global RNG is what transforms draw from


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
    resume; an epoch-aware dataset gets each sample's epoch, see `EpochItems`); a `DataLoader` is
    sharded by Accelerate and resumed by skipping consumed batches. Workers
    (`config.num_workers`) are persistent: the sampler is endless, so one loader serves the run.
    """
    if isinstance(data, DataLoader):
        prepared = accelerator.prepare_data_loader(data)
        epoch, skip = divmod(start, len(prepared))
        while True:
            prepared.set_epoch(epoch)
            yield from accelerator.skip_first_batches(prepared, skip) if skip else prepared
            epoch, skip = epoch + 1, 0
    if isinstance(data, IterableDataset):
        yield from _stream_batches(data, config, start=start, collate_fn=collate_fn)
        return
    sampler = ResumableBatchSampler(
        num_samples=len(data),
        batch_size=config.batch_size,
        seed=config.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        start_batch=start,
        with_epochs=hasattr(data, "set_epoch"),
    )
    workers = config.num_workers
    loader: DataLoader[Any] = DataLoader(
        EpochItems(data) if sampler.with_epochs else data,
        batch_sampler=sampler,
        collate_fn=collate_fn,
        num_workers=workers,
        pin_memory=accelerator.device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=seed_worker if workers > 0 else None,
        # Its own generator: creating the iterator must not draw from the global RNG, or a
        # resumed run's random stream would be shifted by one draw.
        generator=torch.Generator().manual_seed(config.seed + start),
    )
    yield from loader


def _stream_batches(
    data: IterableDataset[Any],
    config: TrainerConfig,
    *,
    start: int,
    collate_fn: Callable[[list[Any]], Any],
) -> Iterator[Any]:
    """Endless batches of a stream (`VideoShards`), which splits itself by process and worker.
    Pass `p` of the stream is `set_epoch(start + p)`: a resumed run reads a fresh stream rather
    than replaying the batches it already trained on (streams have no exact resume)."""
    data_pass = start
    while True:
        if hasattr(data, "set_epoch"):
            data.set_epoch(data_pass)
        loader: DataLoader[Any] = DataLoader(
            data,
            batch_size=config.batch_size,
            collate_fn=collate_fn,
            num_workers=config.num_workers,
            drop_last=True,
            prefetch_factor=4 if config.num_workers > 0 else None,
            worker_init_fn=seed_worker if config.num_workers > 0 else None,
        )
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError(f"the data stream {data!r} gave no batch of {config.batch_size}")
        data_pass += 1
