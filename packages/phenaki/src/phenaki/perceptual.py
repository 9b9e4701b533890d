"""Perceptual loss: the MSE between a frozen network's features of a real and a generated image.

    L(real, fake) = mean((φ(N(real)) - φ(N(fake)))^2),

with φ the feature network (by default VGG16's 4096-d post-ReLU classifier features, as the
reference) and N its input normalisation (ImageNet mean and std for "imagenet").

`PerceptualLoss` is deliberately not an `nn.Module`: a model that holds one never registers the
feature network as a submodule, so the network is never trained, never in an optimizer, never in
a `state_dict` and never moved by `model.to(...)` (the reference's VGG16 was a trainable submodule
that downloaded its weights at construction: defect P8). The default VGG16 is built lazily on the
first call; importing this module does not import torchvision.
"""

from __future__ import annotations

import os
import pickle
from typing import Any, Literal
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from einops import repeat
from torch import Tensor, nn

from mp_layers.typecheck import typechecked

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PerceptualLoss", "load_vgg16_features"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Normalization = Literal["imagenet", "none"]

# What can go wrong getting the weights: offline (URLError is an OSError), a truncated or
# corrupt file in the cache, a hash mismatch (RuntimeError).
_LOAD_ERRORS = (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError)


def load_vgg16_features() -> nn.Module:
    """torchvision's VGG16 with ImageNet weights (`VGG16_Weights.IMAGENET1K_V1`), its classifier
    without the last Dropout and Linear: `(b, 3, h, w) -> (b, 4096)` post-ReLU features.

    The weights come from `torch.hub.load_state_dict_from_url` (the file
    `$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth`, downloaded when missing) and the network is
    built on the meta device and filled with them, so no random initialisation is spent. Raises
    ImportError without torchvision and RuntimeError when the weights cannot be had.
    """
    try:
        import torchvision  # noqa: F401  (a hidden torchvision must fail here, not below)
        from torchvision.models import VGG16_Weights, vgg16
    except ImportError as error:
        raise ImportError(
            "PerceptualLoss: the default perceptual network (VGG16) needs torchvision; install "
            "`phenaki[vgg]`, or pass your own feature network as `vgg=` (CViViT) / `network=` "
            "(PerceptualLoss)"
        ) from error
    weights = VGG16_Weights.IMAGENET1K_V1
    path = os.path.join(
        torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(weights.url).path)
    )
    with torch.device("meta"):  # no random initialisation: the weights replace it all
        model = vgg16(weights=None)
    try:
        state_dict = torch.hub.load_state_dict_from_url(weights.url, check_hash=True)
        model.load_state_dict(state_dict, assign=True)
    except _LOAD_ERRORS as error:
        reason = " ".join(str(error).split())  # one line, even for load_state_dict's reports
        if len(reason) > 300:
            reason = reason[:297] + "..."
        raise RuntimeError(
            f"PerceptualLoss could not load the VGG16 ImageNet weights, which torchvision looks "
            f"for at {path} and otherwise downloads from {weights.url} ({type(error).__name__}: "
            f"{reason}); put that file there, or pass any feature network as `vgg=` (CViViT) or "
            "`network=` (PerceptualLoss)."
        ) from error
    model.classifier = nn.Sequential(*list(model.classifier)[:-2])
    return model


class PerceptualLoss:
    """`PerceptualLoss(network=None, *, input_normalization="imagenet")(real, fake)` -> scalar.

    `real` and `fake` are `(b, c, h, w)` images in [0, 1]; grayscale (c = 1) is repeated to 3
    channels, then normalised ("imagenet": `(x - mean) / std` per channel; "none": unchanged), then
    `loss = mse(network(real), network(fake))`. Gradients flow to `fake` only: the real features
    are computed without a graph, and the network is frozen (`eval()`, `requires_grad_(False)`,
    applied to an injected network too).

    `network=None` is torchvision's VGG16 with ImageNet weights (see `load_vgg16_features`),
    loaded on the first call or the first access to `.network`. The network follows the inputs:
    on its first use on a device it is moved there, in the input's dtype (one copy, moved again
    when the device changes); inputs of another dtype on the same device are cast to the
    network's dtype. The loss is float32.
    """

    @typechecked
    def __init__(
        self,
        network: nn.Module | None = None,
        *,
        input_normalization: Normalization = "imagenet",
    ) -> None:
        if input_normalization not in ("imagenet", "none"):
            raise ValueError(
                "PerceptualLoss: expected input_normalization 'imagenet' or 'none', got "
                f"{input_normalization!r}"
            )
        self.input_normalization: Normalization = input_normalization
        self._network: nn.Module | None = None
        self._placement: tuple[torch.device, torch.dtype] | None = None
        if network is not None:
            self._network = self._freeze(network)

    def __deepcopy__(self, memo: dict[int, Any]) -> PerceptualLoss:
        """The same object: the network is frozen and shared, so copies of a model holding it
        (EMA copies, `copy_for_eval`) never duplicate VGG16's 500 MB."""
        return self

    @staticmethod
    def _freeze(network: nn.Module) -> nn.Module:
        network.eval()
        network.requires_grad_(False)
        return network

    @property
    def is_loaded(self) -> bool:
        """Whether the feature network exists (an injected one always does)."""
        return self._network is not None

    @property
    def network(self) -> nn.Module:
        """The frozen feature network, built (the default VGG16) on first access."""
        if self._network is None:
            self._network = self._freeze(load_vgg16_features())
        return self._network

    def _place(self, device: torch.device, dtype: torch.dtype) -> tuple[nn.Module, torch.dtype]:
        """The network on `device` (moved there, in `dtype`, when it was elsewhere) and its dtype."""
        network = self.network
        if self._placement is None or self._placement[0] != device:
            network.to(device=device, dtype=dtype)
            self._placement = (device, dtype)
        if network.training:  # someone called .train() on it
            network.eval()
        return network, self._placement[1]

    def _prepare(self, images: Tensor, dtype: torch.dtype) -> Tensor:
        if images.shape[1] == 1:
            images = repeat(images, "b 1 h w -> b c h w", c=3)
        images = images.to(dtype)
        if self.input_normalization == "imagenet":
            mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=dtype)
            std = torch.tensor(IMAGENET_STD, device=images.device, dtype=dtype)
            images = (images - mean[:, None, None]) / std[:, None, None]
        return images

    @typechecked
    def __call__(self, real: Tensor, fake: Tensor) -> Tensor:
        self._check_inputs(real, fake)
        network, dtype = self._place(fake.device, fake.dtype)
        with torch.no_grad():
            real_features = network(self._prepare(real.to(fake.device), dtype))
        fake_features = network(self._prepare(fake, dtype))
        return F.mse_loss(fake_features.float(), real_features.float())

    def _check_inputs(self, real: Tensor, fake: Tensor) -> None:
        if real.ndim != 4 or real.shape != fake.shape:
            raise ValueError(
                "PerceptualLoss: expected real and fake images of one shape (b, c, h, w), got "
                f"{tuple(real.shape)} and {tuple(fake.shape)}"
            )
        channels = real.shape[1]
        if self.input_normalization == "imagenet" and channels not in (1, 3):
            raise ValueError(
                "PerceptualLoss: expected 1 or 3 channels for ImageNet normalisation, got "
                f"{channels}"
            )

    def __repr__(self) -> str:
        state = type(self._network).__name__ if self._network is not None else "VGG16, not loaded"
        return f"PerceptualLoss(network={state}, input_normalization={self.input_normalization!r})"
