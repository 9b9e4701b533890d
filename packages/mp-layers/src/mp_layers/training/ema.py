"""The EMA copies of a training run (ema-pytorch): the classic `EMA` and EDM2's post-hoc
`PostHocEMA`, made on the main process and updated after every finite step."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from mp_layers.training.config import TrainerConfig

if TYPE_CHECKING:
    from ema_pytorch import EMA, PostHocEMA


def make_ema(
    config: TrainerConfig, model: nn.Module, out_dir: Path
) -> tuple[EMA | None, PostHocEMA | None]:
    """`(EMA or None, PostHocEMA or None)` following `model`, as `config` asks
    (`ema_beta`, `post_hoc_ema_sigma_rels`); the post-hoc snapshots go to `out_dir/post_hoc_ema`."""
    ema = post_hoc = None
    if config.ema_beta is not None:
        from ema_pytorch import EMA

        ema = EMA(
            model,
            beta=config.ema_beta,
            update_after_step=config.ema_update_after_step,
            update_every=config.ema_update_every,
            include_online_model=False,
        )
    if config.post_hoc_ema_sigma_rels:
        from ema_pytorch import PostHocEMA

        post_hoc = PostHocEMA(
            model,
            sigma_rels=config.post_hoc_ema_sigma_rels,
            checkpoint_every_num_steps=config.post_hoc_ema_every,
            checkpoint_folder=str(out_dir / "post_hoc_ema"),
            # ema-pytorch's KarrasEMA defaults to updating every 100th call while its beta
            # counts every call: the average then spans far more than sigma_rel of the run
            # (mostly the untrained start). EDM2's power-function EMA updates every step.
            update_every=1,
        )
    return ema, post_hoc


def ema_reads_weights(config: TrainerConfig, step: int, skipped_steps: int) -> bool:
    """Whether the EMA update after step `step` reads the online weights (the post-hoc EMA: every
    step; ema-pytorch's `EMA`: at its first update and every `update_every`-th one). Known on every
    process, so under FSDP all of them join the gather exactly then: updates happen on finite
    steps only, so the EMA has been updated `step - 1 - skipped_steps` times before."""
    if config.post_hoc_ema_sigma_rels:
        return True
    if config.ema_beta is None:
        return False
    return (step - 1 - skipped_steps) % config.ema_update_every == 0
