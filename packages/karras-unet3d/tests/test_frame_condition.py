"""Image to video through the network's own frame conditioning: zero-initialised extra inputs
(the output is unchanged at init), training with the first frame known, sampling from a given
first frame without pasting it, and starting from an existing run (`--init-from`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from karras_unet3d import EDM2Diffusion, KarrasUnet3D
from karras_unet3d.diffusion import first_frame_condition

TINY: dict[str, Any] = {
    "frames": 4, "image_size": 8, "dim": 8, "dim_max": 8, "channels": 3, "num_downsamples": 1,
    "num_blocks_per_stage": 1, "attn_res": (4,), "attn_dim_head": 8, "dropout": 0.0,
    "downsample_types": ("image",),
}  # fmt: skip


def nets() -> tuple[KarrasUnet3D, KarrasUnet3D]:
    """A network and the same network with frame conditioning added (its other weights copied)."""
    torch.manual_seed(0)
    plain = KarrasUnet3D(**TINY)
    with torch.no_grad():
        plain.output_gain.gain.fill_(1.0)
    conditioned = KarrasUnet3D(**TINY, frame_condition=True)
    missing, unexpected = conditioned.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected
    assert sorted(missing) == ["frame_cond_conv.weight", "frame_cond_gain.gain"]
    return plain.eval(), conditioned.eval()


def test_the_output_is_unchanged_at_init() -> None:
    plain, conditioned = nets()
    x, t = torch.randn(2, 3, 4, 8, 8), torch.tensor([0.1, -0.3])
    known = first_frame_condition(torch.rand(2, 3, 1, 8, 8) * 2 - 1, 4)
    assert torch.equal(conditioned(x, t, frame_cond=known), plain(x, t))
    assert torch.equal(conditioned(x, t), plain(x, t))
    assert known[:, 3, 0].eq(1).all()
    assert known[:, 3, 1:].eq(0).all()
    assert known[:, :3, 1:].eq(0).all()


def test_training_reaches_the_frame_inputs_and_sampling_uses_them() -> None:
    _, conditioned = nets()
    model = EDM2Diffusion(conditioned, frame_cond_dropout=0.0).train()
    loss = model(torch.rand(2, 3, 4, 8, 8))
    loss.backward()
    assert conditioned.frame_cond_gain.gain.grad is not None
    assert conditioned.frame_cond_gain.gain.grad.abs() > 0
    with torch.no_grad():
        conditioned.frame_cond_gain.gain.fill_(1.0)  # as if trained
    model.eval()
    first = torch.rand(1, 3, 1, 8, 8)
    generator = torch.Generator().manual_seed(0)
    video = model.sample(2, num_steps=3, first_frame=first, generator=generator)
    plain = model.sample(2, num_steps=3, generator=torch.Generator().manual_seed(0))
    assert video.shape == (2, 3, 4, 8, 8)
    assert not torch.equal(video, plain)  # the frame conditions the samples...
    assert not torch.equal(video[:, :, 0], first[:, :, 0].expand(2, -1, -1, -1))  # ...not pasted
    long = model.sample_long(1, 10, overlap=2, num_steps=2, first_frame=first)
    assert long.shape == (1, 3, 10, 8, 8)


def test_first_frame_errors() -> None:
    plain, conditioned = nets()
    with pytest.raises(ValueError, match="first_frame: this network has no frame conditioning"):
        EDM2Diffusion(plain).sample(1, num_steps=2, first_frame=torch.rand(1, 3, 1, 8, 8))
    with pytest.raises(ValueError, match=r"first_frame: expected \(1 or 2, 3, 1, 8, 8\)"):
        EDM2Diffusion(conditioned).sample(2, num_steps=2, first_frame=torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="frame_cond: expected the known frames and their mask"):
        conditioned(torch.randn(1, 3, 4, 8, 8), 0.0, frame_cond=torch.zeros(1, 3, 4, 8, 8))
    with pytest.raises(
        ValueError, match="frame_cond: this model was built with frame_condition=False"
    ):
        plain(torch.randn(1, 3, 4, 8, 8), 0.0, frame_cond=torch.zeros(1, 4, 4, 8, 8))


def test_cli_trains_image_to_video_from_an_existing_run(tmp_path: Path) -> None:
    pytest.importorskip("mp_layers.training")
    from PIL import Image

    from karras_unet3d.cli import main, sample, train
    from karras_unet3d.workflow import build_model, find_run_config, init_from
    from mp_layers.training import load_model_weights, resolve_checkpoint

    from .test_cli import TINY_RUN

    base = tmp_path / "base"
    train([*TINY_RUN, "--out", str(base)])
    # the new model starts as the old one: shared weights loaded, frame inputs at a zero gain
    _, config = find_run_config(base)
    old = load_model_weights(build_model(config), resolve_checkpoint(base)).eval()
    config["net"]["frame_condition"] = True
    new = build_model(config)
    init_from(new, str(base))
    new.eval()
    x = torch.randn(1, 3, 2, 8, 8)
    known = first_frame_condition(torch.zeros(1, 3, 1, 8, 8), 2)
    labels = torch.tensor([1])
    assert torch.equal(new.denoise(x, 1.0, labels), old.denoise(x, 1.0, labels))
    assert torch.equal(new.net(x, 0.0, class_labels=labels, frame_cond=known),
                       old.net(x, 0.0, class_labels=labels))  # fmt: skip

    run = tmp_path / "i2v"
    summary = train(
        [*TINY_RUN, "--out", str(run), "--cond-frames", "first", "--init-from", str(base)]
    )
    assert summary["step"] == 2
    assert find_run_config(run)[1]["net"]["frame_condition"] is True
    image = tmp_path / "first.png"
    Image.new("RGB", (8, 8), (255, 40, 40)).save(image)
    result = sample(["--checkpoint", str(run), "--out", str(tmp_path / "i2v.gif"), "--steps", "2",
                     "--num-per-class", "1", "--first-frame", str(image)])  # fmt: skip
    assert (result["mode"], result["given_frames"]) == ("first_frame", 1)
    assert main(["train", *TINY_RUN, "--out", str(tmp_path / "bad"), "--init-from",
                 str(tmp_path / "nowhere")]) == 1  # fmt: skip
