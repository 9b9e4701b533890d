"""FactorizedLFQ against vector-quantize-pytorch's LFQ: same codes, same loss, same gradients."""

from __future__ import annotations

import pytest
import torch
from vector_quantize_pytorch import LFQ

from phenaki.quantize import FactorizedLFQ


def pair(**kwargs: object) -> tuple[LFQ, FactorizedLFQ]:
    library = LFQ(channel_first=False, **kwargs)
    ours = FactorizedLFQ(channel_first=False, **kwargs)
    ours.load_state_dict(library.state_dict())
    return library, ours


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dim": 32, "codebook_size": 64, "entropy_loss_weight": 1.0},
        {
            "dim": 48,
            "codebook_size": 1024,
            "entropy_loss_weight": 0.1,
            "commitment_loss_weight": 0.25,
        },
        {"dim": 9, "codebook_size": 512, "entropy_loss_weight": 0.5, "diversity_gamma": 2.0},
    ],
)
def test_matches_the_library_in_training(kwargs: dict[str, object]) -> None:
    library, ours = pair(**kwargs)
    x = torch.randn(2, 40, int(kwargs["dim"])) * 0.01  # type: ignore[call-overload]
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    (qa, ia, la), (qb, ib, lb) = library(xa), ours(xb)
    assert torch.equal(ia, ib)
    torch.testing.assert_close(qb, qa)
    torch.testing.assert_close(lb, la, atol=1e-5, rtol=1e-4)
    (qa.square().sum() + 10 * la).backward()
    (qb.square().sum() + 10 * lb).backward()
    assert xa.grad is not None
    assert xb.grad is not None
    # the library clamps probabilities at 1e-5 inside its logarithm: small differences remain
    assert float((xb.grad - xa.grad).norm() / xa.grad.norm()) < 1e-3


def test_masked_tokens_are_left_out_of_the_entropy() -> None:
    """Our masked loss equals the library's loss on the valid tokens alone. (The library's own
    masked path averages the per-token distributions over nothing, so its entropy loss is 0.)"""
    library, ours = pair(dim=16, codebook_size=256, entropy_loss_weight=1.0)
    x = torch.randn(2, 30, 16) * 0.02
    mask = torch.rand(2, 30) > 0.4
    assert float(library(x, mask=mask)[2].detach()) == 0.0
    expected = library(x[mask][None])[2]
    torch.testing.assert_close(ours(x, mask=mask)[2], expected, atol=1e-5, rtol=1e-4)
    x_changed = x.clone()
    x_changed[~mask] = torch.randn_like(x_changed[~mask])
    torch.testing.assert_close(ours(x_changed, mask=mask)[2], ours(x, mask=mask)[2])


def test_evaluation_and_uncovered_options_use_the_library() -> None:
    library, ours = pair(dim=16, codebook_size=64)
    x = torch.randn(3, 7, 16)
    library.eval()
    ours.eval()
    for a, b in zip(library(x), ours(x), strict=True):
        torch.testing.assert_close(a, b)
    spherical_lib, spherical = pair(dim=16, codebook_size=64, spherical=True)
    assert not spherical._closed_form_applies()
    torch.manual_seed(0)
    a = spherical_lib(x)
    torch.manual_seed(0)
    b = spherical(x)
    torch.testing.assert_close(b[2], a[2])


def test_codes_round_trip_through_indices() -> None:
    _, ours = pair(dim=24, codebook_size=128)
    x = torch.randn(2, 10, 24)
    quantized, indices, _ = ours(x)
    torch.testing.assert_close(ours.indices_to_codes(indices), quantized)
