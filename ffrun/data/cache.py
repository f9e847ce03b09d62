"""Where ffrun caches data it builds itself (the built-in shape and scene, test point sets)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$FFRUN_CACHE, else ~/.cache/ffrun."""
    return Path(os.environ.get("FFRUN_CACHE", Path.home() / ".cache" / "ffrun"))
