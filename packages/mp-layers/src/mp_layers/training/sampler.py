"""A deterministic, resumable, sharded batch sampler.

Written here rather than taken from torch or Accelerate because neither gives all three at once:
`DistributedSampler` pads the last batch with repeated samples and cannot start mid-epoch, and
Accelerate's `skip_first_batches` replays the loader from its internal state. Here the whole data
order is a pure function of (seed, epoch, batch index), so the data position of a run is one
integer: the number of batches each process has consumed.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mp_layers.typecheck import typechecked


class ResumableBatchSampler:
    """Infinite stream of index batches for one process, resumable from any batch.

    Epoch `e` is `torch.randperm(num_samples)` under seed `seed + e` (identical on every process).
    Global batch `b` is the slice `[b * G, (b + 1) * G)` of that permutation, `G = batch_size *
    world_size`, and process `rank` takes the `rank`-th `batch_size` part of it: every process sees
    a different shard, and together they see exactly the batch one process would with `G`. The
    incomplete tail of each epoch is dropped so every step has the same batch size.

    Args:
        num_samples: dataset length.
        batch_size: samples per batch and process.
        seed: base seed of the per-epoch permutations.
        rank, world_size: this process and the number of processes.
        start_batch: batches already consumed by this process (the resume position).
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
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"expected 0 <= rank < world_size, got rank={rank}, {world_size=}")
        global_batch = batch_size * world_size
        if num_samples < global_batch:
            raise ValueError(
                f"expected a dataset of at least batch_size * world_size = {global_batch} samples, "
                f"got {num_samples}"
            )
        if start_batch < 0:
            raise ValueError(f"expected start_batch >= 0, got {start_batch}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_batch = start_batch
        self.batches_per_epoch = num_samples // global_batch

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, index = divmod(self.start_batch, self.batches_per_epoch)
        global_batch = self.batch_size * self.world_size
        while True:
            order = self._permutation(epoch)
            for b in range(index, self.batches_per_epoch):
                start = b * global_batch + self.rank * self.batch_size
                yield order[start : start + self.batch_size].tolist()
            epoch, index = epoch + 1, 0
