"""The EDM2 magnitude-preserving 3-D U-Net for video diffusion, trainable and sampleable.

Nothing is implemented yet: this package reserves its name and its place in the workspace. See the
project's issues for the plan.
"""

from importlib.metadata import version as _version

__version__: str = _version("karras-unet3d")
__all__: list[str] = []
