"""Atomic file writes: a temporary file in the same folder, fsync'd, then renamed over the target, so a
crash leaves either the previous file or the new one, never a truncated one."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def write_png(path, img: np.ndarray) -> Path:
    """Float image in [0, 1] (H, W) or (H, W, 3) -> 8-bit PNG."""
    from PIL import Image

    arr = (np.clip(np.asarray(img, dtype=np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return atomic_write(path, lambda f: Image.fromarray(arr).save(f, format="PNG"))


def save_torch(path, obj: Any) -> Path:
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def save_figure(path, fig) -> Path:
    """Matplotlib figure -> PNG, atomically."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
