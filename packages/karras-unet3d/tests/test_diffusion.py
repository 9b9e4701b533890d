"""EDM2Diffusion: preconditioning, loss, sampler, guidance, and the learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from karras_unet3d import (
    EDM2Diffusion,
    KarrasUnet3D,
    edm2_learning_rate,
    edm2_lr_lambda,
    karras_sigmas,
)

SMALL: dict[str, Any] = {
    "frames": 2,
    "image_size": 4,
    "dim": 8,
    "dim_max": 8,
    "channels": 3,
    "num_downsamples": 1,
    "num_blocks_per_stage": 1,
    "attn_res": (2,),
    "attn_dim_head": 8,
    "dropout": 0.0,
}


def diffusion(**overrides: Any) -> EDM2Diffusion:
    label_dropout = overrides.pop("label_dropout", 0.1)
    return EDM2Diffusion(KarrasUnet3D(**{**SMALL, **overrides}), label_dropout=label_dropout)


def test_preconditioning_matches_edm_formulas() -> None:
    model = diffusion().eval()
    captured: dict[str, torch.Tensor] = {}

    def spy(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        captured["x"], captured["time"] = args[0], args[1]

    model.net.register_forward_hook(spy)
    model.net.output_gain.gain.data.fill_(1.0)
    x = torch.randn(2, 3, 2, 4, 4)
    sigma = torch.tensor([0.3, 5.0])
    denoised = model.denoise(x, sigma)
    sd = 0.5
    s = sigma.view(-1, 1, 1, 1, 1)
    assert torch.allclose(captured["time"], sigma.log() / 4)  # c_noise = ln(sigma) / 4
    assert torch.allclose(captured["x"], x / (s**2 + sd**2).sqrt())  # c_in
    with torch.no_grad():
        raw = model.net(captured["x"], captured["time"])
    expected = sd**2 / (s**2 + sd**2) * x + s * sd / (s**2 + sd**2).sqrt() * raw
    assert torch.allclose(denoised, expected, atol=1e-5)


def test_loss_is_a_finite_scalar_and_trains_the_uncertainty_head() -> None:
    model = diffusion(num_classes=4)
    videos = torch.rand(3, 3, 2, 4, 4)
    loss = model(videos, class_labels=torch.tensor([0, 1, 3]))
    assert loss.ndim == 0
    assert torch.isfinite(loss)
    loss.backward()
    assert model.logvar_linear.weight.grad is not None
    assert model.logvar_linear.weight.grad.abs().sum() > 0
    assert model.net.output_gain.gain.grad is not None


def test_loss_has_the_edm2_form() -> None:
    """With a zero network output, D = c_skip * noisy and the loss is computable by hand."""
    model = diffusion(label_dropout=0.0)
    videos = torch.rand(2, 3, 2, 4, 4)
    torch.manual_seed(5)
    loss = model(videos)
    torch.manual_seed(5)
    sigma = (torch.randn(2) * model.P_std + model.P_mean).exp()
    y = videos * 2 - 1
    noisy = y + torch.randn_like(y) * sigma.view(-1, 1, 1, 1, 1)
    sd = model.sigma_data
    denoised = sd**2 / (sigma**2 + sd**2).view(-1, 1, 1, 1, 1) * noisy
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    logvar = model.logvar(sigma)
    expected = (weight / logvar.exp() * ((denoised - y) ** 2).flatten(1).mean(1) + logvar).mean()
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_loss_validates_inputs() -> None:
    model = diffusion(num_classes=4)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        model(torch.randn(2, 3, 2, 4, 4) * 3, class_labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"shape \(b, 3, frames"):
        model(torch.rand(2, 4, 2, 4, 4), class_labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class-conditional"):
        model(torch.rand(2, 3, 2, 4, 4))
    with pytest.raises(TypeError, match=r"parameter net=.* violates .*KarrasUnet3D"):
        EDM2Diffusion(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


def test_label_dropout_zeroes_the_label_vector() -> None:
    model = diffusion(num_classes=4, label_dropout=1.0)
    seen: list[torch.Tensor] = []
    model.net.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.append(kwargs["class_labels"]), with_kwargs=True
    )
    model(torch.rand(2, 3, 2, 4, 4), class_labels=torch.tensor([1, 2]))
    assert torch.equal(seen[-1], torch.zeros(2, 4))
    model.label_dropout = 0.0
    model(torch.rand(2, 3, 2, 4, 4), class_labels=torch.tensor([1, 2]))
    assert torch.equal(seen[-1], torch.eye(4)[[1, 2]])


def test_karras_sigmas() -> None:
    sigmas = karras_sigmas(5, sigma_min=0.002, sigma_max=80, rho=7)
    assert sigmas.shape == (6,)
    assert math.isclose(sigmas[0].item(), 80)
    assert math.isclose(sigmas[4].item(), 0.002)
    assert sigmas[5] == 0
    assert bool((sigmas[:-1].diff() < 0).all())
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        karras_sigmas(5, sigma_min=1.0, sigma_max=0.5)


def test_sampler_is_deterministic_with_a_seeded_generator() -> None:
    model = diffusion(num_classes=4)
    model.net.output_gain.gain.data.fill_(1.0)
    labels = torch.tensor([0, 3])

    def draw(seed: int) -> torch.Tensor:
        return model.sample(
            2, class_labels=labels, num_steps=3, generator=torch.Generator().manual_seed(seed)
        )

    a, b, c = draw(0), draw(0), draw(1)
    assert a.shape == (2, 3, 2, 4, 4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert float(a.min()) >= 0
    assert float(a.max()) <= 1
    assert model.training  # the sampler restores the mode it found


def test_sampler_net_evaluations_and_longer_clips() -> None:
    model = diffusion()
    calls: list[tuple[int, ...]] = []
    model.net.register_forward_hook(lambda _m, args, _o: calls.append(tuple(args[0].shape)))
    out = model.sample(1, num_steps=4, frames=6, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 6, 4, 4)
    assert len(calls) == 2 * 4 - 1  # Heun: two evaluations per step, one on the last


def test_classifier_free_guidance_uses_the_unconditional_branch() -> None:
    model = diffusion(num_classes=4)
    model.net.output_gain.gain.data.fill_(1.0)
    for block in [*model.net.encoder, *model.net.middle, *model.net.decoder]:
        block.emb_gain.gain.data.fill_(1.0)
    seen: list[torch.Tensor] = []
    model.net.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.append(kwargs["class_labels"]), with_kwargs=True
    )
    labels = torch.tensor([1, 2])
    kwargs: dict[str, Any] = {"class_labels": labels, "num_steps": 2}
    plain = model.sample(2, generator=torch.Generator().manual_seed(0), **kwargs)
    assert all(len(s) == 2 for s in seen)
    seen.clear()
    guided = model.sample(2, guidance=3.0, generator=torch.Generator().manual_seed(0), **kwargs)
    assert seen
    assert all(len(s) == 4 for s in seen)
    assert all(torch.equal(s[2:], torch.zeros(2, 4)) for s in seen)
    assert torch.equal(seen[0][:2], torch.eye(4)[[1, 2]])
    assert not torch.allclose(plain, guided)

    # One Euler step from sigma_max to 0 returns the denoiser output itself, so the guided sample
    # is exactly uncond + g * (cond - uncond) with the zero label vector as the unconditional one.
    model.eval()
    noise = torch.randn(2, 3, 2, 4, 4, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        cond = model.denoise(noise * 80, 80.0, labels)
        uncond = model.denoise(noise * 80, 80.0, torch.zeros(2, 4))
    assert not torch.allclose(cond, uncond)
    one_step = model.sample(
        2, class_labels=labels, num_steps=1, guidance=3.0,
        generator=torch.Generator().manual_seed(7), sigma_max=80.0, sigma_min=0.002,
    )  # fmt: skip
    expected = ((uncond + 3.0 * (cond - uncond) + 1) / 2).clamp(0, 1)
    assert torch.allclose(one_step, expected, atol=1e-5)


def test_autoguidance_with_a_weaker_network() -> None:
    model = diffusion(num_classes=4)
    guide = KarrasUnet3D(**{**SMALL, "num_classes": 4, "dim": 8, "num_blocks_per_stage": 1})
    for net in (model.net, guide):
        net.output_gain.gain.data.fill_(1.0)
    guide_calls: list[int] = []
    guide.register_forward_hook(lambda _m, args, _o: guide_calls.append(args[0].shape[0]))
    kwargs: dict[str, Any] = {"class_labels": torch.tensor([0, 1]), "num_steps": 2}
    plain = model.sample(2, generator=torch.Generator().manual_seed(0), **kwargs)
    guided = model.sample(
        2, guidance=2.0, guide_net=guide, generator=torch.Generator().manual_seed(0), **kwargs
    )
    assert guide_calls == [2, 2, 2]
    assert not torch.allclose(plain, guided)
    with pytest.raises(ValueError, match="needs a guide"):
        diffusion().sample(1, guidance=2.0, num_steps=2)


def test_edm2_learning_rate_schedule() -> None:
    kwargs: dict[str, Any] = {
        "batch_size": 8,
        "ref_lr": 0.01,
        "ref_batches": 100,
        "rampup_images": 400,
    }
    assert edm2_learning_rate(0, **kwargs) == 0.0
    assert math.isclose(edm2_learning_rate(200, **kwargs), 0.005)  # half-way through warm-up
    assert math.isclose(edm2_learning_rate(800, **kwargs), 0.01)  # the base LR itself, not x0.01
    assert math.isclose(edm2_learning_rate(4 * 800, **kwargs), 0.005)  # 1 / sqrt(4)
    multiplier = edm2_lr_lambda(**kwargs)
    assert math.isclose(multiplier(100), 1.0)
    assert math.isclose(multiplier(400), 0.5)
    assert multiplier(0) > 0
