"""GAN losses, gradient penalty, adaptive weight and frame picking (phenaki.losses)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from phenaki.losses import (
    adaptive_weight,
    bce_discr_loss,
    bce_gen_loss,
    gradient_penalty,
    hinge_discr_loss,
    hinge_gen_loss,
    pick_frames,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------------------------- GAN losses


def test_hinge_losses_match_hand_computation() -> None:
    fake = torch.tensor([-2.0, 0.5])
    real = torch.tensor([0.5, 3.0])
    # relu(1 + fake) = [0, 1.5], relu(1 - real) = [0.5, 0] -> mean of the sums = (0.5 + 1.5) / 2
    assert hinge_discr_loss(fake, real).item() == pytest.approx(1.0)
    assert hinge_gen_loss(fake).item() == pytest.approx(0.75)


def test_bce_losses_match_hand_computation() -> None:
    zero = torch.zeros(3)
    # sigmoid(0) = 1/2: -log(1 - 1/2) - log(1/2) = 2 log 2; -log(1/2) = log 2
    assert bce_discr_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert bce_gen_loss(zero).item() == pytest.approx(math.log(2))
    fake, real = torch.tensor([1.0]), torch.tensor([-2.0])
    sigmoid = torch.sigmoid
    expected = -torch.log(1 - sigmoid(fake)) - torch.log(sigmoid(real))
    assert bce_discr_loss(fake, real).item() == pytest.approx(expected.item(), rel=1e-6)


def test_bce_losses_match_torch_binary_cross_entropy() -> None:
    fake, real = torch.randn(7) * 3, torch.randn(7) * 3
    expected = F.binary_cross_entropy_with_logits(
        fake, torch.zeros_like(fake)
    ) + F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
    torch.testing.assert_close(bce_discr_loss(fake, real), expected)
    torch.testing.assert_close(
        bce_gen_loss(fake), F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    )


@pytest.mark.parametrize("loss", ["bce", "hinge"])
def test_losses_finite_for_large_logits(loss: str) -> None:
    logits = torch.tensor([100.0, -100.0], requires_grad=True)
    discr, gen = (
        (bce_discr_loss, bce_gen_loss) if loss == "bce" else (hinge_discr_loss, hinge_gen_loss)
    )
    total = discr(logits, logits.flip(0)) + gen(logits)
    total.backward()
    assert torch.isfinite(total)
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    if loss == "bce":
        # confidently wrong: softplus(100) + softplus(100) = 200; confidently right: ~0
        assert bce_discr_loss(torch.tensor(100.0), torch.tensor(-100.0)).item() == pytest.approx(
            200.0
        )
        assert bce_discr_loss(torch.tensor(-100.0), torch.tensor(100.0)).item() < 1e-30
        assert bce_gen_loss(torch.tensor(-100.0)).item() == pytest.approx(100.0)


# ---------------------------------------------------------------------------- gradient penalty


def test_gradient_penalty_closed_form_and_backpropagates() -> None:
    # outputs_b = <w, x_b>: the gradient w.r.t. every x_b is w, so the penalty is
    # weight * (||w|| - 1)^2 and its gradient w.r.t. w is weight * 2 (||w|| - 1) w / ||w||.
    w = torch.randn(3, 4, requires_grad=True)
    x = torch.randn(5, 3, 4, requires_grad=True)
    outputs = (w * x).flatten(1).sum(dim=1)
    penalty = gradient_penalty(x, outputs, weight=2.5)
    norm = w.detach().norm()
    torch.testing.assert_close(penalty, 2.5 * (norm - 1) ** 2)
    penalty.backward()  # create_graph=True: the penalty trains the discriminator
    assert w.grad is not None
    torch.testing.assert_close(w.grad, 2.5 * 2 * (norm - 1) * w.detach() / norm)


def test_gradient_penalty_default_weight_is_ten() -> None:
    x = torch.randn(2, 6, requires_grad=True)
    outputs = 3 * x.sum(dim=1)  # gradient 3 per entry: norm 3 sqrt(6)
    expected = 10 * (3 * math.sqrt(6) - 1) ** 2
    assert gradient_penalty(x, outputs).item() == pytest.approx(expected, rel=1e-5)


def test_gradient_penalty_rejects_inputs_without_grad() -> None:
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="require grad"):
        gradient_penalty(x, x.sum(dim=1))
    with pytest.raises(ValueError, match="weight >= 0"):
        gradient_penalty(x.requires_grad_(), x.sum(dim=1), weight=-1.0)


# ----------------------------------------------------------------------------- adaptive weight


def test_adaptive_weight_is_the_ratio_of_norms_over_all_layers() -> None:
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(2, requires_grad=True)
    c1, c2, c3 = torch.randn(3), torch.randn(2), torch.randn(2)
    numerator = (a * c1).sum() + (b * c2).sum()  # gradients c1 (a) and c2 (b)
    denominator = (b * c3).sum()  # reaches b only: a counts as zero (allow_unused)
    weight = adaptive_weight(numerator, denominator, [a, b])
    expected = (c1.pow(2).sum() + c2.pow(2).sum()).sqrt() / (c3.norm() + 1e-8)
    torch.testing.assert_close(weight, expected)
    assert weight.item() > 0


def test_adaptive_weight_nonzero_for_image_batches_p6() -> None:
    # An image batch reaches only the first-frame head; the video head runs on zero frames.
    # The reference took the norms against the video head only, so both were 0 and the weight
    # 0/(0 + eps) = 0: the GAN loss was silently off for images (defect P6).
    frame_head = torch.nn.Linear(4, 3)
    video_head = torch.nn.Linear(4, 6)
    tokens = torch.randn(2, 1, 4)  # (b, t = 1 frame, d)
    first = frame_head(tokens[:, :1])
    rest = video_head(tokens[:, 1:]).reshape(2, 0, 3)
    recon = torch.cat((first, rest), dim=1)
    perceptual = recon.pow(2).mean()
    gen = -(recon * torch.randn_like(recon)).mean()
    layers = [video_head.weight, frame_head.weight]
    weight = adaptive_weight(perceptual, gen, layers)
    grad_p = torch.autograd.grad(perceptual, frame_head.weight, retain_graph=True)[0]
    grad_g = torch.autograd.grad(gen, frame_head.weight, retain_graph=True)[0]
    torch.testing.assert_close(weight, grad_p.norm() / (grad_g.norm() + 1e-8))
    assert weight.item() > 0
    # the reference's rule (the video head alone) gives 0 here
    assert adaptive_weight(perceptual, gen, [video_head.weight]).item() == 0.0


def test_adaptive_weight_is_clamped_detached_and_keeps_the_graph() -> None:
    layer = torch.randn(3, requires_grad=True)
    numerator = (layer * 1e6).sum()
    denominator = (layer * 1e-6).sum()
    weight = adaptive_weight(numerator, denominator, [layer], max_weight=5.0)
    assert weight.item() == 5.0
    assert not weight.requires_grad
    assert weight.dtype == torch.float32
    (numerator + denominator).backward()  # retain_graph=True: the losses still back-propagate
    assert layer.grad is not None


def test_adaptive_weight_validates_arguments() -> None:
    layer = torch.randn(3, requires_grad=True)
    loss = layer.sum()
    with pytest.raises(ValueError, match="at least one layer"):
        adaptive_weight(loss, loss, [])
    with pytest.raises(ValueError, match=r"scalar numerator_loss, got shape \(3,\)"):
        adaptive_weight(layer * 2, loss, [layer])
    with pytest.raises(ValueError, match="denominator_loss to be attached"):
        adaptive_weight(loss, torch.tensor(1.0), [layer])
    with pytest.raises(ValueError, match="max_weight > 0"):
        adaptive_weight(loss, loss, [layer], max_weight=0.0)


# -------------------------------------------------------------------------------- pick_frames


def _numbered_video(b: int, f: int) -> torch.Tensor:
    """(b, 2, f, 3, 3) with every pixel of frame j of clip i equal to 100 i + j."""
    values = 100 * torch.arange(b)[:, None] + torch.arange(f)[None, :]
    return values[:, None, :, None, None].float().expand(b, 2, f, 3, 3).contiguous()


def test_pick_frames_picks_only_and_eventually_every_valid_frame() -> None:
    video = _numbered_video(3, 5)
    mask = torch.tensor(
        [
            [True, True, True, False, False],
            [False, True, False, True, False],
            [True, True, True, True, True],
        ]
    )
    generator = torch.Generator().manual_seed(1)
    seen: list[set[int]] = [set(), set(), set()]
    for _ in range(200):
        images, indices = pick_frames(video, mask, generator=generator)
        assert images.shape == (3, 2, 3, 3)
        assert indices.shape == (3,)
        assert mask[torch.arange(3), indices].all()
        expected = 100 * torch.arange(3) + indices
        torch.testing.assert_close(images, expected[:, None, None, None].float().expand(3, 2, 3, 3))
        for clip, index in enumerate(indices.tolist()):
            seen[clip].add(index)
    assert seen == [{0, 1, 2}, {1, 3}, {0, 1, 2, 3, 4}]


def test_pick_frames_without_mask_and_reproducible_with_a_generator() -> None:
    video = _numbered_video(2, 4)
    seen = set()
    for _ in range(100):
        seen.update(pick_frames(video)[1].tolist())
    assert seen == {0, 1, 2, 3}
    first = pick_frames(video, generator=torch.Generator().manual_seed(7))[1]
    again = pick_frames(video, generator=torch.Generator().manual_seed(7))[1]
    assert torch.equal(first, again)


def test_pick_frames_is_differentiable() -> None:
    video = torch.randn(2, 3, 4, 8, 8, requires_grad=True)
    images, indices = pick_frames(video)
    images.sum().backward()
    assert video.grad is not None
    picked = torch.zeros(2, 4)
    picked[torch.arange(2), indices] = 1
    torch.testing.assert_close(video.grad, picked[:, None, :, None, None].expand_as(video))


def test_pick_frames_validation() -> None:
    video = torch.randn(2, 3, 4, 8, 8)
    empty = torch.tensor([[True, False, False, False], [False, False, False, False]])
    with pytest.raises(
        ValueError, match=r"at least one valid frame per clip, got none in clips \[1\]"
    ):
        pick_frames(video, empty)
    with pytest.raises(ValueError, match=r"bool frame_mask of shape \(2, 4\)"):
        pick_frames(video, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"bool frame_mask"):
        pick_frames(video, torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"\(b, c, f, h, w\), got \(3, 4, 8, 8\)"):
        pick_frames(video[0])
