"""`typechecked`: runtime type checks of public constructors and functions (beartype).

beartype's own violation classes are not `TypeError`s; the project promises a `TypeError` that
names the parameter, what was expected and what was given, so violations are raised as that.
Value checks (ranges, divisibility, shapes, dtypes) stay with the functions, through
`mp_layers.validation`.

While `torch.compile` traces, a decorated function runs unchecked: beartype checks one random
item of a container argument (`Sequence[int]`) through `random.getrandbits`, which dynamo cannot
trace (a graph break), and dynamo guards on the types of what it traced anyway. So the functional
primitives a compiled forward calls (`normalize`, `mp_sum`, ...) are decorated like the rest.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import typing
from collections.abc import Callable, Collection
from typing import Any, TypeVar, cast

import torch
from beartype import BeartypeConf, beartype

_T = TypeVar("_T", bound=Callable[..., Any])
# The PEP 484 numeric tower lets an int stand for a float (`cond_scale=2`, `cond_drop_prob=0`).
_BEARTYPE = beartype(conf=BeartypeConf(violation_type=TypeError, is_pep484_tower=True))
_MARK = "__typechecked__"
_is_compiling = torch.compiler.is_compiling  # dynamo knows the function, under any name


def typechecked(obj: _T) -> _T:
    """Check `obj`'s arguments and return value against its type hints at every call.

    `obj` is a function (or method), or a class, whose `__init__` is then checked in place: the
    way to check a dataclass (`@typechecked` above `@dataclass`). The wrapper keeps `obj`'s name,
    docstring and signature (`functools.wraps`; the unchecked function is `__wrapped__`) and is
    marked for `is_typechecked`. A wrong argument raises a `TypeError` naming the parameter, the
    hint and the value given.
    """
    if isinstance(obj, type):
        if "__init__" not in vars(obj):
            raise TypeError(f"typechecked: class {obj.__qualname__} defines no __init__ to check")
        type.__setattr__(obj, "__init__", typechecked(vars(obj)["__init__"]))
        return cast(_T, obj)
    if getattr(obj, _MARK, False):
        return obj
    checked = _BEARTYPE(obj)

    @functools.wraps(obj)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _is_compiling():  # see the module docstring
            return obj(*args, **kwargs)
        return checked(*args, **kwargs)

    setattr(wrapper, _MARK, True)
    return cast(_T, wrapper)


def is_typechecked(obj: object) -> bool:
    """Whether calling `obj` checks its argument types: a `typechecked` function (also under
    decorators that keep `__wrapped__`, such as `torch.no_grad()`), or a class whose `__init__`
    (its own or inherited) is one."""
    if isinstance(obj, type):
        obj = cast(Any, obj).__init__  # the class's own or inherited
    while obj is not None:
        if getattr(obj, _MARK, False) is True:
            return True
        obj = getattr(obj, "__wrapped__", None)
    return False


def public_callables(package: str, *, exclude: Collection[str] = ()) -> dict[str, object]:
    """`{"module:name": object}` for every callable named in the `__all__` of `package` or of one
    of its public submodules (no dotted part starting with `_`; modules in `exclude` left out),
    each object once, under the first module that exports it (a package before its submodules).
    What a package's tests walk to check that its whole public API is `typechecked`."""
    root = importlib.import_module(package)
    names = [package]
    if hasattr(root, "__path__"):
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if not any(part.startswith("_") for part in info.name.split(".")):
                names.append(info.name)
    found: dict[str, object] = {}
    seen: set[int] = set()
    for module_name in sorted(set(names) - set(exclude)):
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if callable(obj) and id(obj) not in seen:
                seen.add(id(obj))
                found[f"{module_name}:{name}"] = obj
    return found


def nothing_to_check(obj: object) -> str | None:
    """Why the callable `obj` has no arguments to type-check (an exception class, a protocol, a
    type alias), or None when it should be `typechecked`."""
    if isinstance(obj, type) and issubclass(obj, BaseException):
        return "an exception class"
    if isinstance(obj, type) and getattr(obj, "_is_protocol", False):
        return "a protocol (a type for hints, never instantiated)"
    if typing.get_origin(obj) is not None or type(obj).__name__ == "TypeAliasType":
        return "a type alias"  # `Sequence[int]`, `Literal[...]`, `int | str`, `type X = ...`
    if isinstance(obj, type) and all("__init__" not in vars(c) for c in obj.__mro__[:-1]):
        return "a class without constructor arguments (a mixin)"
    return None
