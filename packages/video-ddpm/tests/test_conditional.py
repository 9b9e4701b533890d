"""Conditional sampling with `GaussianDiffusion` (DDPM and DDIM): known frames with an exact
Gaussian denoiser, classifier-free guidance at the same time, windows, extension, interpolation,
super-resolution, and bad input."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from mp_layers.conditioning import known_frames, super_resolution
from video_ddpm import GaussianDiffusion, Unet3D

FRAMES, KNOWN = 6, 3
COV = 0.1 * torch.tensor([[0.95 ** abs(i - j) for j in range(FRAMES)] for i in range(FRAMES)])


class ExactGaussian(nn.Module):
    """`E[y | z_t]` for y ~ N(0, COV) over frames (each pixel on its own), `z_t = a y + s n`:
    the x_0 prediction of the ideal network (objective "pred_x0")."""

    channels = 1

    def __init__(self, alphas_cumprod: Tensor) -> None:
        super().__init__()
        self.register_buffer("alphas_cumprod", alphas_cumprod.double())
        self.anchor = nn.Parameter(torch.zeros(()))  # a parameter, for the device lookup

    def forward(self, x: Tensor, time: Tensor, cond: Any = None, **_: Any) -> Tensor:
        alpha = self.alphas_cumprod[time[0]]
        a, s2 = alpha.sqrt(), 1 - alpha
        gain = a * COV.double() @ torch.linalg.inv(alpha * COV.double() + s2 * torch.eye(FRAMES))
        return torch.einsum("ij,bcjhw->bcihw", gain.to(x.dtype), x) + 0 * self.anchor

    def forward_with_cond_scale(self, x: Tensor, time: Tensor, cond: Any = None,
                                cond_scale: float = 1.0) -> Tensor:  # fmt: skip
        return self(x, time, cond)


def exact_model() -> GaussianDiffusion:
    net = ExactGaussian(torch.zeros(100))
    model = GaussianDiffusion(net, image_size=1, num_frames=FRAMES, channels=1, timesteps=100,
                              objective="pred_x0")  # fmt: skip
    net.alphas_cumprod = model.alphas_cumprod.double()  # the schedule the model samples with
    return model


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_reconstruction_guidance_halves_the_error_of_replacement(sampler: str) -> None:
    model = exact_model()
    known = torch.full((1, 1, KNOWN, 1, 1), 0.6)  # 2 standard deviations: [0, 1] video 0.8
    gain = COV[KNOWN:, :KNOWN] @ torch.linalg.inv(COV[:KNOWN, :KNOWN])
    truth = torch.einsum("ij,bcjhw->bcihw", gain, known)[0]  # E[y_b | y_a], in [-1, 1]
    errors = {}
    for method, weight in (("replace", 0.0), ("guidance", 2.0)):
        condition = known_frames((known + 1) / 2, list(range(KNOWN)), FRAMES, method=method,
                                 weight=weight)  # fmt: skip
        steps = 25 if sampler == "ddim" else None
        videos = model.sample(batch_size=256, sampler=sampler, steps=steps, condition=condition,
                              generator=torch.Generator().manual_seed(0))  # fmt: skip
        torch.testing.assert_close(
            videos[:, :, :KNOWN], ((known + 1) / 2).expand(256, -1, -1, -1, -1)
        )
        errors[method] = float((videos[:, :, KNOWN:].mean(0) * 2 - 1 - truth).abs().mean())
    assert errors["guidance"] <= 0.5 * errors["replace"], errors


def tiny(**overrides: Any) -> GaussianDiffusion:
    torch.manual_seed(0)
    net = Unet3D(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8, **overrides)
    return GaussianDiffusion(net, image_size=8, num_frames=4, timesteps=10).eval()


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_known_frames_with_classifier_free_guidance() -> None:
    model = tiny(cond_dim=4)
    cond = torch.eye(4)[:2]
    given = torch.rand(2, 3, 1, 8, 8)
    condition = known_frames(given, [0], 4, weight=5.0)
    videos = model.sample(cond=cond, cond_scale=2.0, sampler="ddim", steps=3, condition=condition,
                          generator=generator())  # fmt: skip
    assert videos.shape == (2, 3, 4, 8, 8)
    torch.testing.assert_close(videos[:, :, 0], given[:, :, 0], atol=1e-5, rtol=0)


def test_one_window_is_the_plain_sampler() -> None:
    model = tiny()
    for sampler, steps in (("ddim", 3), ("ddpm", None)):
        plain = model.sample(batch_size=2, sampler=sampler, steps=steps, generator=generator())
        windowed = model.sample(batch_size=2, sampler=sampler, steps=steps, window=4, overlap=2,
                                generator=generator())  # fmt: skip
        # the same steps; only x / a * a rounds differently from x
        torch.testing.assert_close(plain, windowed, atol=2e-4, rtol=0)


def test_long_extend_interpolate_upsample() -> None:
    model = tiny()
    kwargs: dict[str, Any] = {"sampler": "ddim", "steps": 2, "generator": generator()}
    assert model.sample_long(1, 10, overlap=2, **kwargs).shape == (1, 3, 10, 8, 8)
    video = torch.rand(1, 3, 3, 8, 8)
    longer = model.extend_video(video, 7, overlap=2, **kwargs)
    assert longer.shape == (1, 3, 7, 8, 8)
    assert torch.equal(longer[:, :, :3], video)
    between = model.interpolate_video(video[:, :, :2], 3, **kwargs)
    assert between.shape == (1, 3, 4, 8, 8)
    torch.testing.assert_close(between[:, :, [0, 3]], video[:, :, :2], atol=1e-5, rtol=0)
    high = model.upsample_video(torch.rand(1, 3, 4, 4, 4), 2, **kwargs)
    assert high.shape == (1, 3, 4, 8, 8)


def test_bad_conditions_are_clear_errors() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="mask: expected a shape broadcastable to the samples"):
        model.sample(batch_size=1, sampler="ddim", steps=2,
                     condition=known_frames(torch.rand(1, 3, 1, 8, 8), [0], 5))  # fmt: skip
    with pytest.raises(
        ValueError, match=r"values: expected a video of shape \(1 or 1, 3, 4, 8, 8\)"
    ):
        model.sample(batch_size=1, sampler="ddim", steps=2,
                     condition=known_frames(torch.rand(1, 1, 1, 8, 8), [0], 4))  # fmt: skip
    with pytest.raises(ValueError, match="values: expected a low-resolution video"):
        model.sample(batch_size=1, sampler="ddim", steps=2,
                     condition=super_resolution(torch.rand(1, 3, 4, 8, 8), 2))  # fmt: skip
    with pytest.raises(ValueError, match="overlap: expected fewer frames than the window"):
        model.sample_long(1, 10, overlap=4, sampler="ddim", steps=2)
