"""Write the 0.1.0 save-folder fixtures that the packages' tests load (run once, on 0.1.0 code).

    git worktree add /tmp/v010 16b01fe && cd /tmp/v010 && uv sync --all-packages --all-extras
    .venv/bin/python /path/to/main/tools/make_v010_fixtures.py /path/to/main

Each fixture is a folder exactly as the 0.1.0 code wrote it, plus `expected.safetensors`: fixed
inputs and the outputs the 0.1.0 model gave on them, so that a test can check that today's loader
rebuilds the same model (bit for bit). Tiny configurations: a few KB each.

- video-ddpm: `GaussianDiffusion.save_pretrained` (config `{"format": "video-ddpm", ...}`);
- phenaki: `CViViT.save_pretrained` (`tokenizer/`) and `Phenaki.save_pretrained` (`phenaki/`,
  which records the tokenizer folder by absolute path and SHA-256);
- lumiere: `Lumiere.save_temporal` (`temporal_config.json` + `temporal.safetensors`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file


def video_ddpm(out: Path) -> None:
    from video_ddpm import GaussianDiffusion, Unet3D

    torch.manual_seed(0)
    net = Unet3D(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)
    model = GaussianDiffusion(net, image_size=8, num_frames=2, timesteps=10).eval()
    folder = model.save_pretrained(out / "gaussian_diffusion")
    x = torch.randn(1, 3, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([3])
    with torch.no_grad():
        net_out = model.denoise_fn(x, t)
        sample = model.sample(batch_size=1, generator=torch.Generator().manual_seed(2))
    tensors = {"x": x, "t": t, "net_out": net_out, "sample": sample}
    save_file(tensors, str(folder / "expected.safetensors"))


def phenaki(out: Path) -> None:
    from phenaki import CViViT, MaskGit, TokenCritic
    from phenaki.phenaki import Phenaki

    torch.manual_seed(0)
    tiny = {
        "dim": 32,
        "codebook_size": 32,
        "image_size": 16,
        "patch_size": 4,
        "temporal_patch_size": 2,
        "spatial_depth": 1,
        "temporal_depth": 1,
        "dim_head": 8,
        "heads": 2,
        "discr_base_dim": 4,
        "discr_attn_res_layers": (8,),
    }
    tokenizer = CViViT(**tiny, use_vgg_and_gan=False).eval()
    tok_folder = tokenizer.save_pretrained(out / "tokenizer")
    video = torch.rand(1, 3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        codes = tokenizer(video, return_only_codebook_ids=True)
        recon = tokenizer.decode_from_codebook_indices(codes)
    save_file(
        {"video": video, "codes": codes, "recon": recon}, str(tok_folder / "expected.safetensors")
    )
    common = {"num_tokens": 32, "max_seq_len": 256, "depth": 1, "heads": 2, "dim_head": 8}
    maskgit = MaskGit(dim=16, dim_context=12, unconditional=True, **common)
    critic = TokenCritic(dim=16, has_cross_attn=False, **common)
    model = Phenaki(
        maskgit=maskgit, cvivit=CViViT.from_pretrained(tok_folder), critic=critic, steps=4
    ).eval()
    folder = model.save_pretrained(out / "phenaki", tokenizer=tok_folder)
    with torch.no_grad():
        sample = model.sample(num_frames=3, generator=torch.Generator().manual_seed(2))
        logits = model.maskgit(codes.flatten(1), video_patch_shape=tuple(codes.shape[1:]))
    save_file({"sample": sample, "logits": logits}, str(folder / "expected.safetensors"))


def lumiere(out: Path) -> None:
    from diffusers import UNet2DModel

    from lumiere import Lumiere

    torch.manual_seed(0)
    base = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=4,
        num_class_embeds=4,
    ).eval()
    labels = {"class_labels": torch.zeros(1, dtype=torch.long)}
    wrapper = Lumiere(
        base,
        image_size=8,
        unet_time_kwarg="timestep",
        conv_module_names=["down_blocks.0.resnets.0", "up_blocks.0.resnets.1"],
        attn_module_names=["mid_block"],
        downsample_module_names=["down_blocks.0.downsamplers.0"],
        upsample_module_names=["up_blocks.0.upsamplers.0"],
        example_kwargs=labels,
        attn_inflation_kwargs={"dim_head": 4, "heads": 2},
    )
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in wrapper.temporal_parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    folder = wrapper.save_temporal(out / "temporal_adapter")
    video = torch.randn(1, 3, 4, 8, 8, generator=generator)
    time = torch.tensor([5])
    label = torch.tensor([1])
    with torch.no_grad():
        output = wrapper(video, timestep=time, class_labels=label).sample
    tensors = {"video": video, "time": time, "label": label, "output": output}
    save_file(tensors, str(folder / "expected.safetensors"))


def main() -> None:
    root = Path(sys.argv[1])
    video_ddpm(root / "packages/video-ddpm/tests/fixtures/v0_1_0")
    phenaki(root / "packages/phenaki/tests/fixtures/v0_1_0")
    lumiere(root / "packages/lumiere/tests/fixtures/v0_1_0")


if __name__ == "__main__":
    main()
