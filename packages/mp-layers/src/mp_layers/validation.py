"""Argument validation for public constructors and functions, shared by every package.

Types are checked by `mp_layers.typecheck.typechecked` (beartype) from the type hints; these
helpers check what a hint cannot say: ranges (`dim >= 1`, `t` in [0, 1]), finiteness, odd kernel
sizes, floating-point dtypes, and that a bool is not taken for an int (bool is a subclass of
int, so `dim: int` admits `True`). A wrong type is a `TypeError`, a wrong value a `ValueError`,
and both name the argument, what was expected and what was given. Model packages use them too, so
that every package reports bad input the same way.

The helpers are not `typechecked` themselves: their `value` is an `object` by design (they are the
check), and they run in every forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "check_balance",
    "check_bool",
    "check_eps",
    "check_float",
    "check_floating",
    "check_int",
    "check_kernel_size",
    "check_tensor",
]

import torch


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    """Return `value` if it is an int (not a bool) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def check_float(
    name: str, value: object, *, low: float | None = None, high: float | None = None
) -> float:
    """Return `value` as a float if it is a finite real number inside [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite float, got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name}: expected a float in [{lo}, {hi}], got {value}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Return `value` if it is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")
    return value


def check_balance(name: str, value: object) -> float:
    """A magnitude-preserving blend weight `t`, which must lie in [0, 1]."""
    return check_float(name, value, low=0.0, high=1.0)


def check_eps(value: object) -> float:
    """A strictly positive epsilon."""
    eps = check_float("eps", value, low=0.0)
    if eps == 0.0:
        raise ValueError("eps: expected a float > 0, got 0.0")
    return eps


def check_kernel_size(value: object, spatial_dims: int) -> tuple[int, ...]:
    """An odd kernel size, as an int or a tuple of `spatial_dims` ints, returned as a tuple."""
    sizes: Sequence[object] = value if isinstance(value, (tuple, list)) else (value,) * spatial_dims
    if len(sizes) != spatial_dims:
        raise ValueError(
            f"kernel_size: expected an int or {spatial_dims} ints, got {len(sizes)}: {value!r}"
        )
    checked = tuple(check_int("kernel_size", size) for size in sizes)
    if any(size % 2 == 0 for size in checked):
        raise ValueError(
            f"kernel_size: 'same' padding needs odd kernel sizes, got {value!r} "
            "(an even kernel would shift the output by half a pixel)"
        )
    return checked


def check_tensor(name: str, value: object) -> torch.Tensor:
    """Return `value` if it is a tensor."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def check_floating(name: str, value: object) -> torch.Tensor:
    """Return `value` if it is a floating-point tensor."""
    tensor = check_tensor(name, value)
    if not tensor.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {tensor.dtype}")
    return tensor
