"""Parity of `video_ddpm` with video-diffusion-pytorch 0.6.1 / 0.7.0 through a converted checkpoint.

Each reference lives in its own environment:

    uv venv --python 3.11 /tmp/refenv061
    uv pip install --python /tmp/refenv061 video-diffusion-pytorch==0.6.1 torch==<ours>
    .venv/bin/python packages/video-ddpm/benchmarks/parity_vs_reference.py \
        --ref-python /tmp/refenv061/bin/python --version 0.6.1 \
        --ref-python /tmp/refenv070/bin/python --version 0.7.0

Per reference, a helper (`reference_outputs` below, run by the harness's worker,
`tools/benchharness`) runs under the reference interpreter:
it builds a random reference `Unet3D(dim=16, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8,
cond_dim=6)` in `GaussianDiffusion(image_size=16, num_frames=5, timesteps=50)`, perturbs every
parameter (norm gains off 1, biases off 0), writes a Trainer checkpoint `{"step", "model", "ema",
"scaler"}` whose "model" and "ema" differ, and the reference's fp32 outputs of the EMA model on
fixed inputs: the U-Net, one `p_sample` step without and with guidance (the seed is set before
each call; the reference draws `torch.randn_like(x)`), and the training loss at fixed t and
noise. Then, here: `convert_reference_checkpoint`, `load_pretrained`, the same calls. Error:
`max|ours - ref| / max|ref|` per output; exits 1 above `--tolerance` (1e-5).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))
from benchharness import call_function

if TYPE_CHECKING:
    import torch

UNET = {"dim": 16, "dim_mults": (1, 2), "attn_heads": 2, "attn_dim_head": 8, "cond_dim": 6}
DIFFUSION = {"image_size": 16, "num_frames": 5, "timesteps": 50}
BATCH, SEED, GUIDANCE = 2, 1234, 3.0


def reference_outputs(params: dict[str, Any]) -> dict[str, str]:
    """Under the reference's interpreter: its checkpoint and outputs, saved in `params["out"]`."""
    import copy
    import importlib.metadata
    import warnings

    import torch
    from video_diffusion_pytorch import GaussianDiffusion, Unet3D

    out = params["out"]
    unet = {**UNET, "dim_mults": tuple(UNET["dim_mults"])}
    diffusion = DIFFUSION
    torch.manual_seed(0)

    def perturb(module: torch.nn.Module) -> None:
        with torch.no_grad():
            for p in module.parameters():
                p.mul_(1 + 0.2 * torch.randn_like(p)).add_(0.05 * torch.randn_like(p))

    model = GaussianDiffusion(Unet3D(**unet), **diffusion)
    perturb(model)
    ema = copy.deepcopy(model)
    perturb(ema)  # "model" and "ema" differ: the conversion must pick the EMA weights
    model.eval()
    ema.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scaler = torch.amp.GradScaler("cuda", enabled=False).state_dict()
    except AttributeError:  # older torch
        scaler = torch.cuda.amp.GradScaler(enabled=False).state_dict()
    checkpoint = {"step": 7, "model": model.state_dict(), "ema": ema.state_dict(), "scaler": scaler}
    torch.save(checkpoint, out + "/model-1.pt")

    size, frames, steps = diffusion["image_size"], diffusion["num_frames"], diffusion["timesteps"]
    x = torch.randn(BATCH, unet.get("channels", 3), frames, size, size)
    t = torch.tensor([0, steps - 13])[:BATCH]
    cond = torch.randn(BATCH, unet["cond_dim"])
    videos = torch.rand_like(x)
    noise = torch.randn_like(x)
    with torch.no_grad():
        unet_out = ema.denoise_fn(x, t, cond=cond)
        results = {"x": x, "t": t, "cond": cond, "videos": videos, "noise": noise, "unet": unet_out}
        for name, scale in (("p_sample", 1.0), ("p_sample_guided", GUIDANCE)):
            torch.manual_seed(SEED)
            step_noise = torch.randn_like(x)  # what p_sample draws after the seed
            torch.manual_seed(SEED)
            results[name] = ema.p_sample(x, t, cond=cond, cond_scale=scale)
            results[name + "_noise"] = step_noise
        loss_t = torch.tensor([5, steps - 1])[:BATCH]
        x_start = videos * 2 - 1  # the reference's normalize_img
        results["loss"] = ema.p_losses(x_start, loss_t, cond=cond, noise=noise)
        results["loss_t"] = loss_t
    torch.save(results, out + "/outputs.pt")
    return {"version": importlib.metadata.version("video-diffusion-pytorch")}


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """`max|ours - ref| / max|ref|` (element-wise ratios blow up where the reference is ~0)."""
    return float((ours.double() - reference.double()).abs().max() / reference.double().abs().max())


def check(ref_python: str, label: str | None, work: Path) -> dict[str, float | str]:
    """Run the reference helper, convert its checkpoint, return the errors per output."""
    import torch

    from video_ddpm.diffusion import GaussianDiffusion
    from video_ddpm.pretrained import convert_reference_checkpoint, load_pretrained

    helper = call_function(ref_python, __file__, "reference_outputs", {"out": str(work)})
    version = helper["version"]
    ref = torch.load(work / "outputs.pt", map_location="cpu", weights_only=True)
    if label is not None and label != version:
        raise SystemExit(
            f"--version {label}, but {ref_python} has video-diffusion-pytorch {version}"
        )
    folder = convert_reference_checkpoint(
        work / "model-1.pt",
        work / "converted",
        image_size=DIFFUSION["image_size"],
        num_frames=DIFFUSION["num_frames"],
    )
    model = load_pretrained(folder)
    x, t, cond = ref["x"], ref["t"], ref["cond"]
    errors: dict[str, float | str] = {"version": version, "norm": model.denoise_fn.config["norm"]}
    with torch.no_grad():
        errors["unet"] = relative_error(model.denoise_fn(x, t, cond=cond), ref["unet"])
    for name, scale in (("p_sample", 1.0), ("p_sample_guided", GUIDANCE)):
        step = model.p_sample(x, t, cond=cond, cond_scale=scale, noise=ref[name + "_noise"])
        errors[name] = relative_error(step, ref[name])
    fresh = GaussianDiffusion(model.denoise_fn, **DIFFUSION)  # our schedule, not the loaded one
    errors["schedule"] = max(
        relative_error(buffer, model.get_buffer(name)) for name, buffer in fresh.named_buffers()
    )
    with torch.no_grad():
        loss = model(ref["videos"], cond, noise=ref["noise"], t=ref["loss_t"], null_cond_prob=0.0)
    errors["loss"] = relative_error(loss, ref["loss"])
    return errors


COLUMNS = {
    "unet": "Unet3D output",
    "p_sample": "p_sample step",
    "p_sample_guided": f"p_sample step, cond_scale {GUIDANCE:g}",
    "loss": "training loss (l1)",
    "schedule": "schedule buffers",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ref-python",
        action="append",
        required=True,
        help="python of an environment with video-diffusion-pytorch (repeatable)",
    )
    parser.add_argument(
        "--version",
        action="append",
        default=[],
        help="the installed reference version, one per --ref-python (checked)",
    )
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()
    if args.version and len(args.version) != len(args.ref_python):
        parser.error("give one --version per --ref-python, or none")
    labels = args.version or [None] * len(args.ref_python)
    for python in args.ref_python:
        if not Path(python).exists():
            parser.error(f"--ref-python {python} not found (see the docstring)")

    rows = []
    for python, label in zip(args.ref_python, labels, strict=True):
        with tempfile.TemporaryDirectory(prefix="vdm-parity-") as work:
            rows.append(check(python, label, Path(work)))

    import torch

    print(
        f"torch {torch.__version__}, fp32, CPU; Unet3D{UNET}, GaussianDiffusion{DIFFUSION}, "
        f"batch {BATCH}; EMA weights of a reference Trainer checkpoint; error = "
        f"max|ours - ref| / max|ref|, tolerance {args.tolerance:g}"
    )
    print("| reference | norm | " + " | ".join(COLUMNS.values()) + " |")
    print("|---|---|" + "---:|" * len(COLUMNS))
    failed = []
    for row in rows:
        cells = []
        for key in COLUMNS:
            value = float(row[key])
            cells.append(f"{value:.1e}")
            if value > args.tolerance:
                failed.append(f"{row['version']} {COLUMNS[key]}: {value:.2e}")
        print(f"| {row['version']} | {row['norm']} | " + " | ".join(cells) + " |")
    if failed:
        print(f"over tolerance {args.tolerance:g}: " + "; ".join(failed), file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
