"""Every module compiles with torch.compile(fullgraph=True): no graph breaks in forward."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import mp_layers as mp

MODULES = {
    "MPSiLU": (lambda: mp.MPSiLU(), [(2, 8)]),
    "Gain": (lambda: mp.Gain(), [(2, 8)]),
    "MPSum": (lambda: mp.MPSum(0.3), [(2, 8), (2, 8)]),
    "MPCat": (lambda: mp.MPCat(0.5, dim=1), [(2, 8), (2, 4)]),
    "PixelNorm": (lambda: mp.PixelNorm(dim=1), [(2, 8, 3)]),
    "MPLinear": (lambda: mp.MPLinear(8, 4), [(2, 8)]),
    "MPConv1d": (lambda: mp.MPConv1d(4, 4, 3, init_dirac=True), [(2, 4, 8)]),
    "MPConv2d": (lambda: mp.MPConv2d(4, 6, 3), [(2, 4, 8, 8)]),
    "MPConv3d": (lambda: mp.MPConv3d(4, 6, 3, concat_ones_to_input=True), [(2, 4, 4, 8, 8)]),
    "MPFourierEmbedding": (lambda: mp.MPFourierEmbedding(8), [(3,)]),
    "MPAttention": (lambda: mp.MPAttention(16, heads=2, dim_head=8), [(2, 5, 16)]),
    "MPFeedForward": (lambda: mp.MPFeedForward(16), [(2, 5, 16)]),
    "MPTransformer": (lambda: mp.MPTransformer(16, depth=2, heads=2, dim_head=8), [(2, 5, 16)]),
}

needs_dynamo = pytest.mark.skipif(
    sys.version_info >= (3, 14), reason="torch.compile does not support this Python yet"
)


@needs_dynamo
@pytest.mark.parametrize("name", sorted(MODULES))
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_compiles_without_graph_breaks(name: str, training: bool) -> None:
    make, shapes = MODULES[name]
    torch.manual_seed(0)
    module: nn.Module = make().train(training)
    reference: nn.Module = make().train(training)
    reference.load_state_dict(module.state_dict())
    inputs = [torch.randn(shape, requires_grad=True) for shape in shapes]
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    out = compiled(*inputs)
    torch.testing.assert_close(out, reference(*inputs), rtol=1e-5, atol=1e-5)
    out.float().sum().backward()
    # In training mode the compiled forward renormalises the stored weight like the eager one.
    for (key, value), expected in zip(
        module.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(value, expected, msg=key)


@needs_dynamo
@pytest.mark.parametrize("name", sorted(MODULES))
def test_compiles_for_sampling_under_no_grad(name: str) -> None:
    """Eval under `no_grad` takes the cached-weight path, which must not break the graph."""
    make, shapes = MODULES[name]
    module: nn.Module = make().eval()
    inputs = [torch.randn(shape) for shape in shapes]
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(*inputs), module(*inputs), rtol=1e-5, atol=1e-5)


@needs_dynamo
def test_inductor_compiles_a_conv_block() -> None:
    """One real inductor compilation (the others use the eager backend to stay fast)."""
    block = nn.Sequential(mp.MPConv3d(4, 8, 3), mp.MPSiLU(), mp.MPConv3d(8, 4, 1))
    x = torch.randn(1, 4, 4, 8, 8)
    torch._dynamo.reset()
    compiled = torch.compile(block.eval(), fullgraph=True)
    torch.testing.assert_close(compiled(x), block(x), rtol=1e-4, atol=1e-4)


@needs_dynamo
def test_dropout_compiles_without_graph_breaks() -> None:
    module = mp.Dropout(0.3)
    x = torch.randn(4, 16, requires_grad=True)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="eager")
    torch.manual_seed(0)
    out = compiled(x)
    torch.manual_seed(0)
    torch.testing.assert_close(out, module(x))
    torch.testing.assert_close(compiled.eval()(x), x)  # eval: the identity
