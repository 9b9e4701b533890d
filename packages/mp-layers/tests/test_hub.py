"""`mp_layers.hub.HubModel`: folders, composites, tuples, strict loading, the Hub cache offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from mp_layers.hub import CONFIG_NAME, WEIGHTS_NAME, HubModel, resolve_folder
from mp_layers.testing import populate_hub_cache


class Toy(nn.Module, HubModel):
    def __init__(self, *, dim: int = 4, kernel: tuple[int, int] = (3, 3), scale: float = 1.0):
        super().__init__()
        if not isinstance(kernel, tuple):
            raise TypeError(f"kernel: expected a tuple, got {type(kernel).__name__}")
        self.conv = nn.Conv2d(dim, dim, kernel, padding="same")
        self.register_buffer("offset", torch.zeros(dim))
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) * self.scale + self.offset[:, None, None]


class Pair(nn.Module, HubModel):
    _hub_parts = ("first", "second")

    def __init__(self, first: Toy, second: Toy | None = None, *, mix: float = 0.5):
        super().__init__()
        self.first, self.second, self.mix = first, second, mix
        self.gain = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        y = self.first(x) * self.gain
        return y if self.second is None else torch.lerp(y, self.second(x), self.mix)


def randomised(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.copy_(torch.randn_like(tensor))
    return model


LIBRARY = __name__.split(".")[0]  # the top-level package a class is recorded under
X = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(3))


def test_save_writes_config_and_safetensors_and_round_trips_bit_for_bit(tmp_path: Path) -> None:
    model = randomised(Toy(dim=4, kernel=(3, 1), scale=2.0))
    folder = model.save_pretrained(tmp_path / "toy")
    assert folder == tmp_path / "toy"
    assert (folder / WEIGHTS_NAME).is_file()
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["dim"] == 4
    assert config["kernel"] == [3, 1]
    assert config["scale"] == 2.0
    assert config["_class_name"] == "Toy"
    assert config["_library"] == LIBRARY
    loaded = Toy.from_pretrained(folder)
    assert loaded.conv.kernel_size == (3, 1)  # the JSON list came back as a tuple
    assert torch.equal(loaded(X), model(X))


def test_overrides_and_map_location(tmp_path: Path) -> None:
    folder = randomised(Toy()).save_pretrained(tmp_path / "toy")
    loaded = Toy.from_pretrained(folder, scale=3.0, map_location="cpu")
    assert loaded.scale == 3.0


def test_composite_saves_parts_in_subfolders(tmp_path: Path) -> None:
    model = randomised(Pair(Toy(dim=4), Toy(dim=4, kernel=(1, 1)), mix=0.25))
    folder = model.save_pretrained(tmp_path / "pair")
    assert (folder / "first" / CONFIG_NAME).is_file()
    assert (folder / "second" / WEIGHTS_NAME).is_file()
    from safetensors.torch import load_file

    assert set(load_file(folder / WEIGHTS_NAME)) == {"gain"}  # parts' weights are in their folders
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["_parts"] == {"first": f"{LIBRARY}.Toy", "second": f"{LIBRARY}.Toy"}
    loaded = Pair.from_pretrained(folder)
    assert loaded.mix == 0.25
    assert torch.equal(loaded(X), model(X))
    # a part passed by keyword is used as given
    given = Toy(dim=4)
    assert Pair.from_pretrained(folder, first=given).first is given


def test_missing_part_is_saved_as_none(tmp_path: Path) -> None:
    folder = randomised(Pair(Toy())).save_pretrained(tmp_path / "pair")
    assert Pair.from_pretrained(folder).second is None


def test_weights_of_another_configuration_name_the_keys(tmp_path: Path) -> None:
    folder = Toy(dim=4).save_pretrained(tmp_path / "toy")
    with pytest.raises(ValueError, match=r"shape: .*conv.weight: \(4, 4, 3, 3\) in the file"):
        Toy.from_pretrained(folder, dim=2)


def test_a_folder_of_another_class_is_refused(tmp_path: Path) -> None:
    folder = Pair(Toy()).save_pretrained(tmp_path / "pair")
    with pytest.raises(ValueError, match="holds a Pair"):
        Toy.from_pretrained(folder)


def test_damaged_folders_raise_value_errors(tmp_path: Path) -> None:
    folder = Toy().save_pretrained(tmp_path / "toy")
    (folder / WEIGHTS_NAME).unlink()
    with pytest.raises(ValueError, match=WEIGHTS_NAME):
        Toy.from_pretrained(folder)
    (folder / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        Toy.from_pretrained(folder)
    with pytest.raises(ValueError, match="Hub repo id"):
        resolve_folder(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="Hub repo id"):
        Toy.from_pretrained(tmp_path / "nowhere")


def test_no_half_written_files_after_a_failed_save(tmp_path: Path, monkeypatch: Any) -> None:
    import safetensors.torch

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        Toy().save_pretrained(tmp_path / "toy")
    assert not (tmp_path / "toy" / WEIGHTS_NAME).exists()
    assert [p.name for p in (tmp_path / "toy").iterdir() if p.name.endswith(".tmp")] == []


def test_a_hub_repo_id_loads_from_the_cache_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = randomised(Pair(Toy(), Toy(kernel=(1, 3))))
    folder = model.save_pretrained(tmp_path / "pair")
    cache = tmp_path / "cache"
    populate_hub_cache(cache, "someone/tiny-pair", folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = Pair.from_pretrained("someone/tiny-pair", cache_dir=cache)
    assert torch.equal(loaded(X), model(X))


def test_a_repo_that_cannot_be_had_is_an_oserror_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match=r"'someone/not-cached' is not a local folder") as caught:
        Pair.from_pretrained("someone/not-cached", cache_dir=tmp_path / "empty")
    assert caught.value.__cause__ is not None  # the Hub's own error stays attached
