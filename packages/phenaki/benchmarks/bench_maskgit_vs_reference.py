"""Benchmark `phenaki.MaskGit` and `phenaki.Phenaki.sample` against phenaki-pytorch 0.5.0.

The reference lives in its own environment (it pulls in other versions of shared helpers):

    uv venv --python 3.11 /tmp/refenv_phenaki
    uv pip install --python /tmp/refenv_phenaki phenaki-pytorch==0.5.0 torch==<ours>
    .venv/bin/python packages/phenaki/benchmarks/bench_maskgit_vs_reference.py \
        --ref-python /tmp/refenv_phenaki/bin/python --steps 10

(`<ours>`: `.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])'`.
`uvx nox -s bench_reference_maskgit` does all of this.)

Same arguments on both sides: `MaskGit(num_tokens=4096, max_seq_len=1024, dim=256, dim_context=64,
depth=4, heads=4, dim_head=64)` and, for sampling, the tokenizer `CViViT(dim=64,
codebook_size=4096, image_size=64, patch_size=8, temporal_patch_size=2, spatial_depth=1,
temporal_depth=1, dim_head=32, heads=2, use_vgg_and_gan=False)` (9 frames -> a `(5, 8, 8)` token
grid, n = 320), each built after `torch.manual_seed(0)`. Inputs, drawn after `torch.manual_seed(0)`
with the same calls on both sides (identical: checked): token ids `(2, 320)` uniform in
`[0, 4096)`, a random ~50 % of them replaced by the mask id, and a 16-token text context
`(2, 16, 64)` from `torch.randn` with an all-True text mask. fp32,
`torch.set_num_threads(--threads)` (2). The method (a worker per side, interleaved steps, medians,
fresh-process memory) is the harness's, `tools/benchharness`.

- train step: `logits = maskgit(ids, video_patch_shape=(5, 8, 8), context=context,
  text_mask=mask, cond_drop_prob=0.)` (train mode), cross-entropy on the masked positions,
  backward, Adam step. The reference has 5,120 more parameters, which hardly change the work:
  a bias on its output layer (4,096; ours has none) and an unused context norm in each
  self-attention layer (256 each; 64 each in its CViViT's four).
- sample: `Phenaki(maskgit=..., cvivit=..., steps=18).sample(num_frames=9, ..., cond_scale=3.)`,
  no critic: 18 guided MaskGit passes over the 320 tokens, then the CViViT decode of the token grid
  to a `(2, 3, 9, 64, 64)` video (the decode is included on both sides, with the same tokenizer
  size). Ours takes the embeddings as `text_embeds=context, text_mask=mask` (its `text_encoder`
  is a callable that is never called). The reference's `sample` only takes texts: the worker
  replaces the instance's `encode_texts` (T5) by a function returning the same fixed embeddings
  and passes two empty texts; the reference then derives its text mask as "embedding != 0"
  (all True here). Guidance: ours runs one forward of a doubled batch per step, the reference two
  forwards (conditional, then text dropped). The reference's `Phenaki.__init__` also asks
  Hugging Face for the T5 config (`get_encoded_dim`) even when given `text_embed_dim`; the worker
  replaces that function by one returning 64, so nothing is downloaded.
- peak memory: two train steps (or two samples), per kind.

Targets (the issue): train >= 1.3x faster, sample >= 1.3x faster, peak memory no higher.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))
from benchharness import Bench, Column, Run, Workload, main, no_higher, train_step

MASKGIT = {
    "num_tokens": 4096,
    "max_seq_len": 1024,
    "dim": 256,
    "dim_context": 64,
    "depth": 4,
    "heads": 4,
    "dim_head": 64,
}
CVIVIT = {
    "dim": 64,
    "codebook_size": 4096,
    "image_size": 64,
    "patch_size": 8,
    "temporal_patch_size": 2,
    "spatial_depth": 1,
    "temporal_depth": 1,
    "dim_head": 32,
    "heads": 2,
    "use_vgg_and_gan": False,
}
BATCH, FRAMES, GRID, TEXT_LEN, SAMPLE_STEPS, COND_SCALE = 2, 9, (5, 8, 8), 16, 18, 3.0


def _unused_text_encoder(texts: list[str], device: object) -> None:
    raise AssertionError("the benchmark passes text embeddings")


def build(side: str, params: dict[str, Any]) -> Workload:
    import torch
    import torch.nn.functional as F

    if side == "reference":
        import phenaki_pytorch.phenaki_pytorch as ref
        from phenaki_pytorch import CViViT, MaskGit, Phenaki

        # Phenaki.__init__ asks Hugging Face for the T5 config even when given text_embed_dim
        ref.get_encoded_dim = lambda name: MASKGIT["dim_context"]
    else:
        from phenaki import CViViT, MaskGit, Phenaki
    device = params["device"]
    torch.manual_seed(0)
    maskgit = MaskGit(**MASKGIT).to(device)
    torch.manual_seed(0)
    cvivit = CViViT(**CVIVIT).to(device)
    torch.manual_seed(0)
    n, num_tokens = GRID[0] * GRID[1] * GRID[2], MASKGIT["num_tokens"]
    ids = torch.randint(0, num_tokens, (BATCH, n))
    masked = torch.rand(BATCH, n) < 0.5
    context = torch.randn(BATCH, TEXT_LEN, MASKGIT["dim_context"])
    checksums = [int(ids.sum()), int(masked.sum()), float(context.double().sum())]
    ids, masked, context = ids.to(device), masked.to(device), context.to(device)
    text_mask = torch.ones(BATCH, TEXT_LEN, dtype=torch.bool, device=device)
    inputs = ids.masked_fill(masked, num_tokens)  # num_tokens is the mask id on both sides
    if side == "reference":
        dim = MASKGIT["dim_context"]
        phenaki = Phenaki(maskgit=maskgit, cvivit=cvivit, steps=SAMPLE_STEPS, text_embed_dim=dim)
        # the reference's sample takes texts only: its T5 encoder returns the fixed embeddings
        phenaki.encode_texts = lambda texts, output_device=None: context.to(output_device)
        kwargs: dict[str, Any] = {"texts": [""] * BATCH}
    else:
        encoder = _unused_text_encoder
        phenaki = Phenaki(maskgit=maskgit, cvivit=cvivit, steps=SAMPLE_STEPS, text_encoder=encoder)
        kwargs = {"text_embeds": context, "text_mask": text_mask}
    cvivit_params = sum(p.numel() for p in cvivit.parameters())
    del cvivit  # Phenaki keeps its own evaluation copy

    def loss() -> torch.Tensor:
        logits = maskgit(
            inputs, video_patch_shape=GRID, context=context, text_mask=text_mask, cond_drop_prob=0.0
        )
        return F.cross_entropy(logits[masked], ids[masked])

    def sample_step() -> None:
        video = phenaki.sample(num_frames=FRAMES, cond_scale=COND_SCALE, **kwargs)
        size = CVIVIT["image_size"]
        assert video.shape == (BATCH, 3, FRAMES, size, size), video.shape

    info = {"maskgit_params": sum(p.numel() for p in maskgit.parameters())}
    return Workload(
        {"train": train_step(maskgit, loss), "sample": sample_step},
        info={**info, "cvivit_params": cvivit_params},
        same={"input_sum": checksums},
    )


def _config(run: Run) -> list[str]:
    counts = {
        key: ", ".join(f"{info[key]:,} ({side})" for side, info in run.infos.items())
        for key in ("maskgit_params", "cvivit_params")
    }
    return [
        f"config: MaskGit{MASKGIT}; CViViT{CVIVIT}; MaskGit parameters: "
        f"{counts['maskgit_params']}; CViViT parameters: {counts['cvivit_params']}"
    ]


def _setting(args: object) -> str:
    n = GRID[0] * GRID[1] * GRID[2]
    return (
        f"batch {BATCH} x {n} tokens {GRID} + {TEXT_LEN} text tokens, fp32; sample: "
        f"{SAMPLE_STEPS} steps, cond_scale {COND_SCALE}, {FRAMES} frames decoded"
    )


BENCH = Bench(
    file=__file__,
    description=__doc__,
    columns=[
        Column("train step (s)", "train", target=1.3),
        Column("sample (s)", "sample", target=1.3),
        no_higher("peak train memory (MiB)", "train"),
        no_higher("peak sample memory (MiB)", "sample"),
    ],
    setting=_setting,
    describe=_config,
    ref_python="/tmp/refenv_phenaki/bin/python",
)

if __name__ == "__main__":
    main(BENCH)
