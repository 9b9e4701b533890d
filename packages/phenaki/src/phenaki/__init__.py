"""Phenaki (Villegas et al. 2022): the C-ViViT video tokenizer and its training losses.

- `CViViT`: causal space-time transformer autoencoder with lookup-free quantisation
  (`phenaki.cvivit`).
- The attention stack shared with MaskGit (`phenaki.attention`): `Transformer`, `Attention`,
  `PEG`, `AlibiPositionalBias`, `ContinuousPositionBias`, `LayerNorm`, `FeedForward`.
- Losses (`phenaki.losses`), discriminators (`phenaki.discriminator`) and the frozen perceptual
  loss (`phenaki.perceptual`).
- `MaskGit` and `SelfCritic` (`phenaki.maskgit`) and `TokenCritic` (`phenaki.token_critic`) on one
  token-transformer trunk (`phenaki.token_transformer`); the masking helpers (`phenaki.masking`).
- `Phenaki` (`phenaki.model`: training with condition dropout and critics), its sampling with prime
  frames and two decoding rules (`phenaki.sampling`), and `make_video` (multi-scene stories,
  `phenaki.story`); all of them also importable from `phenaki.maskgit` and `phenaki.phenaki`.
- Files: `CViViT`, `MaskGit`, `TokenCritic` and `Phenaki` (its parts in subfolders) are
  `mp_layers.hub.HubModel`s: `save_pretrained(folder)` (`config.json` + `model.safetensors`),
  `from_pretrained(folder_or_repo_id)`, `push_to_hub(repo_id)`; folders of phenaki 0.1.0 still
  load (`phenaki.pretrained`).
- Training: `phenaki train-tokenizer | train | sample | story` (extra `phenaki[train]`,
  `phenaki.cli`), on the importable workflows of `phenaki.workflows`.

Conventions: videos `(b, c, f, h, w)` and images `(b, c, h, w)` in [0, 1]; tokens `(b, n, d)`.
"""

from importlib.metadata import version as _version

from phenaki.attention import (
    PEG,
    AlibiPositionalBias,
    Attention,
    ContinuousPositionBias,
    FeedForward,
    LayerNorm,
    Transformer,
)
from phenaki.cvivit import CViViT
from phenaki.discriminator import FrameDiscriminator, VideoDiscriminator
from phenaki.losses import (
    adaptive_weight,
    bce_discr_loss,
    bce_gen_loss,
    gradient_penalty,
    hinge_discr_loss,
    hinge_gen_loss,
    pick_frames,
)
from phenaki.maskgit import MaskGit, SelfCritic
from phenaki.masking import critic_labels, get_mask_subset_with_prob, gumbel_sample, mask_schedule
from phenaki.model import Phenaki
from phenaki.perceptual import PerceptualLoss
from phenaki.quantize import FactorizedLFQ
from phenaki.story import make_video
from phenaki.token_critic import TokenCritic

__version__: str = _version("phenaki")
__all__ = [
    "PEG",
    "AlibiPositionalBias",
    "Attention",
    "CViViT",
    "ContinuousPositionBias",
    "FactorizedLFQ",
    "FeedForward",
    "FrameDiscriminator",
    "LayerNorm",
    "MaskGit",
    "PerceptualLoss",
    "Phenaki",
    "SelfCritic",
    "TokenCritic",
    "Transformer",
    "VideoDiscriminator",
    "__version__",
    "adaptive_weight",
    "bce_discr_loss",
    "bce_gen_loss",
    "critic_labels",
    "get_mask_subset_with_prob",
    "gradient_penalty",
    "gumbel_sample",
    "hinge_discr_loss",
    "hinge_gen_loss",
    "make_video",
    "mask_schedule",
    "pick_frames",
]
