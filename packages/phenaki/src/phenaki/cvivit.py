"""`CViViT`: Phenaki's causal space-time transformer video tokenizer (a VQ-GAN on video patches).

Videos are `(b, c, f, h, w)` in [0, 1] with `f = 1 + k * temporal_patch_size`; images `(b, c, h, w)`
are one-frame videos. The first frame is patched on its own (`p1 x p2`), the rest as tubelets
(`pt x p1 x p2`), giving a token grid `(b, t', h', w', d)` with `t' = 1 + k`. The encoder is a
spatial transformer per time step (2-D continuous position bias) followed by a causal temporal
transformer per spatial location (ALiBi and a causal PEG), so the codes of a tubelet never depend
on later frames (Villegas et al. 2022, sec. 2.1). Tokens are quantised by lookup-free quantisation
(Yu et al. 2023, vector-quantize-pytorch's `LFQ` with its entropy loss in closed form:
`phenaki.quantize.FactorizedLFQ`) or a cosine-similarity `VectorQuantize`; the decoder
mirrors the encoder and two linear heads return pixels.

Training losses (`forward`): reconstruction MSE over valid frames, the quantiser's auxiliary loss,
a perceptual loss through a frozen network (`phenaki.perceptual.PerceptualLoss`), and an adversarial
loss weighted adaptively (VQGAN, Esser et al. 2021, eq. 7) against a frame discriminator (one random
valid frame per clip, as the reference) or a 3-D video discriminator that judges motion.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from einops.layers.torch import Rearrange
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from vector_quantize_pytorch import VectorQuantize

from mp_layers.pretrained import (
    atomic_write,
    check_state_dict,
    load_state_checked,
    plain_state_dict,
    write_config,
)
from mp_layers.typecheck import typechecked
from phenaki.attention import ContinuousPositionBias, Transformer
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
from phenaki.perceptual import PerceptualLoss
from phenaki.quantize import FactorizedLFQ

__all__ = ["CViViT"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "phenaki.CViViT"
FORMAT_VERSION = 1

PathLike = str | os.PathLike[str]
Size = int | tuple[int, int]


def _pair(value: Size, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name}: expected a positive int or (height, width), got {value!r}")
    return pair[0], pair[1]


def _patch_embedding(pattern: str, inputs: int, dim: int, **sizes: int) -> nn.Sequential:
    """Rearrange into patches -> LayerNorm -> Linear -> LayerNorm ("dual PatchNorm")."""
    return nn.Sequential(
        Rearrange(pattern, **sizes), nn.LayerNorm(inputs), nn.Linear(inputs, dim), nn.LayerNorm(dim)
    )


class CViViT(nn.Module):
    """The C-ViViT tokenizer (see the module docstring). Arguments as phenaki-pytorch 0.5.0:

    Args:
        dim: token width. codebook_size: number of codes (a power of two with LFQ).
        image_size, patch_size: int or (height, width); the frame must divide into patches.
        temporal_patch_size: frames per tubelet after the first frame.
        spatial_depth, temporal_depth: layers of each of the four transformers.
        discr_base_dim: base width of the discriminator. dim_head, heads: attention shape.
        channels: colour channels of the videos.
        use_vgg_and_gan: add the perceptual and adversarial losses (and build a discriminator).
        vgg: the perceptual network (any module mapping `(b, 3, h, w)` to features); by default
            torchvision's VGG16 with ImageNet weights, loaded on the first training forward that
            needs it (extra `phenaki[vgg]`). It is frozen and never part of `state_dict()`.
        discr_attn_res_layers: feature-map sizes where the frame discriminator self-attends.
        use_hinge_loss: hinge GAN losses, else binary cross-entropy.
        attn_dropout, ff_dropout: dropout in the transformers.
        lookup_free_quantization: LFQ (default) or `VectorQuantize(use_cosine_sim=True)`.
        lookup_free_quantization_kwargs: passed to `LFQ`.
        discriminator: "frame" (a 2-D discriminator on one random valid frame per clip, as the
            reference) or "video" (a 3-D discriminator on whole clips).
        perceptual_weight: weight of the perceptual loss (0 turns it off and never loads VGG16).
    """

    @typechecked
    def __init__(
        self,
        *,
        dim: int,
        codebook_size: int,
        image_size: Size,
        patch_size: Size,
        temporal_patch_size: int,
        spatial_depth: int,
        temporal_depth: int,
        discr_base_dim: int = 16,
        dim_head: int = 64,
        heads: int = 8,
        channels: int = 3,
        use_vgg_and_gan: bool = True,
        vgg: nn.Module | None = None,
        discr_attn_res_layers: tuple[int, ...] | int = (16,),
        use_hinge_loss: bool = True,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        lookup_free_quantization: bool = True,
        lookup_free_quantization_kwargs: dict[str, Any] | None = None,
        discriminator: Literal["frame", "video"] = "frame",
        perceptual_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.image_size = _pair(image_size, "image_size")
        self.patch_size = _pair(patch_size, "patch_size")
        (height, width), (ph, pw) = self.image_size, self.patch_size
        if height % ph or width % pw:
            raise ValueError(
                f"image_size {self.image_size}: expected multiples of patch_size {self.patch_size}"
            )
        for name, value in (
            ("dim", dim),
            ("temporal_patch_size", temporal_patch_size),
            ("spatial_depth", spatial_depth),
            ("temporal_depth", temporal_depth),
            ("channels", channels),
            ("heads", heads),
            ("dim_head", dim_head),
            ("discr_base_dim", discr_base_dim),
        ):
            if value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value}")
        if codebook_size < 2:
            raise ValueError(f"codebook_size: expected at least 2, got {codebook_size}")
        if lookup_free_quantization and codebook_size & (codebook_size - 1):
            raise ValueError(
                f"codebook_size: lookup-free quantization needs a power of two, got "
                f"{codebook_size} (nearest: {2 ** round(math.log2(codebook_size))})"
            )
        if perceptual_weight < 0:
            raise ValueError(f"perceptual_weight: expected >= 0, got {perceptual_weight}")
        lfq_kwargs = dict(lookup_free_quantization_kwargs or {})
        self.config: dict[str, Any] = {
            "dim": dim,
            "codebook_size": codebook_size,
            "image_size": list(self.image_size),
            "patch_size": list(self.patch_size),
            "temporal_patch_size": temporal_patch_size,
            "spatial_depth": spatial_depth,
            "temporal_depth": temporal_depth,
            "discr_base_dim": discr_base_dim,
            "dim_head": dim_head,
            "heads": heads,
            "channels": channels,
            "use_vgg_and_gan": use_vgg_and_gan,
            "discr_attn_res_layers": list(
                (discr_attn_res_layers,)
                if isinstance(discr_attn_res_layers, int)
                else discr_attn_res_layers
            ),
            "use_hinge_loss": use_hinge_loss,
            "attn_dropout": attn_dropout,
            "ff_dropout": ff_dropout,
            "lookup_free_quantization": lookup_free_quantization,
            "lookup_free_quantization_kwargs": lfq_kwargs,
            "discriminator": discriminator,
            "perceptual_weight": perceptual_weight,
        }
        self.channels = channels
        self.codebook_size = codebook_size
        self.temporal_patch_size = temporal_patch_size
        self.lookup_free_quantization = lookup_free_quantization
        self.use_vgg_and_gan = use_vgg_and_gan
        self.discriminator_type = discriminator
        self.perceptual_weight = perceptual_weight

        self.spatial_rel_pos_bias = ContinuousPositionBias(dim=dim, heads=heads)
        frame_inputs = channels * ph * pw
        self.to_patch_emb_first_frame = _patch_embedding(
            "b c 1 (h p1) (w p2) -> b 1 h w (c p1 p2)", frame_inputs, dim, p1=ph, p2=pw
        )
        self.to_patch_emb = _patch_embedding(
            "b c (t pt) (h p1) (w p2) -> b t h w (c pt p1 p2)",
            frame_inputs * temporal_patch_size,
            dim,
            p1=ph,
            p2=pw,
            pt=temporal_patch_size,
        )
        shared: dict[str, Any] = {
            "dim": dim,
            "dim_head": dim_head,
            "heads": heads,
            "attn_dropout": attn_dropout,
            "ff_dropout": ff_dropout,
        }
        spatial = {**shared, "depth": spatial_depth}
        temporal = {**shared, "depth": temporal_depth, "causal": True, "peg": True}
        self.enc_spatial_transformer = Transformer(**spatial)
        self.enc_temporal_transformer = Transformer(**temporal, peg_causal=True)
        self.vq: nn.Module
        if lookup_free_quantization:
            lfq_kwargs.setdefault("channel_first", False)
            self.vq = FactorizedLFQ(dim=dim, codebook_size=codebook_size, **lfq_kwargs)
        else:
            self.vq = VectorQuantize(dim=dim, codebook_size=codebook_size, use_cosine_sim=True)
        self.dec_spatial_transformer = Transformer(**spatial)
        self.dec_temporal_transformer = Transformer(**temporal, peg_causal=True)
        self.to_pixels_first_frame = nn.Sequential(
            nn.Linear(dim, frame_inputs),
            Rearrange("b 1 h w (c p1 p2) -> b c 1 (h p1) (w p2)", p1=ph, p2=pw),
        )
        self.to_pixels = nn.Sequential(
            nn.Linear(dim, frame_inputs * temporal_patch_size),
            Rearrange(
                "b t h w (c pt p1 p2) -> b c (t pt) (h p1) (w p2)",
                p1=ph,
                p2=pw,
                pt=temporal_patch_size,
            ),
        )

        self.discr: nn.Module | None = None
        # Not a submodule: never trained, never in state_dict() or an optimizer (defect P8).
        self.perceptual: PerceptualLoss | None = None
        if use_vgg_and_gan:
            if perceptual_weight > 0:
                self.perceptual = PerceptualLoss(vgg)
            if discriminator == "frame":
                self.discr = FrameDiscriminator(
                    dim=discr_base_dim,
                    image_size=self.image_size,
                    channels=channels,
                    attn_res_layers=tuple(self.config["discr_attn_res_layers"]),
                )
            else:
                self.discr = VideoDiscriminator(
                    dim=discr_base_dim, image_size=self.image_size, channels=channels
                )
        self.discr_loss = hinge_discr_loss if use_hinge_loss else bce_discr_loss
        self.gen_loss = hinge_gen_loss if use_hinge_loss else bce_gen_loss

    # ------------------------------------------------------------------ token geometry

    @property
    def patch_height_width(self) -> tuple[int, int]:
        """Tokens per frame along height and width: `(H // p1, W // p2)`."""
        return self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1]

    @property
    def image_num_tokens(self) -> int:
        """Tokens of one frame (or of one tubelet step): `h' * w'`."""
        h, w = self.patch_height_width
        return h * w

    def _check_num_frames(self, num_frames: int, include_first_frame: bool = True) -> None:
        rest = num_frames - 1 if include_first_frame else num_frames
        if rest < 0 or rest % self.temporal_patch_size:
            form = "1 + k * " if include_first_frame else "k * "
            raise ValueError(
                f"num_frames: expected {form}temporal_patch_size ({self.temporal_patch_size}) "
                f"frames, got {num_frames}"
            )

    @typechecked
    def get_video_patch_shape(
        self, num_frames: int, include_first_frame: bool = True
    ) -> tuple[int, int, int]:
        """The token grid `(t', h', w')` of a video of `num_frames` frames."""
        self._check_num_frames(num_frames, include_first_frame)
        rest = num_frames - 1 if include_first_frame else num_frames
        steps = int(include_first_frame) + rest // self.temporal_patch_size
        return (steps, *self.patch_height_width)

    @typechecked
    def num_tokens_per_frames(self, num_frames: int, include_first_frame: bool = True) -> int:
        """Number of tokens of a `num_frames` video: `h' w' * (1 + (F - 1) / pt)`."""
        steps, h, w = self.get_video_patch_shape(num_frames, include_first_frame)
        return steps * h * w

    @typechecked
    def frames_per_num_tokens(self, num_tokens: int) -> int:
        """Inverse of `num_tokens_per_frames`: frames of a video of `num_tokens` tokens."""
        per_step = self.image_num_tokens
        if num_tokens < per_step or num_tokens % per_step:
            raise ValueError(
                f"num_tokens: expected a positive multiple of the {per_step} tokens per frame, "
                f"got {num_tokens}"
            )
        return (num_tokens // per_step - 1) * self.temporal_patch_size + 1

    def _check_frame_mask(self, mask: Tensor, batch: int, frames: int) -> Tensor:
        if mask.shape != (batch, frames):
            raise ValueError(
                f"mask: expected shape (batch, frames) = {(batch, frames)}, got {tuple(mask.shape)}"
            )
        mask = mask.bool()
        counts = mask.sum(dim=-1)
        if bool(((counts - 1) % self.temporal_patch_size != 0).any()) or not bool(mask[:, 0].all()):
            raise ValueError(
                "mask: expected each clip to keep its first frame and 1 + k * "
                f"temporal_patch_size ({self.temporal_patch_size}) frames, got counts "
                f"{counts.tolist()}"
            )
        return mask

    @typechecked
    def calculate_video_token_mask(self, videos: Tensor, video_frame_mask: Tensor) -> Tensor:
        """Token mask `(b, t' h' w')` of a frame mask `(b, F)`: a tubelet is valid if any of its
        frames is."""
        b, f = videos.shape[0], videos.shape[2]
        self._check_num_frames(f)
        mask = self._check_frame_mask(video_frame_mask, b, f)
        rest = rearrange(mask[:, 1:], "b (t p) -> b t p", p=self.temporal_patch_size).any(dim=-1)
        steps = torch.cat((mask[:, :1], rest), dim=-1)
        return repeat(steps, "b t -> b (t hw)", hw=self.image_num_tokens)

    # ------------------------------------------------------------------ encoder / decoder

    def _spatial_bias(self, device: torch.device) -> Tensor:
        return self.spatial_rel_pos_bias(*self.patch_height_width, device=device)

    def to_tokens(self, video: Tensor) -> Tensor:
        """Patch embeddings `(b, t', h', w', d)` of a video `(b, c, F, H, W)`."""
        first = self.to_patch_emb_first_frame(video[:, :, :1])
        if video.shape[2] == 1:
            return first
        return torch.cat((first, self.to_patch_emb(video[:, :, 1:])), dim=1)

    def encode(self, tokens: Tensor, spatial_bias: Tensor | None = None) -> Tensor:
        """Spatial then causal temporal transformer: `(b, t', h', w', d)` -> the same shape."""
        b, t, h, w, _ = tokens.shape
        video_shape = (b, t, h, w)
        bias = self._spatial_bias(tokens.device) if spatial_bias is None else spatial_bias
        x = rearrange(tokens, "b t h w d -> (b t) (h w) d")
        x = self.enc_spatial_transformer(x, attn_bias=bias, video_shape=video_shape)
        x = rearrange(x, "(b t) (h w) d -> (b h w) t d", b=b, h=h, w=w)
        x = self.enc_temporal_transformer(x, video_shape=video_shape)
        return rearrange(x, "(b h w) t d -> b t h w d", b=b, h=h, w=w)

    def decode(self, tokens: Tensor, spatial_bias: Tensor | None = None) -> Tensor:
        """Codes `(b, t', h', w', d)` (or flat `(b, t' h' w', d)`) -> video `(b, c, F, H, W)`."""
        h, w = self.patch_height_width
        if tokens.ndim == 3:
            tokens = rearrange(tokens, "b (t h w) d -> b t h w d", h=h, w=w)
        b, t = tokens.shape[:2]
        video_shape = (b, t, h, w)
        bias = self._spatial_bias(tokens.device) if spatial_bias is None else spatial_bias
        x = rearrange(tokens, "b t h w d -> (b h w) t d")
        x = self.dec_temporal_transformer(x, video_shape=video_shape)
        x = rearrange(x, "(b h w) t d -> (b t) (h w) d", b=b, h=h, w=w)
        x = self.dec_spatial_transformer(x, attn_bias=bias, video_shape=video_shape)
        x = rearrange(x, "(b t) (h w) d -> b t h w d", b=b, h=h, w=w)
        first = self.to_pixels_first_frame(x[:, :1])
        if t == 1:
            return first
        return torch.cat((first, self.to_pixels(x[:, 1:])), dim=2)

    def _quantize(self, tokens: Tensor, token_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """`(b, n, d)` -> quantised `(b, n, d)`, indices `(b, n)`, auxiliary loss."""
        quantized, indices, aux = self.vq(tokens, mask=token_mask)
        return quantized, indices, aux.sum()

    @typechecked
    def decode_from_codebook_indices(self, indices: Tensor) -> Tensor:
        """Codebook indices `(b, t', h', w')` or `(b, t' h' w')` -> video `(b, c, F, H, W)`."""
        flat = indices.reshape(indices.shape[0], -1)
        vq: Any = self.vq
        if self.lookup_free_quantization:
            codes = vq.indices_to_codes(flat)
        else:
            codes = vq.get_output_from_indices(flat)
        return self.decode(codes)

    # ------------------------------------------------------------------ forward

    def _check_video(self, video: Tensor, mask: Tensor | None) -> tuple[Tensor, bool]:
        if video.ndim not in (4, 5):
            raise ValueError(
                f"video: expected (b, c, f, h, w) or an image batch (b, c, h, w), got "
                f"{tuple(video.shape)}"
            )
        is_image = video.ndim == 4
        if is_image:
            if mask is not None:
                raise ValueError("mask: expected None for an image batch (b, c, h, w)")
            video = rearrange(video, "b c h w -> b c 1 h w")
        _, c, f, height, width = video.shape
        if c != self.channels or (height, width) != self.image_size:
            raise ValueError(
                f"video: expected (b, {self.channels}, f, {self.image_size[0]}, "
                f"{self.image_size[1]}), got {tuple(video.shape)}"
            )
        self._check_num_frames(f)
        return video, is_image

    def forward(
        self,
        video: Tensor,
        mask: Tensor | None = None,
        return_recons: bool = False,
        return_recons_only: bool = False,
        return_discr_loss: bool = False,
        apply_grad_penalty: bool = True,
        return_only_codebook_ids: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Encode, quantise, decode, and return what is asked for.

        Args:
            video: `(b, c, F, H, W)` or `(b, c, H, W)` in [0, 1].
            mask: `(b, F)` bool, True for valid frames (variable-length or mixed image/video
                batches; each clip keeps its first frame and `1 + k * pt` frames).
            return_recons: also return the reconstruction (same shape as `video`).
            return_recons_only: return only the reconstruction.
            return_discr_loss: return the discriminator loss (hinge or BCE, plus the gradient
                penalty `10 * (|grad D(real)| - 1)^2` if `apply_grad_penalty`); the autoencoder
                runs without gradients.
            return_only_codebook_ids: return the codes `(b, t', h', w')`.

        Returns the generator loss by default: `MSE + perceptual + quantiser aux + w * GAN`, with
        `w = |grad_L (MSE + perceptual)| / |grad_L GAN|` (clamped to 1e4) over the last layers `L`
        of both pixel heads. Without autograd (`torch.no_grad()`) the GAN term is left out.
        """
        video, is_image = self._check_video(video, mask)
        b, f = video.shape[0], video.shape[2]
        if mask is not None:
            mask = self._check_frame_mask(mask, b, f)
        if return_discr_loss and self.discr is None:
            raise ValueError(
                "return_discr_loss: this CViViT has no discriminator (use_vgg_and_gan=False)"
            )
        with torch.set_grad_enabled(torch.is_grad_enabled() and not return_discr_loss):
            recon, indices, aux_loss = self._autoencode(video, mask)
        if return_only_codebook_ids:
            return indices
        returned = rearrange(recon, "b c 1 h w -> b c h w") if is_image else recon
        if return_recons_only:
            return returned
        if return_discr_loss:
            loss = self._discriminator_loss(video, recon.detach(), mask, apply_grad_penalty)
        else:
            loss = self._generator_loss(video, recon, mask, aux_loss)
        return (loss, returned) if return_recons else loss

    def _autoencode(self, video: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        tokens = self.to_tokens(video)
        _, t, h, w, _ = tokens.shape
        bias = self._spatial_bias(video.device)
        tokens = rearrange(self.encode(tokens, bias), "b t h w d -> b (t h w) d")
        token_mask = None if mask is None else self.calculate_video_token_mask(video, mask)
        quantized, indices, aux_loss = self._quantize(tokens, token_mask)
        quantized = rearrange(quantized, "b (t h w) d -> b t h w d", t=t, h=h, w=w)
        indices = rearrange(indices, "b (t h w) -> b t h w", t=t, h=h, w=w)
        return self.decode(quantized, bias), indices, aux_loss

    def _judged(self, video: Tensor, recon: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """What the discriminator sees of the real and reconstructed clips: one random valid frame
        per clip (frame discriminator), or the whole clips with invalid frames zeroed (video)."""
        if self.discriminator_type == "frame":
            real, index = pick_frames(video, mask)
            fake = recon[torch.arange(recon.shape[0], device=recon.device), :, index]
            return real, fake
        if mask is None:
            return video, recon
        keep = rearrange(mask, "b f -> b 1 f 1 1").to(video.dtype)
        return video * keep, recon * keep

    def _reconstruction_loss(self, video: Tensor, recon: Tensor, mask: Tensor | None) -> Tensor:
        if mask is None:
            return F.mse_loss(recon, video)
        error = (recon - video).pow(2).mean(dim=(1, 3, 4))  # (b, f)
        return error[mask].mean()

    def _generator_loss(
        self, video: Tensor, recon: Tensor, mask: Tensor | None, aux_loss: Tensor
    ) -> Tensor:
        recon_loss = self._reconstruction_loss(video, recon, mask)
        if self.discr is None:
            return recon_loss + aux_loss
        real, fake = self._judged(video, recon, mask)
        nll = recon_loss
        if self.perceptual is not None:
            real_frames, fake_frames = real, fake
            if self.discriminator_type == "video":  # the perceptual loss is per frame
                real_frames, index = pick_frames(video, mask)
                fake_frames = recon[torch.arange(recon.shape[0], device=recon.device), :, index]
            nll = nll + self.perceptual_weight * self.perceptual(real_frames, fake_frames)
        gen_loss = self.gen_loss(self.discr(fake))
        if not (torch.is_grad_enabled() and gen_loss.requires_grad):
            return nll + aux_loss
        heads = [
            cast(Tensor, head[0].weight) for head in (self.to_pixels, self.to_pixels_first_frame)
        ]
        weight = adaptive_weight(nll, gen_loss, heads)
        return nll + aux_loss + weight * gen_loss

    def _discriminator_loss(
        self, video: Tensor, recon: Tensor, mask: Tensor | None, apply_grad_penalty: bool
    ) -> Tensor:
        assert self.discr is not None
        real, fake = self._judged(video, recon, mask)
        real = real.detach().requires_grad_(apply_grad_penalty)
        # The penalty differentiates through the discriminator twice: its attention must run on
        # SDPA's math kernel (the fused CPU and flash kernels have no double backward).
        with sdpa_kernel(SDPBackend.MATH) if apply_grad_penalty else contextlib.nullcontext():
            real_logits, fake_logits = self.discr(real), self.discr(fake.detach())
        loss = self.discr_loss(fake_logits, real_logits)
        if apply_grad_penalty:
            loss = loss + gradient_penalty(real, real_logits)
        return loss

    # ------------------------------------------------------------------ copies and files

    def copy_for_eval(self) -> CViViT:
        """A deep copy in eval mode without the discriminator and the perceptual network, on the
        same device; the original is left where it is (the reference moved it to the CPU)."""
        memo: dict[int, Any] = {}
        if self.discr is not None:
            memo[id(self.discr)] = None
        if self.perceptual is not None:
            memo[id(self.perceptual)] = None
        clone = copy.deepcopy(self, memo)
        clone.discr = None
        clone.perceptual = None
        return clone.eval()

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """As `nn.Module.load_state_dict`; with `strict`, weights of another configuration raise a
        `ValueError` naming the missing, unexpected and mis-shaped keys."""
        if strict:
            check_state_dict(self, state_dict, "CViViT.load_state_dict")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @typechecked
    def save_pretrained(self, folder: PathLike) -> Path:
        """Write `model.safetensors` (all weights, discriminator included) and `config.json` to
        `folder`, each atomically. Returns the folder."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = plain_state_dict(self)
        atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, {"format": "pt"}))
        config = {"format": FORMAT, "version": FORMAT_VERSION, "config": self.config}
        write_config(folder / CONFIG_NAME, config)
        return folder

    @classmethod
    @typechecked
    def from_pretrained(
        cls, folder: PathLike, *, vgg: nn.Module | None = None, **overrides: Any
    ) -> CViViT:
        """Rebuild a tokenizer saved by `save_pretrained` (on the CPU; `.to(device)` after).

        `vgg`: the perceptual network (not saved); `overrides`: constructor arguments that do not
        change the weights' shapes (e.g. `use_vgg_and_gan=False` drops the discriminator)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        config_path = folder / CONFIG_NAME
        if not config_path.is_file() or not (folder / WEIGHTS_NAME).is_file():
            raise ValueError(
                f"folder: expected a CViViT folder with {CONFIG_NAME} and {WEIGHTS_NAME}, got "
                f"{folder}"
            )
        data = json.loads(config_path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(
                f"{config_path}: expected format {FORMAT!r}, got {data.get('format')!r}"
            )
        config = dict(data["config"])
        for key in ("image_size", "patch_size", "discr_attn_res_layers"):
            config[key] = tuple(config[key])
        config.update(overrides)
        model = cls(**config, vgg=vgg)
        state = load_file(folder / WEIGHTS_NAME, device="cpu")
        if model.discr is None:
            state = {k: v for k, v in state.items() if not k.startswith("discr.")}
        load_state_checked(model, state, str(folder / WEIGHTS_NAME))
        return model
