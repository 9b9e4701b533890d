"""Conditional sampling with `EDM2Diffusion`: known frames, reconstruction guidance with CFG,
temporal windows, extension, interpolation, super-resolution (tiny untrained networks)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from karras_unet3d import EDM2Diffusion, KarrasUnet3D
from mp_layers.conditioning import known_frames, super_resolution

TINY: dict[str, Any] = {
    "frames": 4,
    "image_size": 8,
    "dim": 8,
    "dim_max": 8,
    "channels": 3,
    "num_downsamples": 1,
    "num_blocks_per_stage": 1,
    "attn_res": (4,),
    "attn_dim_head": 8,
    "dropout": 0.0,
    "downsample_types": ("image",),
}


def model(**overrides: Any) -> EDM2Diffusion:
    """A random network whose output is switched on (at init EDM2's output gain is 0, which
    makes the denoiser `c_skip * x`: no frame would depend on another)."""
    torch.manual_seed(0)
    net = KarrasUnet3D(**{**TINY, **overrides})
    with torch.no_grad():
        net.output_gain.gain.fill_(1.0)
    return EDM2Diffusion(net).eval()


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("method", ["replace", "guidance"])
def test_known_frames_are_kept_with_classifier_free_guidance(method: str) -> None:
    net = model(num_classes=4)
    given = torch.rand(2, 3, 2, 8, 8)
    condition = known_frames(given, [0, 3], 4, method=method, weight=5.0)
    labels = torch.tensor([0, 2])
    video = net.sample(2, class_labels=labels, guidance=2.0, num_steps=3, condition=condition,
                       generator=generator())  # fmt: skip
    assert video.shape == (2, 3, 4, 8, 8)
    torch.testing.assert_close(video[:, :, [0, 3]], given, atol=1e-6, rtol=0)
    plain = net.sample(2, class_labels=labels, guidance=2.0, num_steps=3, generator=generator())
    assert not torch.allclose(video[:, :, 1:3], plain[:, :, 1:3])


def test_guidance_weight_zero_is_replacement() -> None:
    net = model()
    given = torch.rand(1, 3, 1, 8, 8)
    runs = [
        net.sample(1, num_steps=3, generator=generator(),
                   condition=known_frames(given, [0], 4, method=method, weight=weight))
        for method, weight in (("replace", 10.0), ("guidance", 0.0))
    ]  # fmt: skip
    assert torch.equal(runs[0], runs[1])
    guided = net.sample(1, num_steps=3, generator=generator(),
                        condition=known_frames(given, [0], 4, weight=10.0))  # fmt: skip
    assert not torch.equal(guided, runs[0])


def test_one_window_is_the_plain_sampler() -> None:
    net = model()
    plain = net.sample(2, num_steps=3, generator=generator())
    windowed = net.sample(2, num_steps=3, generator=generator(), window=4, overlap=2)
    assert torch.equal(plain, windowed)


def test_sample_long_uses_windows_of_the_training_length() -> None:
    net = model()
    seen: list[int] = []
    forward = net.net.forward

    def recording(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append(x.shape[2])
        return forward(x, *args, **kwargs)

    net.net.forward = recording  # type: ignore[method-assign]
    video = net.sample_long(1, 10, overlap=2, num_steps=2, generator=generator())
    assert video.shape == (1, 3, 10, 8, 8)
    assert set(seen) == {4}  # windows (0, 4), (2, 6), (4, 8), (6, 10)
    assert len(seen) == 4 * 3  # 4 windows x (2 steps: 3 evaluations)


def test_extend_interpolate_upsample_shapes_and_given_frames() -> None:
    net = model()
    video = torch.rand(1, 3, 3, 8, 8)
    longer = net.extend_video(video, 7, overlap=2, num_steps=2, generator=generator())
    assert longer.shape == (1, 3, 7, 8, 8)
    assert torch.equal(longer[:, :, :3], video)
    between = net.interpolate_video(video[:, :, :2], 3, num_steps=2, generator=generator())
    assert between.shape == (1, 3, 4, 8, 8)
    torch.testing.assert_close(between[:, :, [0, 3]], video[:, :, :2], atol=1e-6, rtol=0)
    low = torch.rand(1, 3, 4, 4, 4)
    high = net.upsample_video(low, 2, weight=1.0, num_steps=4, generator=generator())
    assert high.shape == (1, 3, 4, 8, 8)
    unguided = net.sample(1, num_steps=4, generator=generator())
    pooled = torch.nn.functional.avg_pool3d(high, (1, 2, 2))
    pooled_plain = torch.nn.functional.avg_pool3d(unguided, (1, 2, 2))
    assert (pooled - low).abs().mean() < (pooled_plain - low).abs().mean()


def test_bad_conditions_are_clear_errors() -> None:
    net = model()
    with pytest.raises(ValueError, match="mask: expected a shape broadcastable to the samples"):
        net.sample(1, num_steps=2, condition=known_frames(torch.rand(1, 3, 1, 8, 8), [0], 6))
    with pytest.raises(
        ValueError, match=r"values: expected a video of shape \(1 or 1, 3, 4, 8, 8\)"
    ):
        net.sample(1, num_steps=2, condition=known_frames(torch.rand(1, 3, 1, 6, 6), [0], 4))
    with pytest.raises(
        ValueError, match=r"values: expected a video of shape \(1 or 1, 3, 4, 8, 8\)"
    ):
        net.sample(1, num_steps=2, condition=known_frames(torch.rand(1, 1, 1, 8, 8), [0], 4))
    with pytest.raises(ValueError, match="weight"):
        known_frames(torch.rand(1, 3, 1, 8, 8), [0], 4, weight=-1.0)
    with pytest.raises(ValueError, match="values: expected a low-resolution video"):
        net.sample(1, num_steps=2, condition=super_resolution(torch.rand(1, 3, 4, 3, 3), 2))
    with pytest.raises(ValueError, match="overlap: expected fewer frames than the window"):
        net.sample_long(1, 10, overlap=4, num_steps=2)
    with pytest.raises(ValueError, match="overlap: expected no overlap without a window"):
        net.sample(1, num_steps=2, overlap=2)
