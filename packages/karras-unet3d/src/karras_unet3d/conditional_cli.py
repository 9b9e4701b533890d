"""`karras-unet3d sample` with conditioning or more frames than trained: `--init-video FILE
--extend N`, `--interpolate K`, `--upsample-from FILE`, `--first-frame IMAGE`, `--frames N`
(`mp_layers.video.conditional_cli`); the sheet marks the given frames with a red border."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from karras_unet3d.diffusion import EDM2Diffusion
from karras_unet3d.real_data import default_guidance
from mp_layers.typecheck import typechecked

__all__ = ["sample_conditional_sheet"]


@typechecked
def sample_conditional_sheet(
    model: EDM2Diffusion, args: argparse.Namespace, checkpoint: Path, classes_kind: str | None
) -> dict[str, Any] | None:
    """Sample and write the sheet the conditioning flags ask for (one row per class, as a plain
    sample); None when they ask for a plain sample of the training length. `classes_kind`:
    the run's `classes` ("colour" adds the colour accuracy of the samples)."""
    from mp_layers.training import write_sample_sheet
    from mp_layers.video.conditional_cli import (
        conditional_request,
        mark_known_frames,
        sample_conditional,
    )

    request = conditional_request(args, model.net.image_size)
    if request.mode is None and args.frames is None:
        return None
    device = next(model.parameters()).device
    classes = model.net.num_classes
    per_class = args.num_per_class
    if classes is None:
        labels = None
        batch = per_class
    else:
        labels = torch.arange(classes, device=device).repeat_interleave(per_class)
        batch = len(labels)
    sample_kwargs: dict[str, Any] = {
        "class_labels": labels,
        "num_steps": args.steps,
        "guidance": default_guidance(classes is not None, args.guidance),
        "generator": torch.Generator(device=device).manual_seed(args.seed),
    }
    frames = args.frames or model.net.frames
    if request.mode == "first_frame" and model.net.frame_condition:  # its own image to video
        assert request.video is not None
        videos = model.sample_long(batch, frames, overlap=args.overlap,
                                   first_frame=request.video, **sample_kwargs)  # fmt: skip
        known = [i == 0 for i in range(frames)]
    else:
        videos, known = sample_conditional(
            model, request, args, batch_size=batch, frames=frames, **sample_kwargs
        )
    out = Path(args.out)
    write_sample_sheet(mark_known_frames(videos.cpu(), known), out, fps=args.fps, nrow=per_class)
    given = sum(known)
    what = request.mode or "long sample"
    print(
        f"wrote {out} from {checkpoint}: {what}, {batch} clips of {videos.shape[2]} frames "
        f"({given} given, marked red)"
    )
    summary: dict[str, Any] = {
        "out": str(out),
        "checkpoint": str(checkpoint),
        "mode": what,
        "frames": int(videos.shape[2]),
        "given_frames": given,
    }
    if classes_kind == "colour" and labels is not None:
        from mp_layers.video import palette_color_accuracy

        summary["color_accuracy"] = palette_color_accuracy(videos.cpu(), labels.cpu())
        print(f"class-colour accuracy of {batch} samples: {summary['color_accuracy']:.1%}")
    return summary
