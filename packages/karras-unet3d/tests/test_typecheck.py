"""Every public constructor and function of karras_unet3d checks its argument types (beartype).

The walk covers `__all__` of `karras_unet3d` and of its public modules (`unet`, `blocks`,
`attention`, `diffusion`, `cli`): a public class must have a `typechecked` `__init__`, a public
function must be `typechecked`; names with nothing to check (exceptions, protocols, type aliases)
are skipped with the reason.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from karras_unet3d import EDM2Diffusion, KarrasUnet3D, SpaceTimeAttention, karras_sigmas
from karras_unet3d.cli import main, sample_per_class
from mp_layers.typecheck import is_typechecked, nothing_to_check, public_callables

PUBLIC = public_callables("karras_unet3d")

TINY: dict[str, Any] = {
    "frames": 2,
    "image_size": 4,
    "dim": 8,
    "dim_max": 8,
    "channels": 3,
    "num_downsamples": 1,
    "num_blocks_per_stage": 1,
    "attn_res": (2,),
    "attn_dim_head": 8,
    "dropout": 0.0,
}


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
    assert {"karras_unet3d", "karras_unet3d.blocks", "karras_unet3d.cli"} <= modules
    names = {name.split(":")[1] for name in PUBLIC}
    assert {"KarrasUnet3D", "EDM2Diffusion", "EncoderBlock", "karras_sigmas", "main"} <= names


def test_public_methods_are_typechecked() -> None:
    for method in (
        KarrasUnet3D.forward,
        KarrasUnet3D.from_config,
        KarrasUnet3D.label_vector,
        EDM2Diffusion.forward,
        EDM2Diffusion.denoise,
        EDM2Diffusion.sample,  # under torch.no_grad()
        EDM2Diffusion.logvar,
    ):
        assert is_typechecked(method), method.__qualname__


# ---------------------------------------------------------------- behaviour


def test_a_wrong_type_to_a_constructor_is_a_type_error_naming_the_parameter() -> None:
    with pytest.raises(TypeError, match=r"KarrasUnet3D.*parameter image_size='8' violates .*int"):
        KarrasUnet3D(**{**TINY, "image_size": "8"})
    with pytest.raises(TypeError, match=r"parameter attn_res=\['2'\] violates"):
        KarrasUnet3D(**{**TINY, "attn_res": ["2"]})
    with pytest.raises(TypeError, match=r"parameter factorize=1 violates .*bool"):
        SpaceTimeAttention(8, heads=2, dim_head=4, factorize=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"parameter sigma_data='0\.5' violates .*float"):
        EDM2Diffusion(KarrasUnet3D(**TINY), sigma_data="0.5")  # type: ignore[arg-type]


def test_a_wrong_type_to_a_function_is_a_type_error_naming_the_parameter() -> None:
    with pytest.raises(TypeError, match=r"karras_sigmas\(\) parameter num_steps=4\.5 violates"):
        karras_sigmas(4.5)  # type: ignore[arg-type]
    assert karras_sigmas(4, sigma_max=80).dtype == torch.float64  # an int stands for a float
    model = EDM2Diffusion(KarrasUnet3D(**TINY))
    with pytest.raises(TypeError, match=r"parameter batch_size='2' violates .*int"):
        model.sample("2", num_steps=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"(?s)parameter model=.* violates .*EDM2Diffusion"):
        sample_per_class(model.net, num_per_class=1, num_steps=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"parameter argv=3 violates"):
        main(3)  # type: ignore[arg-type]


def test_forward_arguments_are_checked() -> None:
    net = KarrasUnet3D(**TINY)
    x = torch.randn(2, 3, 2, 4, 4)
    with pytest.raises(TypeError, match=r"(?s)forward\(\) parameter x=.* violates .*Tensor"):
        net(x.numpy(), torch.zeros(2))
    with pytest.raises(TypeError, match=r"parameter time='0' violates"):
        net(x, "0")
    with pytest.raises(TypeError, match="time: expected a float or a float tensor, got a bool"):
        net(x, True)  # a bool passes the hint `float`
    assert net(x, 0).shape == x.shape  # an int noise level is a float
    with pytest.raises(TypeError, match=r"parameter class_labels=\[0, 1\] violates"):
        EDM2Diffusion(net).denoise(x, 0.5, class_labels=[0, 1])  # type: ignore[arg-type]
