"""Conditional sampling (`mp_layers.conditioning`) with exact denoisers: a Gaussian video model
whose conditional mean is known, a finite set of MovingShapes clips, and a constant video."""

from __future__ import annotations

import itertools

import pytest
import torch

from mp_layers.conditioning import (
    Condition,
    ConditionedDenoiser,
    WindowedDenoiser,
    area_downsample,
    extend,
    frame_mask,
    interpolation,
    known_frames,
    super_resolution,
    temporal_windows,
)


def heun(denoise, noise: torch.Tensor, steps: int = 24, sigma_max: float = 40.0) -> torch.Tensor:
    """EDM's Heun sampler (algorithm 1, rho = 7) of `denoise(x, sigma)` from `noise`."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    sigmas = (sigma_max ** (1 / 7) + ramp * (0.002 ** (1 / 7) - sigma_max ** (1 / 7))) ** 7
    sigmas = [*sigmas.tolist(), 0.0]
    x = noise * sigmas[0]
    for sigma, sigma_next in itertools.pairwise(sigmas):
        slope = (x - denoise(x, sigma)) / sigma
        x_next = x + (sigma_next - sigma) * slope
        if sigma_next > 0:
            x_next = (
                x
                + (sigma_next - sigma)
                * (slope + (x_next - denoise(x_next, sigma_next)) / sigma_next)
                / 2
            )
        x = x_next
    return x


# ------------------------------------------------------------------- a Gaussian video model

FRAMES, KNOWN = 8, 4
COV = torch.tensor([[0.95 ** abs(i - j) for j in range(FRAMES)] for i in range(FRAMES)])


def gaussian_denoiser(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[y | y + sigma n] for y ~ N(0, COV) over frames (each pixel on its own)."""
    gain = COV @ torch.linalg.inv(COV + sigma**2 * torch.eye(FRAMES))
    return torch.einsum("ij,bcjhw->bcihw", gain.to(x.dtype), x)


def conditional_mean(known: torch.Tensor) -> torch.Tensor:
    """E[y_b | y_a] = COV_ba COV_aa^-1 y_a, for the first KNOWN frames known."""
    gain = COV[KNOWN:, :KNOWN] @ torch.linalg.inv(COV[:KNOWN, :KNOWN])
    return torch.einsum("ij,bcjhw->bcihw", gain, known)


def test_reconstruction_guidance_halves_the_error_of_replacement() -> None:
    generator = torch.Generator().manual_seed(0)
    samples = 256
    known = torch.full((1, 1, KNOWN, 1, 1), 1.5)  # an unlikely start: replacement lags behind
    truth = conditional_mean(known)  # (1, 1, FRAMES - KNOWN, 1, 1)
    shape = (samples, 1, FRAMES, 1, 1)
    errors = {}
    for method, weight in (("replace", 0.0), ("guidance", 4.0)):
        condition = known_frames(known, list(range(KNOWN)), FRAMES, method=method, weight=weight)
        noise = torch.randn(shape, generator=generator)
        denoise = ConditionedDenoiser(
            gaussian_denoiser, condition, shape, generator=torch.Generator().manual_seed(1)
        )
        video = heun(denoise, noise)
        assert torch.equal(video[:, :, :KNOWN], known.expand(samples, -1, -1, -1, -1))
        errors[method] = float((video[:, :, KNOWN:].mean(0) - truth[0]).abs().mean())
    assert errors["guidance"] <= 0.5 * errors["replace"], errors


def test_super_resolution_guidance_matches_the_low_resolution_video() -> None:
    def smooth_denoiser(x: torch.Tensor, sigma: float) -> torch.Tensor:
        return x / (1 + sigma**2)  # y ~ N(0, I): any video; only guidance ties it to low_res

    low_res = torch.rand(2, 3, 2, 4, 4) * 2 - 1
    condition = super_resolution(low_res, 2, weight=1.0)
    shape = (2, 3, 2, 8, 8)
    denoise = ConditionedDenoiser(smooth_denoiser, condition, shape)
    plain = heun(smooth_denoiser, torch.randn(shape, generator=torch.Generator().manual_seed(0)))
    video = heun(denoise, torch.randn(shape, generator=torch.Generator().manual_seed(0)))
    guided_error = (area_downsample(video, 2) - low_res).abs().mean()
    plain_error = (area_downsample(plain, 2) - low_res).abs().mean()
    assert guided_error < 0.05 < plain_error


# ------------------------------------------------------------ an exact denoiser of a finite set


def finite_set_denoiser(clips: torch.Tensor):
    """E[y | y + sigma n] for y uniform over `clips` (n, c, f, h, w)."""

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        distance = ((x[:, None] - clips[None]) ** 2).flatten(2).sum(-1)  # (b, n)
        weights = torch.softmax(-distance / (2 * sigma**2), dim=1)
        return torch.einsum("bn,nc...->bc...", weights, clips)

    return denoise


def _moving_squares(count: int, frames: int, size: int = 8) -> torch.Tensor:
    """Clips of a bright 2x2 square on black, in [-1, 1]: clip i starts at its own place and
    moves one pixel per frame in its own direction (wrapping around)."""
    clips = -torch.ones(count, 1, frames, size, size)
    for index in range(count):
        row, col = 1 + 2 * (index % 3), 1 + 3 * (index // 3)
        step_row, step_col = [(0, 1), (1, 0), (1, 1), (0, -1), (-1, 0), (1, -1)][index % 6]
        for t in range(frames):
            r, c = (row + step_row * t) % (size - 1), (col + step_col * t) % (size - 1)
            clips[index, 0, t, r : r + 2, c : c + 2] = 1.0
    return clips


def test_extension_continues_the_right_clip() -> None:
    """Given the first 3 frames of two clips of a finite set, the exact denoiser with
    reconstruction guidance continues both clips exactly; plain replacement does not (it lands
    on other clips of the set: the paper's incoherent continuations)."""
    clips = _moving_squares(6, 8)
    denoise = finite_set_denoiser(clips)
    given = (clips[[2, 5], :, :3] + 1) / 2  # the first 3 frames of clips 2 and 5, in [0, 1]

    def sample_window(batch, frames, size, condition, window, overlap) -> torch.Tensor:
        assert (batch, frames, size, window, overlap) == (2, 8, 8, None, None)
        shape = (2, 1, 8, 8, 8)
        guided = ConditionedDenoiser(denoise, condition.rescaled(2, -1), shape)
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        return (heun(guided, noise) + 1) / 2

    truth = (clips[[2, 5]] + 1) / 2
    guided = extend(sample_window, given, 8, window=8, overlap=3, method="guidance", weight=10.0)
    assert guided.shape == (2, 1, 8, 8, 8)
    torch.testing.assert_close(guided, truth, atol=1e-3, rtol=0)
    replaced = extend(sample_window, given, 8, window=8, overlap=3, method="replace")
    assert (replaced - truth).abs().amax(dim=(1, 2, 3, 4)).max() > 0.5  # a wrong clip


def test_extend_chains_windows() -> None:
    masks, given = [], []

    def sample_window(batch, frames, size, condition, window, overlap) -> torch.Tensor:
        assert condition.mask is not None
        masks.append(condition.mask[0, 0, :, 0, 0].tolist())
        given.append(condition.values[0, 0, :2, 0, 0].tolist())
        return torch.full((1, 1, 4, 2, 2), len(masks) / 10)

    video = extend(sample_window, torch.zeros(1, 1, 3, 2, 2), 9, window=4, overlap=2)
    assert masks == [[True, True, False, False]] * 3  # 3 frames, then 2 new ones per window
    assert given == [[0, 0], pytest.approx([0.1, 0.1]), pytest.approx([0.2, 0.2])]
    expected = [0, 0, 0, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3]
    assert video[0, 0, :, 0, 0].tolist() == pytest.approx(expected)


# ------------------------------------------------------------------------- temporal windows


def test_temporal_windows_cover_the_clip() -> None:
    assert temporal_windows(8, 8, 2) == [(0, 8)]
    assert temporal_windows(5, 8, 2) == [(0, 5)]
    assert temporal_windows(20, 8, 4) == [(0, 8), (4, 12), (8, 16), (12, 20)]
    assert temporal_windows(21, 8, 4) == [(0, 8), (4, 12), (8, 16), (12, 20), (13, 21)]
    assert temporal_windows(16, 8, 0) == [(0, 8), (8, 16)]
    for frames in range(1, 40):
        windows = temporal_windows(frames, 8, 3)
        covered = set().union(*(range(a, b) for a, b in windows))
        assert covered == set(range(frames))
        assert all(b - a == min(8, frames) for a, b in windows)
        assert all(a2 - a1 <= 5 for (a1, _), (a2, _) in itertools.pairwise(windows))


def test_one_window_is_the_plain_call() -> None:
    x = torch.randn(2, 3, 8, 4, 4)
    calls = []

    def denoise(v: torch.Tensor, sigma: float, frames: slice) -> torch.Tensor:
        calls.append(frames)
        return v * 0.5 + sigma

    assert torch.equal(WindowedDenoiser(denoise, 8, 4)(x, 0.3), x * 0.5 + 0.3)
    assert calls == [slice(0, 8)]


def test_windowed_sampler_reproduces_a_constant_video() -> None:
    constant = torch.full((1, 3, 8, 4, 4), 0.25)

    def denoise(v: torch.Tensor, sigma: float, frames: slice) -> torch.Tensor:
        assert v.shape[2] == 8
        return constant.expand(v.shape[0], -1, -1, -1, -1)

    windowed = WindowedDenoiser(denoise, 8, 3)
    video = heun(windowed, torch.randn(2, 3, 29, 4, 4, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(video, torch.full_like(video, 0.25), atol=1e-6, rtol=0)


def test_windows_average_overlapping_estimates() -> None:
    def denoise(v: torch.Tensor, sigma: float, frames: slice) -> torch.Tensor:
        return torch.full_like(v, float(frames.start))  # each window says where it starts

    uniform = WindowedDenoiser(denoise, 4, 2, weights="uniform")(torch.zeros(1, 1, 8, 1, 1), 1.0)
    # windows (0, 4), (2, 6), (4, 8): frames 2-3 average 0 and 2, frames 4-5 average 2 and 4
    assert uniform[0, 0, :, 0, 0].tolist() == [0, 0, 1, 1, 3, 3, 4, 4]
    # triangle weights 1, 2, 2, 1: frame 2 is the third of window 0 (weight 2) and the first of
    # window 2 (weight 1): (2 * 0 + 1 * 2) / 3; frame 3: (1 * 0 + 2 * 2) / 3
    triangle = WindowedDenoiser(denoise, 4, 2)(torch.zeros(1, 1, 8, 1, 1), 1.0)
    expected = [0, 0, 2 / 3, 4 / 3, 2 + 2 / 3, 2 + 4 / 3, 4, 4]
    assert triangle[0, 0, :, 0, 0].tolist() == pytest.approx(expected)


# ----------------------------------------------------------------------------------- inputs


def test_interpolation_knows_every_kth_frame() -> None:
    video = torch.rand(1, 3, 3, 4, 4)
    condition = interpolation(video, 4)
    assert condition.mask is not None
    assert condition.mask[0, 0, :, 0, 0].tolist() == [i % 4 == 0 for i in range(9)]
    assert torch.equal(condition.values[:, :, [0, 4, 8]], video)


def test_bad_input_is_one_clear_error() -> None:
    video = torch.rand(1, 3, 8, 4, 4)
    with pytest.raises(ValueError, match=r"positions: expected frame indices in \[0, 8\)"):
        frame_mask([0, 8], 8)
    with pytest.raises(ValueError, match="weight"):
        Condition(video, frame_mask([0], 8), weight=-1.0)
    with pytest.raises(ValueError, match="mask: expected a shape broadcastable"):
        Condition(video, frame_mask([0], 5))
    with pytest.raises(ValueError, match="mask: expected a bool"):
        Condition(video, torch.ones(1, 1, 8, 1, 1))
    with pytest.raises(ValueError, match="method: super-resolution"):
        Condition(video, None, method="replace", measure=lambda v: v)
    with pytest.raises(ValueError, match="expected a known-part mask, or a measure"):
        Condition(video, None)
    with pytest.raises(
        ValueError, match=r"values: expected a video of shape \(1 or 2, 3, 8, 8, 8\)"
    ):
        ConditionedDenoiser(lambda x, s: x, Condition(video, frame_mask([0], 8)), (2, 3, 8, 8, 8))
    with pytest.raises(ValueError, match="overlap: expected fewer frames than the window"):
        temporal_windows(16, 8, 8)
    with pytest.raises(ValueError, match="overlap"):
        WindowedDenoiser(lambda x, s, f: x, 4, 4)
    with pytest.raises(ValueError, match="divisible by 3"):
        area_downsample(video, 3)
    with pytest.raises(ValueError, match="num_frames: expected more than the video's 8 frames"):
        extend(lambda *a: video, video, 8, window=8, overlap=2)
    with pytest.raises(ValueError, match="sample: expected clips of shape"):
        extend(lambda *a: torch.zeros(1, 3, 2, 4, 4), video, 12, window=4, overlap=2)
    with pytest.raises(TypeError):
        known_frames(video, [0, 1], "8")  # type: ignore[arg-type]
