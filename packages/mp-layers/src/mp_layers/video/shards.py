"""`VideoShards`: training clips streamed from WebDataset tar shards.

The layout is video2dataset's (and `mp-layers prepare-videos --shard-size`'s): each sample of a
`.tar` shard is `KEY.mp4` (or `.webm`, `.avi`, `.gif`) with an optional `KEY.txt` caption and
`KEY.json` metadata (a `caption` field is used when there is no `.txt`). Shards are read with the
`webdataset` library (`tarfile_to_samples`, its shuffle buffer, brace patterns such as
`data/{00000..00009}.tar`).
"""

from __future__ import annotations

import json
import random
import warnings
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from torch.utils.data import IterableDataset, get_worker_info

from mp_layers.typecheck import typechecked
from mp_layers.validation import check_int
from mp_layers.video.clips import item_rng
from mp_layers.video.folder import SKIP_HINT, ClipMaker
from mp_layers.video.probe import probe_video

try:
    import webdataset as wds
    from webdataset.shardlists import expand_urls
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "mp_layers.video needs the video extra: pip install 'mp-layers[video]'"
    ) from exc

__all__ = ["VideoShards", "expand_shards"]

_VIDEO_KEYS = ("mp4", "webm", "avi", "gif")


@typechecked
def expand_shards(urls: str | Sequence[str]) -> list[str]:
    """The shard list of a brace pattern (`data/{00000..00009}.tar`), a `::`-separated list of
    patterns, or a list of either."""
    patterns = [urls] if isinstance(urls, str) else list(urls)
    shards = [shard for pattern in patterns for shard in expand_urls(pattern)]
    if not shards:
        raise ValueError(f"urls: expected at least one shard, got {urls!r}")
    return shards


def _caption(sample: dict[str, Any]) -> str:
    if "txt" in sample:
        return bytes(sample["txt"]).decode("utf-8").strip()
    if "json" in sample:
        meta = json.loads(bytes(sample["json"]).decode("utf-8"))
        caption = meta.get("caption", "") if isinstance(meta, dict) else ""
        return str(caption or "").strip()
    return ""


class VideoShards(IterableDataset[dict[str, Any]]):
    """Endless (or one-pass) stream of training clips from WebDataset shards `urls`.

    Clip arguments are `VideoFolder`'s (`image_size`, `num_frames`, `frame_stride` or `fps`,
    `clips_per_video`, `sampling`, `crop`, `random_flip`, `channels`) and items have its keys,
    `source` being `"SHARD:KEY"`. Shards are split by node (`rank` of `world_size`; default:
    torch.distributed's, or `RANK`/`WORLD_SIZE`) and by DataLoader worker. With
    `resampled=True` (the default, for training) each node and worker draws shards with
    replacement forever, so every rank yields as many batches as it is asked for; with
    `resampled=False` pass `p` goes once through a permutation of the shards and ends. Clips pass
    through a shuffle buffer of `shuffle` items. Random choices follow `(seed, pass, node,
    worker)` and each clip's `(seed, pass, key, clip)`, and `set_epoch` sets the pass (a resumed
    run draws a new stream: shard streams do not resume mid-epoch exactly, `VideoFolder` does).

    `split` and `held_out_fraction`: a held-out split in time of every video, as `VideoFolder`'s;
    `options` holds the constructor's keyword arguments.

    A shard that cannot be read (missing, truncated) or a sample that cannot be decoded raises a
    `ValueError` naming the shard and key; with `skip_undecodable=True` it is skipped with a
    warning and counted in `num_skipped` (per process).
    """

    @typechecked
    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        image_size: int | tuple[int, int],
        num_frames: int,
        frame_stride: int = 1,
        fps: float | None = None,
        clips_per_video: int | Literal["all"] = 1,
        sampling: Literal["random", "uniform", "first"] = "random",
        crop: Literal["center", "random"] = "center",
        random_flip: bool = False,
        seed: int = 0,
        shuffle: int = 256,
        resampled: bool = True,
        skip_undecodable: bool = False,
        channels: int = 3,
        rank: int | None = None,
        world_size: int | None = None,
        split: Literal["all", "train", "held_out"] = "all",
        held_out_fraction: float = 0.1,
    ) -> None:
        super().__init__()
        self.options = {k: v for k, v in locals().items() if k not in ("self", "urls", "__class__")}
        self.shards = expand_shards(urls)
        self.maker = ClipMaker(
            image_size=image_size,
            num_frames=num_frames,
            frame_stride=frame_stride,
            fps=fps,
            clips_per_video=clips_per_video,
            sampling=sampling,
            crop=crop,
            random_flip=random_flip,
            channels=channels,
            split=split,
            held_out_fraction=held_out_fraction,
        )
        self.seed, self.resampled, self.skip_undecodable = seed, resampled, skip_undecodable
        self.shuffle = check_int("shuffle", shuffle, minimum=0)
        if (rank is None) != (world_size is None):
            raise ValueError(f"rank and world_size: give both or neither, got {rank}, {world_size}")
        if world_size is not None and not 0 <= rank < world_size:  # type: ignore[operator]
            raise ValueError(f"expected 0 <= rank < world_size, got {rank=}, {world_size=}")
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.num_skipped = 0

    def set_epoch(self, epoch: int) -> None:
        """Start pass `epoch` of the shards at the next iteration."""
        self.epoch = check_int("epoch", epoch, minimum=0)

    def _node(self) -> tuple[int, int]:
        if self.world_size is not None:
            return int(self.rank), self.world_size  # type: ignore[arg-type]
        rank, world_size, _, _ = wds.utils.pytorch_worker_info()
        return rank, world_size

    def _shard_order(self, data_pass: int) -> Iterator[str]:
        """The shards this node and worker read in `data_pass`."""
        rank, world_size = self._node()
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if self.resampled:  # each node and worker: its own endless draw with replacement
            rng = item_rng(self.seed, data_pass, rank * workers + worker, 3)
            while True:
                yield self.shards[int(rng.integers(len(self.shards)))]
        order = item_rng(self.seed, data_pass, 0, 4).permutation(len(self.shards))
        for position in order[rank::world_size][worker::workers]:
            yield self.shards[int(position)]

    def _fail(self, error: Exception, where: str) -> None:
        message = f"cannot read {where}: {type(error).__name__}: {error}"
        if not self.skip_undecodable:
            raise ValueError(f"{message} ({SKIP_HINT})") from error
        self.num_skipped += 1
        warnings.warn(f"skipping: {message}", stacklevel=3)

    def _samples(self, shard: str) -> Iterator[dict[str, Any]]:
        try:
            yield from wds.tarfile_to_samples()(iter([{"url": shard}]))
        except Exception as error:  # tarfile, gzip and OS errors of a damaged or missing shard
            self._fail(error, f"shard {shard}")

    def _clips(self, sample: dict[str, Any], data_pass: int) -> Iterator[dict[str, Any]]:
        shard, key = sample.get("__url__", "?"), sample.get("__key__", "?")
        source = f"{shard}:{key}"
        suffix = next((k for k in _VIDEO_KEYS if k in sample), None)
        if suffix is None:
            self._fail(ValueError(f"no video among {sorted(sample)}"), source)
            return
        data = bytes(sample[suffix])
        try:
            probe = probe_video(data, name=source)
            text = _caption(sample)
            count = self.maker.spec.count(len(self.maker.timeline(probe)))
            stream = zlib.crc32(key.encode())
            whole = item_rng(self.seed, data_pass, stream, 1)
            for clip in range(count):
                start = whole if self.maker.spec.clips_per_video == "all" else None
                rng = item_rng(self.seed, data_pass, stream, 10 + clip)
                plan = self.maker.plan(probe, clip, count, start or rng, rng)
                yield self.maker.item(data, probe, plan, text=text, source=source)
        except (ValueError, UnicodeDecodeError) as error:
            self._fail(error, source)

    def _stream(self, data_pass: int) -> Iterator[dict[str, Any]]:
        barren = 0  # shards in a row that gave no clip: all of them means nothing can be read
        for shard in self._shard_order(data_pass):
            produced = False
            for sample in self._samples(shard):
                for clip in self._clips(sample, data_pass):
                    produced = True
                    yield clip
            barren = 0 if produced else barren + 1
            if barren >= 2 * len(self.shards) + 8:
                raise ValueError(f"no clip could be read from the shards {self.shards[:3]}...")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        data_pass = self.epoch
        rank, _ = self._node()
        info = get_worker_info()
        worker = 0 if info is None else info.id
        buffer_rng = random.Random(
            int(item_rng(self.seed, data_pass, rank, 5 + worker).integers(2**62))
        )
        clips = self._stream(data_pass)
        if self.shuffle > 1:
            clips = wds.filters.shuffle(self.shuffle, initial=self.shuffle, rng=buffer_rng)(clips)
        yield from clips
