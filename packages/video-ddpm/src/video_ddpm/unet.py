"""`Unet3D`: the factorised space-time U-Net of Video Diffusion Models (Ho et al. 2022, fig. 1).

Every level: two FiLM ResNet blocks of spatial 1x3x3 convolutions, (optional) linear attention over
the pixels of each frame, softmax attention over the frames of each pixel (rotary embedding plus a
T5 relative position bias), then a spatial down-sampling. The middle adds full softmax attention
over the pixels of each frame. Time is never resampled, so any frame count goes through; height and
width must be divisible by `2^(len(dim_mults) - 1)`. The architecture and parameter names are those
of video-diffusion-pytorch 0.6.1 (`norm="group"`) and 0.7.0 (`norm="rms"`), whose weights load.
"""

from __future__ import annotations

import itertools
from typing import Any, cast

import torch
from rotary_embedding_torch import RotaryEmbedding
from torch import nn

from mp_layers.hub import HubModel
from mp_layers.typecheck import typechecked
from video_ddpm.blocks import (
    Across,
    Attention,
    PreNorm,
    RelativePositionBias,
    Residual,
    ResnetBlock,
    SinusoidalPosEmb,
    SpatialLinearAttention,
    downsample,
    upsample,
)

BERT_BASE_DIM = 768
"""Width of `bert-base-cased`, the reference's text encoder (the default `cond_dim` with
`use_bert_text_cond=True`)."""
NORMS = ("group", "rms")


def _modules(level: nn.Module) -> list[nn.Module]:
    """The modules of one U-Net level (an `nn.ModuleList`), typed for unpacking."""
    return list(cast(nn.ModuleList, level))


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value}")
    return value


class Unet3D(nn.Module, HubModel):
    """The space-time factorised 3-D U-Net that predicts the diffusion target of a video.

    Args:
        dim: base width; level `i` has `dim · dim_mults[i]` channels.
        cond_dim: width of one conditioning vector per sample (a text embedding, a one-hot
            class, ...); turns conditioning on. The vector is concatenated to the time embedding
            and reaches every ResNet block through FiLM; a learned `null_cond_emb` replaces it
            for dropped samples (classifier-free guidance).
        out_dim: output channels (default `channels`).
        dim_mults: width multipliers, one level each; `len(dim_mults) - 1` spatial halvings.
        channels: input channels.
        attn_heads, attn_dim_head: heads and head width of the temporal attentions (the linear
            and the middle spatial attentions use `attn_heads` heads of width 32, as the
            reference).
        use_bert_text_cond: conditioning on text embeddings; `cond_dim` defaults to 768
            (`bert-base-cased`); set `cond_dim` to your encoder's width otherwise.
        init_dim: width of the stem (default `dim`); init_kernel_size: its odd spatial kernel.
        use_sparse_linear_attn: the (dense, despite the name) linear spatial attention at every
            level.
        norm: `"group"` (GroupNorm with `resnet_groups` groups, reference 0.6.1) or `"rms"`
            (RMSNorm over channels, reference 0.7.0) in the ResNet blocks.

    `forward(x (b, channels, f, h, w), time (b,), cond=None (b, cond_dim), null_cond_prob=0.,
    focus_present_mask=None (b,) bool, prob_focus_present=0.)` → `(b, out_dim, f, h, w)`.
    A sample flagged in `focus_present_mask` (or drawn with `prob_focus_present`) attends only to
    its own frame in every temporal attention, the first included: it is treated as independent
    images (image/video co-training).
    """

    @typechecked
    def __init__(
        self,
        dim: int,
        cond_dim: int | None = None,
        out_dim: int | None = None,
        dim_mults: tuple[int, ...] | list[int] = (1, 2, 4, 8),
        channels: int = 3,
        attn_heads: int = 8,
        attn_dim_head: int = 32,
        use_bert_text_cond: bool = False,
        init_dim: int | None = None,
        init_kernel_size: int = 7,
        use_sparse_linear_attn: bool = True,
        resnet_groups: int = 8,
        norm: str = "group",
    ) -> None:
        super().__init__()
        for name, value in (
            ("dim", dim),
            ("channels", channels),
            ("attn_heads", attn_heads),
            ("attn_dim_head", attn_dim_head),
            ("init_kernel_size", init_kernel_size),
            ("resnet_groups", resnet_groups),
        ):
            _positive(name, value)
        dim_mults = tuple(dim_mults)
        if not dim_mults or any(m < 1 for m in dim_mults):
            raise ValueError(f"dim_mults: expected a non-empty tuple of ints >= 1, got {dim_mults}")
        if init_kernel_size % 2 == 0:
            raise ValueError(f"init_kernel_size: expected an odd int, got {init_kernel_size}")
        if norm not in NORMS:
            raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
        if use_bert_text_cond and cond_dim is None:
            cond_dim = BERT_BASE_DIM
        init_dim = dim if init_dim is None else _positive("init_dim", init_dim)
        out_dim = channels if out_dim is None else _positive("out_dim", out_dim)
        dims = [init_dim, *(dim * m for m in dim_mults)]
        if norm == "group":
            bad = [d for d in dims[1:] if d % resnet_groups]
            if bad or dim % resnet_groups:
                raise ValueError(
                    f"resnet_groups: expected a divisor of every block width "
                    f"{sorted({*dims[1:], dim})}, got {resnet_groups}"
                )

        self._config: dict[str, Any] = {
            "dim": dim,
            "cond_dim": None if cond_dim is None else _positive("cond_dim", cond_dim),
            "out_dim": out_dim,
            "dim_mults": list(dim_mults),
            "channels": channels,
            "attn_heads": attn_heads,
            "attn_dim_head": attn_dim_head,
            "use_bert_text_cond": use_bert_text_cond,
            "init_dim": init_dim,
            "init_kernel_size": init_kernel_size,
            "use_sparse_linear_attn": use_sparse_linear_attn,
            "resnet_groups": resnet_groups,
            "norm": norm,
        }
        self.channels = channels
        self.cond_dim = cond_dim
        self.has_cond = cond_dim is not None
        self.use_bert_text_cond = use_bert_text_cond
        self.downsample_factor = 2 ** (len(dim_mults) - 1)

        rotary_emb = RotaryEmbedding(min(32, attn_dim_head))

        def temporal_attn(width: int) -> Residual:
            attention = Attention(width, attn_heads, attn_dim_head, rotary_emb=rotary_emb)
            return Residual(PreNorm(width, Across(attention, "frames")))

        def linear_attn(width: int) -> nn.Module:
            if not use_sparse_linear_attn:
                return nn.Identity()
            return Residual(PreNorm(width, SpatialLinearAttention(width, heads=attn_heads)))

        self.time_rel_pos_bias = RelativePositionBias(heads=attn_heads, max_distance=32)
        pad = init_kernel_size // 2
        self.init_conv = nn.Conv3d(
            channels, init_dim, (1, init_kernel_size, init_kernel_size), padding=(0, pad, pad)
        )
        self.init_temporal_attn = temporal_attn(init_dim)

        time_dim = dim * 4
        self.time_mlp = nn.Sequential(
            SinusoidalPosEmb(dim),
            nn.Linear(dim, time_dim),
            nn.GELU(),
            nn.Linear(time_dim, time_dim),
        )
        self.null_cond_emb = nn.Parameter(torch.randn(1, cond_dim)) if cond_dim else None
        emb_dim = time_dim + (cond_dim or 0)

        def block(width_in: int, width_out: int, emb: int | None = emb_dim) -> ResnetBlock:
            return ResnetBlock(
                width_in, width_out, time_emb_dim=emb, norm=norm, groups=resnet_groups
            )

        in_out = list(itertools.pairwise(dims))
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        for index, (width_in, width_out) in enumerate(in_out):
            last = index == len(in_out) - 1
            self.downs.append(
                nn.ModuleList(
                    [
                        block(width_in, width_out),
                        block(width_out, width_out),
                        linear_attn(width_out),
                        temporal_attn(width_out),
                        nn.Identity() if last else downsample(width_out),
                    ]
                )
            )
        mid = dims[-1]
        self.mid_block1 = block(mid, mid)
        self.mid_spatial_attn = Residual(PreNorm(mid, Across(Attention(mid, attn_heads), "pixels")))
        self.mid_temporal_attn = temporal_attn(mid)
        self.mid_block2 = block(mid, mid)
        for index, (width_in, width_out) in enumerate(reversed(in_out)):
            last = index == len(in_out) - 1
            self.ups.append(
                nn.ModuleList(
                    [
                        block(width_out * 2, width_in),
                        block(width_in, width_in),
                        linear_attn(width_in),
                        temporal_attn(width_in),
                        nn.Identity() if last else upsample(width_in),
                    ]
                )
            )
        self.final_conv = nn.Sequential(block(init_dim * 2, dim, None), nn.Conv3d(dim, out_dim, 1))

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (JSON-serialisable); `Unet3D.from_config` inverts it."""
        return dict(self._config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Unet3D:
        """A fresh `Unet3D` from `config` (as `net.config` returns it)."""
        values = dict(config)
        values["dim_mults"] = tuple(values["dim_mults"])
        return cls(**values)

    # ------------------------------------------------------------------ validation

    def _check_inputs(
        self,
        x: torch.Tensor,
        time: torch.Tensor,
        cond: torch.Tensor | None,
        focus_present_mask: torch.Tensor | None,
        *,
        null_cond_prob: float = 0.0,
        prob_focus_present: float = 0.0,
    ) -> None:
        """The checks of `forward`: x `(b, channels, f, h, w)` float with h, w divisible by
        `downsample_factor`, time `(b,)`, cond `(b, cond_dim)` exactly when conditional, a bool
        `(b,)` focus mask, probabilities in [0, 1]."""
        if x.ndim != 5 or x.shape[1] != self.channels or not x.is_floating_point():
            raise ValueError(
                f"x: expected a float video (b, {self.channels}, frames, height, width), "
                f"got {x.dtype} {tuple(x.shape)}"
            )
        b, height, width = x.shape[0], x.shape[3], x.shape[4]
        factor = self.downsample_factor
        if height % factor or width % factor:
            raise ValueError(
                f"x: expected height and width divisible by {factor} (2^(len(dim_mults) - 1)), "
                f"got {height}x{width}"
            )
        if time.shape != (b,):
            raise ValueError(f"time: expected shape ({b},), got {tuple(time.shape)}")
        if self.has_cond and cond is None:
            raise ValueError(f"cond: expected a ({b}, {self.cond_dim}) tensor, got None")
        if not self.has_cond and cond is not None:
            raise ValueError(
                "cond: expected None for an unconditional Unet3D (construct it with cond_dim), "
                f"got a tensor of shape {tuple(cond.shape)}"
            )
        if cond is not None and cond.shape != (b, self.cond_dim):
            raise ValueError(
                f"cond: expected shape ({b}, {self.cond_dim}), got {tuple(cond.shape)}"
            )
        if focus_present_mask is not None and (
            focus_present_mask.shape != (b,) or focus_present_mask.dtype != torch.bool
        ):
            raise ValueError(
                f"focus_present_mask: expected a bool tensor of shape ({b},), "
                f"got {focus_present_mask.dtype} {tuple(focus_present_mask.shape)}"
            )
        for name, prob in (
            ("null_cond_prob", null_cond_prob),
            ("prob_focus_present", prob_focus_present),
        ):
            if not 0.0 <= prob <= 1.0:
                raise ValueError(f"{name}: expected a probability in [0, 1], got {prob}")

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        x: torch.Tensor,
        time: torch.Tensor,
        cond: torch.Tensor | None = None,
        null_cond_prob: float = 0.0,
        focus_present_mask: torch.Tensor | None = None,
        prob_focus_present: float = 0.0,
    ) -> torch.Tensor:
        """Predict the diffusion target of `x` `(b, c, f, h, w)` at steps `time` `(b,)`."""
        self._check_inputs(
            x,
            time,
            cond,
            focus_present_mask,
            null_cond_prob=null_cond_prob,
            prob_focus_present=prob_focus_present,
        )
        b = x.shape[0]
        if focus_present_mask is None and prob_focus_present > 0:
            focus_present_mask = torch.rand(b, device=x.device) < prob_focus_present
        null_mask = None
        if cond is not None and null_cond_prob > 0:
            null_mask = torch.rand(b, device=x.device) < null_cond_prob
        return self._forward(x, time, cond, null_mask, focus_present_mask)

    def _forward(
        self,
        x: torch.Tensor,
        time: torch.Tensor,
        cond: torch.Tensor | None,
        null_mask: torch.Tensor | None,
        focus: torch.Tensor | None,
    ) -> torch.Tensor:
        """The network proper; `null_mask` `(b,)` bool swaps `cond` for the null embedding."""
        if focus is not None and not bool(focus.any()):
            focus = None
        pos_bias = self.time_rel_pos_bias(x.shape[2], device=x.device)
        x = self.init_conv(x)
        x = self.init_temporal_attn(x, pos_bias=pos_bias, focus_present_mask=focus)
        stem = x
        emb = self.time_mlp(time)
        if cond is not None:
            assert self.null_cond_emb is not None  # has_cond, checked in forward
            cond = cond.to(emb.dtype)
            if null_mask is not None:
                cond = torch.where(null_mask[:, None], self.null_cond_emb.to(emb.dtype), cond)
            emb = torch.cat((emb, cond), dim=-1)

        skips = []
        for level in self.downs:
            block1, block2, spatial_attn, temporal_attn, down = _modules(level)
            x = block2(block1(x, emb), emb)
            x = spatial_attn(x)
            x = temporal_attn(x, pos_bias=pos_bias, focus_present_mask=focus)
            skips.append(x)
            x = down(x)
        x = self.mid_block1(x, emb)
        x = self.mid_spatial_attn(x)
        x = self.mid_temporal_attn(x, pos_bias=pos_bias, focus_present_mask=focus)
        x = self.mid_block2(x, emb)
        for level in self.ups:
            block1, block2, spatial_attn, temporal_attn, up = _modules(level)
            x = torch.cat((x, skips.pop()), dim=1)
            x = block2(block1(x, emb), emb)
            x = spatial_attn(x)
            x = temporal_attn(x, pos_bias=pos_bias, focus_present_mask=focus)
            x = up(x)
        out: torch.Tensor = self.final_conv(torch.cat((x, stem), dim=1))
        return out

    def forward_with_cond_scale(
        self,
        x: torch.Tensor,
        time: torch.Tensor,
        cond: torch.Tensor | None = None,
        cond_scale: float = 1.0,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Classifier-free guidance: `null + (cond - null) · cond_scale` (1: no guidance, the
        conditional output). Both branches run as one batch of `2b`."""
        if cond_scale == 1.0 or not self.has_cond:
            return self.forward(x, time, cond=cond, null_cond_prob=0.0, **kwargs)
        focus = kwargs.pop("focus_present_mask", None)
        if kwargs.pop("prob_focus_present", 0.0) or kwargs:
            raise ValueError(f"forward_with_cond_scale: unexpected arguments {sorted(kwargs)}")
        self._check_inputs(x, time, cond, focus)
        assert cond is not None  # has_cond, checked above
        b = x.shape[0]
        null_mask = torch.arange(2 * b, device=x.device) >= b
        both = self._forward(
            torch.cat((x, x)),
            torch.cat((time, time)),
            torch.cat((cond, cond)),
            null_mask,
            None if focus is None else torch.cat((focus, focus)),
        )
        conditional, null = both.chunk(2)
        return null + (conditional - null) * cond_scale
