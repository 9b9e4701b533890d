"""Folders written by phenaki 0.1.0 (`tests/fixtures/v0_1_0`) load and give 0.1.0's outputs."""

from __future__ import annotations

from pathlib import Path

import torch

from phenaki import CViViT, Phenaki

FIXTURES = Path(__file__).parent / "fixtures" / "v0_1_0"


def test_tokenizer_folder_loads_bit_for_bit() -> None:
    from safetensors.torch import load_file

    folder = FIXTURES / "tokenizer"
    expected = load_file(folder / "expected.safetensors")
    tokenizer = CViViT.from_pretrained(folder).eval()
    with torch.no_grad():
        codes = tokenizer(expected["video"], return_only_codebook_ids=True)
        recon = tokenizer.decode_from_codebook_indices(codes)
    assert torch.equal(codes, expected["codes"])
    assert torch.equal(recon, expected["recon"])


def test_phenaki_folder_loads_bit_for_bit() -> None:
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
    assert torch.equal(sample, expected["sample"])
    assert torch.equal(logits, expected["logits"])
