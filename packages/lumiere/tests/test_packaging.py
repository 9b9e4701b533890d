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


def test_module_paths_of_0_1_0_keep_their_public_names() -> None:
    """`lumiere.wrapper`, `lumiere.demo` and `lumiere.cli` re-export what they defined in 0.1.0."""
    import importlib

    names = {
        "lumiere.wrapper": ["CONFIG_NAME", "GROUPS", "WEIGHTS_NAME", "Lumiere", "MPLumiere"],
        "lumiere.demo": [
            "PREDICTION_TYPES",
            "base_unet_config",
            "class_labels",
            "ddim_sample",
            "ddim_scheduler",
            "default_module_names",
            "diffusion_loss",
            "frames_as_images",
            "make_noise_scheduler",
            "model_output",
            "sample_frames_independently",
            "video_noise",
        ],
        "lumiere.cli": [
            "CONFIG_FILE",
            "DEFAULTS",
            "NUM_COLOURS",
            "REPORT_FILE",
            "evaluate",
            "frame_colour_accuracy",
            "inflate",
            "load_base",
            "load_run",
            "load_scheduler",
            "lumiere_class",
            "main",
            "plot_stages",
            "sample",
            "sample_inflated",
            "train",
            "train_base",
            "train_temporal",
        ],
    }
    for module, public in names.items():
        loaded = importlib.import_module(module)
        missing = [name for name in public if not hasattr(loaded, name)]
        assert not missing, (module, missing)
    assert importlib.import_module("lumiere.wrapper").CONFIG_NAME == "config.json"  # 0.2 layout
    assert importlib.import_module("lumiere.adapter").LEGACY_CONFIG_NAME == "temporal_config.json"
    assert importlib.import_module("lumiere.cli").CONFIG_FILE == "lumiere_video.json"
