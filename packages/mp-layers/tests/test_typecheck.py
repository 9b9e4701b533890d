"""Every public constructor and function checks its argument types at runtime (beartype).

The walk covers `__all__` of every public module of mp_layers (the package, `video`, `training`,
`text`, ...): a public class must have a `typechecked` `__init__`, a public function must be
`typechecked`. Names that are not callables to check (exceptions, protocols, type aliases) are
skipped with the reason, and so are the modules in `UNCHECKED_MODULES`.
"""

# No `from __future__ import annotations`: beartype resolves string hints of the functions defined
# inside tests through the module's name, which pytest derives from the path ("packages.mp-layers.
# tests...", not an identifier); real hints need no resolving.

import dataclasses
import inspect
import sys
import typing
from collections.abc import Sequence

import pytest
import torch

import mp_layers
from mp_layers.typecheck import is_typechecked, nothing_to_check, public_callables, typechecked

# Modules whose `__all__` is deliberately not checked, with the reason.
UNCHECKED_MODULES = {
    "mp_layers.validation": "the argument checkers themselves: their `value` is an `object` by "
    "design, and they run in every forward pass",
}
PUBLIC = public_callables("mp_layers", exclude=UNCHECKED_MODULES)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_callable_is_typechecked(name: str) -> None:
    obj = PUBLIC[name]
    reason = nothing_to_check(obj)
    if reason is not None:
        pytest.skip(f"{name} is {reason}")
    what = "its __init__ is" if isinstance(obj, type) else "it is"
    assert is_typechecked(obj), f"{name}: {what} not @typechecked"


def test_the_walk_reaches_every_public_module() -> None:
    modules = {name.split(":")[0] for name in PUBLIC}
    for expected in ("mp_layers", "mp_layers.text", "mp_layers.training", "mp_layers.video"):
        assert expected in modules
    assert not [m for m in modules if "._" in m]
    names = {name.split(":")[1] for name in PUBLIC}
    assert {"MPConv3d", "normalize", "read_video", "write_sample_sheet"} <= names
    assert "mp_layers.validation" not in modules  # UNCHECKED_MODULES


def test_nothing_to_check_names_exceptions_protocols_and_aliases() -> None:
    class Readable(typing.Protocol):
        def read(self) -> bytes: ...

    assert nothing_to_check(ValueError) == "an exception class"
    assert "protocol" in (nothing_to_check(Readable) or "")
    assert nothing_to_check(Sequence[int]) == "a type alias"
    assert nothing_to_check(typing.Literal["a"]) == "a type alias"
    assert nothing_to_check(mp_layers.MPLinear) is None
    assert nothing_to_check(mp_layers.normalize) is None


# ---------------------------------------------------------------- behaviour


def test_a_wrong_type_to_a_constructor_is_a_type_error_naming_the_parameter() -> None:
    with pytest.raises(TypeError, match=r"MPLinear.*parameter dim_out='8' violates .*int"):
        mp_layers.MPLinear(4, "8")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"parameter heads=2\.0 violates .*int"):
        mp_layers.MPAttention(16, heads=2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r'parameter attention="None" violates .*MPAttention'):
        mp_layers.MPTransformerLayer(None, mp_layers.MPFeedForward(8))  # type: ignore[arg-type]


def test_a_wrong_type_to_a_function_is_a_type_error_naming_the_parameter() -> None:
    x = torch.randn(2, 3)
    with pytest.raises(TypeError, match=r"normalize\(\) parameter eps='0\.1' violates .*float"):
        mp_layers.normalize(x, eps="0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"parameter dim=\['a'\] violates"):
        mp_layers.normalize(x, dim=["a"])  # type: ignore[list-item]
    with pytest.raises(
        TypeError, match=r"(?s)parameter b=.* violates .*torch\.Tensor.*numpy\.ndarray"
    ):
        mp_layers.mp_sum(x, x.numpy())  # type: ignore[arg-type]


def test_an_int_stands_for_a_float_and_values_are_still_checked() -> None:
    assert mp_layers.MPSum(1).t == 1.0  # the numeric tower: an int is a float
    assert mp_layers.MPFeedForward(8, mult=2).proj_in.dim_out == 16
    with pytest.raises(ValueError, match=r"t: expected a float in \[0.0, 1.0\], got 2.0"):
        mp_layers.MPSum(2)
    with pytest.raises(TypeError, match="dim_in: expected an int, got bool"):
        mp_layers.MPLinear(True, 4)  # a bool passes the hint `int`; check_int refuses it


def test_the_wrapper_keeps_name_docstring_and_signature() -> None:
    normalize = mp_layers.normalize
    assert normalize.__name__ == "normalize"
    assert "EDM2 eq. 30" in (normalize.__doc__ or "")
    unchecked = normalize.__wrapped__  # type: ignore[attr-defined]
    assert not is_typechecked(unchecked)
    assert inspect.signature(normalize) == inspect.signature(unchecked)
    assert list(inspect.signature(mp_layers.MPConv3d).parameters)[:3] == [
        "dim_in",
        "dim_out",
        "kernel_size",
    ]


def test_is_typechecked_sees_functions_classes_dataclasses_and_wrappers() -> None:
    @typechecked
    def scale(x: float, factors: Sequence[int] = ()) -> float:
        return x

    def plain(x: float) -> float:
        return x

    @typechecked
    @dataclasses.dataclass
    class Config:
        steps: int
        name: str = "run"

    class Subclass(mp_layers.MPConv3d):
        pass

    assert is_typechecked(scale)
    assert not is_typechecked(plain)
    assert is_typechecked(torch.no_grad()(scale))  # a decorator that keeps `__wrapped__`
    assert typechecked(scale) is scale  # decorating twice changes nothing
    assert is_typechecked(Config)
    assert is_typechecked(Subclass)  # an inherited __init__ counts
    assert not is_typechecked(torch.nn.Linear)
    assert Config(3).steps == 3
    with pytest.raises(TypeError, match=r"parameter steps='3' violates .*int"):
        Config("3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"parameter factors=\[1\.5\] violates"):
        scale(1, [1.5])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="defines no __init__"):
        typechecked(type("Bare", (), {}))


needs_dynamo = pytest.mark.skipif(
    sys.version_info >= (3, 14), reason="torch.compile does not support this Python yet"
)


@needs_dynamo
def test_checks_are_skipped_while_compiling_so_the_graph_does_not_break() -> None:
    """beartype checks one random item of a `Sequence[int]` through `random.getrandbits`, which
    dynamo cannot trace; the decorated functions run unchecked while dynamo traces them."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        y = mp_layers.normalize(x, dim=(1, 2))  # `dim: int | Sequence[int] | None`
        return mp_layers.mp_cat(mp_layers.mp_silu(y), y, dim=1, t=0.3)

    x = torch.randn(2, 3, 4)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(forward)(x)
    assert explanation.graph_break_count == 0
    compiled = torch.compile(forward, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), forward(x))
