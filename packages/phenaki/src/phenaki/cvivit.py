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

This module holds the tokenizer itself; its patch embeddings, pixel heads, quantiser and
space-time passes are in `phenaki.cvivit_blocks`, its token arithmetic (frames, tokens, frame
masks) in `phenaki.cvivit_geometry`, and the way its training losses combine in
`phenaki.cvivit_losses`.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any, Literal, cast

import torch
from einops import rearrange
from torch import Tensor, nn

from mp_layers.hub import HubModel
from mp_layers.pretrained import check_state_dict, load_state_checked
from mp_layers.typecheck import typechecked
from phenaki.attention import ContinuousPositionBias, Transformer
from phenaki.cvivit_blocks import (
    decode_space_time,
    encode_space_time,
    pixel_heads,
    quantizer,
    to_pair,
    token_embeddings,
)
from phenaki.cvivit_geometry import PatchGeometry
from phenaki.cvivit_losses import adversarial_networks, discriminator_loss, generator_loss
from phenaki.losses import bce_discr_loss, bce_gen_loss, hinge_discr_loss, hinge_gen_loss
from phenaki.perceptual import PerceptualLoss

__all__ = ["CViViT"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "phenaki.CViViT"  # the config.json of phenaki 0.1.0 (still read)
FORMAT_VERSION = 1

PathLike = str | os.PathLike[str]


class CViViT(nn.Module, HubModel):
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

    Files (`mp_layers.hub.HubModel`): `save_pretrained(folder)` writes `config.json` (these
    arguments but `vgg`) and `model.safetensors` (all weights, discriminator included);
    `from_pretrained(folder_or_repo_id, vgg=None, **overrides)` rebuilds it on the CPU (overrides
    that keep the weights' shapes, e.g. `use_vgg_and_gan=False` drops the discriminator), also
    from a folder written by phenaki 0.1.0; `push_to_hub(repo_id)` publishes it.
    """

    @typechecked
    def __init__(
        self,
        *,
        dim: int,
        codebook_size: int,
        image_size: int | tuple[int, int],  # spelt out: `mp_layers.hub` reads JSON lists back
        patch_size: int | tuple[int, int],
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
        self.image_size = to_pair(image_size, "image_size")
        self.patch_size = to_pair(patch_size, "patch_size")
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
        self.geometry = PatchGeometry(
            channels=channels,
            image_size=self.image_size,
            patch=self.patch_size,
            temporal_patch_size=temporal_patch_size,
        )
        self.to_patch_emb_first_frame, self.to_patch_emb = token_embeddings(self.geometry, dim)
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
        self.vq = quantizer(
            dim=dim,
            codebook_size=codebook_size,
            lookup_free=lookup_free_quantization,
            lfq_kwargs=lfq_kwargs,
        )
        self.dec_spatial_transformer = Transformer(**spatial)
        self.dec_temporal_transformer = Transformer(**temporal, peg_causal=True)
        self.to_pixels_first_frame, self.to_pixels = pixel_heads(self.geometry, dim)

        self.discr: nn.Module | None = None
        # Not a submodule: never trained, never in state_dict() or an optimizer (defect P8).
        self.perceptual: PerceptualLoss | None = None
        if use_vgg_and_gan:
            self.perceptual, self.discr = adversarial_networks(
                vgg=vgg,
                perceptual_weight=perceptual_weight,
                discriminator=discriminator,
                discr_base_dim=discr_base_dim,
                image_size=self.image_size,
                channels=channels,
                attn_res_layers=tuple(self.config["discr_attn_res_layers"]),
            )
        self.discr_loss = hinge_discr_loss if use_hinge_loss else bce_discr_loss
        self.gen_loss = hinge_gen_loss if use_hinge_loss else bce_gen_loss

    # ------------------------------------------------------------------ token geometry

    @property
    def patch_height_width(self) -> tuple[int, int]:
        """Tokens per frame along height and width: `(H // p1, W // p2)`."""
        return self.geometry.patch_height_width

    @property
    def image_num_tokens(self) -> int:
        """Tokens of one frame (or of one tubelet step): `h' * w'`."""
        return self.geometry.image_num_tokens

    @typechecked
    def get_video_patch_shape(
        self, num_frames: int, include_first_frame: bool = True
    ) -> tuple[int, int, int]:
        """The token grid `(t', h', w')` of a video of `num_frames` frames."""
        return self.geometry.video_patch_shape(num_frames, include_first_frame)

    @typechecked
    def num_tokens_per_frames(self, num_frames: int, include_first_frame: bool = True) -> int:
        """Number of tokens of a `num_frames` video: `h' w' * (1 + (F - 1) / pt)`."""
        steps, h, w = self.get_video_patch_shape(num_frames, include_first_frame)
        return steps * h * w

    @typechecked
    def frames_per_num_tokens(self, num_tokens: int) -> int:
        """Inverse of `num_tokens_per_frames`: frames of a video of `num_tokens` tokens."""
        return self.geometry.frames_per_num_tokens(num_tokens)

    @typechecked
    def calculate_video_token_mask(self, videos: Tensor, video_frame_mask: Tensor) -> Tensor:
        """Token mask `(b, t' h' w')` of a frame mask `(b, F)`: a tubelet is valid if any of its
        frames is."""
        return self.geometry.video_token_mask(video_frame_mask, videos.shape[0], videos.shape[2])

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
        bias = self._spatial_bias(tokens.device) if spatial_bias is None else spatial_bias
        return encode_space_time(
            self.enc_spatial_transformer, self.enc_temporal_transformer, tokens, bias
        )

    def decode(self, tokens: Tensor, spatial_bias: Tensor | None = None) -> Tensor:
        """Codes `(b, t', h', w', d)` (or flat `(b, t' h' w', d)`) -> video `(b, c, F, H, W)`."""
        h, w = self.patch_height_width
        if tokens.ndim == 3:
            tokens = rearrange(tokens, "b (t h w) d -> b t h w d", h=h, w=w)
        bias = self._spatial_bias(tokens.device) if spatial_bias is None else spatial_bias
        x = decode_space_time(
            self.dec_temporal_transformer, self.dec_spatial_transformer, tokens, bias
        )
        first = self.to_pixels_first_frame(x[:, :1])
        if x.shape[1] == 1:
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

    def _check_inputs(
        self, video: Tensor, mask: Tensor | None, return_discr_loss: bool
    ) -> tuple[Tensor, Tensor | None, bool]:
        """The checks of `forward`'s arguments: the video `(b, c, F, H, W)` (an image batch
        `(b, c, H, W)` becomes one-frame clips), its frame mask (as bool) and whether a
        discriminator loss can be computed. Returns the video, the mask and whether it was an
        image batch."""
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
        self.geometry.check_num_frames(f)
        if mask is not None:
            mask = self.geometry.check_frame_mask(mask, video.shape[0], f)
        if return_discr_loss and self.discr is None:
            raise ValueError(
                "return_discr_loss: this CViViT has no discriminator (use_vgg_and_gan=False)"
            )
        return video, mask, is_image

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
        video, mask, is_image = self._check_inputs(video, mask, return_discr_loss)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not return_discr_loss):
            recon, indices, aux_loss = self._autoencode(video, mask)
        if return_only_codebook_ids:
            return indices
        returned = rearrange(recon, "b c 1 h w -> b c h w") if is_image else recon
        if return_recons_only:
            return returned
        if return_discr_loss:
            assert self.discr is not None  # checked above
            loss = discriminator_loss(
                video,
                recon.detach(),
                mask,
                discr=self.discr,
                discr_loss=self.discr_loss,
                discriminator_type=self.discriminator_type,
                apply_grad_penalty=apply_grad_penalty,
            )
        else:
            loss = generator_loss(
                video,
                recon,
                mask,
                aux_loss,
                discr=self.discr,
                gen_loss=self.gen_loss,
                perceptual=self.perceptual,
                perceptual_weight=self.perceptual_weight,
                discriminator_type=self.discriminator_type,
                heads=self._last_layers(),
            )
        return (loss, returned) if return_recons else loss

    def _last_layers(self) -> list[Tensor]:
        """The weights of both pixel heads' linear layers (the adaptive GAN weight's `L`)."""
        return [
            cast(Tensor, head[0].weight) for head in (self.to_pixels, self.to_pixels_first_frame)
        ]

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

    # ------------------------------------------------------------------ files (mp_layers.hub)

    def _hub_config(self) -> dict[str, Any]:
        """The constructor's arguments (without `vgg`, never saved); an evaluation copy without
        its discriminator is saved as a tokenizer without GAN."""
        return {**self.config, "use_vgg_and_gan": self.use_vgg_and_gan and self.discr is not None}

    def _hub_state_for_load(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A tokenizer loaded without GAN (`use_vgg_and_gan=False`) drops the saved
        discriminator's weights."""
        if self.discr is None:
            return {k: v for k, v in state.items() if not k.startswith("discr.")}
        return state

    @classmethod
    def _hub_load_legacy(
        cls, folder: Path, config: dict[str, Any], kwargs: dict[str, Any]
    ) -> CViViT | None:
        """A folder written by phenaki 0.1.0 (`{"format": "phenaki.CViViT", "version": 1,
        "config": {...}}` + `model.safetensors`); `kwargs` override the saved arguments."""
        if config.get("format") != FORMAT:
            return None
        from safetensors.torch import load_file

        if config.get("version") != FORMAT_VERSION or not isinstance(config.get("config"), dict):
            raise ValueError(
                f"{folder / CONFIG_NAME}: expected format {FORMAT!r} version {FORMAT_VERSION}"
            )
        arguments = dict(config["config"])
        for key in ("image_size", "patch_size", "discr_attn_res_layers"):
            arguments[key] = tuple(arguments[key])
        model = cls(**{**arguments, **kwargs})
        path = folder / WEIGHTS_NAME
        if not path.is_file():
            raise ValueError(f"{folder}: expected a CViViT folder with {WEIGHTS_NAME}")
        state = model._hub_state_for_load(load_file(path, device="cpu"))
        load_state_checked(model, state, str(path))
        return model
