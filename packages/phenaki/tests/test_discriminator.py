"""Frame and video discriminators (phenaki.discriminator)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from phenaki.attention import Attention
from phenaki.discriminator import FrameDiscriminator, VideoDiscriminator


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _assert_every_parameter_has_a_gradient(module: nn.Module) -> None:
    for name, parameter in module.named_parameters():
        if parameter.numel() == 0:  # e.g. Attention's null key/values with num_null_kv = 0
            continue
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


# -------------------------------------------------------------------------- FrameDiscriminator


@pytest.mark.parametrize("image_size", [16, (16, 32), (32, 16)])
def test_frame_discriminator_shapes_and_gradients(image_size: int | tuple[int, int]) -> None:
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    discr = FrameDiscriminator(dim=2, image_size=image_size, attn_res_layers=(8,))
    images = torch.randn(3, 3, h, w, requires_grad=True)
    logits = discr(images)
    assert logits.shape == (3,)
    logits.sum().backward()
    assert images.grad is not None
    assert images.grad.abs().sum() > 0
    _assert_every_parameter_has_a_gradient(discr)


def test_frame_discriminator_layout_matches_the_reference() -> None:
    # 64 px: floor(log2 64) - 2 = 4 downsampling blocks plus a last one, widths 4 dim 2^i
    # capped at max_dim; the reference's parameter names.
    discr = FrameDiscriminator(dim=4, image_size=64, max_dim=32, attn_res_layers=())
    assert len(discr.blocks) == 5
    widths = [block.net[0].out_channels for block in discr.blocks]
    assert widths == [16, 32, 32, 32, 32]
    assert [block.downsample is not None for block in discr.blocks] == [True] * 4 + [False]
    assert [block.conv_res.stride for block in discr.blocks] == [(2, 2)] * 4 + [(1, 1)]
    names = set(discr.state_dict())
    for name in (
        "blocks.0.conv_res.weight",
        "blocks.0.net.0.weight",
        "blocks.0.net.2.weight",
        "blocks.0.downsample.1.weight",
        "to_logits.0.weight",
        "to_logits.3.weight",
    ):
        assert name in names, name
    assert discr.to_logits[3].in_features == 32 * 4 * 4  # 64 / 2^4 = 4
    assert len(discr.attn_blocks) == 5
    assert all(attn is None for attn in discr.attn_blocks)


@pytest.mark.parametrize(
    ("attn_res_layers", "expected_blocks"),
    [((16,), [1]), (32, [0]), ((32, 8), [0, 2]), ((), [])],
)
def test_frame_discriminator_attention_at_the_configured_resolution(
    attn_res_layers: int | tuple[int, ...], expected_blocks: list[int]
) -> None:
    # Block i sees a (32 / 2^i)-px input; attention follows the blocks whose input resolution
    # is listed.
    discr = FrameDiscriminator(dim=2, image_size=32, attn_res_layers=attn_res_layers)
    present = [i for i, attn in enumerate(discr.attn_blocks) if attn is not None]
    assert present == expected_blocks
    assert all(isinstance(discr.attn_blocks[i], Attention) for i in present)
    assert all(f"attn_blocks.{i}.to_q.weight" in discr.state_dict() for i in present)
    seen: list[tuple[int, ...]] = []
    for i in present:
        discr.attn_blocks[i].register_forward_hook(
            lambda _m, args, _out: seen.append(tuple(args[0].shape))
        )
    discr(torch.randn(2, 3, 32, 32))
    # tokens (b, h w, c) at the block's output resolution (input halved), width 4 dim 2^i
    assert seen == [(2, (16 // 2**i) ** 2, 8 * 2**i) for i in expected_blocks]


def test_frame_discriminator_grayscale_and_smallest_size() -> None:
    discr = FrameDiscriminator(dim=2, image_size=(8, 12), channels=1)
    assert len(discr.blocks) == 2  # floor(log2 8) - 2 = 1 downsampling block
    assert discr(torch.randn(2, 1, 8, 12)).shape == (2,)


def test_frame_discriminator_validation() -> None:
    _not_a_size: Any = "16"
    with pytest.raises(ValueError, match=r"sides >= 8, got \(4, 16\)"):
        FrameDiscriminator(dim=2, image_size=(4, 16))
    with pytest.raises(ValueError, match=r"divisible by 2\*\*2 = 4 .*got \(16, 18\)"):
        FrameDiscriminator(dim=2, image_size=(16, 18))
    with pytest.raises(ValueError, match="positive channels"):
        FrameDiscriminator(dim=0, image_size=16)
    with pytest.raises(TypeError):
        FrameDiscriminator(dim=2, image_size=_not_a_size)
    discr = FrameDiscriminator(dim=2, image_size=(16, 32))
    with pytest.raises(
        ValueError, match=r"expected images of shape \(b, 3, 16, 32\), got \(2, 1, 16, 32\)"
    ):
        discr(torch.randn(2, 1, 16, 32))
    with pytest.raises(ValueError, match=r"got \(2, 3, 32, 16\)"):
        discr(torch.randn(2, 3, 32, 16))
    with pytest.raises(ValueError, match=r"got \(3, 16, 32\)"):
        discr(torch.randn(3, 16, 32))


# -------------------------------------------------------------------------- VideoDiscriminator


@pytest.mark.parametrize("frames", [1, 5, 9])
@pytest.mark.parametrize("image_size", [16, (16, 32)])
def test_video_discriminator_shapes_and_gradients(
    frames: int, image_size: int | tuple[int, int]
) -> None:
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    discr = VideoDiscriminator(dim=2, image_size=image_size)
    video = torch.randn(2, 3, frames, h, w, requires_grad=True)
    logits = discr(video)
    assert logits.shape == (2,)
    logits.sum().backward()
    assert video.grad is not None
    assert video.grad.abs().sum() > 0
    _assert_every_parameter_has_a_gradient(discr)


@pytest.mark.parametrize(
    ("frames", "expected_times"), [(9, [5, 3, 2, 2]), (5, [3, 2, 1, 1]), (1, [1, 1, 1, 1])]
)
def test_video_discriminator_halves_time_while_longer_than_one_frame(
    frames: int, expected_times: list[int]
) -> None:
    # 32 px: 3 downsampling blocks (t -> ceil(t / 2) while t > 1) and a last one without
    discr = VideoDiscriminator(dim=2, image_size=32, max_dim=16)
    shapes: list[tuple[int, ...]] = []
    for block in discr.blocks:
        block.register_forward_hook(lambda _m, _args, out: shapes.append(tuple(out.shape)))
    discr(torch.randn(1, 3, frames, 32, 32))
    assert [s[2] for s in shapes] == expected_times
    assert [s[3:] for s in shapes] == [(16, 16), (8, 8), (4, 4), (4, 4)]
    assert [s[1] for s in shapes] == [8, 16, 16, 16]  # 4 dim 2^i capped at max_dim


def test_video_discriminator_judges_motion() -> None:
    # A per-frame discriminator cannot tell a clip from its time reversal; this one does.
    discr = VideoDiscriminator(dim=2, image_size=16)
    video = torch.randn(2, 3, 5, 16, 16)
    assert not torch.allclose(discr(video), discr(video.flip(2)))


def test_video_discriminator_validation() -> None:
    with pytest.raises(ValueError, match=r"sides >= 8, got \(16, 4\)"):
        VideoDiscriminator(dim=2, image_size=(16, 4))
    with pytest.raises(ValueError, match=r"divisible by 2\*\*1 = 2 .*got \(8, 9\)"):
        VideoDiscriminator(dim=2, image_size=(8, 9))
    discr = VideoDiscriminator(dim=2, image_size=16)
    with pytest.raises(
        ValueError,
        match=r"expected videos of shape \(b, 3, f >= 1, 16, 16\), got \(2, 1, 4, 16, 16\)",
    ):
        discr(torch.randn(2, 1, 4, 16, 16))
    with pytest.raises(ValueError, match=r"got \(2, 3, 0, 16, 16\)"):
        discr(torch.randn(2, 3, 0, 16, 16))
    with pytest.raises(ValueError, match=r"got \(2, 3, 16, 16\)"):
        discr(torch.randn(2, 3, 16, 16))
