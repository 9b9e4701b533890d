"""Benchmark `video_ddpm` against the reference video-diffusion-pytorch 0.6.1, side by side.

The reference lives in its own environment (it pins other versions of shared helpers):

    uv venv --python 3.11 /tmp/refenv061
    uv pip install --python /tmp/refenv061 video-diffusion-pytorch==0.6.1 torch==<ours>
    .venv/bin/python packages/video-ddpm/benchmarks/bench_vs_reference.py \
        --ref-python /tmp/refenv061/bin/python --steps 10

Same arguments on both sides: `Unet3D(dim=32, dim_mults=(1, 2, 4), channels=3)` in
`GaussianDiffusion(image_size=32, num_frames=8, timesteps=1000, loss_type="l1")`, batch 2 of
8 frames of 32x32, fp32, `torch.set_num_threads(--threads)` (2). The method (a worker per side,
interleaved steps, medians, fresh-process memory) is the harness's, `tools/benchharness`.

- train step: `loss = diffusion(videos)` (l1, ε objective) + backward + Adam step.
- p_sample step: one ancestral step at t = 500 (inference mode, as both run it).
- whole sample: ours, DDIM with 50 steps (`sample(sampler="ddim", steps=50)`, median of
  `--sample-steps` runs); reference, its 1000-step `p_sample_loop`: estimated as 1000 x its
  median p_sample step, or timed once with `--ref-full-loop` (the table says which).
- peak memory: two training steps (or two p_sample steps), per kind.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))
from benchharness import Bench, Column, Run, Workload, main, train_step

UNET = {"dim": 32, "dim_mults": (1, 2, 4), "channels": 3}
DIFFUSION = {"image_size": 32, "num_frames": 8, "timesteps": 1000, "loss_type": "l1"}
BATCH, DDIM_STEPS = 2, 50
TIMESTEPS = DIFFUSION["timesteps"]


def build(side: str, params: dict[str, Any]) -> Workload:
    import torch

    if side == "reference":
        from video_diffusion_pytorch import GaussianDiffusion, Unet3D
    else:
        from video_ddpm.diffusion import GaussianDiffusion
        from video_ddpm.unet import Unet3D
    device = params["device"]
    torch.manual_seed(0)
    diffusion = GaussianDiffusion(Unet3D(**UNET), **DIFFUSION).to(device)
    size, frames = DIFFUSION["image_size"], DIFFUSION["num_frames"]
    shape = (BATCH, UNET["channels"], frames, size, size)
    videos, x = torch.rand(shape).to(device), torch.randn(shape).to(device)
    t = torch.full((BATCH,), TIMESTEPS // 2, dtype=torch.long, device=device)

    def p_sample_step() -> None:
        diffusion.eval()
        diffusion.p_sample(x, t)

    def sample() -> None:
        diffusion.eval()
        if side == "reference":
            diffusion.p_sample_loop(shape)
        else:
            diffusion.sample(batch_size=BATCH, sampler="ddim", steps=DDIM_STEPS)

    train = train_step(diffusion, lambda: diffusion(videos))
    return Workload({"train": train, "p_sample": p_sample_step, "sample": sample})


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sample-steps", type=int, default=3, help="timed DDIM samples (ours)")
    parser.add_argument(
        "--ref-full-loop",
        action="store_true",
        help="time the reference's 1000-step p_sample_loop once instead of estimating it",
    )


def whole_samples(run: Run) -> None:
    """Ours: `--sample-steps` DDIM samples; the reference: one full loop, or its estimate."""
    run.times[("ours", "sample")] = [
        run.time("ours", "sample") for _ in range(run.args.sample_steps)
    ]
    if run.has_reference:
        run.times[("reference", "sample")] = [
            run.time("reference", "sample")
            if run.args.ref_full_loop
            else TIMESTEPS * run.median("reference", "p_sample")
        ]
    print("whole samples done", file=sys.stderr)


def columns(args: argparse.Namespace) -> list[Column]:
    estimated = {} if args.ref_full_loop else {"reference": " (est.)"}
    return [
        Column("train step (s)", "train"),
        Column("p_sample step (s)", "p_sample"),
        Column(
            "whole sample (s)",
            "sample",
            fmt=".1f",
            ratio_fmt=".1f",
            per_step=False,
            suffix=estimated,
        ),
        Column("peak train memory (MiB)", "train", memory=True),
        Column("peak p_sample memory (MiB)", "p_sample", memory=True),
    ]


def describe(run: Run) -> list[str]:
    how = "timed once" if run.args.ref_full_loop else f"estimated: {TIMESTEPS} x median p_sample"
    return [
        f"config: Unet3D{UNET}, GaussianDiffusion{DIFFUSION}",
        f"whole sample: ours DDIM {DDIM_STEPS} steps, timed; reference {TIMESTEPS}-step "
        f"p_sample_loop, {how}",
    ]


def like_for_like(run: Run) -> list[str]:
    if not run.has_reference:
        return []
    ours, ref = (TIMESTEPS * run.median(side, "p_sample") for side in ("ours", "reference"))
    return [
        f"like for like, a {TIMESTEPS}-step ancestral sample would take ~{ours:.0f} s ours vs "
        f"~{ref:.0f} s reference ({TIMESTEPS} x median p_sample step)"
    ]


BENCH = Bench(
    file=__file__,
    description=__doc__,
    columns=columns,
    setting=lambda args: f"batch {BATCH}, fp32; {args.sample_steps} whole samples (ours)",
    describe=describe,
    footer=like_for_like,
    after_timing=whole_samples,
    arguments=arguments,
    ref_python="/tmp/refenv061/bin/python",
)

if __name__ == "__main__":
    main(BENCH)
