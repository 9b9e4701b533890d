"""Perceptual loss (phenaki.perceptual): frozen, never a submodule, VGG16 loaded lazily, offline."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from phenaki.perceptual import IMAGENET_MEAN, IMAGENET_STD, PerceptualLoss


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_network() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, stride=2))


def images(b: int = 2, c: int = 3, size: int = 8) -> torch.Tensor:
    return torch.rand(b, c, size, size)


# ------------------------------------------------------------------------- injected network


def test_network_is_frozen_and_unchanged_by_an_optimizer_step() -> None:
    network = tiny_network()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    loss_fn = PerceptualLoss(network)
    assert loss_fn.is_loaded
    assert loss_fn.network is network
    assert not network.training
    assert all(not p.requires_grad for p in network.parameters())

    generator = nn.Conv2d(3, 3, 1)
    generator_before = generator.weight.detach().clone()
    optimizer = torch.optim.SGD(generator.parameters(), lr=1.0)
    real = images()
    loss = loss_fn(real, torch.sigmoid(generator(real * 0.5)))
    loss.backward()
    optimizer.step()
    assert not torch.equal(generator.weight, generator_before)
    for key, value in network.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in network.parameters())


def test_gradients_flow_to_fake_only() -> None:
    loss_fn = PerceptualLoss(tiny_network())
    real = images().requires_grad_()
    fake = images().requires_grad_()
    loss = loss_fn(real, fake)
    assert loss.ndim == 0
    assert loss.dtype == torch.float32
    loss.backward()
    assert fake.grad is not None
    assert fake.grad.abs().sum() > 0
    assert real.grad is None


def test_loss_is_zero_for_identical_inputs_even_after_train() -> None:
    network = nn.Sequential(tiny_network(), nn.Dropout(0.5))
    network.train()
    loss_fn = PerceptualLoss(network)
    x = images()
    assert loss_fn(x, x.clone()).item() == 0.0
    network.train()  # somebody flips it back: the loss puts it in eval mode again
    assert loss_fn(x, x.clone()).item() == 0.0
    assert not network.training


@pytest.mark.parametrize("normalization", ["imagenet", "none"])
def test_input_normalization(normalization: Any) -> None:
    network = tiny_network()
    loss_fn = PerceptualLoss(network, input_normalization=normalization)
    real, fake = images(), images()
    if normalization == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        assert mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
        assert std.flatten().tolist() == pytest.approx([0.229, 0.224, 0.225])
        expected = F.mse_loss(network((fake - mean) / std), network((real - mean) / std))
    else:
        expected = F.mse_loss(network(fake), network(real))
    torch.testing.assert_close(loss_fn(real, fake), expected)


def test_grayscale_is_repeated_to_three_channels() -> None:
    network = tiny_network()
    loss_fn = PerceptualLoss(network)
    real, fake = images(c=1), images(c=1)
    seen: list[int] = []
    network.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))
    loss = loss_fn(real, fake)
    assert seen == [3, 3]
    torch.testing.assert_close(
        loss, loss_fn(real.expand(-1, 3, -1, -1), fake.expand(-1, 3, -1, -1))
    )


def test_network_takes_the_dtype_of_its_first_input_on_a_device() -> None:
    network = tiny_network()
    loss_fn = PerceptualLoss(network)
    real, fake = images().double(), images().double()
    loss_fn(real, fake)
    assert all(p.dtype == torch.float64 for p in network.parameters())
    loss = loss_fn(real.float(), fake.float())  # same device: inputs follow the network
    assert all(p.dtype == torch.float64 for p in network.parameters())
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_network_follows_the_inputs_across_devices() -> None:
    network = tiny_network()
    loss_fn = PerceptualLoss(network)
    cpu_loss = loss_fn(images(), images())
    assert cpu_loss.device.type == "cpu"
    real, fake = images().cuda(), images().cuda().requires_grad_()
    loss_fn(real, fake).backward()
    assert next(network.parameters()).device.type == "cuda"
    loss_fn(images(), images())
    assert next(network.parameters()).device.type == "cpu"


def test_is_not_a_module_and_never_a_submodule() -> None:
    loss_fn = PerceptualLoss(tiny_network())
    assert not isinstance(loss_fn, nn.Module)

    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Conv2d(3, 3, 1)
            self.perceptual = loss_fn

    holder = Holder()
    assert set(holder.state_dict()) == {"proj.weight", "proj.bias"}
    network_ids = {id(p) for p in loss_fn.network.parameters()}
    assert not network_ids & {id(p) for p in holder.parameters()}
    holder.to(torch.float64)  # model.to(...) leaves the loss's network alone
    assert all(p.dtype == torch.float32 for p in loss_fn.network.parameters())


def test_validation() -> None:
    not_a_normalization: Any = "vgg"
    not_a_network: Any = "vgg16"
    loss_fn = PerceptualLoss(tiny_network())
    with pytest.raises(
        ValueError, match=r"one shape \(b, c, h, w\), got \(2, 3, 8, 8\) and \(2, 3, 4, 4\)"
    ):
        loss_fn(images(), images(size=4))
    with pytest.raises(ValueError, match="1 or 3 channels for ImageNet normalisation, got 2"):
        loss_fn(images(c=2), images(c=2))
    with pytest.raises(TypeError):
        PerceptualLoss(tiny_network(), input_normalization=not_a_normalization)
    with pytest.raises(TypeError):
        PerceptualLoss(not_a_network)


# ---------------------------------------------------------------------------- default VGG16


def test_construction_imports_and_loads_nothing() -> None:
    code = (
        "import sys\n"
        "from phenaki.perceptual import PerceptualLoss\n"
        "loss = PerceptualLoss()\n"
        "assert 'torchvision' not in sys.modules, 'torchvision imported'\n"
        "assert not loss.is_loaded\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty $TORCH_HOME and no way to download: nothing is ever fetched in these tests."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return tmp_path


def test_missing_weights_raise_a_readable_runtime_error(offline: Path) -> None:
    pytest.importorskip("torchvision")
    loss_fn = PerceptualLoss()
    with pytest.raises(RuntimeError) as info:
        loss_fn(images(size=32), images(size=32))
    message = str(info.value)
    expected_file = os.path.join(str(offline), "hub", "checkpoints", "vgg16-397923af.pth")
    assert expected_file in message
    assert "network is unreachable" in message
    assert "vgg=" in message
    assert "network=" in message
    assert "\n" not in message
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    assert not loss_fn.is_loaded


def test_missing_torchvision_raises_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)
    loss_fn = PerceptualLoss()
    with pytest.raises(ImportError, match=r"phenaki\[vgg\].*vgg="):
        loss_fn(images(), images())
    with pytest.raises(ImportError, match=r"phenaki\[vgg\]"):
        _ = loss_fn.network


def test_default_vgg16_is_built_lazily_from_the_hub_weights(
    monkeypatch: pytest.MonkeyPatch, offline: Path
) -> None:
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16().state_dict().items()}
    calls: list[str] = []

    def fake_hub(url: str, *_args: Any, **_kwargs: Any) -> dict[str, torch.Tensor]:
        calls.append(url)
        return {k: torch.full(shape, 1e-3) for k, shape in shapes.items()}

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_hub)
    loss_fn = PerceptualLoss()
    assert calls == []
    assert not loss_fn.is_loaded
    real, fake = images(1, size=32), images(1, size=32).requires_grad_()
    loss = loss_fn(real, fake)
    assert calls == [torchvision.models.VGG16_Weights.IMAGENET1K_V1.url]
    assert loss_fn.is_loaded
    network = loss_fn.network
    assert calls == [calls[0]]  # loaded once
    assert not network.training
    assert all(not p.requires_grad for p in network.parameters())
    assert all(p.device.type == "cpu" for p in network.parameters())  # nothing left on meta
    # the classifier without its last Dropout and Linear: 4096-d post-ReLU features
    assert [type(m).__name__ for m in network.classifier] == [
        "Linear",
        "ReLU",
        "Dropout",
        "Linear",
        "ReLU",
    ]
    features = network(torch.rand(1, 3, 32, 32))
    assert features.shape == (1, 4096)
    assert (features >= 0).all()
    loss.backward()
    assert fake.grad is not None


def test_unusable_weights_raise_the_same_runtime_error(
    monkeypatch: pytest.MonkeyPatch, offline: Path
) -> None:
    pytest.importorskip("torchvision")
    # a cached file that is not VGG16's state dict: load_state_dict's multi-line report
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *_a, **_k: {})
    with pytest.raises(RuntimeError, match=r"vgg16-397923af\.pth.*Missing key") as info:
        _ = PerceptualLoss().network
    assert "\n" not in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)
