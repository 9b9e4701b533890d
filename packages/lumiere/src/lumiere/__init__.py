"""Lumiere: inflate a frozen text-to-image U-Net into a space-time U-Net.

Nothing is implemented yet: this package reserves its name and its place in the workspace. See the
project's issues for the plan.
"""

from importlib.metadata import version as _version

__version__: str = _version("lumiere-video")
__all__: list[str] = []
