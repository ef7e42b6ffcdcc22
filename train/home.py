"""Where iqart keeps what it downloads, exports and builds: $IQART_HOME, else ~/.cache/iqart.

A module of its own so that the kernel and plugin loaders can find their build cache without
importing the model code (and so open_clip) on machines that only run kernels.
"""

from __future__ import annotations

import os
from pathlib import Path


def iqart_home() -> Path:
    return Path(os.environ.get("IQART_HOME", Path.home() / ".cache" / "iqart"))
