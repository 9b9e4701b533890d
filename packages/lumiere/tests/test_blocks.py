"""The temporal blocks: identity at init, layouts, temporal mixing, magnitude preservation,
resampling and validation (issue 12, sections 1 and 5; reference defects 2-7 and 11)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from einops import rearrange
from torch import Tensor, nn

from lumiere import (
    AttentionInflationBlock,
    ConvolutionInflationBlock,
    MPAttentionInflationBlock,
    MPConvolutionInflationBlock,
    MPTemporalDownsample,
    MPTemporalUpsample,
    TemporalDownsample,
    TemporalUpsample,
)
from lumiere.blocks import ChannelRMSNorm
from mp_layers import GatedMPSum, MPAttention, MPConv2d, MPConv3d, MPLinear, mp_sum

DIM = 8
B, T, H, W = 2, 4, 3, 3
ATTN_KWARGS: dict[str, int] = {"heads": 2, "dim_head": 8}

INFLATION = ["conv", "attn", "mp_conv", "mp_attn"]
PLAIN_INFLATION = ["conv", "attn"]
MP_INFLATION = ["mp_conv", "mp_attn"]
LAYOUTS = ["video", "frames", "video_channel_last", "frames_channel_last"]
RESAMPLERS = [TemporalDownsample, TemporalUpsample, MPTemporalDownsample, MPTemporalUpsample]
# frames out per frame in, and the tolerance of a constant clip (MP: EDM2's normalisation eps)
FACTOR = {
    TemporalDownsample: 0.5,
    TemporalUpsample: 2,
    MPTemporalDownsample: 0.5,
    MPTemporalUpsample: 2,
}
CONSTANT_TOL = {
    TemporalDownsample: 1e-6,
    TemporalUpsample: 1e-6,
    MPTemporalDownsample: 1e-3,
    MPTemporalUpsample: 1e-3,
}
ALL_BLOCKS = ["conv", "attn", "mp_conv", "mp_attn", *(cls.__name__ for cls in RESAMPLERS)]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """The tensors here are tiny: on a busy machine, intra-op threads only wait on each other
    (about 50 ms per convolution with 2 threads on 2 loaded cores, against 0.1 ms with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(kind: str, **kwargs: object) -> nn.Module:
    """A block by short name (tiny attention heads), or a resampler by class name."""
    if kind == "conv":
        return ConvolutionInflationBlock(dim=DIM, **kwargs)
    if kind == "attn":
        return AttentionInflationBlock(dim=DIM, **ATTN_KWARGS, **kwargs)
    if kind == "mp_conv":
        return MPConvolutionInflationBlock(dim=DIM, **kwargs)
    if kind == "mp_attn":
        return MPAttentionInflationBlock(dim=DIM, **ATTN_KWARGS, **kwargs)
    resampler = {cls.__name__: cls for cls in RESAMPLERS}[kind]
    return resampler(DIM, **kwargs)


def activate(block: nn.Module) -> nn.Module:
    """Make an inflation block's branch count: random plain `proj_out`, MP gain 1."""
    with torch.no_grad():
        if hasattr(block, "residual"):
            block.residual.gain.fill_(1.0)
        else:
            nn.init.normal_(block.proj_out.weight, std=0.5)
            nn.init.normal_(block.proj_out.bias, std=0.1)
    return block


def to_frames(video: Tensor) -> Tensor:
    """`(b, c, t, h, w) -> (b·t, c, h, w)`."""
    return rearrange(video, "b c t h w -> (b t) c h w")


def in_layout(video: Tensor, layout: str) -> Tensor:
    """`video (b, c, t, h, w)` in one of LAYOUTS."""
    x = to_frames(video) if layout.startswith("frames") else video
    return x.movedim(1, -1) if layout.endswith("channel_last") else x


def max_diff(a: Tensor, b: Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def video(*shape: int) -> Tensor:
    return torch.randn(*shape) if shape else torch.randn(B, DIM, T, H, W)


# --- identity at initialisation -----------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", INFLATION)
@pytest.mark.parametrize("clips_from", ["batch_size", "time_dim"])
def test_inflation_block_is_an_exact_identity_at_init_in_every_layout_and_mode(
    kind: str, layout: str, clips_from: str
) -> None:
    channel_last = layout.endswith("channel_last")
    if clips_from == "time_dim":
        block, forward_kwargs = make(kind, channel_last=channel_last, time_dim=T), {}
    else:
        block, forward_kwargs = make(kind, channel_last=channel_last), {"batch_size": B}
    x = in_layout(video(), layout)
    assert block.training
    assert max_diff(block(x, **forward_kwargs), x) <= 1e-6
    block.eval()
    assert max_diff(block(x, **forward_kwargs), x) <= 1e-6
    with torch.no_grad():
        assert max_diff(block(x, **forward_kwargs), x) <= 1e-6


@pytest.mark.parametrize("kind", MP_INFLATION)
def test_mp_inflation_block_does_not_scale_the_input_at_init(kind: str) -> None:
    """Reference defect 3: the reference's MPAdd gave 0.394 x at init."""
    block = make(kind, mp_add_t=0.3)
    x = video()
    ratio = block(x).norm() / x.norm()
    assert ratio.item() == pytest.approx(1.0, abs=1e-6)


# --- learning --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", INFLATION)
def test_inflation_block_is_not_an_identity_once_its_branch_is_on(kind: str) -> None:
    block = activate(make(kind))
    x = video()
    assert max_diff(block(x), x) > 1e-3


@pytest.mark.parametrize("kind", INFLATION)
def test_gradients_reach_the_first_learning_parameter_and_one_step_changes_the_output(
    kind: str,
) -> None:
    block = make(kind)
    x, target = video(), video()
    nn.functional.mse_loss(block(x), target).backward()
    if kind in PLAIN_INFLATION:
        first = [block.proj_out.weight, block.proj_out.bias]
    else:
        first = [block.residual.gain]
    for parameter in first:
        assert parameter.grad is not None
        assert parameter.grad.abs().max().item() > 0
    torch.optim.SGD(block.parameters(), lr=0.1).step()
    with torch.no_grad():
        assert max_diff(block(x), x) > 1e-4


# --- temporal attention ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["attn", "mp_attn"])
def test_temporal_attention_is_not_permutation_equivariant_over_frames(kind: str) -> None:
    """Reference defect 11: without a position signal, permuting frames commuted with the block."""
    block = activate(make(kind)).eval()
    x = video(1, DIM, 5, 2, 2)
    perm = torch.tensor([2, 0, 3, 4, 1])
    inverse = torch.argsort(perm)
    with torch.no_grad():
        out = block(x)
        permuted = block(x[:, :, perm])[:, :, inverse]
    assert max_diff(permuted, out) > 1e-3


@pytest.mark.parametrize("kind", ["attn", "mp_attn"])
def test_temporal_attention_is_computed_per_pixel_and_per_clip(kind: str) -> None:
    block = activate(make(kind)).eval()
    x = video(2, DIM, 5, 2, 2)
    changed = x.clone()
    changed[0, :, :, 0, 0] = torch.randn(DIM, 5)
    with torch.no_grad():
        out, out_changed = block(x), block(changed)
    assert max_diff(out_changed[0, :, :, 0, 0], out[0, :, :, 0, 0]) > 1e-3
    untouched = torch.ones(2, 2, 2, dtype=torch.bool)
    untouched[0, 0, 0] = False  # (clip, h, w)
    rest = out.permute(0, 3, 4, 1, 2)[untouched]
    rest_changed = out_changed.permute(0, 3, 4, 1, 2)[untouched]
    assert max_diff(rest_changed, rest) <= 1e-6


# --- convolution inflation ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["conv", "mp_conv"])
def test_convolution_inflation_mixes_neighbouring_frames_within_a_clip_only(kind: str) -> None:
    block = activate(make(kind)).eval()
    x = video()
    changed = x.clone()
    changed[0, :, 0] = torch.randn(DIM, H, W)
    with torch.no_grad():
        out, out_changed = block(x), block(changed)
    assert max_diff(out_changed[0, :, 1], out[0, :, 1]) > 1e-3  # frame 0 reaches frame 1
    # kernel 3 in time: frame 0 does not reach frame 3; the other clip is untouched
    assert max_diff(out_changed[0, :, 3], out[0, :, 3]) <= 1e-6
    assert max_diff(out_changed[1], out[1]) <= 1e-6


@pytest.mark.parametrize("kind", ["conv", "mp_conv"])
def test_convolution_inflation_groups_frames_into_clips_by_batch_size(kind: str) -> None:
    block = activate(make(kind)).eval()
    x = video()
    frames = to_frames(x)
    with torch.no_grad():
        right = block(frames, batch_size=B)
        wrong = block(frames, batch_size=2 * B)  # clips of T/2 frames
        assert max_diff(right, to_frames(block(x))) <= 1e-5
    assert max_diff(wrong, right) > 1e-3


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", INFLATION)
def test_trained_inflation_block_gives_the_same_result_in_every_layout(
    kind: str, layout: str
) -> None:
    """Frames are `(b t)` clip-major and channel-last is only a transposition."""
    reference = activate(make(kind)).eval()
    block = make(kind, channel_last=layout.endswith("channel_last")).eval()
    block.load_state_dict(reference.state_dict())
    x = video()
    with torch.no_grad():
        expected = in_layout(reference(x), layout)
        kwargs = {"batch_size": B} if layout.startswith("frames") else {}
        assert max_diff(block(in_layout(x, layout), **kwargs), expected) <= 1e-5


# --- magnitude-preserving blocks --------------------------------------------------------------


@pytest.mark.parametrize("mp_add_t", [0.3, 0.6])
@pytest.mark.parametrize("kind", MP_INFLATION)
def test_mp_inflation_block_at_unit_gain_is_edm2_mp_sum_with_t_the_branch_weight(
    kind: str, mp_add_t: float
) -> None:
    block = activate(make(kind, mp_add_t=mp_add_t)).eval()
    x = video()
    captured: list[Tensor] = []
    block.proj_out.register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.no_grad():
        out = block(x)
    (branch,) = captured
    if kind == "mp_attn":  # proj_out works on per-pixel sequences `(b h w) t c`
        branch = rearrange(branch, "(b h w) t c -> b c t h w", b=B, h=H, w=W)
    else:  # the convolution's proj_out works on time series `(b, c, t, h·w)`
        branch = branch.reshape(B, -1, branch.shape[2], H, W)
    assert max_diff(branch, x) > 1e-2  # a real branch
    assert max_diff(out, mp_sum(x, branch, mp_add_t)) <= 1e-5
    # the residual balance is not reversed (the reference gave the branch 1 - t)
    assert max_diff(out, mp_sum(x, branch, 1.0 - mp_add_t)) > 1e-3


@pytest.mark.parametrize("gain", [0.0, 1.0, 3.0])
def test_mp_convolution_inflation_preserves_unit_magnitude_for_every_gain(gain: float) -> None:
    """Measured away from the clip's borders: the bias-free convolutions zero-pad ('same', as in
    EDM2), which lowers the branch's magnitude on the first and last frame, row and column."""
    block = MPConvolutionInflationBlock(dim=16).eval()
    with torch.no_grad():
        block.residual.gain.fill_(gain)
        x = torch.randn(2, 16, 8, 8, 8)
        out = block(x)
    interior = out[:, :, 1:-1, 1:-1, 1:-1]
    assert interior.std().item() == pytest.approx(1.0, abs=0.05)


MP_BLOCKS = ["mp_conv", "mp_attn", "MPTemporalDownsample", "MPTemporalUpsample"]
NON_MP = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


@pytest.mark.parametrize("kind", MP_BLOCKS)
def test_mp_blocks_are_built_from_mp_layers_modules_only(kind: str) -> None:
    block = make(kind)
    for module in block.modules():
        assert not isinstance(module, NON_MP), type(module)
        if any(True for _ in module.parameters(recurse=False)) and module is not block:
            assert type(module).__module__.startswith("mp_layers."), type(module)
    if kind == "mp_conv":
        assert isinstance(block.spatial_conv, MPConv2d)
        assert isinstance(block.temporal_conv, MPConv2d)
        assert isinstance(block.proj_out, MPConv2d)
        assert isinstance(block.residual, GatedMPSum)
    elif kind == "mp_attn":
        assert all(isinstance(attention, MPAttention) for attention in block.attentions)
        assert isinstance(block.proj_out, MPLinear)
        assert isinstance(block.residual, GatedMPSum)
    else:
        assert isinstance(block.conv, MPConv2d)


def forced_weight_norm_layers(block: nn.Module) -> Iterator[MPLinear | MPConv2d | MPConv3d]:
    for module in block.modules():
        if isinstance(module, (MPLinear, MPConv2d, MPConv3d)):
            yield module


@pytest.mark.parametrize("kind", MP_BLOCKS)
def test_mp_block_weights_are_normalised_with_the_default_epsilon(kind: str) -> None:
    """Reference defect 2 passed eps=3, which gave effective rows of norm 1/4, not 1."""
    block = make(kind)
    layers = list(forced_weight_norm_layers(block))
    assert layers
    with torch.no_grad():
        for layer in layers:
            layer.weight.mul_(5.0)  # renormalisation, not initialisation, must give unit rows
        block.eval()
        for layer in layers:
            rows = layer.effective_weight().flatten(1).norm(dim=1)
            assert (rows - 1).abs().max().item() <= 1e-3, type(layer)


@pytest.mark.parametrize("kind", ["mp_attn", "MPTemporalDownsample", "MPTemporalUpsample"])
def test_mp_standalone_blocks_accept_frames_with_batch_size(kind: str) -> None:
    """Reference defect 6: these never set their batch size and crashed on frames."""
    block = make(kind).eval()
    x = video()
    with torch.no_grad():
        out = block(to_frames(x), batch_size=B)
        assert max_diff(out, to_frames(block(x))) <= 1e-5


# --- ChannelRMSNorm --------------------------------------------------------------------------


def test_channel_rms_norm_gives_unit_rms_over_channels_at_every_position() -> None:
    """Reference defect 4 normalised over the last axis (width or time)."""
    norm = ChannelRMSNorm(6)
    x = torch.randn(2, 6, 3, 4, 5) * torch.rand(2, 1, 3, 4, 5).add(0.5) * 3
    rms = norm(x).pow(2).mean(dim=1).sqrt()
    assert max_diff(rms, torch.ones_like(rms)) <= 1e-3


def test_channel_rms_norm_ignores_the_scale_of_a_pixel() -> None:
    norm = ChannelRMSNorm(6)
    x = torch.randn(2, 6, 4, 5)
    scaled = x.clone()
    scaled[1, :, 2, 3] *= 7.0
    assert max_diff(norm(scaled), norm(x)) <= 1e-3  # pixel_norm's eps (1e-4) aside


def test_channel_rms_norm_scales_each_channel_by_gamma() -> None:
    norm = ChannelRMSNorm(6)
    x = torch.randn(2, 6, 4, 5)
    with torch.no_grad():
        norm.gamma.copy_(torch.arange(1.0, 7.0))
    reference = ChannelRMSNorm(6)
    expected = reference(x) * torch.arange(1.0, 7.0).view(1, 6, 1, 1)
    assert max_diff(norm(x), expected) <= 1e-5


# --- temporal resampling ---------------------------------------------------------------------


@pytest.mark.parametrize("resampler", RESAMPLERS)
def test_resampler_halves_or_doubles_the_frames(resampler: type[nn.Module]) -> None:
    block = resampler(DIM)
    out = block(video())
    assert out.shape == (B, DIM, int(T * FACTOR[resampler]), H, W)


@pytest.mark.parametrize("resampler", RESAMPLERS)
def test_resampler_keeps_a_constant_clip_constant_at_every_frame_edges_included(
    resampler: type[nn.Module],
) -> None:
    """Reference defect 5: the downsampler gave 1.5, 2, 2, ... and the upsampler ..., 1, 0.5."""
    block = resampler(DIM)
    image = torch.randn(B, DIM, 1, H, W)
    with torch.no_grad():
        out = block(image.expand(B, DIM, 6, H, W))
    assert max_diff(out, image.expand_as(out)) <= CONSTANT_TOL[resampler]


@pytest.mark.parametrize(
    ("down", "up"),
    [(TemporalDownsample, TemporalUpsample), (MPTemporalDownsample, MPTemporalUpsample)],
)
def test_downsampling_then_upsampling_keeps_a_constant_clip_constant(
    down: type[nn.Module], up: type[nn.Module]
) -> None:
    image = torch.randn(B, DIM, 1, H, W)
    with torch.no_grad():
        out = up(DIM)(down(DIM)(image.expand(B, DIM, 8, H, W)))
    assert out.shape == (B, DIM, 8, H, W)
    assert max_diff(out, image.expand_as(out)) <= 2 * CONSTANT_TOL[up]


def ramp(frames: int) -> Tensor:
    """`a + s·i` at frame i, with a random offset and slope per channel and pixel."""
    offset, slope = torch.randn(1, DIM, 1, H, W), torch.randn(1, DIM, 1, H, W)
    return offset + slope * torch.arange(frames, dtype=torch.float32).view(1, 1, -1, 1, 1)


def test_upsample_interpolates_a_linear_ramp_at_interior_frames() -> None:
    t = 5
    x = ramp(t)
    offset, slope = x[:, :, :1], x[:, :, 1:2] - x[:, :, :1]
    with torch.no_grad():
        out = TemporalUpsample(DIM)(x)
    halves = torch.arange(2 * t - 1, dtype=torch.float32).view(1, 1, -1, 1, 1) / 2
    # even frames copy x[i], odd frames average x[i] and x[i + 1]
    assert max_diff(out[:, :, : 2 * t - 1], offset + slope * halves) <= 1e-5
    assert max_diff(out[:, :, -1], x[:, :, -1]) <= 1e-6  # past the end: the last frame repeated


def test_downsample_keeps_the_even_frames_of_a_linear_ramp_away_from_the_edge() -> None:
    x = ramp(6)
    with torch.no_grad():
        out = TemporalDownsample(DIM)(x)
    assert out.shape[2] == 3
    # frame i is x[2i-1]/4 + x[2i]/2 + x[2i+1]/4 = x[2i] where both neighbours exist
    assert max_diff(out[:, :, 1:], x[:, :, 2::2]) <= 1e-5


def test_mp_downsample_averages_frame_pairs() -> None:
    x = video(B, DIM, 6, H, W)
    with torch.no_grad():
        out = MPTemporalDownsample(DIM)(x)
    pairs = (x[:, :, 0::2] + x[:, :, 1::2]) / 2
    assert max_diff(out, pairs) <= 1e-3


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("resampler", RESAMPLERS)
def test_resampler_gives_the_same_result_in_every_layout(
    resampler: type[nn.Module], layout: str
) -> None:
    reference = resampler(DIM)
    block = resampler(DIM, channel_last=layout.endswith("channel_last"))
    block.load_state_dict(reference.state_dict())
    x = video()
    kwargs = {"batch_size": B} if layout.startswith("frames") else {}
    with torch.no_grad():
        out = block(in_layout(x, layout), **kwargs)
        assert max_diff(out, in_layout(reference(x), layout)) <= 1e-5


@pytest.mark.parametrize("resampler", RESAMPLERS)
def test_resampler_reads_frames_with_time_dim_fixed_at_construction(
    resampler: type[nn.Module],
) -> None:
    block = resampler(DIM, time_dim=T)
    x = video()
    with torch.no_grad():
        out = block(to_frames(x))
        assert max_diff(out, to_frames(block(x))) <= 1e-6
    assert out.shape == (B * int(T * FACTOR[resampler]), DIM, H, W)


@pytest.mark.parametrize(
    ("resampler", "frames_out"),
    [
        (TemporalDownsample, 3),  # ceil(5 / 2)
        (MPTemporalDownsample, 2),  # floor(5 / 2)
        (TemporalUpsample, 10),
        (MPTemporalUpsample, 10),
    ],
)
def test_resampler_handles_an_odd_number_of_frames(
    resampler: type[nn.Module], frames_out: int
) -> None:
    out = resampler(DIM)(video(B, DIM, 5, H, W))
    assert out.shape == (B, DIM, frames_out, H, W)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("resampler", [TemporalDownsample, MPTemporalDownsample])
def test_downsample_rejects_fewer_than_two_frames(resampler: type[nn.Module]) -> None:
    with pytest.raises(ValueError, match=r"expected at least 2 frames to halve, got 1"):
        resampler(DIM)(video(B, DIM, 1, H, W))


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "size"), [("conv2d_kernel_size", 2), ("conv1d_kernel_size", 4)]
)
@pytest.mark.parametrize("kind", ["conv", "mp_conv"])
def test_even_kernel_size_is_rejected(kind: str, argument: str, size: int) -> None:
    with pytest.raises(ValueError, match=rf"{argument}: expected an odd kernel size, got {size}"):
        make(kind, **{argument: size})


@pytest.mark.parametrize("kind", ALL_BLOCKS)
def test_wrong_channel_count_is_rejected_naming_the_expected_channels(kind: str) -> None:
    with pytest.raises(ValueError, match=rf"expected {DIM} channels \(dim\), got 6"):
        make(kind)(video(B, 6, T, H, W))


@pytest.mark.parametrize("kind", ["conv", "MPTemporalUpsample"])
def test_wrong_channel_count_is_rejected_in_channel_last_layout(kind: str) -> None:
    block = make(kind, channel_last=True)
    with pytest.raises(ValueError, match=rf"expected {DIM} channels .*channel_last=True"):
        block(torch.randn(B * T, H, W, 6), batch_size=B)


@pytest.mark.parametrize("kind", ALL_BLOCKS)
def test_frames_not_divisible_by_batch_size_are_rejected(kind: str) -> None:
    with pytest.raises(ValueError, match=r"7 frames do not split into batch_size=2 clips"):
        make(kind)(torch.randn(7, DIM, H, W), batch_size=2)


@pytest.mark.parametrize("kind", ALL_BLOCKS)
def test_frames_not_divisible_by_time_dim_are_rejected(kind: str) -> None:
    with pytest.raises(ValueError, match=r"8 frames are not a whole number of clips of time_dim=3"):
        make(kind, time_dim=3)(torch.randn(8, DIM, H, W))


@pytest.mark.parametrize("kind", ALL_BLOCKS)
def test_frames_without_batch_size_or_time_dim_are_rejected(kind: str) -> None:
    with pytest.raises(ValueError, match=r"need batch_size=b .*got frames \(8, 8, 3, 3\)"):
        make(kind)(torch.randn(8, DIM, H, W))


@pytest.mark.parametrize("kind", ALL_BLOCKS)
def test_three_dimensional_input_is_rejected(kind: str) -> None:
    with pytest.raises(ValueError, match=r"expected a video or frames .*got \(2, 8, 4\)"):
        make(kind)(torch.randn(B, DIM, T))


@pytest.mark.parametrize("kind", ALL_BLOCKS)
def test_integer_tensor_is_rejected(kind: str) -> None:
    with pytest.raises(TypeError, match=r"expected a floating-point tensor, got dtype torch.int64"):
        make(kind)(torch.ones(B, DIM, T, H, W, dtype=torch.int64))


@pytest.mark.parametrize("kind", ["conv", "mp_attn", "TemporalDownsample"])
def test_batch_size_contradicting_a_video_is_rejected(kind: str) -> None:
    with pytest.raises(ValueError, match=r"batch_size=3 given with a video of batch 2"):
        make(kind)(video(), batch_size=3)


@pytest.mark.parametrize("kind", ["attn", "MPTemporalUpsample"])
def test_non_positive_batch_size_is_rejected(kind: str) -> None:
    with pytest.raises(ValueError, match=r"batch_size: expected an int >= 1, got 0"):
        make(kind)(to_frames(video()), batch_size=0)


def test_mp_add_t_of_one_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"mp_add_t: expected a float in \[0, 1\), got 1.0"):
        MPConvolutionInflationBlock(dim=DIM, mp_add_t=1.0)


def test_non_positive_dim_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"dim: expected an int >= 1, got 0"):
        ConvolutionInflationBlock(dim=0)


CONSTRUCTOR_TYPE_ERRORS: list[tuple[Callable[[], object], str]] = [
    (lambda: ConvolutionInflationBlock(dim="8"), r"dim='8' violates type hint <class 'int'>"),
    (lambda: AttentionInflationBlock(dim=8.0), r"dim=8\.0 violates type hint <class 'int'>"),
    (
        lambda: MPConvolutionInflationBlock(dim=DIM, mp_add_t="0.3"),
        r"mp_add_t='0\.3' violates type hint <class 'float'>",
    ),
    (
        lambda: MPAttentionInflationBlock(dim=DIM, time_dim=2.5),
        r"time_dim=2\.5 violates type hint",
    ),
    (lambda: TemporalDownsample("8"), r"dim='8' violates type hint <class 'int'>"),
    (
        lambda: MPTemporalUpsample(DIM, channel_last="yes"),
        r"channel_last='yes' violates type hint <class 'bool'>",
    ),
]


@pytest.mark.parametrize(
    ("construct", "message"),
    CONSTRUCTOR_TYPE_ERRORS,
    ids=[
        "conv-dim-str",
        "attn-dim-float",
        "mp_conv-mp_add_t-str",
        "mp_attn-time_dim-float",
        "down-dim-str",
        "mp_up-channel_last-str",
    ],
)
def test_constructor_arguments_of_the_wrong_type_raise_type_error(
    construct: Callable[[], object], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        construct()
