"""Benchmark `phenaki.CViViT` against the reference phenaki-pytorch 0.5.0, side by side.

The reference lives in its own environment (it pulls in other versions of shared helpers):

    uv venv --python 3.11 /tmp/refenv_phenaki
    uv pip install --python /tmp/refenv_phenaki phenaki-pytorch==0.5.0 torch==<ours>
    .venv/bin/python packages/phenaki/benchmarks/bench_vs_reference.py \
        --ref-python /tmp/refenv_phenaki/bin/python --steps 10

(`<ours>`: `.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])'`; no other
pin was needed: it resolved vector-quantize-pytorch 1.32.0, the version ours runs, and a
torchvision matching torch. With `use_vgg_and_gan=False` the reference builds no VGG and downloads
nothing. `uvx nox -s bench_reference_phenaki` does all of this.)

Same arguments on both sides: `CViViT(**CVIVIT)` (lookup-free quantisation, the default), built
after `torch.manual_seed(0)`; a batch of 2 videos of 9 frames of 64x64, `torch.rand` after
`torch.manual_seed(0)` (identical on both sides: checked), fp32, `torch.set_num_threads(--threads)`
(2). The method (a worker per side, interleaved steps, medians, fresh-process memory) is the
harness's, `tools/benchharness`.

- train step: `loss = model(videos)` (train mode) + backward + Adam step. The reference returns
  the reconstruction MSE alone when `use_vgg_and_gan=False` (it drops the quantiser's auxiliary
  loss); ours returns MSE + the LFQ auxiliary (entropy) loss, so ours does slightly more work.
- encode+decode: `model(videos, return_recons_only=True)` in eval mode under
  `torch.inference_mode()`: encode, quantise, decode.
- peak memory: two train steps (or two encode+decode passes), per kind.

Targets (the issue): train >= 1.3x faster, encode+decode >= 1.3x faster, peak memory no higher.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))
from benchharness import Bench, Column, Run, Workload, main, no_higher, train_step

CVIVIT = {
    "dim": 128,
    "codebook_size": 4096,
    "image_size": 64,
    "patch_size": 8,
    "temporal_patch_size": 2,
    "spatial_depth": 2,
    "temporal_depth": 2,
    "dim_head": 32,
    "heads": 4,
    "use_vgg_and_gan": False,
}
BATCH, FRAMES, CHANNELS = 2, 9, 3


def build(side: str, params: dict[str, Any]) -> Workload:
    import torch

    if side == "reference":
        from phenaki_pytorch import CViViT
    else:
        from phenaki import CViViT
    torch.manual_seed(0)
    model = CViViT(**CVIVIT).to(params["device"])
    torch.manual_seed(0)
    size = CVIVIT["image_size"]
    videos = torch.rand(BATCH, CHANNELS, FRAMES, size, size)
    checksum = float(videos.double().sum())
    videos = videos.to(params["device"])

    def encode_decode() -> None:
        model.eval()
        with torch.inference_mode():
            recon = model(videos, return_recons_only=True)
        assert recon.shape == videos.shape, recon.shape

    return Workload(
        {"train": train_step(model, lambda: model(videos)), "encode_decode": encode_decode},
        info={"params": sum(p.numel() for p in model.parameters())},
        same={"input_sum": checksum},
    )


def _config(run: Run) -> list[str]:
    counts = ", ".join(f"{info['params']:,} ({side})" for side, info in run.infos.items())
    return [f"config: CViViT{CVIVIT}; parameters: {counts}"]


BENCH = Bench(
    file=__file__,
    description=__doc__,
    columns=[
        Column("train step (s)", "train", target=1.3),
        Column("encode+decode (s)", "encode_decode", target=1.3),
        no_higher("peak train memory (MiB)", "train"),
        no_higher("peak encode+decode memory (MiB)", "encode_decode"),
    ],
    setting=lambda args: f"batch {BATCH} x {FRAMES} frames, fp32",
    describe=_config,
    ref_python="/tmp/refenv_phenaki/bin/python",
)

if __name__ == "__main__":
    main(BENCH)
