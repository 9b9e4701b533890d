"""`KarrasUnet3D`: the EDM2 magnitude-preserving U-Net (Karras et al. 2024, config G, figure 21)
adapted to video `(b, c, t, h, w)`.

Layout, with `D = num_downsamples` and level channels `c_k = min(dim * 2**k, dim_max)`:

    input   MPConv3d(channels [+ channels if self-conditioning] + ones -> dim, 3x3x3)
            [+ gain (0 at init) * MPConv3d(channels + mask -> dim) of known frames]
    level k       encoder: [down-sampling block (k > 0)], n_k blocks
    middle        two blocks at level D (after the encoder's level D)
    level k       decoder: n_k + 1 blocks (from D down to 0), each taking the next skip through
                  mp_cat; then an up-sampling block to level k - 1's width (k > 0)
    output  MPConv3d(dim -> channels, 3x3x3) * gain, gain initialised to 0

Every encoder output (the input convolution included) is a skip. The i-th down-sampling block
halves frames and/or height and width according to `downsample_types[i]` ('all' | 'frame' |
'image'); the matching up-sampling block undoes it. Blocks whose output image resolution is in
`attn_res` carry self-attention (factorised into space then time when
`factorize_space_time_attn=True`, in every such block). The embedding is

    emb = mp_silu(mp_sum(W_noise fourier(c_noise), W_class (sqrt(num_classes) * y), mp_add_emb_t))

with `y` a one-hot (integer labels) or a float label vector, and every block modulates its residual
branch by `1 + gain * W emb`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from karras_unet3d.blocks import RESAMPLE_FACTORS, DecoderBlock, EncoderBlock
from mp_layers import Gain, MPConv3d, MPFourierEmbedding, MPLinear, mp_cat, mp_silu, mp_sum
from mp_layers.hub import HubModel
from mp_layers.typecheck import typechecked
from mp_layers.validation import check_float, check_int

__all__ = ["KarrasUnet3D"]


def _as_tuple(name: str, value: object, length: int) -> tuple[Any, ...]:
    if isinstance(value, (tuple, list)):
        if len(value) != length:
            raise ValueError(
                f"{name}: expected one entry per down-sampling stage ({length} for "
                f"num_downsamples={length}), got {len(value)}: {tuple(value)!r}"
            )
        return tuple(value)
    return (value,) * length


def _blocks_per_level(value: object, depth: int) -> tuple[int, ...]:
    """`depth + 1` block counts, one per level: an int for all, `depth + 1` ints, or `depth` ints
    (the reference's form: level 0 then repeats the first entry)."""
    if isinstance(value, (tuple, list)):
        if len(value) not in (depth, depth + 1):
            raise ValueError(
                f"num_blocks_per_stage: expected an int or {depth} or {depth + 1} ints for "
                f"num_downsamples={depth}, got {len(value)}: {tuple(value)!r}"
            )
        counts = tuple(value) if len(value) == depth + 1 else (value[0], *value)
    else:
        counts = (value,) * (depth + 1)
    return tuple(check_int("num_blocks_per_stage", n) for n in counts)


class KarrasUnet3D(nn.Module, HubModel):
    """The EDM2 magnitude-preserving 3-D U-Net (no biases, no group norm; every layer from mp-layers).

    Args:
        image_size: training height and width; must divide by 2 ** (number of 'all'/'image' stages).
        frames: training frame count; must divide by 2 ** (number of 'all'/'frame' stages).
        dim: channels of level 0; doubled at every down-sampling up to `dim_max`.
        num_classes: classes for class conditioning (None: unconditional).
        channels: channels of the video (or latent) being denoised.
        num_downsamples: number of down-sampling stages `D`.
        num_blocks_per_stage: encoder blocks `n_k` per level `0..D` besides the down-sampling
            block: an int, `D + 1` ints, or `D` ints as in the reference (level 0 then repeats the
            first entry); the decoder has `n_k + 1` per level (EDM2).
        downsample_types: per stage 'all' (frames, height, width), 'frame' or 'image' (height and
            width); a single string applies to every stage; None means 'all' everywhere.
        attn_res: image resolutions (height) at which blocks carry self-attention.
        fourier_dim: width of the Fourier features of the noise level.
        attn_dim_head: channels per attention head; heads = max(ceil(c / attn_dim_head), 2).
        mp_cat_t: weight of the skip in the decoder's mp_cat (EDM2 eq. 103).
        mp_add_emb_t: weight of the class embedding against the noise embedding (eq. 88).
        attn_res_mp_add_t: weight of the attention branch in its residual mp_sum.
        resnet_mp_add_t: weight of the residual branch of every block.
        dropout: dropout before the second convolution of every residual branch.
        self_condition: accept the previous denoised estimate as extra input channels.
        factorize_space_time_attn: spatial then temporal attention instead of full attention.
        gradient_checkpointing: recompute block activations in the backward pass (saves memory
            during training at the cost of one more forward per block).
        channels_last: run every feature map in `torch.channels_last_3d` (the input is converted
            once, the output is returned contiguous): oneDNN's convolutions, their weight
            gradients above all, are faster so on CPU. Same function either way.
        frame_condition: accept known frames and their mask (`frame_cond`, image to video),
            through their own input convolution added to the input features by a gain that
            starts at 0: the network's output is unchanged until it is trained with them.

    Shapes: `forward(x (b, channels, f, h, w), time (b,), self_cond (b, channels, f, h, w) | None,
    class_labels (b,) int | (b, num_classes) float | None) -> (b, channels, f, h, w)`, for every
    `f`, `h`, `w` divisible by `downsample_factor` (not only the training shape).
    """

    @typechecked
    def __init__(
        self,
        *,
        image_size: int,
        frames: int,
        dim: int = 192,
        dim_max: int = 768,
        num_classes: int | None = None,
        channels: int = 4,
        num_downsamples: int = 3,
        num_blocks_per_stage: int | Sequence[int] = 4,
        downsample_types: str | Sequence[str] | None = None,
        attn_res: int | Sequence[int] = (16, 8),
        fourier_dim: int = 16,
        attn_dim_head: int = 64,
        mp_cat_t: float = 0.5,
        mp_add_emb_t: float = 0.5,
        attn_res_mp_add_t: float = 0.3,
        resnet_mp_add_t: float = 0.3,
        dropout: float = 0.1,
        self_condition: bool = False,
        factorize_space_time_attn: bool = False,
        gradient_checkpointing: bool = False,
        channels_last: bool = True,
        frame_condition: bool = False,
    ) -> None:
        super().__init__()
        self.image_size = check_int("image_size", image_size)
        self.frames = check_int("frames", frames)
        self.dim = check_int("dim", dim)
        self.dim_max = check_int("dim_max", dim_max)
        if num_classes is not None:
            check_int("num_classes", num_classes)
        self.num_classes = num_classes
        self.channels = check_int("channels", channels)
        self.num_downsamples = depth = check_int("num_downsamples", num_downsamples)
        blocks = _blocks_per_level(num_blocks_per_stage, depth)
        types = _as_tuple(
            "downsample_types", "all" if downsample_types is None else downsample_types, depth
        )
        for kind in types:
            if kind not in RESAMPLE_FACTORS:
                raise ValueError(
                    f"downsample_types: expected each of {sorted(RESAMPLE_FACTORS)}, got {kind!r}"
                )
        attn_res_set = {
            check_int("attn_res", r)
            for r in ((attn_res,) if isinstance(attn_res, int) else attn_res)
        }
        self.fourier_dim = check_int("fourier_dim", fourier_dim, minimum=2)
        self.attn_dim_head = check_int("attn_dim_head", attn_dim_head)
        self.mp_cat_t = check_float("mp_cat_t", mp_cat_t, low=0.0, high=1.0)
        self.mp_add_emb_t = check_float("mp_add_emb_t", mp_add_emb_t, low=0.0, high=1.0)
        check_float("attn_res_mp_add_t", attn_res_mp_add_t, low=0.0, high=1.0)
        check_float("resnet_mp_add_t", resnet_mp_add_t, low=0.0, high=1.0)
        check_float("dropout", dropout, low=0.0, high=1.0)
        self.self_condition = self_condition
        self.frame_condition = frame_condition
        self.factorize_space_time_attn = factorize_space_time_attn
        self.gradient_checkpointing = gradient_checkpointing
        self.channels_last = channels_last

        factors = [RESAMPLE_FACTORS[kind] for kind in types]
        self.frame_factor = math.prod(f[0] for f in factors)
        self.image_factor = math.prod(f[1] for f in factors)
        if frames % self.frame_factor:
            raise ValueError(
                f"frames: downsample_types {types} halve the frames {int(math.log2(self.frame_factor))} "
                f"times, so frames must be divisible by {self.frame_factor}, got {frames}"
            )
        if image_size % self.image_factor:
            raise ValueError(
                f"image_size: downsample_types {types} halve height and width "
                f"{int(math.log2(self.image_factor))} times, so image_size must be divisible by "
                f"{self.image_factor}, got {image_size}"
            )
        self.config: dict[str, Any] = {
            "image_size": image_size, "frames": frames, "dim": dim, "dim_max": dim_max,
            "num_classes": num_classes, "channels": channels, "num_downsamples": depth,
            "num_blocks_per_stage": list(blocks), "downsample_types": list(types),
            "attn_res": sorted(attn_res_set), "fourier_dim": fourier_dim,
            "attn_dim_head": attn_dim_head, "mp_cat_t": mp_cat_t, "mp_add_emb_t": mp_add_emb_t,
            "attn_res_mp_add_t": attn_res_mp_add_t, "resnet_mp_add_t": resnet_mp_add_t,
            "dropout": dropout, "self_condition": self_condition,
            "factorize_space_time_attn": factorize_space_time_attn,
            "gradient_checkpointing": gradient_checkpointing,
            "channels_last": channels_last, "frame_condition": frame_condition,
        }  # fmt: skip

        # embedding of the noise level (and class)
        emb_dim = dim * 4
        self.time_fourier = MPFourierEmbedding(fourier_dim)
        self.time_linear = MPLinear(fourier_dim, emb_dim)
        self.class_linear = MPLinear(num_classes, emb_dim) if num_classes is not None else None

        # resolution bookkeeping: image size and channels at every level
        res = [image_size]
        for f in factors:
            res.append(res[-1] // f[1])
        chans = [min(dim * 2**k, dim_max) for k in range(depth + 1)]

        def block_kwargs(level: int) -> dict[str, Any]:
            has_attn = res[level] in attn_res_set
            return {
                "emb_dim": emb_dim,
                "dropout": dropout,
                "resnet_mp_add_t": resnet_mp_add_t,
                "attn_heads": max(math.ceil(chans[level] / attn_dim_head), 2) if has_attn else None,
                "attn_dim_head": attn_dim_head,
                "attn_res_mp_add_t": attn_res_mp_add_t,
                "factorize_space_time_attn": factorize_space_time_attn,
            }

        dim_in = channels * (2 if self_condition else 1)
        self.input_conv = MPConv3d(dim_in, dim, 3, concat_ones_to_input=True)
        if frame_condition:  # known frames + their mask, added through a gain that starts at 0
            self.frame_cond_conv = MPConv3d(channels + 1, dim, 3)
            self.frame_cond_gain = Gain()
        self.encoder = nn.ModuleList()
        skip_chans = [dim]
        for level in range(depth + 1):
            if level > 0:
                down = EncoderBlock(
                    chans[level - 1],
                    chans[level],
                    resample=factors[level - 1],
                    **block_kwargs(level),
                )
                self.encoder.append(down)
                skip_chans.append(chans[level])
            for _ in range(blocks[level]):
                self.encoder.append(EncoderBlock(chans[level], chans[level], **block_kwargs(level)))
                skip_chans.append(chans[level])

        self.middle = nn.ModuleList(
            DecoderBlock(chans[depth], chans[depth], **block_kwargs(depth)) for _ in range(2)
        )

        self.decoder = nn.ModuleList()
        self.decoder_takes_skip: list[bool] = []
        cur = chans[depth]
        for level in reversed(range(depth + 1)):
            for _ in range(blocks[level] + 1):
                block = DecoderBlock(cur + skip_chans.pop(), chans[level], **block_kwargs(level))
                self.decoder.append(block)
                self.decoder_takes_skip.append(True)
                cur = chans[level]
            if level > 0:
                # the up-sampling block also narrows to the next level's width (as the reference
                # does; EDM2 keeps the width here), so no wide convolution runs at the finer size
                up = DecoderBlock(
                    cur, chans[level - 1], resample=factors[level - 1], **block_kwargs(level - 1)
                )
                self.decoder.append(up)
                self.decoder_takes_skip.append(False)
                cur = chans[level - 1]
        if skip_chans:  # pragma: no cover - a bookkeeping bug, not a user error
            raise RuntimeError(f"unconsumed skips {skip_chans}")

        self.output_conv = MPConv3d(dim, channels, 3)
        self.output_gain = Gain()  # zero at init: the network starts by predicting 0

    @property
    def downsample_factor(self) -> tuple[int, int, int]:
        """`(frames, height, width)` factors every input size must divide by."""
        return (self.frame_factor, self.image_factor, self.image_factor)

    @property
    def needs_class_labels(self) -> bool:
        """Whether `forward` requires `class_labels`."""
        return self.num_classes is not None

    @classmethod
    @typechecked
    def from_config(cls, config: dict[str, Any]) -> KarrasUnet3D:
        """Rebuild a network from its `config` dict (e.g. read back from JSON)."""
        kwargs = dict(config)
        for key in ("num_blocks_per_stage", "downsample_types", "attn_res"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    @typechecked
    def label_vector(self, class_labels: Tensor, batch: int) -> Tensor:
        """Validate `class_labels` and return them as a float `(b, num_classes)` vector.

        Integer labels `(b,)` in `[0, num_classes)` become one-hot rows; float vectors
        `(b, num_classes)` pass through (a zero row is the unconditional label of CFG).
        """
        if self.num_classes is None:
            raise ValueError(
                "class_labels: this model is unconditional (num_classes=None), got class_labels"
            )
        if class_labels.is_floating_point():
            if class_labels.shape != (batch, self.num_classes):
                raise ValueError(
                    f"class_labels: expected a float label vector of shape "
                    f"({batch}, {self.num_classes}), got {tuple(class_labels.shape)}"
                )
            return class_labels.float()
        if class_labels.dtype == torch.bool or class_labels.is_complex():
            raise TypeError(
                f"class_labels: expected integer or float labels, got {class_labels.dtype}"
            )
        if class_labels.shape != (batch,):
            raise ValueError(
                f"class_labels: expected integer labels of shape ({batch},), "
                f"got {tuple(class_labels.shape)}"
            )
        if not torch.compiler.is_compiling():  # a data-dependent check; skipped inside compile
            low, high = int(class_labels.min()), int(class_labels.max())
            if low < 0 or high >= self.num_classes:
                raise ValueError(
                    f"class_labels: expected labels in [0, {self.num_classes - 1}], "
                    f"got values in [{low}, {high}]"
                )
        classes = torch.arange(self.num_classes, device=class_labels.device)
        return (class_labels[:, None] == classes).float()

    def _check_input(self, x: Tensor) -> Tensor:
        if not x.is_floating_point():
            raise TypeError(f"x: expected a floating-point tensor, got dtype {x.dtype}")
        if x.ndim != 5 or x.shape[1] != self.channels:
            raise ValueError(
                f"x: expected a video of shape (b, {self.channels}, frames, height, width), "
                f"got {tuple(x.shape)}"
            )
        _, _, f, h, w = x.shape
        ft, fh, fw = self.downsample_factor
        if f % ft or h % fh or w % fw:
            raise ValueError(
                f"x: frames, height and width must be divisible by {self.downsample_factor} "
                f"(the model's down-sampling), got {(f, h, w)}"
            )
        return x

    def _check_time(self, time: Tensor | float, batch: int, device: torch.device) -> Tensor:
        if isinstance(time, bool):  # an int passes the hint `float`, and so does a bool
            raise TypeError("time: expected a float or a float tensor, got a bool")
        if not isinstance(time, Tensor):
            return torch.full((batch,), float(time), device=device)
        if not time.is_floating_point():
            raise TypeError(
                f"time: expected a float noise conditioning (EDM2's c_noise = ln(sigma) / 4), "
                f"got an integer tensor of dtype {time.dtype}"
            )
        if time.ndim == 0:
            return time.expand(batch)
        if time.shape != (batch,):
            raise ValueError(f"time: expected shape ({batch},) or (), got {tuple(time.shape)}")
        return time

    def _check_inputs(
        self,
        x: Tensor,
        time: Tensor | float,
        self_cond: Tensor | None,
        class_labels: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """`forward`'s inputs, checked: `x`, `time (b,)`, the label vector `(b, num_classes)` (None
        for an unconditional model) and `self_cond` (None: zeros)."""
        x = self._check_input(x)
        batch = x.shape[0]
        time = self._check_time(time, batch, x.device)
        labels = None
        if self.class_linear is not None:
            if class_labels is None:
                raise ValueError(
                    f"class_labels: this model is class-conditional (num_classes="
                    f"{self.num_classes}), expected labels of shape ({batch},) or "
                    f"({batch}, {self.num_classes}), got None"
                )
            labels = self.label_vector(class_labels, batch)
        elif class_labels is not None:
            self.label_vector(class_labels, batch)  # raises: unconditional model
        if self.self_condition:
            if self_cond is not None and self_cond.shape != x.shape:
                raise ValueError(
                    f"self_cond: expected the shape of x {tuple(x.shape)}, got {tuple(self_cond.shape)}"
                )
        elif self_cond is not None:
            raise ValueError(
                "self_cond: this model was built with self_condition=False, got a self_cond tensor"
            )
        return x, time, labels, self_cond

    def _check_frame_cond(self, x: Tensor, frame_cond: Tensor | None) -> None:
        if not self.frame_condition:
            if frame_cond is not None:
                raise ValueError(
                    "frame_cond: this model was built with frame_condition=False, got a tensor"
                )
            return
        expected = (x.shape[0], self.channels + 1, *x.shape[2:])
        if frame_cond is not None and tuple(frame_cond.shape) != expected:
            raise ValueError(
                f"frame_cond: expected the known frames and their mask {expected} (channels + 1),"
                f" got {tuple(frame_cond.shape)}"
            )

    def _run(self, block: nn.Module, x: Tensor, emb: Tensor) -> Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            out: Tensor = checkpoint(block, x, emb, use_reentrant=False)
            return out
        result: Tensor = block(x, emb)
        return result

    @typechecked
    def forward(
        self,
        x: Tensor,
        time: Tensor | float,
        self_cond: Tensor | None = None,
        class_labels: Tensor | None = None,
        frame_cond: Tensor | None = None,
    ) -> Tensor:
        """Denoiser network output for `x (b, channels, f, h, w)` at noise conditioning `time (b,)`.

        `time` is the noise conditioning, a float per item (EDM2: `c_noise = ln(sigma) / 4`).
        `self_cond` (self-conditioning models only) is the previous estimate, zeros when None.
        `class_labels` are `(b,)` integers or `(b, num_classes)` float vectors.
        `frame_cond` (`frame_condition` models only) `(b, channels + 1, f, h, w)`: known frames
        (zeros elsewhere) and a mask channel (1 on known frames); None: nothing known.
        Returns `(b, channels, f, h, w)`.
        """
        x, time, labels, self_cond = self._check_inputs(x, time, self_cond, class_labels)
        self._check_frame_cond(x, frame_cond)

        emb = self.time_linear(self.time_fourier(time))
        if self.class_linear is not None:
            assert labels is not None  # checked: a class-conditional model has labels
            labels = labels * math.sqrt(self.class_linear.dim_in)
            emb = mp_sum(emb, self.class_linear(labels), self.mp_add_emb_t)
        emb = mp_silu(emb)
        if self.self_condition:
            previous = torch.zeros_like(x) if self_cond is None else self_cond.to(x.dtype)
            x = torch.cat((previous, x), dim=1)

        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        x = self.input_conv(x)
        if self.frame_condition and frame_cond is not None:
            cond = frame_cond.to(x.dtype)
            if self.channels_last:
                cond = cond.contiguous(memory_format=torch.channels_last_3d)
            x = x + self.frame_cond_gain(self.frame_cond_conv(cond))
        skips = [x]
        for block in self.encoder:
            x = self._run(block, x, emb)
            skips.append(x)
        for block in self.middle:
            x = self._run(block, x, emb)
        for block, takes_skip in zip(self.decoder, self.decoder_takes_skip, strict=True):
            if takes_skip:
                x = mp_cat(x, skips.pop(), dim=1, t=self.mp_cat_t)
            x = self._run(block, x, emb)
        out: Tensor = self.output_gain(self.output_conv(x))
        return out.contiguous()
