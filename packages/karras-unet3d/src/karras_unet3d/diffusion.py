"""EDM2 training and sampling around a `KarrasUnet3D` (Karras et al. 2022, 2024).

- Preconditioning (EDM table 1): `D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ))` with
  `c_skip = σd² / (σ² + σd²)`, `c_out = σ σd / sqrt(σ² + σd²)`, `c_in = 1 / sqrt(σ² + σd²)`,
  `c_noise = ln(σ) / 4`.
- Loss (EDM2 eq. 20 with learned uncertainty): `ln σ ~ N(P_mean, P_std²)`,
  `L = λ(σ) / exp(u(σ)) ||D(y + n; σ) - y||² + u(σ)`, `λ = (σ² + σd²) / (σ σd)²`, `u` a small MP
  Fourier + MP linear head on `c_noise`.
- Sampler (EDM algorithm 1, deterministic): Heun's 2nd-order method on the probability-flow ODE
  with the rho-spaced steps `σ_i = (σmax^(1/ρ) + i/(N-1) (σmin^(1/ρ) - σmax^(1/ρ)))^ρ`, `σ_N = 0`.
- Guidance (EDM2 / autoguidance, Karras et al. 2024b): `D = D_guide + g (D_main - D_guide)` where the
  guide is the same network without labels (classifier-free guidance) or a second, weaker network.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from karras_unet3d.unet import KarrasUnet3D
from mp_layers import MPFourierEmbedding, MPLinear
from mp_layers.conditioning import Condition, ConditionalSampling, Sampler, conditioned_denoiser
from mp_layers.hub import HubModel
from mp_layers.typecheck import typechecked
from mp_layers.validation import check_float, check_int

__all__ = ["EDM2Diffusion", "edm2_learning_rate", "edm2_lr_lambda", "karras_sigmas"]


@typechecked
def karras_sigmas(
    num_steps: int,
    *,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """The EDM noise levels `(num_steps + 1,)`: `num_steps` rho-spaced σ from σmax to σmin, then 0.

    `σ_i = (σmax^(1/ρ) + i / (N - 1) (σmin^(1/ρ) - σmax^(1/ρ)))^ρ` (EDM eq. 5), computed in float64.
    """
    num_steps = check_int("num_steps", num_steps)
    sigma_min = check_float("sigma_min", sigma_min, low=0.0)
    sigma_max = check_float("sigma_max", sigma_max, low=0.0)
    rho = check_float("rho", rho, low=0.0)
    if not 0 < sigma_min < sigma_max:
        raise ValueError(
            f"sigma_min, sigma_max: expected 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}"
        )
    if rho == 0:
        raise ValueError("rho: expected a float > 0, got 0.0")
    steps = torch.arange(num_steps, dtype=torch.float64, device=device)
    frac = steps / max(num_steps - 1, 1)
    sigmas = (
        sigma_max ** (1 / rho) + frac * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    ) ** rho
    return torch.cat((sigmas, sigmas.new_zeros(1)))


@typechecked
def edm2_learning_rate(
    num_images: float,
    *,
    batch_size: int,
    ref_lr: float = 0.012,
    ref_batches: float = 70_000,
    rampup_images: float = 10_000_000,
) -> float:
    """EDM2's learning rate after `num_images` training images (EDM2 eq. 121, `learning_rate_schedule`).

    `lr = ref_lr / sqrt(max(num_images / (ref_batches * batch_size), 1)) * min(num_images / rampup_images, 1)`:
    constant `ref_lr` after a linear warm-up over `rampup_images`, then inverse-square-root decay
    once `ref_batches` batches have been seen. `ref_batches=0` disables the decay and
    `rampup_images=0` the warm-up. Returns the absolute learning rate (no hidden scale factor).
    """
    num_images = check_float("num_images", num_images, low=0.0)
    batch_size = check_int("batch_size", batch_size)
    lr = check_float("ref_lr", ref_lr, low=0.0)
    ref_batches = check_float("ref_batches", ref_batches, low=0.0)
    rampup_images = check_float("rampup_images", rampup_images, low=0.0)
    if ref_batches > 0:
        lr /= math.sqrt(max(num_images / (ref_batches * batch_size), 1.0))
    if rampup_images > 0:
        lr *= min(num_images / rampup_images, 1.0)
    return lr


@typechecked
def edm2_lr_lambda(
    *,
    batch_size: int,
    ref_lr: float = 0.012,
    ref_batches: float = 70_000,
    rampup_images: float = 10_000_000,
) -> Callable[[int], float]:
    """`edm2_learning_rate` as a `LambdaLR` multiplier of optimiser step: `step -> lr / ref_lr`.

    Give the optimiser `lr=ref_lr`; step `s` has seen `s * batch_size` images. At step 0 the
    warm-up would give 0, so the first step uses the rate of one batch.
    """
    check_float("ref_lr", ref_lr, low=0.0)
    if ref_lr == 0:
        raise ValueError("ref_lr: expected a float > 0, got 0.0")

    def multiplier(step: int) -> float:
        images = max(step, 1) * batch_size
        return (
            edm2_learning_rate(
                images,
                batch_size=batch_size,
                ref_lr=ref_lr,
                ref_batches=ref_batches,
                rampup_images=rampup_images,
            )
            / ref_lr
        )

    return multiplier


def _precondition(
    net: KarrasUnet3D,
    x: Tensor,
    sigma: Tensor,
    labels: Tensor | None,
    self_cond: Tensor | None,
    sigma_data: float,
    frame_cond: Tensor | None = None,
) -> Tensor:
    """`D(x; σ) = c_skip x + c_out F(c_in x; ln(σ)/4)`; `x (b, c, f, h, w)`, `σ (b,)`; known
    frames `frame_cond` (frame-conditioned networks) go in as they are, not scaled by c_in."""
    s = sigma.to(torch.float32).reshape(-1, 1, 1, 1, 1)
    c_skip = sigma_data**2 / (s**2 + sigma_data**2)
    c_out = s * sigma_data / (s**2 + sigma_data**2).sqrt()
    c_in = 1 / (sigma_data**2 + s**2).sqrt()
    c_noise = sigma.to(torch.float32).log() / 4
    if self_cond is not None:
        self_cond = self_cond / sigma_data  # the previous estimate, at unit magnitude
    extra = {} if frame_cond is None else {"frame_cond": frame_cond}
    out = net(c_in * x, c_noise, self_cond=self_cond, class_labels=labels, **extra)
    return c_skip * x + c_out * out.to(torch.float32)


def first_frame_condition(frame: Tensor, num_frames: int) -> Tensor:
    """A frame-conditioned network's `frame_cond (b, c + 1, num_frames, h, w)` for known first
    frames `frame (b, c, 1, h, w)` in [-1, 1]: the frame at position 0, zeros after it, and a
    mask channel that is 1 on frame 0."""
    batch, channels, _, height, width = frame.shape
    cond = frame.new_zeros(batch, channels + 1, num_frames, height, width)
    cond[:, :channels, :1] = frame
    cond[:, channels, 0] = 1.0
    return cond


class EDM2Diffusion(nn.Module, HubModel, ConditionalSampling):
    """EDM2 preconditioning, loss and Heun sampler around a `KarrasUnet3D`.

    `forward(videos (b, c, f, h, w) in [0, 1], class_labels=None) -> scalar loss`; videos are mapped
    to [-1, 1] internally. `sample(...) -> (b, c, f, h, w)` in [0, 1]. With probability
    `label_dropout` a training item's label vector is zeroed, which trains the unconditional
    branch used by classifier-free guidance. Self-conditioning networks get the model's own
    estimate (no gradient) as `self_cond` for half of the training batches, and the previous
    step's estimate while sampling.

    Conditioning and long videos (`mp_layers.conditioning.ConditionalSampling`, keyword
    arguments of `sample` passed through): `extend_video`, `interpolate_video`,
    `upsample_video`, `sample_long`; or `sample(condition=..., window=...)` directly.
    """

    _hub_parts = ("net",)  # saved in `net/` by save_pretrained

    @typechecked
    def __init__(
        self,
        net: KarrasUnet3D,
        *,
        sigma_data: float = 0.5,
        P_mean: float = -0.4,
        P_std: float = 1.0,
        logvar_channels: int = 128,
        label_dropout: float = 0.1,
        frame_cond_dropout: float = 0.1,
        frame_cond_noise: float = 0.1,
    ) -> None:
        super().__init__()
        self.net = net
        self.sigma_data = check_float("sigma_data", sigma_data, low=0.0)
        if self.sigma_data == 0:
            raise ValueError("sigma_data: expected a float > 0, got 0.0")
        self.P_mean = check_float("P_mean", P_mean)
        self.P_std = check_float("P_std", P_std, low=0.0)
        self.logvar_channels = check_int("logvar_channels", logvar_channels, minimum=2)
        self.label_dropout = check_float("label_dropout", label_dropout, low=0.0, high=1.0)
        self.frame_cond_dropout = check_float(
            "frame_cond_dropout", frame_cond_dropout, low=0.0, high=1.0
        )
        self.frame_cond_noise = check_float("frame_cond_noise", frame_cond_noise, low=0.0)
        self.logvar_fourier = MPFourierEmbedding(logvar_channels)
        self.logvar_linear = MPLinear(logvar_channels, 1)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (besides `net`), JSON-serialisable."""
        return {
            "sigma_data": self.sigma_data,
            "P_mean": self.P_mean,
            "P_std": self.P_std,
            "logvar_channels": self.logvar_channels,
            "label_dropout": self.label_dropout,
            "frame_cond_dropout": self.frame_cond_dropout,
            "frame_cond_noise": self.frame_cond_noise,
        }

    def _labels(self, class_labels: Tensor | None, batch: int) -> Tensor | None:
        if class_labels is None:
            if self.net.needs_class_labels:
                raise ValueError(
                    f"class_labels: the network is class-conditional (num_classes="
                    f"{self.net.num_classes}), expected labels of shape ({batch},), got None"
                )
            return None
        return self.net.label_vector(class_labels, batch)

    @typechecked
    def logvar(self, sigma: Tensor) -> Tensor:
        """Learned log-variance `u(σ)` `(b,)` of the loss at noise levels `sigma (b,)`."""
        c_noise = sigma.to(torch.float32).log() / 4
        return self.logvar_linear(self.logvar_fourier(c_noise)).squeeze(-1)

    @typechecked
    def denoise(
        self,
        x: Tensor,
        sigma: Tensor | float,
        class_labels: Tensor | None = None,
        self_cond: Tensor | None = None,
    ) -> Tensor:
        """The preconditioned denoiser `D(x; σ)` on noisy videos `x (b, c, f, h, w)` in [-1, 1] space.

        `sigma` is `(b,)` or a float; `class_labels` `(b,)` int or `(b, num_classes)` float.
        Returns the denoised estimate `(b, c, f, h, w)` in float32.
        """
        batch = x.shape[0]
        if not isinstance(sigma, Tensor):
            sigma = torch.full((batch,), check_float("sigma", sigma, low=0.0), device=x.device)
        sigma = sigma.reshape(-1).expand(batch) if sigma.numel() == 1 else sigma
        labels = self._labels(class_labels, batch)
        return _precondition(
            self.net, x.to(torch.float32), sigma, labels, self_cond, self.sigma_data
        )

    def _training_frame_cond(self, y: Tensor) -> Tensor | None:
        """The first frame as known, with noise of a random level up to `frame_cond_noise`
        (so sampling tolerates a given frame that is not a training frame), dropped for a
        `frame_cond_dropout` share of the batch (which keeps unconditional sampling working)."""
        if not self.net.frame_condition:
            return None
        batch = y.shape[0]
        level = torch.rand(batch, 1, 1, 1, 1, device=y.device) * self.frame_cond_noise
        first = y[:, :, :1] + torch.randn_like(y[:, :, :1]) * level
        keep = torch.rand(batch, device=y.device) >= self.frame_cond_dropout
        return first_frame_condition(first, y.shape[2]) * keep.view(-1, 1, 1, 1, 1).to(y.dtype)

    @typechecked
    def forward(self, videos: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """Training loss (a scalar) for `videos (b, c, f, h, w)` in [0, 1] (EDM2 eq. 20 + uncertainty)."""
        expected = (self.net.channels,)
        if videos.ndim != 5 or videos.shape[1:2] != expected or not videos.is_floating_point():
            raise ValueError(
                f"videos: expected a float tensor of shape (b, {self.net.channels}, frames, height, "
                f"width), got {tuple(videos.shape)} {videos.dtype}"
            )
        if not torch.compiler.is_compiling():
            low, high = float(videos.min()), float(videos.max())
            if low < -1e-3 or high > 1 + 1e-3:
                raise ValueError(
                    f"videos: expected values in [0, 1], got values in [{low:.3g}, {high:.3g}]"
                )
        batch = videos.shape[0]
        labels = self._labels(class_labels, batch)
        if labels is not None and self.training and self.label_dropout > 0:
            keep = torch.rand(batch, device=videos.device) >= self.label_dropout
            labels = labels * keep[:, None].to(labels.dtype)

        y = videos.to(torch.float32) * 2 - 1
        sigma = (torch.randn(batch, device=y.device) * self.P_std + self.P_mean).exp()
        noisy = y + torch.randn_like(y) * sigma.reshape(-1, 1, 1, 1, 1)
        frame_cond = self._training_frame_cond(y)
        self_cond = None
        if self.net.self_condition and bool(torch.rand(()) < 0.5):
            with torch.no_grad():
                self_cond = _precondition(
                    self.net, noisy, sigma, labels, None, self.sigma_data, frame_cond
                )
        denoised = _precondition(
            self.net, noisy, sigma, labels, self_cond, self.sigma_data, frame_cond
        )

        weight = (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
        logvar = self.logvar(sigma)
        per_item = ((denoised - y) ** 2).flatten(1).mean(1)
        loss = weight / logvar.exp() * per_item + logvar
        return loss.mean()

    def _sampling_frame_cond(
        self, first_frame: Tensor | None, shape: tuple[int, ...], device: torch.device
    ) -> Tensor | None:
        """`frame_cond` of the samples for a given first frame in [0, 1] (None: none given)."""
        if first_frame is None:
            return None
        if not self.net.frame_condition:
            raise ValueError(
                "first_frame: this network has no frame conditioning (train it with "
                "--cond-frames first); any network takes condition=known_frames(frame, [0], n)"
            )
        batch, channels, _, height, width = shape
        if (
            first_frame.ndim != 5
            or tuple(first_frame.shape[1:]) != (channels, 1, height, width)
            or (first_frame.shape[0] not in (1, batch))
        ):
            raise ValueError(
                f"first_frame: expected (1 or {batch}, {channels}, 1, {height}, {width}) in [0, 1],"
                f" got {tuple(first_frame.shape)}"
            )
        frame = first_frame.to(device=device, dtype=torch.float32).expand(batch, -1, -1, -1, -1)
        return first_frame_condition(frame * 2 - 1, shape[2])

    @property
    def _window_frames(self) -> int:
        return self.net.frames

    def _conditional_sampler(self, **sample_kwargs: Any) -> Sampler:
        """`sample` as an `mp_layers.conditioning.Sampler` (`ConditionalSampling`'s methods)."""

        def sample(
            batch_size: int,
            frames: int,
            image_size: int | None,
            condition: Condition | None,
            window: int | None,
            overlap: int | None,
        ) -> Tensor:
            return self.sample(
                batch_size,
                frames=frames,
                image_size=image_size,
                condition=condition,
                window=window,
                overlap=overlap,
                **sample_kwargs,
            )

        return sample

    @torch.no_grad()
    @typechecked
    def sample(
        self,
        batch_size: int,
        *,
        class_labels: Tensor | None = None,
        num_steps: int = 32,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
        guidance: float = 1.0,
        guide_net: KarrasUnet3D | EDM2Diffusion | None = None,
        generator: torch.Generator | None = None,
        frames: int | None = None,
        image_size: int | None = None,
        condition: Condition | None = None,
        window: int | None = None,
        overlap: int | None = None,
        first_frame: Tensor | None = None,
    ) -> Tensor:
        """Sample `(batch_size, channels, frames, image_size, image_size)` videos in [0, 1].

        Heun's 2nd-order ODE solver over `karras_sigmas(num_steps, ...)` (EDM algorithm 1,
        `2 * num_steps - 1` network evaluations per branch). With `guidance != 1` the denoiser is
        `D_guide + guidance * (D - D_guide)`: `guide_net` (a weaker `KarrasUnet3D` or
        `EDM2Diffusion`; autoguidance) if given, otherwise this network with the all-zero label
        vector (classifier-free guidance; the batch is doubled). `generator` seeds the initial
        noise; `frames` / `image_size` default to the training shape (any size the network's
        down-sampling divides works, e.g. longer clips).

        `condition` (`mp_layers.conditioning.Condition`, videos in [0, 1]): known frames or
        pixels kept and the rest generated by replacement or reconstruction guidance, or a
        low-resolution video to match (super-resolution); together with any guidance above.
        `window`: denoise `window` frames at a time, windows sharing `overlap` frames (default
        `window // 2`) averaged at every step (MultiDiffusion), for clips longer than the
        network was trained on. `first_frame` `(b or 1, channels, 1, h, w)` in [0, 1]: image to
        video through the network's own frame conditioning (`frame_condition=True`, trained
        with it; nothing is pasted back).
        """
        batch_size = check_int("batch_size", batch_size)
        guidance = check_float("guidance", guidance)
        net = self.net
        guide = guide_net.net if isinstance(guide_net, EDM2Diffusion) else guide_net
        labels = self._labels(class_labels, batch_size)
        if guidance != 1.0 and guide is None and labels is None:
            raise ValueError(
                f"guidance: {guidance} needs a guide: pass guide_net, or class_labels for "
                "classifier-free guidance on a class-conditional network"
            )
        frames = net.frames if frames is None else check_int("frames", frames)
        image_size = net.image_size if image_size is None else check_int("image_size", image_size)
        device = next(net.parameters()).device
        sigmas = karras_sigmas(
            num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, device=device
        )
        shape = (batch_size, net.channels, frames, image_size, image_size)
        noise = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
        known = self._sampling_frame_cond(first_frame, shape, device)

        modes = [(module, module.training) for module in (net, guide) if module is not None]
        for module, _ in modes:
            module.eval()
        try:
            state: dict[str, Tensor | None] = {"self_cond": None}

            def window_denoiser(x: Tensor, sigma: float, frames: slice) -> Tensor:
                s = torch.full((batch_size,), sigma, device=device)
                prev = state["self_cond"] if net.self_condition else None
                prev = None if prev is None else prev[:, :, frames]
                fc = None if known is None else known[:, :, frames]
                if guidance == 1.0:
                    out = _precondition(net, x, s, labels, prev, self.sigma_data, fc)
                elif guide is None:  # classifier-free guidance: conditional + zero labels, batched
                    assert labels is not None
                    both = _precondition(
                        net,
                        torch.cat((x, x)),
                        torch.cat((s, s)),
                        torch.cat((labels, torch.zeros_like(labels))),
                        None if prev is None else torch.cat((prev, prev)),
                        self.sigma_data,
                        None if fc is None else torch.cat((fc, fc)),
                    )
                    cond, uncond = both.chunk(2)
                    out = uncond.lerp(cond, guidance)
                else:  # autoguidance by a weaker network
                    main = _precondition(net, x, s, labels, prev, self.sigma_data, fc)
                    guide_labels = labels if guide.needs_class_labels else None
                    guide_prev = prev if guide.self_condition else None
                    weak = _precondition(guide, x, s, guide_labels, guide_prev, self.sigma_data)
                    out = weak.lerp(main, guidance)
                return out

            denoise = conditioned_denoiser(
                window_denoiser, shape, condition, window, overlap, generator, device
            )

            def denoiser(x: Tensor, sigma: float) -> Tensor:
                out = denoise(x, sigma)
                state["self_cond"] = out.detach()
                return out

            x = noise * sigmas[0].to(torch.float32)
            for i in range(num_steps):
                sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
                slope = (x - denoiser(x, sigma)) / sigma
                x_next = x + (sigma_next - sigma) * slope
                if sigma_next > 0:  # Heun correction (not on the last step to σ = 0)
                    slope_next = (x_next - denoiser(x_next, sigma_next)) / sigma_next
                    x_next = x + (sigma_next - sigma) * (slope + slope_next) / 2
                x = x_next
        finally:
            for module, was_training in modes:
                module.train(was_training)
        return ((x + 1) / 2).clamp(0.0, 1.0)
