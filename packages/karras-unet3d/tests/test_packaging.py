"""The package's metadata is what its pyproject says, and its core dependency is importable."""

import importlib.metadata
import re

import karras_unet3d


def test_version_matches_distribution_metadata() -> None:
    assert karras_unet3d.__version__ == importlib.metadata.version("karras-unet3d")


def test_depends_on_mp_layers_with_a_bounded_range() -> None:
    requirements = importlib.metadata.requires("karras-unet3d") or []
    mp = [r for r in requirements if re.match(r"mp-layers\b", r) and "extra ==" not in r]
    assert len(mp) == 1, requirements
    assert ">=" in mp[0], mp[0]
    assert "<" in mp[0].replace("<=", ""), mp[0]


def test_public_api_is_declared() -> None:
    assert isinstance(karras_unet3d.__all__, list)
    for name in karras_unet3d.__all__:
        assert hasattr(karras_unet3d, name), name


def test_shared_core_is_importable() -> None:
    import mp_layers

    assert callable(mp_layers.normalize)


def test_train_extra_brings_the_training_stack() -> None:
    requirements = importlib.metadata.requires("karras-unet3d") or []
    extra = [r for r in requirements if "extra ==" in r and "train" in r]
    assert any(r.startswith("mp-layers[") and "train" in r and "video" in r for r in extra), extra
