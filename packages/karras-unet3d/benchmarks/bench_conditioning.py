"""Long videos and conditioning on a trained MovingShapes run: extension (replacement against
reconstruction guidance), the windowed 32-frame sampler, and the cost of guidance.

    karras-unet3d train --out runs/karras-unet3d          # the default run (about 8.5 minutes)
    .venv/bin/python packages/karras-unet3d/benchmarks/bench_conditioning.py runs/karras-unet3d

Figures (printed as Markdown):
- colour: the fraction of clips whose generated frames keep the class colour
  (`palette_color_accuracy` on the new frames only), and of generated frames that do (per frame);
- one object: `object_rate` over all frames (exactly one component of the sprite's size);
- seam / interior jump: the mean centroid jump between consecutive frames at window seams
  (extension: the first new frame of each window against the frame before it) over the mean jump
  inside windows; 1 means the seams are invisible in motion;
- seconds per clip of each sampler, against unconditional sampling of the training length (the
  guidance gradient costs one backward pass per network evaluation).

For a run trained with `--cond-frames first` it adds image to video from the first frames of
unseen MovingShapes clips (seed 12345): PSNR of the generated frame 0 against the given frame
(nothing is pasted back) and the colour of the whole clip.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from karras_unet3d.workflow import build_model, find_run_config
from mp_layers.conditioning import temporal_windows
from mp_layers.training import latest_checkpoint, load_model_weights
from mp_layers.video import object_rate, palette_color_accuracy
from mp_layers.video.motion import _centroids


def jumps(videos: torch.Tensor) -> torch.Tensor:
    """Centroid jump (pixels) between frames t and t + 1 `(b, f - 1)`; NaN where a frame has
    no object."""
    centres, present, _ = _centroids(videos, 3)
    step = (centres[:, 1:] - centres[:, :-1]).norm(dim=-1)
    ok = present[:, 1:] & present[:, :-1]
    return torch.where(ok, step, torch.nan)


def seam_ratio(videos: torch.Tensor, seams: list[int]) -> float:
    """Mean jump into the frames `seams` over the mean jump elsewhere."""
    step = jumps(videos)
    at = torch.zeros(step.shape[1], dtype=torch.bool)
    at[[s - 1 for s in seams]] = True
    return float(step[:, at].nanmean() / step[:, ~at].nanmean())


def colour(videos: torch.Tensor, labels: torch.Tensor, start: int) -> tuple[float, float]:
    new = videos[:, :, start:]
    per_clip = palette_color_accuracy(new, labels)
    frames = new.permute(0, 2, 1, 3, 4).reshape(-1, videos.shape[1], 1, *videos.shape[-2:])
    per_frame = palette_color_accuracy(frames, labels.repeat_interleave(new.shape[2]))
    return per_clip, per_frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a karras-unet3d train folder (MovingShapes, colour classes)")
    parser.add_argument("--per-class", type=int, default=4)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--weight", type=float, default=10.0)
    args = parser.parse_args()
    _, config = find_run_config(args.run)
    model = build_model(config)
    load_model_weights(model, latest_checkpoint(f"{args.run}/checkpoints"), ema=True)
    model.eval()
    window = model.net.frames
    labels = torch.arange(model.net.num_classes).repeat_interleave(args.per_class)
    common = {"class_labels": labels, "guidance": 1.5, "num_steps": args.steps}

    def timed(fn):
        start = time.perf_counter()
        out = fn(torch.Generator().manual_seed(0))
        return out, (time.perf_counter() - start) / len(labels)

    model.sample(len(labels), class_labels=labels, num_steps=1)  # warm-up, not timed
    base, t_base = timed(lambda g: model.sample(len(labels), generator=g, **common))
    rows = [("unconditional, training length", base, t_base, 0, [], None)]
    for method in ("replace", "guidance"):
        video, seconds = timed(lambda g, m=method: model.extend_video(
            base, args.frames, overlap=args.overlap, method=m, weight=args.weight, generator=g,
            **common))  # fmt: skip
        seams = list(range(window, args.frames, window - args.overlap))
        rows.append((f"extend {window} -> {args.frames}, {method}", video, seconds, window, seams,
                     method))  # fmt: skip
    long, seconds = timed(lambda g: model.sample_long(len(labels), args.frames,
                                                      overlap=args.overlap, generator=g, **common))  # fmt: skip
    windows = temporal_windows(args.frames, window, args.overlap)
    seams = sorted({a for a, _ in windows[1:]} | {b for _, b in windows[:-1]})  # window edges
    rows.append((f"windowed {args.frames} frames", long, seconds, 0, seams, None))

    if model.net.frame_condition:
        from mp_layers.video import MovingShapes
        from mp_layers.video.compare import psnr

        data = MovingShapes(64, image_size=model.net.image_size, num_frames=window, seed=12345)
        items = [data[i] for i in range(64)]
        wanted = [next(it for it in items if int(it["label"]) == int(c)) for c in labels]
        first = torch.stack([it["video"][:, :1] for it in wanted])
        i2v, seconds = timed(lambda g: model.sample(len(labels), first_frame=first, generator=g,
                                                    **common))  # fmt: skip
        rows.append(("image to video (first frame given, not pasted)", i2v, seconds, 1, [], None))
        scores = psnr(first, i2v[:, :, :1])

    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, python {sys.version.split()[0]}; run {args.run}, "
          f"{len(labels)} clips, Heun {args.steps} steps, CFG 1.5, w_r {args.weight}, "
          f"overlap {args.overlap}")  # fmt: skip
    print(
        "| sampler | colour per clip | colour per frame | one object | seam / interior jump | s per clip |"
    )
    print("|---|---|---|---|---|---|")
    for name, video, seconds, start, seams, _ in rows:
        per_clip, per_frame = colour(video, labels, start)
        ratio = f"{seam_ratio(video, seams):.2f}" if seams else "-"
        print(f"| {name} | {per_clip:.1%} | {per_frame:.1%} | {object_rate(video):.1%} | {ratio} "
              f"| {seconds:.2f} |")  # fmt: skip
    if model.net.frame_condition:
        print(f"image to video: PSNR of the generated frame 0 against the given frame: median "
              f"{scores.median():.1f} dB, min {scores.min():.1f} dB")  # fmt: skip


if __name__ == "__main__":
    main()
