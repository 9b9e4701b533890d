"""save_pretrained / load_pretrained round trips; conversion of reference Trainer checkpoints."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from video_ddpm.diffusion import GaussianDiffusion
from video_ddpm.pretrained import (
    convert_reference_checkpoint,
    load_pretrained,
    save_pretrained,
)
from video_ddpm.saving import write_legacy_folder
from video_ddpm.unet import Unet3D

FILES = ["README.md", "config.json", "denoise_fn", "model.safetensors"]  # a save_pretrained folder
NET_FILES = ["README.md", "config.json", "model.safetensors"]  # its denoise_fn/

FRAMES, SIZE, STEPS = 2, 8, 12
CONFIGS = {
    # 0.6.1-like: GroupNorm, conditional, linear attention
    "group": {"dim": 8, "dim_mults": (1, 2), "attn_heads": 2, "attn_dim_head": 8, "cond_dim": 4},
    # 0.7.0-like: RMSNorm, unconditional, no linear attention, other stem and output widths
    "rms": {
        "dim": 8,
        "dim_mults": (1, 1, 2),
        "attn_heads": 3,
        "attn_dim_head": 4,
        "init_dim": 6,
        "init_kernel_size": 5,
        "out_dim": 2,
        "channels": 2,
        "use_sparse_linear_attn": False,
        "norm": "rms",
    },
}


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Move every parameter off its initial value (norm gains off 1, biases off 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=generator)
            p.mul_(1 + 0.2 * noise).add_(0.05 * torch.randn(p.shape, generator=generator))


def _diffusion(kind: str = "group", seed: int = 1) -> GaussianDiffusion:
    net = Unet3D(**CONFIGS[kind])
    model = GaussianDiffusion(
        net, image_size=SIZE, num_frames=FRAMES, channels=net.channels, timesteps=STEPS
    )
    _perturb(model, seed)
    return model.eval()


def _outputs(model: GaussianDiffusion) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's output and one p_sample step, for fixed inputs and noise."""
    net = model.denoise_fn
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, model.channels, FRAMES, SIZE, SIZE, generator=generator)
    noise = torch.randn(x.shape, generator=generator)
    cond = torch.randn(2, net.cond_dim, generator=generator) if net.has_cond else None
    t = torch.tensor([0, STEPS - 2])
    with torch.no_grad():
        out = net(x, t, cond=cond)
    step = model.p_sample(x, t, cond=cond, noise=noise)
    return out, step


def _reference_checkpoint(path: Path, kind: str, **extra: Any) -> tuple[GaussianDiffusion, ...]:
    """A reference-format Trainer checkpoint: 'model' and 'ema' differ."""
    model, ema = _diffusion(kind, seed=1), _diffusion(kind, seed=2)
    data = {"step": 3, "model": model.state_dict(), "ema": ema.state_dict(), "scaler": {}}
    torch.save({**data, **extra}, path)
    return model, ema


# ---------------------------------------------------------------------------------------------
# save / load


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = _diffusion("group")
    folder = save_pretrained(model, tmp_path / "out")
    assert sorted(p.name for p in folder.iterdir()) == FILES
    assert sorted(p.name for p in (folder / "denoise_fn").iterdir()) == NET_FILES
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert len({p.stat().st_mode for p in files}) == 1  # not left private (0600)
    config = json.loads((folder / "config.json").read_text())
    meta = {k: config.pop(k) for k in list(config) if k.startswith("_")}
    assert config == model.config
    assert meta["_class_name"] == "GaussianDiffusion"
    assert meta["_parts"] == {"denoise_fn": "video_ddpm.Unet3D"}
    unet = json.loads((folder / "denoise_fn" / "config.json").read_text())
    assert Unet3D(**{k: v for k, v in unet.items() if not k.startswith("_")}).config == (
        model.denoise_fn.config
    )
    loaded = load_pretrained(folder)
    assert not loaded.training
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    for ours, theirs in zip(_outputs(loaded), _outputs(model), strict=True):
        assert torch.equal(ours, theirs)


def test_a_0_1_0_layout_folder_round_trips(tmp_path: Path) -> None:
    """What 0.1.0's save_pretrained wrote (one config and one weights file) loads bit for bit."""
    model = _diffusion("rms")
    folder = write_legacy_folder(model, tmp_path / "old")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config == {
        "format": "video-ddpm",
        "version": 1,
        "unet": model.denoise_fn.config,
        "diffusion": model.config,
    }
    for load in (load_pretrained, GaussianDiffusion.from_pretrained):
        loaded = load(folder)
        assert not loaded.training
        for ours, theirs in zip(_outputs(loaded), _outputs(model), strict=True):
            assert torch.equal(ours, theirs)


FIXTURES = Path(__file__).parent / "fixtures" / "v0_1_0"


@pytest.mark.parametrize("load", [load_pretrained, GaussianDiffusion.from_pretrained])
def test_loads_a_0_1_0_folder_and_gives_its_outputs(load: Any) -> None:
    """A folder written by 0.1.0 loads and gives the outputs 0.1.0 gave (network and sample).

    To float32 rounding, not bit for bit: the outputs were recorded on another CPU, whose
    kernels sum in another order (1.7e-6 apart here for the same weights and code). The weights
    themselves load bit for bit (the next test), and a save -> load round trip on one machine is
    compared exactly in test_hub.py."""
    from safetensors.torch import load_file

    folder = FIXTURES / "gaussian_diffusion"
    expected = load_file(folder / "expected.safetensors")
    model = load(folder)
    with torch.no_grad():
        net_out = model.denoise_fn(expected["x"], expected["t"])
        sample = model.sample(batch_size=1, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(net_out, expected["net_out"], rtol=0, atol=1e-5)
    torch.testing.assert_close(sample, expected["sample"], rtol=0, atol=1e-5)


def test_a_0_1_0_folder_loads_its_weights_bit_for_bit() -> None:
    """The committed 0.1.0 folder rebuilds its model: every saved tensor, the config it says."""
    from safetensors.torch import load_file

    folder = FIXTURES / "gaussian_diffusion"
    saved = load_file(folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    for load in (load_pretrained, GaussianDiffusion.from_pretrained):
        model = load(folder)
        assert not model.training
        assert model.config == config["diffusion"]
        assert model.denoise_fn.config == config["unet"]
        state = model.state_dict()
        assert state.keys() == saved.keys()
        for name, tensor in saved.items():
            assert torch.equal(state[name], tensor), name


def test_save_overwrites_without_leftovers(tmp_path: Path) -> None:
    save_pretrained(_diffusion("group", seed=1), tmp_path)
    second = _diffusion("rms", seed=3)
    save_pretrained(second, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES
    assert sorted(p.name for p in (tmp_path / "denoise_fn").iterdir()) == NET_FILES
    assert load_pretrained(tmp_path).denoise_fn.config == second.denoise_fn.config


def test_save_rejects_other_networks(tmp_path: Path) -> None:
    class Net(torch.nn.Module):
        def forward_with_cond_scale(self, x: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
            return x

    model = GaussianDiffusion(Net(), image_size=SIZE, num_frames=FRAMES, timesteps=STEPS)
    with pytest.raises(TypeError, match="Unet3D"):
        save_pretrained(model, tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_wrong_argument_types_are_type_errors(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="model"):
        save_pretrained(_diffusion().denoise_fn, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="num_frames"):
        convert_reference_checkpoint(tmp_path / "a.pt", tmp_path, image_size=8, num_frames="2")  # type: ignore[arg-type]


def test_load_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"missing \['config.json', 'model.safetensors'\]"):
        load_pretrained(tmp_path)
    save_pretrained(_diffusion(), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"missing \['model.safetensors'\]"):
        load_pretrained(tmp_path)
    save_pretrained(_diffusion(), tmp_path)
    (tmp_path / "denoise_fn" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"denoise_fn.*model.safetensors"):
        load_pretrained(tmp_path)


def _saved(model: GaussianDiffusion, folder: Path, layout: str) -> Callable[..., None]:
    """Save `model` to `folder` in `layout` ("hub": save_pretrained, "0.1.0": what 0.1.0 wrote);
    returns `edit(**changes)`, which rewrites the saved network config with `changes`."""
    if layout == "0.1.0":
        write_legacy_folder(model, folder)
        path = folder / "config.json"
        config = json.loads(path.read_text())

        def edit(**changes: Any) -> None:
            path.write_text(json.dumps({**config, "unet": {**config["unet"], **changes}}))

    else:
        save_pretrained(model, folder)
        path = folder / "denoise_fn" / "config.json"
        config = json.loads(path.read_text())

        def edit(**changes: Any) -> None:
            path.write_text(json.dumps({**config, **changes}))

    return edit


@pytest.mark.parametrize("layout", ["hub", "0.1.0"])
def test_load_weights_that_do_not_fit_the_config(tmp_path: Path, layout: str) -> None:
    edit_unet = _saved(_diffusion(), tmp_path, layout)
    prefix = "denoise_fn." if layout == "0.1.0" else ""  # a part's weights are its own file's
    edit_unet(cond_dim=5)
    with pytest.raises(ValueError, match="do not fit") as info:
        load_pretrained(tmp_path)
    message = str(info.value)
    assert f"shape: {prefix}null_cond_emb: (1, 4) in the file, (1, 5) in the model" in message
    assert "more)" in message  # long lists are cut
    edit_unet(use_sparse_linear_attn=False)
    with pytest.raises(ValueError, match=rf"unexpected: .*{prefix}downs.0.2.fn.fn.to_qkv.weight"):
        load_pretrained(tmp_path)


def test_load_rejects_foreign_or_invalid_configs(tmp_path: Path) -> None:
    save_pretrained(_diffusion(), tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    plain = {k: v for k, v in config.items() if not k.startswith("_")}
    path.write_text(json.dumps({**plain, "format": "diffusers"}))  # neither layout
    with pytest.raises(ValueError, match="format 'video-ddpm'"):
        load_pretrained(tmp_path)
    path.write_text(json.dumps({**config, "_class_name": "UNet2DModel", "_library": "diffusers"}))
    with pytest.raises(ValueError, match=r"holds a UNet2DModel .*not a GaussianDiffusion"):
        load_pretrained(tmp_path)
    path.write_text(json.dumps({**config, "num_frames": "2"}))
    with pytest.raises(ValueError, match=r"invalid config.*num_frames"):
        load_pretrained(tmp_path)
    path.write_text(json.dumps(config))
    _saved(_diffusion(), tmp_path, "hub")(norm="batch")
    with pytest.raises(ValueError, match=r"norm: expected one of \('group', 'rms'\)"):
        load_pretrained(tmp_path)

    old = tmp_path / "old"
    write_legacy_folder(_diffusion(), old)
    path = old / "config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "format": "diffusers"}))
    with pytest.raises(ValueError, match="format 'video-ddpm'"):
        load_pretrained(old)
    path.write_text(json.dumps({**config, "unet": {**config["unet"], "norm": "batch"}}))
    with pytest.raises(ValueError, match=r"invalid config.*norm"):
        load_pretrained(old)


# ---------------------------------------------------------------------------------------------
# reference checkpoints


@pytest.mark.parametrize("kind", ["group", "rms"])
def test_convert_infers_config_and_matches_outputs(tmp_path: Path, kind: str) -> None:
    _, ema = _reference_checkpoint(tmp_path / "model-3.pt", kind)
    out = convert_reference_checkpoint(
        tmp_path / "model-3.pt", tmp_path / "converted", image_size=SIZE, num_frames=FRAMES
    )
    assert out == tmp_path / "converted"
    loaded = load_pretrained(out)
    assert loaded.denoise_fn.config == ema.denoise_fn.config
    assert loaded.config == ema.config
    for ours, theirs in zip(_outputs(loaded), _outputs(ema), strict=True):
        assert torch.equal(ours, theirs)


def test_convert_selects_ema_or_model(tmp_path: Path) -> None:
    model, ema = _reference_checkpoint(tmp_path / "model-3.pt", "group")
    for use_ema, expected in ((True, ema), (False, model)):
        out = convert_reference_checkpoint(
            tmp_path / "model-3.pt",
            tmp_path / str(use_ema),
            image_size=SIZE,
            num_frames=FRAMES,
            use_ema=use_ema,
        )
        loaded = load_pretrained(out)
        assert torch.equal(_outputs(loaded)[0], _outputs(expected)[0])


def test_convert_passes_settings_and_checks_timesteps(tmp_path: Path) -> None:
    _reference_checkpoint(tmp_path / "model-3.pt", "group")
    out = convert_reference_checkpoint(
        tmp_path / "model-3.pt",
        tmp_path / "out",
        image_size=[SIZE, SIZE],
        num_frames=FRAMES + 3,
        timesteps=STEPS,
        loss_type="l2",
        text_use_bert_cls=True,
    )
    config = load_pretrained(out).config
    assert (config["num_frames"], config["loss_type"], config["timesteps"]) == (5, "l2", STEPS)
    assert config["text_use_bert_cls"] is True
    with pytest.raises(ValueError, match=f"has {STEPS} \\(len\\(betas\\)\\), got 1000"):
        convert_reference_checkpoint(
            tmp_path / "model-3.pt", tmp_path / "x", image_size=8, num_frames=2, timesteps=1000
        )


def test_convert_bert_flag_needs_a_conditional_network(tmp_path: Path) -> None:
    _reference_checkpoint(tmp_path / "model-3.pt", "rms")
    with pytest.raises(ValueError, match="unconditional"):
        convert_reference_checkpoint(
            tmp_path / "model-3.pt",
            tmp_path / "x",
            image_size=SIZE,
            num_frames=FRAMES,
            use_bert_text_cond=True,
        )


def test_convert_names_missing_top_level_keys(tmp_path: Path) -> None:
    state = _diffusion().state_dict()
    torch.save({"step": 3, "model": state}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match=r"missing \['ema'\]"):
        convert_reference_checkpoint(tmp_path / "a.pt", tmp_path / "x", image_size=8, num_frames=2)
    torch.save(state, tmp_path / "b.pt")  # a bare state dict, not a Trainer checkpoint
    with pytest.raises(ValueError, match="Trainer checkpoint"):
        convert_reference_checkpoint(tmp_path / "b.pt", tmp_path / "x", image_size=8, num_frames=2)


def test_convert_names_missing_state_keys(tmp_path: Path) -> None:
    state = _diffusion().state_dict()
    del state["denoise_fn.init_conv.weight"]
    torch.save({"step": 3, "model": state, "ema": state, "scaler": {}}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match=r"missing keys \['denoise_fn.init_conv.weight'\]"):
        convert_reference_checkpoint(tmp_path / "a.pt", tmp_path / "x", image_size=8, num_frames=2)
    state = _diffusion().state_dict()
    del state["denoise_fn.mid_block1.block1.proj.bias"]
    torch.save({"step": 3, "model": state, "ema": state, "scaler": {}}, tmp_path / "b.pt")
    with pytest.raises(ValueError, match=r"missing: denoise_fn.mid_block1.block1.proj.bias"):
        convert_reference_checkpoint(tmp_path / "b.pt", tmp_path / "x", image_size=8, num_frames=2)


def test_convert_rejects_files_that_are_not_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("hello, not a checkpoint\n")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint") as info:
        convert_reference_checkpoint(path, tmp_path / "x", image_size=8, num_frames=2)
    assert "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError):
        convert_reference_checkpoint(tmp_path / "no.pt", tmp_path / "x", image_size=8, num_frames=2)


def test_convert_refuses_unsafe_pickles(tmp_path: Path) -> None:
    _reference_checkpoint(tmp_path / "model-3.pt", "group", scaler=argparse.Namespace(scale=1.0))
    with pytest.raises(ValueError, match="unsafe unpickling") as info:
        convert_reference_checkpoint(
            tmp_path / "model-3.pt", tmp_path / "x", image_size=SIZE, num_frames=FRAMES
        )
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x").exists()
