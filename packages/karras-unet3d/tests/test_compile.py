"""`torch.compile` traces the U-Net and the EDM2 denoiser without a graph break.

`torch._dynamo.explain` counts the graphs and graph breaks of one call. The type checks of the
`typechecked` forward, `denoise` and mp-layers primitives are skipped while dynamo traces (they
would break the graph), so every call below must give one graph. Each test costs 10-20 s of
tracing on a CPU; `test_unet.py` compiles a factorised-attention net with `fullgraph=True` too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch

from karras_unet3d import EDM2Diffusion, KarrasUnet3D

pytestmark = pytest.mark.skipif(
    sys.version_info >= (3, 14), reason="torch.compile does not support this Python yet"
)

TINY: dict[str, Any] = {
    "frames": 2,
    "image_size": 4,
    "dim": 8,
    "dim_max": 8,
    "channels": 3,
    "num_classes": 3,
    "num_downsamples": 1,
    "num_blocks_per_stage": 1,
    "attn_res": (2,),
    "attn_dim_head": 8,
    "dropout": 0.1,
}
SHAPE = (2, 3, 2, 4, 4)
LABELS = torch.tensor([0, 2])


def graph_breaks(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, int, list[str]]:
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(fn)(*args, **kwargs)
    reasons = [reason.reason.splitlines()[0] for reason in explanation.break_reasons]
    return explanation.graph_count, explanation.graph_break_count, reasons


def test_unet_training_forward_has_no_graph_break() -> None:
    net = KarrasUnet3D(**TINY).train()
    graphs, breaks, reasons = graph_breaks(
        net, torch.randn(SHAPE), torch.zeros(2), class_labels=LABELS
    )
    assert (graphs, breaks) == (1, 0), reasons


def test_unet_eval_forward_under_no_grad_has_no_graph_break() -> None:
    """The sampling path: eval mode, autograd off (cached effective weights in eager)."""
    net = KarrasUnet3D(**TINY).eval()
    with torch.no_grad():
        graphs, breaks, reasons = graph_breaks(
            net, torch.randn(SHAPE), torch.zeros(2), class_labels=LABELS
        )
    assert (graphs, breaks) == (1, 0), reasons


def test_edm2_denoiser_has_no_graph_break() -> None:
    """`EDM2Diffusion.denoise` (as the sampler calls it) around a self-conditioning network."""
    net = KarrasUnet3D(**TINY, self_condition=True)
    model = EDM2Diffusion(net).eval()
    x = torch.randn(SHAPE)
    graphs, breaks, reasons = graph_breaks(
        model.denoise, x, torch.tensor([0.5, 2.0]), class_labels=LABELS, self_cond=x.clone()
    )
    assert (graphs, breaks) == (1, 0), reasons


@pytest.mark.slow  # 15 s more; the U-Net's training forward is checked above
def test_edm2_training_loss_has_no_graph_break() -> None:
    model = EDM2Diffusion(KarrasUnet3D(**TINY)).train()
    graphs, breaks, reasons = graph_breaks(model, torch.rand(SHAPE), class_labels=LABELS)
    assert (graphs, breaks) == (1, 0), reasons
