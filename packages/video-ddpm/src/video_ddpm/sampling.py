"""Samplers of the Gaussian diffusion: DDPM ancestral sampling and DDIM, as functions.

Both share one signature (as k-diffusion's samplers do), so a caller picks one by name
(`SAMPLER_FUNCTIONS`):

    sample_xxx(diffusion, shape, *, cond=None, cond_scale=1.0, steps=None, eta=0.0,
               clip_denoised=True, generator=None) -> videos (b, c, f, h, w) in [0, 1]

`diffusion` is a `GaussianDiffusion` (anything with its step methods: `SteppedDiffusion`).

- DDPM (Ho et al. 2020): all T ancestral steps `x_{t-1} = μ̃_t + sqrt(β̃_t) z`, t = T-1 … 0;
  `steps` must be None or T and `eta` 0.
- DDIM (Song et al. 2021): `steps` steps t → t' over `linspace(-1, T - 1, steps + 1)`,
  `x_{t'} = sqrt(ᾱ_{t'}) x_0 + sqrt(1 - ᾱ_{t'} - σ_t²) ε + σ_t z` with
  `σ_t = η sqrt((1 - ᾱ_{t'}) / (1 - ᾱ_t)) sqrt(1 - ᾱ_t / ᾱ_{t'})`; η = 0 is deterministic given
  the generator, η = 1 with steps = T is the ancestral step.

With `condition` (known frames or pixels, super-resolution) or `window` (temporal windows of
`window` frames sharing `overlap`, averaged at every step) both run the same steps through
`video_ddpm.conditional_sampling` (not under `inference_mode`: reconstruction guidance needs a
gradient).
"""

from __future__ import annotations

import itertools
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from mp_layers.conditioning import Condition
from mp_layers.typecheck import typechecked
from video_ddpm.checks import check_choice, check_steps
from video_ddpm.conditional_sampling import sample_conditioned
from video_ddpm.conditioning import Cond
from video_ddpm.tensor_utils import randn, randn_like, timesteps_like, unnormalize_to_zero_to_one

__all__ = [
    "SAMPLERS",
    "SAMPLER_FUNCTIONS",
    "Sampler",
    "SteppedDiffusion",
    "check_sampler_options",
    "ddim_time_pairs",
    "sample_ddim",
    "sample_ddpm",
]

SAMPLERS = ("ddpm", "ddim")

VideoShape = tuple[int, int, int, int, int]


@runtime_checkable
class SteppedDiffusion(Protocol):
    """What a sampler uses of a `GaussianDiffusion`: its step count, its schedule's device and
    dtype (`betas`), condition embedding and the two single steps."""

    num_timesteps: int
    betas: Tensor

    def embed_cond(
        self, cond: Cond, device: torch.device, batch: int | None = None
    ) -> Tensor | None: ...

    def p_sample(
        self,
        x: Tensor,
        t: Tensor | int,
        cond: Tensor | None = None,
        cond_scale: float = 1.0,
        clip_denoised: bool = True,
        *,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...

    def ddim_step_mean_std(
        self,
        x: Tensor,
        t: Tensor,
        t_next: Tensor,
        eta: float = 0.0,
        cond: Tensor | None = None,
        cond_scale: float = 1.0,
        clip_denoised: bool = True,
    ) -> tuple[Tensor, Tensor]: ...


class Sampler(Protocol):
    """The shared signature of `sample_ddpm` and `sample_ddim`."""

    def __call__(
        self,
        diffusion: SteppedDiffusion,
        shape: VideoShape,
        *,
        cond: Cond = None,
        cond_scale: float = 1.0,
        steps: int | None = None,
        eta: float = 0.0,
        clip_denoised: bool = True,
        generator: torch.Generator | None = None,
        condition: Condition | None = None,
        window: int | None = None,
        overlap: int | None = None,
    ) -> Tensor: ...


# ---------------------------------------------------------------------------------------------
# checks and schedules of steps


def _check_ddpm_options(steps: int | None, eta: float, timesteps: int) -> None:
    if steps not in (None, timesteps):
        raise ValueError(
            f"steps: the 'ddpm' sampler runs all {timesteps} steps, got {steps}; "
            "use sampler='ddim' for fewer"
        )
    if eta != 0:
        raise ValueError(f"eta: applies to sampler='ddim' only, got eta={eta} with 'ddpm'")


def check_sampler_options(sampler: str, steps: int | None, eta: float, timesteps: int) -> int:
    """`sampler` one of `SAMPLERS`, with the steps and eta it accepts; returns the step count
    (None: all `timesteps`)."""
    check_choice("sampler", sampler, SAMPLERS)
    if sampler == "ddpm":
        _check_ddpm_options(steps, eta, timesteps)
    return check_steps(steps, timesteps)


def ddim_time_pairs(timesteps: int, steps: int) -> list[tuple[int, int]]:
    """`(t, t_next)` pairs from `linspace(-1, timesteps - 1, steps + 1)` reversed (-1 = data)."""
    times = torch.linspace(-1, timesteps - 1, steps + 1, dtype=torch.float64)
    ints = list(reversed(times.floor().long().tolist()))
    return list(itertools.pairwise(ints))


def _initial_noise(
    diffusion: SteppedDiffusion, shape: VideoShape, generator: torch.Generator | None
) -> Tensor:
    """Pure noise `x_T` of `shape`, on the device and in the dtype of the schedule."""
    betas = diffusion.betas
    return randn(shape, device=betas.device, dtype=betas.dtype, generator=generator)


# ---------------------------------------------------------------------------------------------
# samplers


@typechecked
def sample_ddpm(
    diffusion: SteppedDiffusion,
    shape: VideoShape,
    *,
    cond: Cond = None,
    cond_scale: float = 1.0,
    steps: int | None = None,
    eta: float = 0.0,
    clip_denoised: bool = True,
    generator: torch.Generator | None = None,
    condition: Condition | None = None,
    window: int | None = None,
    overlap: int | None = None,
) -> Tensor:
    """Ancestral sampling over all T steps from pure noise of `shape` `(b, c, f, h, w)`; returns
    [0, 1] videos. `steps` (None or T) and `eta` (0) are there for the shared signature."""
    _check_ddpm_options(steps, eta, diffusion.num_timesteps)
    embedded = diffusion.embed_cond(cond, diffusion.betas.device, batch=shape[0])
    if condition is not None or window is not None:
        times = [(t, t - 1) for t in reversed(range(diffusion.num_timesteps))]
        return sample_conditioned(
            diffusion, shape, times, ancestral=True, cond=embedded, cond_scale=cond_scale,
            eta=0.0, clip_denoised=clip_denoised, generator=generator, condition=condition,
            window=window, overlap=overlap,
        )  # fmt: skip
    with torch.inference_mode():
        x = _initial_noise(diffusion, shape, generator)
        for i in reversed(range(diffusion.num_timesteps)):
            x = diffusion.p_sample(x, i, embedded, cond_scale, clip_denoised, generator=generator)
        return unnormalize_to_zero_to_one(x).clamp(0, 1)


@typechecked
def sample_ddim(
    diffusion: SteppedDiffusion,
    shape: VideoShape,
    *,
    cond: Cond = None,
    cond_scale: float = 1.0,
    steps: int | None = None,
    eta: float = 0.0,
    clip_denoised: bool = True,
    generator: torch.Generator | None = None,
    condition: Condition | None = None,
    window: int | None = None,
    overlap: int | None = None,
) -> Tensor:
    """DDIM sampling in `steps` (1 … T, default T) steps from pure noise of `shape`
    `(b, c, f, h, w)`, with stochasticity `eta` >= 0; returns [0, 1] videos."""
    steps = check_steps(steps, diffusion.num_timesteps)
    if eta < 0:
        raise ValueError(f"eta: expected a float >= 0, got {eta}")
    embedded = diffusion.embed_cond(cond, diffusion.betas.device, batch=shape[0])
    if condition is not None or window is not None:
        return sample_conditioned(
            diffusion, shape, ddim_time_pairs(diffusion.num_timesteps, steps), ancestral=False,
            cond=embedded, cond_scale=cond_scale, eta=eta, clip_denoised=clip_denoised,
            generator=generator, condition=condition, window=window, overlap=overlap,
        )  # fmt: skip
    with torch.inference_mode():
        x = _initial_noise(diffusion, shape, generator)
        for t, t_next in ddim_time_pairs(diffusion.num_timesteps, steps):
            time, time_next = timesteps_like(t, x), timesteps_like(t_next, x)
            mean, sigma = diffusion.ddim_step_mean_std(
                x, time, time_next, eta, embedded, cond_scale, clip_denoised
            )
            if eta == 0:
                x = mean
                continue
            x = mean + sigma * randn_like(x, generator)
        return unnormalize_to_zero_to_one(x).clamp(0, 1)


SAMPLER_FUNCTIONS: dict[str, Sampler] = {"ddpm": sample_ddpm, "ddim": sample_ddim}
"""Name (`GaussianDiffusion.sample(sampler=...)`) -> sampler, in `SAMPLERS` order."""
