"""Benchmark `karras_unet3d.KarrasUnet3D` against the reference `denoising-diffusion-pytorch==2.3.4`.

The reference must live in its own environment (it pins other versions of shared helpers):

    uv venv /tmp/ddp-ref --python 3.11
    VIRTUAL_ENV=/tmp/ddp-ref uv pip install denoising-diffusion-pytorch==2.3.4
    /work/main/.venv/bin/python packages/karras-unet3d/benchmarks/bench_vs_reference.py \
        --ref-python /tmp/ddp-ref/bin/python --iters 15

Same constructor arguments (the issue's configuration), batch 2, fp32. Three sides: ours, the
reference, ours with `gradient_checkpointing=True`; the method (a worker per side, interleaved
steps, medians, fresh-process memory) is the harness's, `tools/benchharness`.

- train step: forward + MSE loss + backward + Adam step.
- eval forward: `model.eval()` under `torch.inference_mode()`.
- peak memory: two training steps (activations, gradients, Adam state).
- gradient checkpointing: ours with `gradient_checkpointing=True` vs False, same measurements.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))
from benchharness import Bench, Column, Run, Side, Workload, main, train_step

CONFIG = {
    "frames": 8,
    "image_size": 32,
    "dim": 32,
    "dim_max": 128,
    "num_downsamples": 3,
    "num_blocks_per_stage": 1,
    "downsample_types": ("image", "frame", "image"),
    "attn_res": (8,),
    "attn_dim_head": 32,
    "num_classes": 10,
    "channels": 4,
}
BATCH = 2


def build(side: str, params: dict[str, Any]) -> Workload:
    import torch

    if side == "reference":
        from denoising_diffusion_pytorch.karras_unet_3d import KarrasUnet3D
    else:
        from karras_unet3d import KarrasUnet3D
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in params["config"].items()}
    extra = {"gradient_checkpointing": True} if side == "ours+ckpt" else {}
    torch.manual_seed(0)
    model = KarrasUnet3D(**config, **extra).to(params["device"])
    b, size = BATCH, config["image_size"]
    x = torch.randn(b, config["channels"], config["frames"], size, size)
    t = torch.rand(b)
    labels = torch.randint(0, config["num_classes"], (b,))
    target = torch.randn_like(x)
    x, t, labels, target = (v.to(params["device"]) for v in (x, t, labels, target))
    train = train_step(model, lambda: (model(x, t, class_labels=labels) - target).pow(2).mean())

    def eval_step() -> None:
        model.eval()
        with torch.inference_mode():
            model(x, t, class_labels=labels)

    return Workload({"train": train, "eval": eval_step})


def checkpointing(run: Run) -> list[str]:
    slower = f"train step {run.median('ours+ckpt', 'train') / run.median('ours', 'train'):.2f}x"
    if not run.args.rounds:
        return [f"gradient checkpointing: {slower} the time"]
    saving = 1 - run.memory("ours+ckpt", "train") / run.memory("ours", "train")
    return [f"gradient checkpointing: {saving:.0%} less peak training memory, {slower} the time"]


BENCH = Bench(
    file=__file__,
    description=__doc__,
    sides=(Side("ours"), Side("reference", reference=True), Side("ours+ckpt")),
    columns=[
        Column("train step (s)", "train"),
        Column("eval forward (s)", "eval"),
        Column("peak train memory (MiB)", "train", memory=True),
    ],
    params=lambda args: {"config": CONFIG},
    setting=lambda args: f"batch {BATCH}, fp32",
    describe=lambda run: [f"config: {CONFIG}"],
    footer=checkpointing,
    ref_python="/tmp/ddp-ref/bin/python",
    steps=15,
    steps_flag="--iters",
    threads=None,
    ratio_label="reference / ours (median of per-step ratios)",
)

if __name__ == "__main__":
    main(BENCH)
