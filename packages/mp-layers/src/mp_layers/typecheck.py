"""`typechecked`: runtime type checks of public constructors and functions (beartype).

beartype's own violation classes are not `TypeError`s; the project promises a `TypeError` that
names the parameter, what was expected and what was given, so violations are raised as that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from beartype import BeartypeConf, beartype

_F = TypeVar("_F", bound=Callable[..., Any])
# The PEP 484 numeric tower lets an int stand for a float (`cond_scale=2`, `cond_drop_prob=0`).
_BEARTYPE = beartype(conf=BeartypeConf(violation_type=TypeError, is_pep484_tower=True))


def typechecked(func: _F) -> _F:
    """Check `func`'s arguments and return value against its type hints at every call."""
    return _BEARTYPE(func)
