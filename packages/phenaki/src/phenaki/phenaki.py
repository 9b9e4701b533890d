"""`Phenaki` and `make_video`, re-exported from where they live: the model (training loss, text,
files) in `phenaki.model`, its sampling in `phenaki.sampling`, multi-scene stories in
`phenaki.story`."""

from __future__ import annotations

from phenaki.model import CONFIG_NAME as CONFIG_NAME
from phenaki.model import DEFAULT_T5_NAME, Phenaki, file_sha256
from phenaki.model import FORMAT as FORMAT
from phenaki.model import FORMAT_VERSION as FORMAT_VERSION
from phenaki.model import WEIGHTS_NAME as WEIGHTS_NAME
from phenaki.model import Schedule as Schedule
from phenaki.model import TextFunction as TextFunction
from phenaki.story import make_video

__all__ = ["DEFAULT_T5_NAME", "Phenaki", "file_sha256", "make_video"]
