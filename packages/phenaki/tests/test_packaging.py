"""The package's metadata is what its pyproject says, and its core dependency is importable."""

import importlib.metadata
import re

import phenaki


def test_version_matches_distribution_metadata() -> None:
    assert phenaki.__version__ == importlib.metadata.version("phenaki")


def test_depends_on_mp_layers_with_a_bounded_range() -> None:
    requirements = importlib.metadata.requires("phenaki") or []
    mp = [r for r in requirements if re.match(r"mp-layers\b", r) and "extra ==" not in r]
    assert len(mp) == 1, requirements
    assert ">=" in mp[0], mp[0]
    assert "<" in mp[0].replace("<=", ""), mp[0]


def test_public_api_is_declared() -> None:
    assert isinstance(phenaki.__all__, list)
    for name in phenaki.__all__:
        assert hasattr(phenaki, name), name


def test_shared_core_is_importable() -> None:
    import mp_layers

    assert callable(mp_layers.normalize)
