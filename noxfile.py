"""The CI matrix of the workspace. `uvx nox` runs the default sessions; `nox -l` lists them all.

Default: lint, typecheck, tests (each package in its own environment), build (wheel + sdist, then
installed alone), ranges (inter-package requirements). Not default: lowest (lowest direct
dependency versions), bench (every package's benchmark scripts), bench_reference (karras-unet3d
against the reference implementation, installed in a separate environment), parity (video-ddpm
against video-diffusion-pytorch 0.6.1 and 0.7.0 through converted checkpoints),
bench_reference_vdm (video-ddpm against video-diffusion-pytorch 0.6.1),
bench_reference_phenaki (phenaki's CViViT against phenaki-pytorch 0.5.0),
bench_reference_maskgit (phenaki's MaskGit and sampling against phenaki-pytorch 0.5.0) and
bench_reference_lumiere (lumiere-video's Lumiere against lumiere-pytorch 0.0.24).

Packages are discovered from packages/*/pyproject.toml. A missing interpreter is an error. On a
machine whose interpreters live under pyenv, their folders are put on PATH here, so that nothing
needs to be activated by hand.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nox

if sys.version_info >= (3, 11):
    import tomllib
else:  # nox itself may run on 3.10
    import tomli as tomllib

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["lint", "typecheck", "tests", "build", "ranges"]

ROOT = Path(__file__).parent
MAIN_PYTHON = "3.11"
# mp-layers is the shared core: it is also tested on the oldest and newest supported Python.
EXTRA_PYTHONS = {"mp-layers": ["3.10", "3.13"]}
CORE = "mp-layers"


def _expose_pyenv_interpreters() -> None:
    """Put every pyenv-installed CPython 3.x on PATH (pyenv's shims only serve the active one)."""
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if not versions.is_dir():
        return
    folders = sorted(str(p / "bin") for p in versions.glob("3.*") if (p / "bin").is_dir())
    os.environ["PATH"] = os.pathsep.join([*folders, os.environ.get("PATH", "")])


_expose_pyenv_interpreters()
# Let the session interpreters cache bytecode: with PYTHONDONTWRITEBYTECODE set (as on some CI
# images) every pytest process recompiles torch's and sympy's imports, seconds each time.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def _read_project(folder: Path) -> dict:
    with open(folder / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]


PACKAGES = {
    _read_project(folder)["name"]: folder
    for folder in sorted((ROOT / "packages").iterdir())
    if (folder / "pyproject.toml").is_file()
}
TEST_MATRIX = [
    (python, name) for name in PACKAGES for python in [MAIN_PYTHON, *EXTRA_PYTHONS.get(name, [])]
]


def _sync(session: nox.Session, *args: str) -> None:
    """Install from uv.lock into the session's virtualenv (`--locked`: a stale lock is an error)."""
    session.run_install(
        "uv",
        "sync",
        "--locked",
        "--no-default-groups",
        f"--python={session.virtualenv.location}",
        *args,
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
        external=True,
    )


@nox.session(python=MAIN_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole repository; no import cycle and no
    source file over 500 lines (tools/check_structure.py)."""
    _sync(session, "--only-group=lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("python", "tools/check_structure.py")


@nox.session(python=MAIN_PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy over every package's src/."""
    _sync(session, "--all-packages", "--all-extras", "--group=typecheck")
    session.run("mypy", *(str(folder / "src") for folder in PACKAGES.values()))


@nox.session
@nox.parametrize(
    ("python", "package"), TEST_MATRIX, ids=[f"{name}-{py}" for py, name in TEST_MATRIX]
)
def tests(session: nox.Session, package: str) -> None:
    """One package's tests, in an environment holding only it, its dependencies and pytest."""
    _sync(session, f"--package={package}", "--all-extras", "--group=test")
    session.run("pytest", str(PACKAGES[package].relative_to(ROOT) / "tests"), *session.posargs)


@nox.session(python=MAIN_PYTHON)
@nox.parametrize("package", list(PACKAGES))
def build(session: nox.Session, package: str) -> None:
    """Build wheel + sdist without workspace sources, install the wheel alone, smoke-test it."""
    out = Path(session.create_tmp()) / "dist"
    shutil.rmtree(out, ignore_errors=True)
    for name in dict.fromkeys([package, CORE]):
        session.run(
            "uv", "build", f"--package={name}", "--no-sources", f"--out-dir={out}", external=True
        )
    wheels = sorted(str(path) for path in out.glob("*.whl"))
    if not list(out.glob("*.tar.gz")):
        session.error(f"no sdist was built in {out}")
    session.install(*wheels, "packaging")
    session.run("python", str(ROOT / "tools" / "smoke_install.py"), package)


@nox.session(python=False)
def ranges(session: nox.Session) -> None:
    """Every requirement on a workspace package has a bounded range admitting its current version."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    versions = {
        name: Version(_read_project(folder)["version"]) for name, folder in PACKAGES.items()
    }
    problems = []
    for name, folder in PACKAGES.items():
        project = _read_project(folder)
        requirements = list(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            requirements += extra
        for text in requirements:
            requirement = Requirement(text)
            if requirement.name not in versions or requirement.name == name:
                continue
            operators = {spec.operator for spec in requirement.specifier}
            wanted = versions[requirement.name]
            if not operators & {">=", ">", "~="} or not operators & {"<", "~="}:
                problems.append(f"{name}: '{text}' needs a lower and an upper bound")
            elif not requirement.specifier.contains(wanted, prereleases=True):
                problems.append(f"{name}: '{text}' does not admit {requirement.name} {wanted}")
            else:
                session.log(f"{name}: '{text}' admits {requirement.name} {wanted}")
    if problems:
        session.error("\n".join(problems))


@nox.session(python=MAIN_PYTHON, default=False)
@nox.parametrize("package", list(PACKAGES))
def lowest(session: nox.Session, package: str) -> None:
    """The package's tests against the lowest versions its requirements allow.

    The third-party requirements of the package and of mp-layers (extras included) are passed as
    direct requirements, so that `lowest-direct` takes the floor of each of them.
    """
    from packaging.requirements import Requirement

    specs, floors = [], ["pytest>=8.3"]
    for name in dict.fromkeys([CORE, package]):
        project = _read_project(PACKAGES[name])
        extras = project.get("optional-dependencies", {})
        specs.append(str(PACKAGES[name]) + (f"[{','.join(extras)}]" if extras else ""))
        extra_requirements = [text for group in extras.values() for text in group]
        for text in [*project.get("dependencies", []), *extra_requirements]:
            if Requirement(text).name not in PACKAGES:
                floors.append(text)
    # torch 2.5 (the floor) imports setuptools in inductor's C++ codegen without requiring it.
    session.install("--resolution=lowest-direct", *specs, *floors, "setuptools>=70")
    session.run("pytest", str(PACKAGES[package].relative_to(ROOT) / "tests"), *session.posargs)


@nox.session(python=MAIN_PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Run every packages/*/benchmarks/*.py script (but *_vs_reference.py); each prints a table."""
    _sync(session, "--all-packages", "--all-extras")
    for folder in PACKAGES.values():
        for script in sorted((folder / "benchmarks").glob("*.py")):
            if script.stem.endswith("_vs_reference"):
                continue  # needs the reference installed: see bench_reference
            session.log(f"== {script.relative_to(ROOT)}")
            session.run("python", str(script), *session.posargs)


@nox.session(python=MAIN_PYTHON, default=False)
def bench_reference(session: nox.Session) -> None:
    """karras-unet3d against denoising-diffusion-pytorch==2.3.4, installed in its own venv."""
    _sync(session, "--all-packages", "--all-extras")
    python = _reference_venv(session, "ddp-2.3.4", "denoising-diffusion-pytorch==2.3.4")
    script = PACKAGES["karras-unet3d"] / "benchmarks" / "bench_vs_reference.py"
    session.run("python", str(script), f"--ref-python={python}", *session.posargs)


def _torch_version(session: nox.Session) -> str:
    """The torch version of the session's environment, without a local tag (`2.5.1+cu124`)."""
    out = session.run(
        "python",
        "-c",
        "import importlib.metadata as m; print(m.version('torch'))",
        silent=True,
    )
    return str(out).strip().splitlines()[-1].split("+")[0]


def _reference_venv(session: nox.Session, name: str, requirement: str) -> Path:
    """A venv under the session's tmp dir holding `requirement` and the session's torch (pinned,
    so that uv reuses the cached wheel and both sides run the same torch). Returns its python."""
    venv = Path(session.create_tmp()) / name
    python = venv / "bin" / "python"
    if not python.exists():
        session.run("uv", "venv", "--python", MAIN_PYTHON, str(venv), external=True)
        session.run(
            "uv",
            "pip",
            "install",
            f"--python={venv}",
            requirement,
            f"torch=={_torch_version(session)}",
            external=True,
        )
    return python


@nox.session(python=MAIN_PYTHON, default=False)
def parity(session: nox.Session) -> None:
    """video-ddpm against video-diffusion-pytorch 0.6.1 and 0.7.0 (each in its own venv): outputs
    of converted reference checkpoints, within 1e-5 relative."""
    _sync(session, "--all-packages", "--all-extras")
    args = []
    for version in ("0.6.1", "0.7.0"):
        python = _reference_venv(session, f"vdm-{version}", f"video-diffusion-pytorch=={version}")
        args += [f"--ref-python={python}", f"--version={version}"]
    script = PACKAGES["video-ddpm"] / "benchmarks" / "parity_vs_reference.py"
    session.run("python", str(script), *args, *session.posargs)


@nox.session(python=MAIN_PYTHON, default=False)
def bench_reference_vdm(session: nox.Session) -> None:
    """video-ddpm against video-diffusion-pytorch==0.6.1, installed in its own venv."""
    _sync(session, "--all-packages", "--all-extras")
    python = _reference_venv(session, "vdm-0.6.1", "video-diffusion-pytorch==0.6.1")
    script = PACKAGES["video-ddpm"] / "benchmarks" / "bench_vs_reference.py"
    session.run("python", str(script), f"--ref-python={python}", *session.posargs)


@nox.session(python=MAIN_PYTHON, default=False)
def bench_reference_phenaki(session: nox.Session) -> None:
    """phenaki's CViViT against phenaki-pytorch==0.5.0, installed in its own venv."""
    _sync(session, "--all-packages", "--all-extras")
    python = _reference_venv(session, "phenaki-0.5.0", "phenaki-pytorch==0.5.0")
    script = PACKAGES["phenaki"] / "benchmarks" / "bench_vs_reference.py"
    session.run("python", str(script), f"--ref-python={python}", *session.posargs)


@nox.session(python=MAIN_PYTHON, default=False)
def bench_reference_maskgit(session: nox.Session) -> None:
    """phenaki's MaskGit (train step) and Phenaki.sample against phenaki-pytorch==0.5.0."""
    _sync(session, "--all-packages", "--all-extras")
    python = _reference_venv(session, "phenaki-0.5.0", "phenaki-pytorch==0.5.0")
    script = PACKAGES["phenaki"] / "benchmarks" / "bench_maskgit_vs_reference.py"
    session.run("python", str(script), f"--ref-python={python}", *session.posargs)


@nox.session(python=MAIN_PYTHON, default=False)
def bench_reference_lumiere(session: nox.Session) -> None:
    """lumiere-video's Lumiere (construction, train step) against lumiere-pytorch==0.0.24, with
    the session's diffusers and x-transformers in its venv too (same base U-Net on both sides)."""
    _sync(session, "--all-packages", "--all-extras")
    python = _reference_venv(session, "lumiere-0.0.24", "lumiere-pytorch==0.0.24")
    pins = session.run(
        "python",
        "-c",
        "import importlib.metadata as m; "
        "print(*(f'{d}=={m.version(d)}' for d in ('diffusers', 'x-transformers')))",
        silent=True,
    )
    session.run(
        "uv",
        "pip",
        "install",
        f"--python={python}",
        *str(pins).strip().splitlines()[-1].split(),
        f"torch=={_torch_version(session)}",
        external=True,
    )
    script = PACKAGES["lumiere-video"] / "benchmarks" / "bench_vs_reference.py"
    session.run("python", str(script), f"--ref-python={python}", *session.posargs)
