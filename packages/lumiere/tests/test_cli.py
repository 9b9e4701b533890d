"""The `lumiere-video` demo CLI end to end on tiny runs (seconds), offline and seeded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("mp_layers.training")
pytest.importorskip("mp_layers.video")

from diffusers import DDPMScheduler, UNet2DModel

from lumiere.cli import CONFIG_FILE, REPORT_FILE, load_run, main, sample, train
from lumiere.demo import (
    base_unet_config,
    ddim_sample,
    ddim_scheduler,
    default_module_names,
    diffusion_loss,
    make_noise_scheduler,
    sample_frames_independently,
)
from mp_layers.video import read_video

try:
    from lumiere import Lumiere  # noqa: F401

    HAS_WRAPPER = True
except ImportError:  # pragma: no cover - only while the wrapper is being written
    HAS_WRAPPER = False
needs_wrapper = pytest.mark.skipif(not HAS_WRAPPER, reason="lumiere.Lumiere is not there yet")

SIZE, FRAMES = 16, 2
TINY = [
    "--image-size", str(SIZE), "--frames", str(FRAMES), "--base-channels", "16,16",
    "--base-steps", "2", "--base-batch-size", "4", "--num-images", "16", "--steps", "2",
    "--batch-size", "2", "--num-videos", "8", "--sample-steps", "2", "--num-per-class", "1",
    "--warmup-steps", "1", "--no-progress",
]  # fmt: skip


def _sheet_height(rows: int) -> int:
    return rows * (SIZE + 2) + 2  # video_grid with padding 2


@pytest.fixture(scope="module")
def base_only(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("base-only")
    return out, train([*TINY, "--base-only", "--out", str(out)])


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    if not HAS_WRAPPER:
        pytest.skip("lumiere.Lumiere is not there yet")
    out = tmp_path_factory.mktemp("full")
    return out, train([*TINY, "--out", str(out)])


# ----------------------------------------------------------------------------- demo helpers


def _tiny_unet() -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(**base_unet_config(image_size=SIZE, block_out_channels=(16, 16)))


def test_base_config_is_class_conditional_with_attention_at_the_coarsest_level() -> None:
    config = base_unet_config(image_size=32)
    assert config["num_class_embeds"] == 4
    assert config["down_block_types"][-1] == "AttnDownBlock2D"
    assert config["up_block_types"][0] == "AttnUpBlock2D"
    with pytest.raises(ValueError, match="multiple of 4"):
        base_unet_config(image_size=30)
    with pytest.raises(ValueError, match="block_out_channels"):
        base_unet_config(image_size=32, block_out_channels=(24, 40))


def test_default_module_names_are_resnets_and_middle_attention() -> None:
    unet = _tiny_unet()
    conv, attn = default_module_names(unet)
    modules = dict(unet.named_modules())
    assert conv
    assert all(".resnets." in name for name in conv)
    assert {"down_blocks.0.resnets.0", "mid_block.resnets.1", "up_blocks.1.resnets.1"} <= set(conv)
    assert attn == ["mid_block.attentions.0"]
    assert all(name in modules for name in conv + attn)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_diffusion_loss_on_images_and_videos(prediction_type: str) -> None:
    scheduler = make_noise_scheduler(prediction_type=prediction_type)
    calls: list[torch.Size] = []

    def model(x: torch.Tensor, *, timestep: torch.Tensor, class_labels: torch.Tensor) -> Any:
        calls.append(timestep.shape)
        return (torch.zeros_like(x),)  # a tuple output (return_dict=False)

    torch.manual_seed(0)
    images = torch.rand(3, 3, 8, 8) * 2 - 1
    videos = torch.rand(2, 3, 4, 8, 8) * 2 - 1
    labels = torch.tensor([0, 1, 2])
    for clean, label in ((images, labels), (videos, labels[:2])):
        loss = diffusion_loss(model, clean, label, scheduler)
        assert loss.ndim == 0
        assert loss.item() > 0
    assert calls == [torch.Size([3]), torch.Size([2])]  # one timestep per sample / per clip
    with pytest.raises(ValueError, match="prediction_type"):
        make_noise_scheduler(prediction_type="sample")


def test_ddim_sampler_shares_the_training_schedule() -> None:
    train_scheduler = make_noise_scheduler(prediction_type="v_prediction")
    sampler = ddim_scheduler(train_scheduler)
    assert torch.equal(sampler.alphas_cumprod, train_scheduler.alphas_cumprod)
    assert sampler.config.prediction_type == "v_prediction"
    sampler.set_timesteps(50)
    assert len(sampler.timesteps) == 50
    assert int(sampler.timesteps[0]) == 999


def test_frame_by_frame_sampling_is_the_image_model_on_each_frame() -> None:
    unet = _tiny_unet().eval()
    scheduler = make_noise_scheduler()
    noise = torch.randn(2, 3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 3])
    videos = sample_frames_independently(unet, noise, labels, scheduler, steps=2)
    assert videos.shape == noise.shape
    assert videos.min() >= 0
    assert videos.max() <= 1
    frame = ddim_sample(unet, noise[1:, :, 2], labels[1:], scheduler, steps=2)
    torch.testing.assert_close(videos[1:, :, 2], frame, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- train


def test_base_only_trains_and_evaluates_the_image_model(
    base_only: tuple[Path, dict[str, Any]],
) -> None:
    out, report = base_only
    assert report["stage1"]["step"] == 2
    assert "stage2" not in report
    for name in (
        "base/config.json",
        "base/diffusion_pytorch_model.safetensors",
        "base/scheduler_config.json",
        "base-run/metrics.csv",
        "base_samples.gif",
        "loss.png",
        CONFIG_FILE,
        REPORT_FILE,
    ):
        assert (out / name).is_file(), name
    assert not (out / "samples.gif").exists()
    figures = report["figures"]
    assert 0.0 <= figures["base_frame_colour_accuracy"] <= 1.0
    assert figures["real_displacement"] > 0
    assert json.loads((out / REPORT_FILE).read_text())["figures"] == figures
    sheet = read_video(out / "base_samples.gif")
    assert sheet.shape[1] == FRAMES
    assert sheet.shape[2] == _sheet_height(4)
    base = UNet2DModel.from_pretrained(out / "base")
    assert base.config.num_class_embeds == 4
    assert base.config.sample_size == SIZE
    assert DDPMScheduler.from_pretrained(out / "base").config.prediction_type == "v_prediction"


@needs_wrapper
def test_train_runs_both_stages_and_writes_its_files(
    full_run: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    out, report = full_run
    assert report["stage1"]["step"] == 2
    assert report["stage2"]["step"] == 2
    for name in (
        "base/config.json",
        "temporal/model.safetensors",
        "temporal/config.json",
        "metrics.csv",
        "samples.gif",
        "base_samples.gif",
        "loss.png",
        REPORT_FILE,
    ):
        assert (out / name).is_file(), name
    figures = report["figures"]
    for key in ("colour_accuracy", "displacement", "base_displacement", "real_displacement"):
        assert key in figures, key
    sheet = read_video(out / "samples.gif")
    assert sheet.shape[1] == FRAMES
    assert sheet.shape[2] == _sheet_height(4)
    # Stage 2 trained the temporal layers only: the inflated model's base is the saved base.
    wrapper, _, config = load_run(out)
    saved = UNet2DModel.from_pretrained(out / "base").state_dict()
    for name, tensor in wrapper.model.state_dict().items():
        torch.testing.assert_close(tensor, saved[name], atol=0, rtol=0)
    assert config["conv_module_names"] == default_module_names(wrapper.model)[0]
    # the exported adapter folder given as --checkpoint is the same model as 'latest'
    exported, _, _ = load_run(out, str(out / "temporal"))
    for name, tensor in wrapper.temporal_state_dict().items():
        assert torch.equal(exported.temporal_state_dict()[name], tensor), name


@needs_wrapper
def test_base_flag_skips_stage_one(
    base_only: tuple[Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base_out, _ = base_only
    out = tmp_path / "run"
    report = train([*TINY, "--base", str(base_out / "base"), "--out", str(out)])
    assert "stage1" not in report
    assert report["stage2"]["step"] == 2
    assert not (out / "base-run").exists()
    assert "stage 1:" not in capsys.readouterr().out
    copied = UNet2DModel.from_pretrained(out / "base").state_dict()  # the run is self-contained
    original = UNet2DModel.from_pretrained(base_out / "base").state_dict()
    assert all(torch.equal(copied[name], original[name]) for name in original)


@needs_wrapper
def test_resume_latest_skips_the_finished_base(
    full_run: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = full_run
    report = train([*TINY, "--out", str(out), "--resume", "latest", "--steps", "3"])
    assert "stage1" not in report
    assert report["stage2"]["step"] == 3
    assert "stage 1: done before" in capsys.readouterr().out


# ----------------------------------------------------------------------------- sample


@needs_wrapper
def test_sample_from_the_run_folder(full_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, _ = full_run
    gif = tmp_path / "more.gif"
    summary = sample(["--out", str(out), "--gif", str(gif), "--steps", "2",
                      "--num-samples", "8", "--frames", "4", "--no-progress"])  # fmt: skip
    sheet = read_video(gif)
    assert sheet.shape[1] == 4
    assert sheet.shape[2] == _sheet_height(4)
    assert sheet.shape[3] == 2 * (SIZE + 2) + 2  # 8 samples: 2 per colour
    assert 0.0 <= summary["colour_accuracy"] <= 1.0
    # the default file, and a stage-2 checkpoint instead of the exported adapter
    assert main(["sample", "--out", str(out), "--steps", "1", "--num-samples", "4",
                 "--no-ema", "--no-progress"]) == 0  # fmt: skip
    assert (out / "samples" / "samples.gif").is_file()


@needs_wrapper
def test_sample_is_deterministic(full_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, _ = full_run
    args = ["--out", str(out), "--steps", "2", "--num-samples", "4", "--no-progress", "--seed", "3"]
    first = sample([*args, "--gif", str(tmp_path / "a.gif")])
    second = sample([*args, "--gif", str(tmp_path / "b.gif")])
    assert first["colour_accuracy"] == second["colour_accuracy"]
    assert torch.equal(read_video(tmp_path / "a.gif"), read_video(tmp_path / "b.gif"))


@needs_wrapper
def test_sample_from_a_hub_repo_id_offline(
    full_run: tuple[Path, dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`sample --out org/name`: a run folder published on the Hub, read from a Hub cache with
    `local_files_only` (nothing fetched); the samples go to the working folder, not the cache."""
    import huggingface_hub

    from mp_layers.testing import populate_hub_cache

    out, _ = full_run
    populate_hub_cache(tmp_path / "hub", "someone/tiny-lumiere", out)
    populate_hub_cache(tmp_path / "hub", "someone/tiny-adapter", out / "temporal")

    def from_cache(**kwargs: object) -> str:  # the real lookup, in this cache, never online
        kwargs.update(cache_dir=tmp_path / "hub", local_files_only=True)
        return huggingface_hub.snapshot_download(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("mp_layers.hub.snapshot_download", from_cache)
    monkeypatch.chdir(tmp_path)
    args = ["--steps", "2", "--num-samples", "4", "--no-progress", "--seed", "3"]
    local = sample(["--out", str(out), *args, "--gif", str(tmp_path / "local.gif")])
    hub = sample(["--out", "someone/tiny-lumiere", *args])
    assert hub["out"] == "samples.gif"
    assert torch.equal(read_video(tmp_path / "samples.gif"), read_video(tmp_path / "local.gif"))
    assert hub["colour_accuracy"] == local["colour_accuracy"]
    # an adapter published alone, on the run's base
    adapter = sample(["--out", str(out), "--checkpoint", "someone/tiny-adapter", *args,
                      "--gif", str(tmp_path / "adapter.gif")])  # fmt: skip
    assert adapter["colour_accuracy"] == local["colour_accuracy"]
    assert main(["sample", "--out", "someone/not-there", "--no-progress"]) == 1
    assert "a Hub repo id holding one" in capsys.readouterr().err


# ----------------------------------------------------------------------------- errors


def test_usage_and_flag_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["nonsense"]) == 2
    capsys.readouterr()
    bad = {
        "--frames=0": "--frames: expected an int >= 1",
        "--base-channels=16,x": "--base-channels: expected a comma list of ints",
        "--ema-beta=1.5": "--ema-beta: expected a number in [0, 1)",
        f"--base={tmp_path / 'missing'}": "--base: expected a diffusers UNet2DModel folder",
        "--base-max-time=0": "--base-max-time: expected a number > 0",
    }
    for flag, message in bad.items():
        assert main(["train", *TINY, "--out", str(tmp_path / "r"), flag]) == 1, flag
        assert message in capsys.readouterr().err, flag
    assert main(["sample", "--out", str(tmp_path / "nothing")]) == 1
    assert "expected a lumiere-video train folder" in capsys.readouterr().err


def test_base_must_be_a_class_conditional_rgb_unet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = base_unet_config(image_size=SIZE, block_out_channels=(16, 16))
    UNet2DModel(**{**config, "num_class_embeds": None}).save_pretrained(tmp_path / "plain")
    assert (
        main(["train", *TINY, "--out", str(tmp_path / "r"), "--base", str(tmp_path / "plain")]) == 1
    )
    assert "num_class_embeds >= 4" in capsys.readouterr().err
    UNet2DModel(**config).save_pretrained(tmp_path / "ok")
    args = ["train", *TINY, "--out", str(tmp_path / "r2"), "--base", str(tmp_path / "ok")]
    assert main([*args, "--image-size", "32"]) == 1
    assert f"expected the base's sample_size {SIZE}, got 32" in capsys.readouterr().err


@needs_wrapper
def test_unknown_module_names_are_a_clear_error(
    base_only: tuple[Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base_out, _ = base_only
    args = ["train", *TINY, "--out", str(tmp_path / "r"), "--base", str(base_out / "base")]
    assert main([*args, "--conv-modules", "down_blocks.9.resnets.0"]) == 1
    assert "down_blocks.9.resnets.0" in capsys.readouterr().err


def test_missing_wrapper_fails_before_stage_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import lumiere

    monkeypatch.delattr(lumiere, "Lumiere", raising=False)
    assert main(["train", *TINY, "--out", str(tmp_path / "r")]) == 1
    assert "stage 2 needs the wrapper lumiere.Lumiere" in capsys.readouterr().err
    assert not (tmp_path / "r" / "base-run").exists()


def test_unlabelled_video_folder_is_conditioned_on_its_dominant_colour(tmp_path: Path) -> None:
    from mp_layers.video import MovingShapes, write_video

    folder = tmp_path / "clips"
    folder.mkdir()
    clips = MovingShapes(4, image_size=SIZE, num_frames=FRAMES, seed=1)
    for index in range(len(clips)):
        write_video(clips[index]["video"], folder / f"clip{index}.gif")
    report = train([*TINY, "--base-only", "--data", str(folder), "--out", str(tmp_path / "r")])
    assert report["stage1"]["step"] == 2
    assert (tmp_path / "r" / "base" / "config.json").is_file()
