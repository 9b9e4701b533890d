"""Video Diffusion Models: factorised space-time Unet3D, Gaussian diffusion, samplers, trainer.

Nothing is implemented yet: this package reserves its name and its place in the workspace. See the
project's issues for the plan.
"""

from importlib.metadata import version as _version

__version__: str = _version("video-ddpm")
__all__: list[str] = []
