"""A deterministic, resumable, sharded batch sampler.

Written here rather than taken from torch or Accelerate because neither gives all three at once:
`DistributedSampler` pads the last batch with repeated samples and cannot start mid-epoch, and
Accelerate's `skip_first_batches` replays the loader from its internal state. Here the whole data
order is a pure function of (seed, epoch, batch index), so the data position of a run is one
integer: the number of batches each process has consumed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from mp_layers.typecheck import typechecked


class ResumableBatchSampler:
    """Infinite stream of index batches for one process, resumable from any batch.

    Epoch `e` is `torch.randperm(num_samples)` under seed `seed + e` (identical on every process).
    Global batch `b` is the slice `[b * G, (b + 1) * G)` of that permutation, `G = batch_size *
    world_size`, and process `rank` takes the `rank`-th `batch_size` part of it: every process sees
    a different shard, and together they see exactly the batch one process would with `G`. The
    incomplete tail of each epoch is dropped so every step has the same batch size.

    A dataset smaller than `G` is not refused: an epoch then chains `R = ceil(G / num_samples)`
    permutations (seeds `seed + e * R + r`), so a batch may hold a sample twice, as passes `e * R
    + r` of the data. With `with_epochs=True` batches are lists of `(pass, index)` pairs: the
    pass is the dataset epoch of each sample (what `set_epoch` of an epoch-aware dataset takes),
    `e` when `R == 1`.

    Args:
        num_samples: dataset length.
        batch_size: samples per batch and process.
        seed: base seed of the per-epoch permutations.
        rank, world_size: this process and the number of processes.
        start_batch: batches already consumed by this process (the resume position).
        with_epochs: yield `(pass, index)` pairs instead of indices.
    """

    @typechecked
    def __init__(
        self,
        *,
        num_samples: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
        with_epochs: bool = False,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"expected 0 <= rank < world_size, got rank={rank}, {world_size=}")
        global_batch = batch_size * world_size
        if num_samples < 1:
            raise ValueError(f"expected a dataset of at least one sample, got {num_samples}")
        if start_batch < 0:
            raise ValueError(f"expected start_batch >= 0, got {start_batch}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_batch = start_batch
        self.with_epochs = with_epochs
        self.repeats = -(-global_batch // num_samples)  # permutations per epoch
        self.batches_per_epoch = num_samples * self.repeats // global_batch

    def _order(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples of `epoch` in order, and the data pass each belongs to."""
        orders, passes = [], []
        for r in range(self.repeats):
            data_pass = epoch * self.repeats + r
            generator = torch.Generator().manual_seed(self.seed + data_pass)
            orders.append(torch.randperm(self.num_samples, generator=generator))
            passes.append(torch.full((self.num_samples,), data_pass))
        return torch.cat(orders), torch.cat(passes)

    def __iter__(self) -> Iterator[list[Any]]:
        epoch, index = divmod(self.start_batch, self.batches_per_epoch)
        global_batch = self.batch_size * self.world_size
        while True:
            order, passes = self._order(epoch)
            for b in range(index, self.batches_per_epoch):
                start = b * global_batch + self.rank * self.batch_size
                indices = order[start : start + self.batch_size].tolist()
                if self.with_epochs:
                    yield list(
                        zip(passes[start : start + self.batch_size].tolist(), indices, strict=True)
                    )
                else:
                    yield indices
            epoch, index = epoch + 1, 0
