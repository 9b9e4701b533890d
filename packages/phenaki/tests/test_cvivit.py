"""CViViT: shapes, causality, quantisers, losses, the reference's defects, errors, files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from phenaki import CViViT
from phenaki.perceptual import PerceptualLoss

from .conftest import TINY


def make(**overrides: Any) -> CViViT:
    config = {**TINY, "use_vgg_and_gan": False, **overrides}
    return CViViT(**config)


def videos(b: int = 2, f: int = 5, size: int | tuple[int, int] = 16, c: int = 3) -> torch.Tensor:
    h, w = (size, size) if isinstance(size, int) else size
    return torch.rand(b, c, f, h, w)


# ---------------------------------------------------------------------------------------------
# shapes


@pytest.mark.parametrize("lfq", [True, False])
def test_video_shapes_codes_and_reconstruction(lfq: bool) -> None:
    model = make(lookup_free_quantization=lfq).eval()
    video = videos()
    ids = model(video, return_only_codebook_ids=True)
    assert ids.shape == (2, 3, 4, 4)
    assert ids.dtype == torch.long
    assert int(ids.min()) >= 0
    assert int(ids.max()) < 64
    recon = model(video, return_recons_only=True)
    assert recon.shape == video.shape
    # decoding the codes gives the forward's reconstruction
    torch.testing.assert_close(model.decode_from_codebook_indices(ids), recon)
    torch.testing.assert_close(model.decode_from_codebook_indices(ids.flatten(1)), recon)
    loss, returned = model(video, return_recons=True)
    assert loss.shape == ()
    torch.testing.assert_close(returned, recon)


def test_images_are_one_frame_videos() -> None:
    model = make().eval()
    image = torch.rand(3, 3, 16, 16)
    recon = model(image, return_recons_only=True)
    assert recon.shape == image.shape
    as_video = model(image[:, :, None], return_recons_only=True)
    torch.testing.assert_close(as_video[:, :, 0], recon)
    assert model(image, return_only_codebook_ids=True).shape == (3, 1, 4, 4)


def test_rectangular_frames() -> None:
    model = make(image_size=(16, 8), patch_size=(4, 2))
    video = videos(size=(16, 8), f=3)
    assert model(video, return_recons_only=True).shape == video.shape
    assert model(video, return_only_codebook_ids=True).shape == (2, 2, 4, 4)
    assert model.patch_height_width == (4, 4)
    assert model.get_video_patch_shape(3) == (2, 4, 4)


def test_token_geometry_helpers() -> None:
    model = make()
    assert model.image_num_tokens == 16
    assert model.num_tokens_per_frames(5) == 48
    assert model.num_tokens_per_frames(4, include_first_frame=False) == 32
    assert model.get_video_patch_shape(1) == (1, 4, 4)
    # defect P7: the reference's frames_per_num_tokens was a NameError
    assert model.frames_per_num_tokens(48) == 5
    assert model.frames_per_num_tokens(16) == 1
    for frames in (1, 3, 9):
        assert model.frames_per_num_tokens(model.num_tokens_per_frames(frames)) == frames
    with pytest.raises(ValueError, match="multiple of the 16 tokens per frame"):
        model.frames_per_num_tokens(20)
    with pytest.raises(ValueError, match=r"1 \+ k \* temporal_patch_size \(2\) frames, got 4"):
        model.num_tokens_per_frames(4)


def test_video_token_mask() -> None:
    model = make()
    mask = torch.tensor([[True, True, True, False, False], [True, False, False, False, False]])
    token_mask = model.calculate_video_token_mask(videos(), mask)
    assert token_mask.shape == (2, 48)
    assert token_mask[0].tolist() == [True] * 32 + [False] * 16
    assert token_mask[1].tolist() == [True] * 16 + [False] * 32


# ---------------------------------------------------------------------------------------------
# causality (defect P1)


@pytest.mark.parametrize("lfq", [True, False])
@pytest.mark.parametrize("k", [1, 3])
def test_later_frames_never_change_earlier_codes_or_outputs(lfq: bool, k: int) -> None:
    """Changing frames from index k on leaves the codes and decoded frames of earlier tubelets
    unchanged (the reference changed frame-0 outputs by about 2.4 through its PEG)."""
    model = make(lookup_free_quantization=lfq, temporal_depth=2).eval()
    video = videos(f=7)
    changed = video.clone()
    changed[:, :, k:] = torch.rand_like(changed[:, :, k:])
    steps = 1 + (k - 1) // 2  # token steps made only of frames before k
    frames = 1 + (steps - 1) * 2
    with torch.no_grad():
        ids, ids_changed = (model(v, return_only_codebook_ids=True) for v in (video, changed))
        out, out_changed = (model(v, return_recons_only=True) for v in (video, changed))
    assert torch.equal(ids[:, :steps], ids_changed[:, :steps])
    torch.testing.assert_close(out[:, :, :frames], out_changed[:, :, :frames], atol=1e-6, rtol=0)
    assert not torch.allclose(out[:, :, frames:], out_changed[:, :, frames:])


# ---------------------------------------------------------------------------------------------
# masks and losses


def test_masked_reconstruction_ignores_padding_frames() -> None:
    model = make().eval()
    video = videos()
    mask = torch.tensor([[True, True, True, False, False], [True, False, False, False, False]])
    padded = video.clone()
    padded[0, :, 3:] = 0.5
    padded[1, :, 1:] = 0.0
    with torch.no_grad():
        loss = model(video, mask=mask)
        assert torch.allclose(model(padded, mask=mask), loss)
        recon = model(video, return_recons_only=True)
    errors = (recon - video).pow(2).mean(dim=(1, 3, 4))
    torch.testing.assert_close(loss, errors[mask].mean(), atol=1e-6, rtol=1e-5)


def test_quantizer_aux_loss_is_trained_without_gan() -> None:
    """The reference returned the bare MSE when use_vgg_and_gan=False, dropping LFQ's entropy
    loss."""
    model = make(lookup_free_quantization_kwargs={"entropy_loss_weight": 1.0}).train()
    video = videos()
    torch.manual_seed(1)
    loss = model(video)
    torch.manual_seed(1)
    recon = model(video, return_recons_only=True)
    assert not torch.allclose(loss, torch.nn.functional.mse_loss(recon, video))


def gan_model(tiny_features: nn.Module, **overrides: Any) -> CViViT:
    return CViViT(**{**TINY, "vgg": tiny_features, **overrides})


def test_perceptual_network_is_frozen_and_not_saved(tiny_features: nn.Module) -> None:
    """Defect P8: the reference's VGG16 was a trainable submodule, in the optimizer and state."""
    model = gan_model(tiny_features)
    assert isinstance(model.perceptual, PerceptualLoss)
    feature_params = {id(p) for p in tiny_features.parameters()}
    assert not feature_params & {id(p) for p in model.parameters()}
    assert not any("net." in key and "perceptual" in key for key in model.state_dict())
    assert all(not key.startswith(("vgg", "perceptual")) for key in model.state_dict())
    before = [p.clone() for p in tiny_features.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model(videos()).backward()
    optimizer.step()
    for old, new in zip(before, tiny_features.parameters(), strict=True):
        assert torch.equal(old, new)
        assert not new.requires_grad


def test_perceptual_weight_zero_never_builds_the_network() -> None:
    model = CViViT(**TINY, perceptual_weight=0.0)
    assert model.perceptual is None
    assert model.discr is not None
    model(videos()).backward()  # GAN on, no VGG16 needed


def _adaptive_weight_seen(model: CViViT, video: torch.Tensor) -> float:
    seen: list[float] = []
    original = model.gen_loss

    def spy(logits: torch.Tensor) -> torch.Tensor:
        loss = original(logits)
        loss.register_hook(lambda grad: seen.append(float(grad)) or grad)
        return loss

    model.gen_loss = spy  # type: ignore[method-assign]
    model(video).backward()
    return seen[0]


def test_adversarial_weight_is_nonzero_on_image_batches(tiny_features: nn.Module) -> None:
    """Defect P6: the reference took the weight against the tubelet head only, so it was 0 for
    images and the GAN loss silently off during image pre-training."""
    model = gan_model(tiny_features)
    assert _adaptive_weight_seen(model, torch.rand(2, 3, 16, 16)) > 0
    assert _adaptive_weight_seen(model, videos()) > 0


@pytest.mark.parametrize("hinge", [True, False])
@pytest.mark.parametrize("discriminator", ["frame", "video"])
def test_generator_and_discriminator_losses(
    tiny_features: nn.Module, hinge: bool, discriminator: str
) -> None:
    """Defect P7: BCE losses and return_discr_loss without the gradient penalty crashed."""
    model = gan_model(tiny_features, use_hinge_loss=hinge, discriminator=discriminator)
    assert model.discr is not None
    video = videos()
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    gen = model(video, mask=mask)
    gen.backward()
    assert model.to_pixels[0].weight.grad is not None
    model.zero_grad()
    for penalty in (True, False):
        discr = model(video, mask=mask, return_discr_loss=True, apply_grad_penalty=penalty)
        assert torch.isfinite(discr)
        discr.backward()
        assert all(p.grad is not None for p in model.discr.parameters())
        # the autoencoder runs without gradients in the discriminator step
        assert model.to_pixels[0].weight.grad is None
        model.zero_grad()
    _, recon = model(video, return_discr_loss=True, return_recons=True)
    assert recon.shape == video.shape


def test_gradient_penalty_adds_to_the_discriminator_loss(tiny_features: nn.Module) -> None:
    model = gan_model(tiny_features)
    video = videos()
    torch.manual_seed(3)
    with_gp = model(video, return_discr_loss=True)
    torch.manual_seed(3)
    without = model(video, return_discr_loss=True, apply_grad_penalty=False)
    assert with_gp > without


def test_grayscale_with_perceptual_loss(tiny_features: nn.Module) -> None:
    """Defect P7: the reference's grayscale perceptual branch was a NameError."""
    model = gan_model(tiny_features, channels=1)
    model(videos(c=1)).backward()


def test_no_grad_generator_loss_leaves_out_the_gan_term(tiny_features: nn.Module) -> None:
    model = gan_model(tiny_features).eval()
    with torch.no_grad():
        loss = model(videos())
    assert torch.isfinite(loss)


# ---------------------------------------------------------------------------------------------
# errors


def test_construction_errors() -> None:
    with pytest.raises(ValueError, match="multiples of patch_size"):
        make(image_size=18)
    with pytest.raises(ValueError, match="power of two, got 100"):
        make(codebook_size=100)
    make(codebook_size=100, lookup_free_quantization=False)
    with pytest.raises(ValueError, match="temporal_patch_size: expected a positive int, got 0"):
        make(temporal_patch_size=0)
    with pytest.raises(
        ValueError, match=r"image_size: expected a positive int or \(height, width\)"
    ):
        make(image_size=(16, 0))
    with pytest.raises(TypeError, match="image_size"):
        make(image_size=(16, 16, 16))
    with pytest.raises(TypeError):
        make(dim=32.0)
    with pytest.raises(TypeError):
        make(discriminator="3d")


def test_input_errors() -> None:
    model = make()
    with pytest.raises(ValueError, match=r"1 \+ k \* temporal_patch_size \(2\) frames, got 4"):
        model(videos(f=4))
    with pytest.raises(ValueError, match=r"expected \(b, 3, f, 16, 16\), got \(2, 1, 5, 16, 16\)"):
        model(videos(c=1))
    with pytest.raises(ValueError, match=r"expected \(b, 3, f, 16, 16\), got \(2, 3, 5, 8, 8\)"):
        model(videos(size=8))
    with pytest.raises(ValueError, match=r"mask: expected shape \(batch, frames\) = \(2, 5\)"):
        model(videos(), mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="keep its first frame"):
        model(videos(), mask=torch.tensor([[True] * 5, [True, True, False, False, False]]))
    with pytest.raises(ValueError, match="None for an image batch"):
        model(torch.rand(2, 3, 16, 16), mask=torch.ones(2, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"expected \(b, c, f, h, w\)"):
        model(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="no discriminator"):
        model(videos(), return_discr_loss=True)


# ---------------------------------------------------------------------------------------------
# copies and files


def test_copy_for_eval_leaves_the_original_alone(tiny_features: nn.Module) -> None:
    """Defect P12: the reference moved the caller's model to the CPU."""
    model = gan_model(tiny_features).to(torch.float64)
    clone = model.copy_for_eval()
    assert model.training
    assert model.discr is not None
    assert model.perceptual is not None
    assert not clone.training
    assert clone.discr is None
    assert clone.perceptual is None
    assert next(clone.parameters()).dtype == torch.float64
    assert next(model.parameters()).dtype == torch.float64
    video = videos().double()
    torch.testing.assert_close(
        clone(video, return_recons_only=True), model.eval()(video, return_recons_only=True)
    )
    assert clone.to_pixels[0].weight.data_ptr() != model.to_pixels[0].weight.data_ptr()


@pytest.mark.parametrize("lfq", [True, False])
def test_save_and_load_round_trip(tmp_path: Path, tiny_features: nn.Module, lfq: bool) -> None:
    model = gan_model(tiny_features, lookup_free_quantization=lfq, image_size=(16, 8))
    folder = model.save_pretrained(tmp_path / "tok")
    # the mp_layers.hub layout: config, weights and a model card
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    loaded = CViViT.from_pretrained(folder, vgg=tiny_features)
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    video = videos(size=(16, 8))
    model.eval()
    loaded.eval()
    torch.testing.assert_close(
        loaded(video, return_recons_only=True), model(video, return_recons_only=True)
    )
    bare = CViViT.from_pretrained(folder, use_vgg_and_gan=False)
    assert bare.discr is None
    assert bare.perceptual is None


def test_loading_another_configuration_names_the_mismatches(tmp_path: Path) -> None:
    make().save_pretrained(tmp_path / "a")
    other = make(dim=48)
    state = CViViT.from_pretrained(tmp_path / "a").state_dict()
    with pytest.raises(ValueError, match=r"shape: .*\(32,\) in the file, \(48,\) in the model"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match=r"missing: .*discr"):
        make(use_vgg_and_gan=True, perceptual_weight=0.0).load_state_dict(state)
    with pytest.raises(ValueError, match="expected a folder or a Hub repo id"):
        CViViT.from_pretrained(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"expected a saved model folder with config\.json"):
        CViViT.from_pretrained(tmp_path / "empty")
