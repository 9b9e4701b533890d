"""The package's metadata is what its pyproject says, and its core dependency is importable."""

import importlib.metadata
import re

import lumiere


def test_version_matches_distribution_metadata() -> None:
    assert lumiere.__version__ == importlib.metadata.version("lumiere-video")


def test_depends_on_mp_layers_with_a_bounded_range() -> None:
    requirements = importlib.metadata.requires("lumiere-video") or []
    mp = [r for r in requirements if re.match(r"mp-layers\b", r) and "extra ==" not in r]
    assert len(mp) == 1, requirements
    assert ">=" in mp[0], mp[0]
    assert "<" in mp[0].replace("<=", ""), mp[0]


def test_public_api_is_declared() -> None:
    assert isinstance(lumiere.__all__, list)
    for name in lumiere.__all__:
        assert hasattr(lumiere, name), name


def test_shared_core_is_importable() -> None:
    import mp_layers

    assert callable(mp_layers.normalize)
