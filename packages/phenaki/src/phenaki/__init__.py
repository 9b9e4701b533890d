"""Phenaki: C-ViViT video tokenizer, MaskGit, token critics, text-to-video and multi-scene stories.

Nothing is implemented yet: this package reserves its name and its place in the workspace. See the
project's issues for the plan.
"""

from importlib.metadata import version as _version

__version__: str = _version("phenaki")
__all__: list[str] = []
