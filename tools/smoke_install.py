"""Smoke check of a package installed alone from its wheel (run by `nox -s build`).

Usage: python tools/smoke_install.py DIST

Checks that DIST imports, that its version and public API are consistent, that every requirement
on a workspace package carries a bounded range, and that the environment holds nothing but DIST's
declared (non-extra) dependency closure. For a model package, also that its console script runs
without the `[train]` extra: usage on `--help`, and `train` exits 1 with one line naming the
extra to install (the pip-only path of the README), not a traceback.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import re
import shutil
import subprocess
import sys

from packaging.requirements import Requirement

WORKSPACE = {
    "mp-layers": "mp_layers",
    "karras-unet3d": "karras_unet3d",
    "lumiere-video": "lumiere",
    "video-ddpm": "video_ddpm",
    "phenaki": "phenaki",
}
# Installers and their own dependencies may sit in any fresh virtualenv.
TOOLING = {"pip", "setuptools", "wheel", "packaging"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(dist: str) -> set[str]:
    """Names of `dist` and of everything its non-extra requirements pull in, recursively.

    A requirement with extras (`cuda-toolkit[cufft]`) pulls in the requirements of those extras.
    """
    seen: set[tuple[str, str]] = set()
    todo: list[tuple[str, str]] = [(canonical(dist), "")]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                child = canonical(requirement.name)
                todo += [(child, "")] + [(child, e) for e in requirement.extras]
    return {name for name, _ in seen}


def check_console_script(dist: str) -> None:
    """`dist --help` prints usage; `dist train` without `[train]` says, in one line, what to
    install."""
    script = shutil.which(dist)
    assert script is not None, f"{dist}: console script not on PATH"
    shown = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown
    assert f"usage: {dist}" in shown.stdout, shown
    ran = subprocess.run([script, "train"], capture_output=True, text=True, timeout=300)
    hint = f"pip install '{dist}[train]'"
    assert ran.returncode == 1, f"{dist} train without [train]: exit {ran.returncode}: {ran}"
    assert "Traceback" not in ran.stderr, f"{dist} train without [train]: {ran.stderr}"
    last = ran.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{dist} train: error:"), ran.stderr
    assert hint in last, ran.stderr
    print(f"{dist}: without [train]: {last}")


def main(dist: str) -> None:
    module = importlib.import_module(WORKSPACE[dist])
    assert module.__version__ == metadata.version(dist), (module.__version__, dist)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{dist}: __all__ names missing from the module: {missing}"

    for text in metadata.requires(dist) or []:
        requirement = Requirement(text)
        if canonical(requirement.name) in WORKSPACE:
            operators = {spec.operator for spec in requirement.specifier}
            assert operators & {">=", ">"}, f"{dist}: no lower bound in '{text}'"
            assert "<" in operators, f"{dist}: no upper bound in '{text}'"
            print(f"{dist}: Requires-Dist: {text}")

    installed = {canonical(d.metadata["Name"]) for d in metadata.distributions()}
    extra = installed - closure(dist) - TOOLING
    assert not extra, f"{dist}: installed but not required: {sorted(extra)}"

    if dist == "mp-layers":
        direct = {
            canonical(Requirement(t).name)
            for t in metadata.requires(dist) or []
            if "extra ==" not in t
        }
        # beartype: the runtime type checks (mp_layers.typecheck) every package shares
        # huggingface-hub + safetensors: save_pretrained / from_pretrained (mp_layers.hub)
        core = {"torch", "einops", "beartype", "huggingface-hub", "safetensors"}
        assert direct == core, f"mp-layers core must need exactly {sorted(core)}: {direct}"
        import torch

        from mp_layers.typecheck import typechecked

        @typechecked
        def double(x: int) -> int:
            return 2 * x

        try:
            double("2")  # type: ignore[arg-type]
        except TypeError:
            pass
        else:
            raise AssertionError("mp_layers.typecheck.typechecked did not raise TypeError")

        layer = module.MPConv3d(4, 8, 3)
        out = layer(torch.randn(2, 4, 4, 8, 8))
        assert out.shape == (2, 8, 4, 8, 8), out.shape
    if dist != "mp-layers":
        check_console_script(dist)
    print(f"{dist} {module.__version__}: installed alone, {len(installed)} distributions, OK")


if __name__ == "__main__":
    main(sys.argv[1])
