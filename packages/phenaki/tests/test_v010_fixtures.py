"""Folders written by phenaki 0.1.0 (`tests/fixtures/v0_1_0`) load through `from_pretrained`
(`_hub_load_legacy`) and give 0.1.0's outputs; the tokenizer override and hash check still hold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from phenaki import CViViT, Phenaki

FIXTURES = Path(__file__).parent / "fixtures" / "v0_1_0"

# The float outputs were recorded on another CPU, whose kernels sum in another order: here they
# come out 2e-7 to 5e-7 apart with the same weights and the same 0.1.0 code. They are compared to
# float32 rounding (atol 1e-5); token codes, the loaded weights (below) and a save -> load round
# trip on one machine (test_hub.py) are compared bit for bit.
CLOSE = {"rtol": 0.0, "atol": 1e-5}


def test_tokenizer_folder_loads_and_gives_its_outputs() -> None:
    from safetensors.torch import load_file

    folder = FIXTURES / "tokenizer"
    expected = load_file(folder / "expected.safetensors")
    tokenizer = CViViT.from_pretrained(folder).eval()
    with torch.no_grad():
        codes = tokenizer(expected["video"], return_only_codebook_ids=True)
        recon = tokenizer.decode_from_codebook_indices(codes)
    assert torch.equal(codes, expected["codes"])
    torch.testing.assert_close(recon, expected["recon"], **CLOSE)


def test_phenaki_folder_loads_and_gives_its_outputs() -> None:
    """MaskGit's logits and a sample (critic-scored decoding) as 0.1.0 gave them; the tokenizer
    is given explicitly (the folder records the absolute path it was written from)."""
    from safetensors.torch import load_file

    folder = FIXTURES / "phenaki"
    expected = load_file(folder / "expected.safetensors")
    codes = load_file(FIXTURES / "tokenizer" / "expected.safetensors")["codes"]
    model = Phenaki.from_pretrained(folder, tokenizer=FIXTURES / "tokenizer").eval()
    with torch.no_grad():
        sample = model.sample(num_frames=3, generator=torch.Generator().manual_seed(2))
        logits = model.maskgit(codes.flatten(1), video_patch_shape=tuple(codes.shape[1:]))
    torch.testing.assert_close(sample, expected["sample"], **CLOSE)
    torch.testing.assert_close(logits, expected["logits"], **CLOSE)


def copied_run(tmp_path: Path) -> Path:
    """The 0.1.0 Phenaki fixture and its tokenizer copied, the run recording the copy's folder
    (as a run written on this machine would)."""
    shutil.copytree(FIXTURES, tmp_path / "v0_1_0")
    run = tmp_path / "v0_1_0" / "phenaki"
    config = json.loads((run / "config.json").read_text())
    config["tokenizer"]["folder"] = str(tmp_path / "v0_1_0" / "tokenizer")
    (run / "config.json").write_text(json.dumps(config))
    return run


def test_phenaki_folder_reads_the_recorded_tokenizer_and_checks_its_hash(tmp_path: Path) -> None:
    """Without `tokenizer=`, the 0.1.0 run's recorded folder; weights of another tokenizer there
    (or given by `tokenizer=`) are refused by the recorded SHA-256."""
    run = copied_run(tmp_path)
    given = Phenaki.from_pretrained(run, tokenizer=FIXTURES / "tokenizer").eval()
    recorded = Phenaki.from_pretrained(run).eval()
    assert recorded.tokenizer_folder == tmp_path / "v0_1_0" / "tokenizer"
    assert given.tokenizer_folder == (FIXTURES / "tokenizer").resolve()
    for (name, a), (_, b) in zip(
        given.state_dict().items(), recorded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    other = CViViT.from_pretrained(FIXTURES / "tokenizer")
    with torch.no_grad():
        other.to_pixels[0].weight.add_(1.0)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="not the tokenizer this model was trained on"):
        Phenaki.from_pretrained(run, tokenizer=tmp_path / "other")
    shutil.copy(tmp_path / "other" / "model.safetensors", tmp_path / "v0_1_0" / "tokenizer")
    with pytest.raises(ValueError, match="not the tokenizer this model was trained on"):
        Phenaki.from_pretrained(run)


def test_v010_folders_saved_again_load_in_the_new_layout_bit_for_bit(tmp_path: Path) -> None:
    """A 0.1.0 folder loaded and saved again: `config.json` + `model.safetensors`, Phenaki's
    parts in subfolders, the same outputs."""
    tokenizer = CViViT.from_pretrained(FIXTURES / "tokenizer").eval()
    model = Phenaki.from_pretrained(FIXTURES / "phenaki", tokenizer=FIXTURES / "tokenizer").eval()
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    model.save_pretrained(tmp_path / "phenaki")
    assert json.loads((tmp_path / "tokenizer" / "config.json").read_text())["_class_name"] == (
        "CViViT"
    )
    config = json.loads((tmp_path / "phenaki" / "config.json").read_text())
    assert config["tokenizer_source"]["folder"] == str((FIXTURES / "tokenizer").resolve())
    assert (tmp_path / "phenaki" / "cvivit" / "model.safetensors").is_file()
    video = torch.rand(1, 3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    new_tokenizer = CViViT.from_pretrained(tmp_path / "tokenizer").eval()
    new_model = Phenaki.from_pretrained(tmp_path / "phenaki").eval()
    with torch.no_grad():
        codes = tokenizer(video, return_only_codebook_ids=True)
        assert torch.equal(new_tokenizer(video, return_only_codebook_ids=True), codes)
        recon = tokenizer.decode_from_codebook_indices(codes)
        assert torch.equal(new_tokenizer.decode_from_codebook_indices(codes), recon)
        samples = [
            m.sample(num_frames=3, generator=torch.Generator().manual_seed(2))
            for m in (model, new_model)
        ]
    assert torch.equal(samples[0], samples[1])
