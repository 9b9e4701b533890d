"""Tests for `video_ddpm.diffusion.GaussianDiffusion`: maths, validation and the fixed defects."""

from __future__ import annotations

import copy
import json
import math
import sys
import types
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from video_ddpm.diffusion import (
    GaussianDiffusion,
    cosine_beta_schedule,
    linear_beta_schedule,
    sigmoid_beta_schedule,
)
from video_ddpm.sampling import SAMPLER_FUNCTIONS, ddim_time_pairs, sample_ddim, sample_ddpm

SIZE, FRAMES, CHANNELS = 8, 3, 3
# the schedule's buffers are float32, so float64 conversions agree to float32 rounding, amplified
# by sqrt(1/ᾱ) near t = T - 1


def assert_loosely_close(actual: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-3)


BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


class StubNet(nn.Module):
    """A tiny network with the Unet3D contract that records how it is called."""

    def __init__(
        self,
        *,
        channels: int = CHANNELS,
        cond_dim: int | None = None,
        use_bert_text_cond: bool = False,
        downsample_factor: int = 1,
        zero: bool = False,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.cond_dim = cond_dim
        self.has_cond = cond_dim is not None
        self.use_bert_text_cond = use_bert_text_cond
        self.downsample_factor = downsample_factor
        self.zero = zero
        self.mix = nn.Conv3d(channels, channels, 1)
        self.time_scale = nn.Parameter(torch.tensor(0.01))
        if cond_dim is not None:
            self.null_cond_emb = nn.Parameter(torch.randn(1, cond_dim))
            self.cond_proj = nn.Linear(cond_dim, channels)
        self.calls: list[dict[str, Any]] = []

    def forward(
        self,
        x: Tensor,
        time: Tensor,
        cond: Tensor | None = None,
        null_cond_prob: float = 0.0,
        focus_present_mask: Tensor | None = None,
        prob_focus_present: float = 0.0,
    ) -> Tensor:
        self.calls.append(
            {
                "time": time.tolist(),
                "cond": cond,
                "null_cond_prob": null_cond_prob,
                "focus_present_mask": focus_present_mask,
                "prob_focus_present": prob_focus_present,
            }
        )
        if self.zero:
            return torch.zeros_like(x)
        out = self.mix(x) + self.time_scale * time.to(x.dtype).view(-1, 1, 1, 1, 1)
        if cond is not None:
            drop = torch.rand(x.shape[0], device=x.device) < null_cond_prob
            cond = torch.where(drop[:, None], self.null_cond_emb.to(cond.dtype), cond)
            out = out + self.cond_proj(cond)[:, :, None, None, None]
        return out

    def forward_with_cond_scale(
        self, x: Tensor, time: Tensor, cond: Tensor | None = None, cond_scale: float = 1.0
    ) -> Tensor:
        logits = self.forward(x, time, cond=cond, null_cond_prob=0.0)
        if cond_scale == 1 or not self.has_cond:
            return logits
        null = self.forward(x, time, cond=cond, null_cond_prob=1.0)
        return null + (logits - null) * cond_scale


class OracleNet(StubNet):
    """Returns the exact target of an objective for known (x0, ε), whatever x it is given."""

    def __init__(self, objective: str, x0: Tensor, noise: Tensor, v: Tensor) -> None:
        super().__init__()
        self.target = {"pred_noise": noise, "pred_x0": x0, "pred_v": v}[objective]

    def forward(
        self,
        x: Tensor,
        time: Tensor,
        cond: Tensor | None = None,
        null_cond_prob: float = 0.0,
        focus_present_mask: Tensor | None = None,
        prob_focus_present: float = 0.0,
    ) -> Tensor:
        return self.target


class FakeTextEncoder(nn.Module):
    """Records the texts it embeds; has weights, which must never reach the diffusion's state."""

    def __init__(self, dim: int = 4, pooling: str = "mean") -> None:
        super().__init__()
        self.dim = dim
        self.pooling = pooling
        self.name = ""
        self.weight = nn.Parameter(torch.randn(dim))
        self.calls: list[tuple[list[str], str]] = []

    def __call__(self, texts: list[str], device: torch.device | None = None) -> Tensor:
        self.calls.append((list(texts), self.pooling))
        lengths = torch.tensor([float(len(t)) for t in texts], device=device)
        return lengths[:, None] * self.weight.to(device)[None] / 10


def make(net: nn.Module | None = None, **kwargs: Any) -> GaussianDiffusion:
    options: dict[str, Any] = {"image_size": SIZE, "num_frames": FRAMES, "timesteps": 10}
    options.update(kwargs)
    return GaussianDiffusion(StubNet() if net is None else net, **options)


def own_state_keys(diffusion: GaussianDiffusion) -> set[str]:
    """The state a diffusion model may hold: its network's and its schedule's, nothing else."""
    return {f"denoise_fn.{key}" for key in diffusion.denoise_fn.state_dict()} | set(BUFFERS)


def videos(b: int = 2, frames: int = FRAMES) -> Tensor:
    return torch.rand(b, CHANNELS, frames, SIZE, SIZE)


# ---------------------------------------------------------------------------------------------
# schedules and buffers


@pytest.mark.parametrize(
    "schedule", [cosine_beta_schedule, linear_beta_schedule, sigmoid_beta_schedule]
)
@pytest.mark.parametrize("timesteps", [1, 10, 50, 1000])
def test_schedules_are_monotone_with_alphas_cumprod_in_unit_interval(
    schedule: Any, timesteps: int
) -> None:
    betas = schedule(timesteps)
    assert betas.dtype == torch.float64
    assert betas.shape == (timesteps,)
    assert ((betas > 0) & (betas < 1)).all()
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    assert ((alphas_cumprod > 0) & (alphas_cumprod <= 1)).all()
    assert (alphas_cumprod[1:] < alphas_cumprod[:-1]).all()


def test_linear_schedule_endpoints_are_ddpm() -> None:
    betas = linear_beta_schedule(1000)
    assert betas[0].item() == pytest.approx(1e-4)
    assert betas[-1].item() == pytest.approx(0.02)


def test_cosine_schedule_matches_closed_form() -> None:
    betas = cosine_beta_schedule(100)

    def f(t: int) -> float:
        return math.cos((t / 100 + 0.008) / 1.008 * math.pi / 2) ** 2

    expected = 1 - f(51) / f(50)
    assert betas[50].item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "sigmoid"])
def test_buffers_have_reference_names_and_are_float32(schedule: str) -> None:
    diffusion = make(beta_schedule=schedule, timesteps=30)
    state = diffusion.state_dict()
    for name in BUFFERS:
        assert state[name].dtype == torch.float32
        assert state[name].shape == (30,)
    assert diffusion.alphas_cumprod_prev[0] == 1
    assert diffusion.posterior_variance[0] == 0
    # q(x_{t-1} | x_t, x_0) coefficients: coef1 + coef2 sqrt(ᾱ_t) = sqrt(ᾱ_{t-1})
    lhs = (
        diffusion.posterior_mean_coef1
        + diffusion.posterior_mean_coef2 * diffusion.sqrt_alphas_cumprod
    )
    torch.testing.assert_close(lhs, diffusion.alphas_cumprod_prev.sqrt())


# ---------------------------------------------------------------------------------------------
# conversions between ε, x0 and v


def consistent_triple(diffusion: GaussianDiffusion) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x0 = torch.rand(4, CHANNELS, FRAMES, SIZE, SIZE, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 3, 7, diffusion.num_timesteps - 1])
    return x0, noise, t, diffusion.q_sample(x0, t, noise)


def test_eps_x0_v_conversions_agree() -> None:
    diffusion = make().double()
    x0, noise, t, x_t = consistent_triple(diffusion)
    v = diffusion.predict_v(x0, t, noise)
    assert_loosely_close(diffusion.predict_start_from_noise(x_t, t, noise), x0)
    assert_loosely_close(diffusion.predict_start_from_v(x_t, t, v), x0)
    assert_loosely_close(diffusion.predict_noise_from_start(x_t, t, x0), noise)


def test_q_mean_variance_matches_q_sample() -> None:
    diffusion = make().double()
    x0, noise, t, x_t = consistent_triple(diffusion)
    mean, variance, log_variance = diffusion.q_mean_variance(x0, t)
    torch.testing.assert_close(mean + variance.sqrt() * noise, x_t)
    torch.testing.assert_close(log_variance.exp(), variance)


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_model_predictions_convert_every_objective(objective: str) -> None:
    base = make().double()
    x0, noise, t, x_t = consistent_triple(base)
    v = base.predict_v(x0, t, noise)
    diffusion = make(OracleNet(objective, x0, noise, v), objective=objective).double()
    pred_noise, x_start = diffusion.model_predictions(x_t, t, clip_denoised=False)
    assert_loosely_close(x_start, x0)
    assert_loosely_close(pred_noise, noise)


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_clipping_rederives_noise_from_clipped_start(objective: str) -> None:
    base = make().double()
    x0, noise, t, x_t = consistent_triple(base)
    x0 = x0 * 3  # well outside [-1, 1]
    x_t = base.q_sample(x0, t, noise)
    v = base.predict_v(x0, t, noise)
    diffusion = make(OracleNet(objective, x0, noise, v), objective=objective).double()
    pred_noise, x_start = diffusion.model_predictions(x_t, t, clip_denoised=True)
    assert_loosely_close(x_start, x0.clamp(-1, 1))
    torch.testing.assert_close(diffusion.q_sample(x_start, t, pred_noise), x_t)


def test_dynamic_thresholding_scales_per_sample() -> None:
    base = make().double()
    x0, noise, t, _ = consistent_triple(base)
    x0[0] *= 4  # needs scaling
    x0[1] *= 0.5  # already inside [-1, 1]: s clamps to 1, unchanged
    x_t = base.q_sample(x0, t, noise)
    net = OracleNet("pred_x0", x0, noise, noise)
    diffusion = make(net, objective="pred_x0", use_dynamic_thres=True).double()
    _, x_start = diffusion.model_predictions(x_t, t)
    s = torch.quantile(x0[0].abs().flatten(), 0.9)
    torch.testing.assert_close(x_start[0], x0[0].clamp(-s, s) / s)
    torch.testing.assert_close(x_start[1], x0[1])
    assert x_start.abs().max() <= 1


# ---------------------------------------------------------------------------------------------
# training


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
@pytest.mark.parametrize("loss_type", ["l1", "l2"])
def test_loss_compares_with_the_objective_target(objective: str, loss_type: str) -> None:
    diffusion = make(StubNet(zero=True), objective=objective, loss_type=loss_type)
    x = videos()
    noise, t = torch.randn_like(x), torch.tensor([2, 9])
    loss = diffusion(x, noise=noise, t=t)
    x0 = x * 2 - 1
    target = {"pred_noise": noise, "pred_x0": x0, "pred_v": diffusion.predict_v(x0, t, noise)}
    loss_fn = F.l1_loss if loss_type == "l1" else F.mse_loss
    assert loss.shape == ()
    torch.testing.assert_close(loss, loss_fn(torch.zeros_like(x), target[objective]))


def test_forward_backpropagates_and_passes_kwargs() -> None:
    net = StubNet()
    diffusion = make(net)
    mask = torch.tensor([True, False])
    loss = diffusion(videos(), focus_present_mask=mask, prob_focus_present=0.5)
    loss.backward()
    assert net.mix.weight.grad is not None
    assert net.calls[-1]["focus_present_mask"] is mask
    assert net.calls[-1]["prob_focus_present"] == 0.5
    assert "null_cond_prob" not in net.calls[-1] or net.calls[-1]["null_cond_prob"] == 0.0


def test_null_condition_is_trained_by_default() -> None:
    net = StubNet(cond_dim=4)
    diffusion = make(net)
    loss = diffusion(videos(64), torch.randn(64, 4))
    loss.backward()
    assert net.calls[-1]["null_cond_prob"] == pytest.approx(0.1)
    assert net.null_cond_emb.grad is not None
    assert net.null_cond_emb.grad.abs().sum() > 0


def test_caller_null_cond_prob_wins() -> None:
    net = StubNet(cond_dim=4)
    diffusion = make(net)
    diffusion(videos(8), torch.randn(8, 4), null_cond_prob=0.0).backward()
    assert net.calls[-1]["null_cond_prob"] == 0.0
    assert net.null_cond_emb.grad is None or net.null_cond_emb.grad.abs().sum() == 0


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.rand(2, 4, FRAMES, SIZE, SIZE), r"\(b, 3, 3, 8, 8\), got \(2, 4, 3, 8, 8\)"),
        (torch.rand(2, 3, FRAMES + 1, SIZE, SIZE), r"got \(2, 3, 4, 8, 8\)"),
        (torch.rand(2, 3, FRAMES, SIZE, 2 * SIZE), r"got \(2, 3, 3, 8, 16\)"),
        (torch.rand(3, FRAMES, SIZE, SIZE), r"got \(3, 3, 8, 8\)"),
        (torch.rand(2, 3, FRAMES, SIZE, SIZE) * 2 - 1, r"expected values in \[0, 1\], got"),
        (torch.rand(2, 3, FRAMES, SIZE, SIZE) + 0.5, r"expected values in \[0, 1\], got"),
    ],
)
def test_forward_rejects_bad_videos(bad: Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()(bad)


def test_forward_accepts_values_within_tolerance_and_rejects_integer_videos() -> None:
    x = videos()
    x[0, 0, 0, 0, 0], x[1, 0, 0, 0, 0] = -5e-4, 1 + 5e-4
    assert torch.isfinite(make()(x))
    with pytest.raises(TypeError, match="float"):
        make()(torch.ones(2, 3, FRAMES, SIZE, SIZE, dtype=torch.uint8))


def test_forward_rejects_bad_t_noise_and_cond() -> None:
    diffusion = make(StubNet(cond_dim=4))
    x = videos()
    with pytest.raises(ValueError, match=r"t: expected values in \[0, 9\]"):
        diffusion(x, torch.randn(2, 4), t=torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="noise: expected shape"):
        diffusion(x, torch.randn(2, 4), noise=torch.randn(1, 3, FRAMES, SIZE, SIZE))
    with pytest.raises(ValueError, match="cond_dim=4, got 5"):
        diffusion(x, torch.randn(2, 5))
    with pytest.raises(ValueError, match="batch size 2, got 3"):
        diffusion(x, torch.randn(3, 4))
    with pytest.raises(ValueError, match="unconditional"):
        make()(x, torch.randn(2, 4))


# ---------------------------------------------------------------------------------------------
# construction


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta_schedule": "quadratic"}, "beta_schedule: expected one of"),
        ({"objective": "pred_eps"}, "objective: expected one of"),
        ({"loss_type": "huber"}, "loss_type: expected one of"),
        ({"timesteps": 0}, "timesteps: expected an int >= 1, got 0"),
        (
            {"dynamic_thres_percentile": 0.0},
            r"dynamic_thres_percentile: expected a float in \(0, 1\]",
        ),
        (
            {"dynamic_thres_percentile": 1.5},
            r"dynamic_thres_percentile: expected a float in \(0, 1\]",
        ),
        ({"cond_drop_prob": -0.1}, r"cond_drop_prob: expected a float in \[0, 1\]"),
        ({"cond_drop_prob": 1.1}, r"cond_drop_prob: expected a float in \[0, 1\]"),
        ({"num_frames": 0}, "num_frames"),
        ({"image_size": (8, 0)}, r"image_size: expected an int or \(height, width\) >= 1"),
    ],
)
def test_constructor_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_constructor_checks_the_network_and_types() -> None:
    with pytest.raises(ValueError, match=r"denoise_fn\.channels=3, got channels=4"):
        make(channels=4)
    with pytest.raises(ValueError, match="downsample_factor=4, got"):
        make(StubNet(downsample_factor=4), image_size=(8, 6))
    with pytest.raises(TypeError, match="timesteps"):
        make(timesteps="10")
    with pytest.raises(TypeError, match="image_size"):
        make(image_size=(8, 8, 8))
    with pytest.raises(TypeError):
        make(text_encoder=3)
    make(StubNet(downsample_factor=4), image_size=(8, 12))
    make(cond_drop_prob=0, dynamic_thres_percentile=1)  # ints stand for floats


def test_config_round_trips_through_json() -> None:
    diffusion = make(
        image_size=(8, 16), objective="pred_v", beta_schedule="sigmoid", text_encoder="my/bert"
    )
    config = json.loads(json.dumps(diffusion.config))
    assert config["text_encoder"] == "my/bert"
    assert config["image_size"] == [8, 16]
    assert make(**config).config == diffusion.config
    assert "text_encoder" not in make().config


# ---------------------------------------------------------------------------------------------
# text conditioning


def test_text_encoder_is_shared_by_training_and_sampling_and_not_in_state() -> None:
    encoder = FakeTextEncoder(dim=4, pooling="cls")
    diffusion = make(StubNet(cond_dim=4), text_encoder=encoder)
    diffusion(videos(), ["a cat", "a dog running"]).backward()
    out = diffusion.sample(["a bird"], sampler="ddim", steps=2)
    assert out.shape == (1, CHANNELS, FRAMES, SIZE, SIZE)
    assert encoder.calls == [(["a cat", "a dog running"], "cls"), (["a bird"], "cls")]
    assert set(diffusion.state_dict()) == own_state_keys(diffusion)
    assert all(p is not encoder.weight for p in diffusion.parameters())
    assert encoder.weight.grad is None
    assert copy.deepcopy(diffusion).text_encoder is encoder


def test_text_width_mismatch_names_both() -> None:
    diffusion = make(StubNet(cond_dim=8), text_encoder=FakeTextEncoder(dim=4))
    with pytest.raises(ValueError, match="cond_dim=8, got 4"):
        diffusion(videos(), ["a", "b"])


def test_text_without_encoder_is_an_error() -> None:
    with pytest.raises(ValueError, match="no text_encoder"):
        make(StubNet(cond_dim=4))(videos(), ["a", "b"])


@pytest.fixture
def fake_text_module(monkeypatch: pytest.MonkeyPatch) -> list[FakeTextEncoder]:
    """Replace `video_ddpm.text` with a module whose TextEncoder records its construction."""
    created: list[FakeTextEncoder] = []

    def text_encoder(name: str, *, pooling: str = "mean") -> FakeTextEncoder:
        encoder = FakeTextEncoder(dim=4, pooling=pooling)
        encoder.name = name
        created.append(encoder)
        return encoder

    module = types.ModuleType("video_ddpm.text")
    module.TextEncoder = text_encoder  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "video_ddpm.text", module)
    return created


@pytest.mark.parametrize("use_cls", [False, True])
def test_default_bert_is_created_lazily_with_one_pooling(
    fake_text_module: list[FakeTextEncoder], use_cls: bool
) -> None:
    net = StubNet(cond_dim=4, use_bert_text_cond=True)
    diffusion = make(net, text_use_bert_cls=use_cls)
    assert fake_text_module == []
    assert diffusion.text_encoder is None
    diffusion(videos(), ["a", "b"])
    diffusion.sample(["c"], sampler="ddim", steps=1)
    (encoder,) = fake_text_module
    assert encoder.name == "bert-base-cased"
    pooling = "cls" if use_cls else "mean"
    assert encoder.calls == [(["a", "b"], pooling), (["c"], pooling)]
    assert set(diffusion.state_dict()) == own_state_keys(diffusion)


def test_named_text_encoder_is_created_on_first_use(
    fake_text_module: list[FakeTextEncoder],
) -> None:
    diffusion = make(StubNet(cond_dim=4), text_encoder="some/encoder", text_use_bert_cls=True)
    assert fake_text_module == []
    diffusion(videos(), ["a", "b"])
    (encoder,) = fake_text_module
    assert encoder.name == "some/encoder"
    assert encoder.pooling == "cls"


# ---------------------------------------------------------------------------------------------
# sampling


def test_sample_ddpm_shape_range_and_all_steps() -> None:
    net = StubNet()
    out = make(net).sample(batch_size=2)
    assert out.shape == (2, CHANNELS, FRAMES, SIZE, SIZE)
    assert out.min() >= 0
    assert out.max() <= 1
    assert [call["time"][0] for call in net.calls] == list(range(9, -1, -1))


def test_sample_more_frames_than_training_and_batch_from_cond() -> None:
    diffusion = make(StubNet(cond_dim=4))
    out = diffusion.sample(torch.randn(3, 4), batch_size=16, sampler="ddim", steps=3, num_frames=7)
    assert out.shape == (3, CHANNELS, 7, SIZE, SIZE)


def test_p_sample_adds_no_noise_at_t0() -> None:
    diffusion = make()
    x = torch.randn(2, CHANNELS, FRAMES, SIZE, SIZE)
    mean, _, _ = diffusion.p_mean_variance(x, torch.zeros(2, dtype=torch.long), True)
    out = diffusion.p_sample(x, 0, noise=torch.full_like(x, 100.0))
    torch.testing.assert_close(out, mean)
    out = diffusion.p_sample(x, 5, noise=torch.full_like(x, 100.0))
    assert (out - mean).abs().min() > 1


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sampling_is_deterministic_given_a_generator(sampler: str) -> None:
    diffusion = make()
    kwargs: dict[str, Any] = {"batch_size": 2, "sampler": sampler}
    if sampler == "ddim":
        kwargs.update(steps=4, eta=0.0)
    a = diffusion.sample(**kwargs, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(123)  # the global RNG must not matter
    b = diffusion.sample(**kwargs, generator=torch.Generator().manual_seed(1))
    c = diffusion.sample(**kwargs, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_ddim_time_pairs() -> None:
    diffusion = make()
    assert ddim_time_pairs(diffusion.num_timesteps, 3) == [(9, 5), (5, 2), (2, -1)]
    assert ddim_time_pairs(diffusion.num_timesteps, 10) == [(t, t - 1) for t in range(9, -1, -1)]
    net = StubNet()
    make(net).sample(batch_size=1, sampler="ddim", steps=3)
    assert [call["time"][0] for call in net.calls] == [9, 5, 2]


def test_ddim_eta1_all_steps_is_the_ancestral_step() -> None:
    diffusion = make(timesteps=20).double()
    x = torch.randn(2, CHANNELS, FRAMES, SIZE, SIZE, dtype=torch.float64)
    for step in range(20):
        t = torch.full((2,), step)
        mean, sigma = diffusion.ddim_step_mean_std(x, t, t - 1, eta=1.0)
        ddpm_mean, ddpm_variance, _ = diffusion.p_mean_variance(x, t, True)
        torch.testing.assert_close(mean, ddpm_mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(sigma**2, ddpm_variance, rtol=1e-4, atol=1e-7)


def test_ddim_eta1_sampling_matches_ddpm_sampling() -> None:
    diffusion = make(timesteps=20).double()
    ddpm = diffusion.sample(batch_size=2, generator=torch.Generator().manual_seed(5))
    ddim = diffusion.sample(
        batch_size=2, sampler="ddim", eta=1.0, generator=torch.Generator().manual_seed(5)
    )
    torch.testing.assert_close(ddim, ddpm, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cond", [None, "tensor", "text"])
def test_sampler_functions_are_the_sample_methods(cond: str | None) -> None:
    """sample_ddpm / sample_ddim give what GaussianDiffusion's sample methods give, bit for bit."""
    net = StubNet(cond_dim=None if cond is None else 4)
    diffusion = make(net, text_encoder=FakeTextEncoder(dim=4))
    condition: Any = {None: None, "tensor": torch.randn(2, 4), "text": ["a", "bc"]}[cond]
    shape = (2, CHANNELS, FRAMES, SIZE, SIZE)

    def seeded() -> torch.Generator:
        return torch.Generator().manual_seed(3)

    ddpm = sample_ddpm(diffusion, shape, cond=condition, cond_scale=2.0, generator=seeded())
    expected = diffusion.p_sample_loop(shape, condition, 2.0, generator=seeded())
    torch.testing.assert_close(ddpm, expected, rtol=0, atol=0)
    torch.testing.assert_close(
        ddpm, diffusion.sample(condition, 2.0, 2, generator=seeded()), rtol=0, atol=0
    )
    options: dict[str, Any] = {"cond": condition, "cond_scale": 2.0, "steps": 3, "eta": 0.5}
    ddim = sample_ddim(diffusion, shape, **options, generator=seeded())
    expected = diffusion.ddim_sample(shape, condition, 2.0, 3, 0.5, seeded())
    torch.testing.assert_close(ddim, expected, rtol=0, atol=0)
    torch.testing.assert_close(
        ddim,
        diffusion.sample(condition, 2.0, 2, sampler="ddim", steps=3, eta=0.5, generator=seeded()),
        rtol=0,
        atol=0,
    )


def test_sampler_functions_share_one_signature() -> None:
    import inspect

    signatures = {name: inspect.signature(fn) for name, fn in SAMPLER_FUNCTIONS.items()}
    assert list(signatures) == ["ddpm", "ddim"]
    assert signatures["ddpm"] == signatures["ddim"]
    diffusion, shape = make(), (1, CHANNELS, FRAMES, SIZE, SIZE)
    with pytest.raises(ValueError, match="use sampler='ddim' for fewer"):
        sample_ddpm(diffusion, shape, steps=3)
    with pytest.raises(ValueError, match="eta: applies to sampler='ddim' only"):
        sample_ddpm(diffusion, shape, eta=0.5)
    with pytest.raises(TypeError, match="diffusion"):
        sample_ddim(StubNet(), shape)  # type: ignore[arg-type]


def test_classifier_free_guidance_uses_the_null_branch() -> None:
    net = StubNet(cond_dim=4)
    diffusion = make(net)
    diffusion.sample(torch.randn(2, 4), cond_scale=3, sampler="ddim", steps=2)
    assert {call["null_cond_prob"] for call in net.calls} == {0.0, 1.0}
    net.calls.clear()
    diffusion.sample(torch.randn(2, 4), cond_scale=1.0, sampler="ddim", steps=2)
    assert {call["null_cond_prob"] for call in net.calls} == {0.0}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sampler": "ddim", "steps": 11}, r"steps: expected an int in \[1, 10\], got 11"),
        ({"sampler": "ddim", "steps": 0}, r"steps: expected an int in \[1, 10\], got 0"),
        ({"sampler": "ddim", "eta": -0.5}, "eta: expected a float >= 0"),
        ({"sampler": "euler"}, "sampler: expected one of"),
        ({"sampler": "ddpm", "steps": 5}, "ddim"),
        ({"sampler": "ddpm", "eta": 1.0}, "eta"),
        ({"num_frames": 0}, "num_frames"),
    ],
)
def test_sample_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make().sample(batch_size=1, **kwargs)


# ---------------------------------------------------------------------------------------------
# interpolation


def test_interpolate_starts_at_t_uses_cond_and_maps_unit_range() -> None:
    net = StubNet(cond_dim=4)
    diffusion = make(net)
    cond = torch.randn(2, 4)
    out = diffusion.interpolate(videos(), videos(), t=4, lam=0.3, cond=cond)
    assert out.shape == (2, CHANNELS, FRAMES, SIZE, SIZE)
    assert out.min() >= 0
    assert out.max() <= 1
    assert [call["time"] for call in net.calls] == [[t, t] for t in range(4, -1, -1)]
    assert all(torch.equal(call["cond"], cond) for call in net.calls)


def test_interpolate_defaults_to_last_step_and_is_seeded() -> None:
    net = StubNet()
    diffusion = make(net)
    x1, x2 = videos(), videos()
    a = diffusion.interpolate(x1, x2, generator=torch.Generator().manual_seed(0))
    assert net.calls[0]["time"] == [9, 9]
    assert len(net.calls) == 10
    b = diffusion.interpolate(x1, x2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_interpolate_validates() -> None:
    diffusion = make()
    with pytest.raises(ValueError, match=r"x1: expected values in \[0, 1\]"):
        diffusion.interpolate(videos() * 2 - 1.5, videos())
    with pytest.raises(ValueError, match="same shape"):
        diffusion.interpolate(videos(2), videos(1))
    with pytest.raises(ValueError, match=r"t: expected an int in \[0, 9\], got 10"):
        diffusion.interpolate(videos(), videos(), t=10)
    with pytest.raises(ValueError, match="lam"):
        diffusion.interpolate(videos(), videos(), lam=1.5)


# ---------------------------------------------------------------------------------------------
# with the real Unet3D


def test_with_tiny_unet3d() -> None:
    unet = pytest.importorskip("video_ddpm.unet")
    net = unet.Unet3D(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8, cond_dim=4)
    diffusion = GaussianDiffusion(
        net, image_size=SIZE, num_frames=2, timesteps=10, cond_drop_prob=0.5
    )
    x = torch.rand(8, CHANNELS, 2, SIZE, SIZE)  # P(no condition dropped) = 0.5^8 < 0.4%
    diffusion(x, torch.randn(8, 4)).backward()
    assert net.null_cond_emb.grad is not None
    assert net.null_cond_emb.grad.abs().sum() > 0
    out = diffusion.sample(torch.randn(2, 4), cond_scale=2.0, sampler="ddim", steps=2, num_frames=4)
    assert out.shape == (2, CHANNELS, 4, SIZE, SIZE)
    assert torch.isfinite(out).all()
    assert out.min() >= 0
    assert out.max() <= 1
