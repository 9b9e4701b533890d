"""Benchmark `lumiere.Lumiere` against the reference lumiere-pytorch 0.0.24, side by side.

The reference lives in its own environment (it pulls in other versions of shared helpers):

    uv venv --python 3.11 /tmp/refenv_lumiere
    uv pip install --python /tmp/refenv_lumiere lumiere-pytorch==0.0.24 torch==<ours> \
        diffusers==<ours> x-transformers==<ours>
    .venv/bin/python packages/lumiere/benchmarks/bench_vs_reference.py \
        --ref-python /tmp/refenv_lumiere/bin/python --steps 10

(`<ours>`: the versions in our environment, e.g. `.venv/bin/python -c 'import torch;
print(torch.__version__.split("+")[0])'`; written against torch 2.15.0, diffusers 0.42.1 and
x-transformers 2.31.10. diffusers is not a dependency of the reference: it is the base model of
both sides. `uvx nox -s bench_reference_lumiere` does all of this.)

Same base and arguments on both sides: a diffusers `UNet2DModel(**UNET)` (64x64, 3 channels,
unconditional, block_out_channels (64, 128, 128, 256), one resnet per down block, attention in the
two low-resolution levels and the mid block; 12.8 M parameters), built after `torch.manual_seed(0)`
(identical weights on both sides: checked), subclassed only to return its sample tensor
(`return_dict=False` and `[0]`): the reference's `forward` rearranges what the base returns and so
needs a tensor. Then `Lumiere(unet, image_size=64, unet_time_kwarg="timestep",
conv_module_names=CONV, attn_module_names=ATTN)` with a convolution inflation block after the last
resnet of each down and up block (`down_blocks.i.resnets.0`, `up_blocks.i.resnets.1`: resnets
return the 4-D feature map, the blocks return tuples, which the reference's hooks cannot take) and
an attention inflation block after `mid_block`; no temporal down- or up-sampling; default block
arguments. A batch of `--batch` (1) videos of 8 frames of 64x64, `torch.rand` after
`torch.manual_seed(0)` (identical on both sides: checked), timesteps `randint(0, 1000, (b,))`,
fp32, `torch.set_num_threads(--threads)` (2).

Two workarounds make the reference run this configuration at all; neither changes its work:
- With no temporal down-sampling it crashes while unpacking `zip(*[])` for the empty groups (the
  same happens for an empty `attn_module_names`). The worker gives the reference module a `zip`
  that returns three empty tuples when called without arguments; the (wasted) base forward it runs
  for each empty group still happens.
- Its forward pre-hook on every submodule (which repeats per-video conditioning for the frames)
  unpacks the positional arguments and fails on a module called with keywords only, as diffusers
  calls its down blocks. After construction the worker wraps each of those hooks so that a call
  without positional arguments passes through unchanged (the hook would have found nothing to
  repeat there); every other call still runs the original hook.

The method (a worker per side, interleaved steps, medians, fresh-process memory) is the
harness's, `tools/benchharness`; both sides must get identical inputs and base weights (checked).

- construct: `Lumiere(unet, ...)` on the already built base, a fresh wrapper each time (deep copy
  of the base, freezing, shape inference, temporal blocks, hooks; ours also checks that its blocks
  start as identities).
  The reference runs one forward of the base per group of module names (four, empty groups
  included); ours runs one, which infers the shapes and checks the blocks.
- train step: `loss = mse(wrapper(video, timestep=t), target)` (train mode), backward, Adam step
  over the temporal parameters only (reference: `wrapper.parameters()`, which it overrides to
  return them; ours: `wrapper.temporal_parameters()`); the base is frozen on both sides.
- peak memory: two train steps (activations, gradients, Adam state).

Each worker also checks that its wrapper reproduces the base frame by frame at initialisation (the
temporal blocks start as identities), reported as `init max |wrapper - base|`.
"""

from __future__ import annotations

import argparse
import builtins
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))
from benchharness import Bench, Column, Run, Workload, main, train_step

UNET = {
    "sample_size": 64,
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 1,
    "block_out_channels": [64, 128, 128, 256],
    "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    "norm_num_groups": 32,
    "attention_head_dim": 32,
}
CONV = [f"down_blocks.{i}.resnets.0" for i in range(4)] + [
    f"up_blocks.{i}.resnets.1" for i in range(4)
]
ATTN = ["mid_block"]
FRAMES, CHANNELS, SIZE = 8, 3, 64


def _zip(*iterables: Any) -> Any:
    """`a, b, c = zip(*[])` fails in the reference for an empty group of module names."""
    return builtins.zip(*iterables, strict=False) if iterables else iter([(), (), ()])


def _tolerant(hook: Callable[..., Any]) -> Callable[..., Any]:
    """The reference's pre-hook, passing keyword-only calls (diffusers' down blocks) through."""

    def inner(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return (args, kwargs) if not args else hook(module, args, kwargs)

    return inner


def _tolerate_keyword_calls(wrapper: Any) -> None:
    for module in wrapper.modules():
        hooks = module._forward_pre_hooks
        for key, hook in list(hooks.items()):
            if getattr(hook, "__name__", "") == "auto_repeat_tensors_for_time":
                hooks[key] = _tolerant(hook)


def build(side: str, params: dict[str, Any]) -> Workload:
    import torch
    from diffusers import UNet2DModel

    class TensorUNet(UNet2DModel):  # the sample tensor alone: the reference rearranges it
        def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            return super().forward(sample, timestep, return_dict=False)[0]

    if side == "reference":
        import lumiere_pytorch.lumiere as reference
        from lumiere_pytorch import Lumiere

        reference.zip = _zip
    else:
        from lumiere import Lumiere
    device, b = params["device"], params["batch"]
    torch.manual_seed(0)
    unet = TensorUNet(**UNET).to(device)
    kwargs = {"image_size": SIZE, "unet_time_kwarg": "timestep"}
    kwargs |= {"conv_module_names": CONV, "attn_module_names": ATTN}
    torch.manual_seed(0)
    wrapper = Lumiere(unet, **kwargs)
    if side == "reference":
        _tolerate_keyword_calls(wrapper)
        trainable = list(wrapper.parameters())  # overridden by the reference: temporal ones
    else:
        trainable = list(wrapper.temporal_parameters())
    torch.manual_seed(0)
    video = torch.rand(b, CHANNELS, FRAMES, SIZE, SIZE)
    target = torch.randn_like(video)
    t = torch.randint(0, 1000, (b,))
    input_sum = float(video.double().sum())
    video, target, t = video.to(device), target.to(device), t.to(device)
    with torch.no_grad():
        out = wrapper(video, timestep=t)
        frames_in = video.permute(0, 2, 1, 3, 4).reshape(b * FRAMES, -1, SIZE, SIZE)
        base = unet(frames_in, timestep=t.repeat_interleave(FRAMES))
        base = base.reshape(b, FRAMES, *base.shape[1:]).permute(0, 2, 1, 3, 4)
    assert isinstance(out, torch.Tensor), type(out)
    assert out.shape == video.shape, out.shape

    def loss() -> torch.Tensor:
        return torch.nn.functional.mse_loss(wrapper(video, timestep=t), target)

    def construct() -> None:
        Lumiere(unet, **kwargs)

    return Workload(
        {"construct": construct, "train": train_step(wrapper, loss, trainable)},
        info={
            "base_params": sum(p.numel() for p in unet.parameters()),
            "params": sum(p.numel() for p in trainable),
            "frozen": sum(p.numel() for p in wrapper.model.parameters() if not p.requires_grad),
            "init_error": float((out - base).abs().max()),
        },
        same={
            "input_sum": input_sum,
            "base_sum": float(sum(p.detach().double().sum() for p in unet.parameters())),
        },
    )


def describe(run: Run) -> list[str]:
    def both(key: str, fmt: str) -> str:
        return ", ".join(f"{info[key]:{fmt}} ({side})" for side, info in run.infos.items())

    return [
        f"base: UNet2DModel{UNET} ({run.infos['ours']['base_params']:,} parameters, frozen); "
        f"conv inflation after {CONV}, attention inflation after {ATTN}",
        f"temporal parameters: {both('params', ',')}; init max |wrapper - base|: "
        f"{both('init_error', '.2g')}",
    ]


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=1, help="videos per train step")


BENCH = Bench(
    file=__file__,
    description=__doc__,
    columns=[
        Column("construct (s)", "construct"),
        Column("train step (s)", "train"),
        Column("peak train memory (MiB)", "train", memory=True),
    ],
    params=lambda args: {"batch": args.batch},
    setting=lambda args: f"batch {args.batch} x {FRAMES} frames of {SIZE}x{SIZE}, fp32",
    describe=describe,
    arguments=arguments,
    env={
        "HF_HUB_OFFLINE": "1",
        "PYTHONWARNINGS": "ignore::FutureWarning",  # torch.jit.script deprecation, on import
    },
    ref_python="/tmp/refenv_lumiere/bin/python",
)

if __name__ == "__main__":
    main(BENCH)
