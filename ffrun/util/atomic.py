"""Atomic file writes: a temporary file in the same folder, fsync'd, then renamed over the target, so a
crash leaves either the previous file or the new one, never a truncated one. A full disk (or quota) and a
folder that may not be written (permissions, a read-only mount) are reported as one line naming the file,
with the temporary file removed where the folder allows it and the previous file intact.

JSON is written as strict JSON: a non-finite float (a nan loss, an inf PSNR) is written as null, since
NaN and Infinity are not JSON and most readers other than Python's refuse them.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ffrun.util.errors import FfrunError

# The errors that mean "the disk is full": no space left, or the user's quota is used up.
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# The errors that mean "this folder may not be written": permissions, or a read-only mount.
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


class NotWritable(FfrunError):
    """The folder of a file may not be written (permissions, a read-only mount)."""


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            # mkstemp creates 0600; a result file gets the permissions any new file would (0666 less the umask)
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:  # already gone, or the folder has just turned read-only: the write's error is the news
                pass
        if _caused_by(e, _FULL, "No space left on device"):
            raise FfrunError(f"no space left on device: {path} (the previous file, if any, is unchanged); "
                             "free some space and run again") from None
        if _caused_by(e, _DENIED, "Read-only file system"):
            raise NotWritable(f"cannot write {path}: {_reason(e)} (the previous file, if any, is unchanged); make "
                              f"{path.parent} writable (permissions, a read-only mount) and run again") from None
        raise
    return path


def _read_umask() -> int:
    # os.umask can only be read by setting it: done once, at import, before any thread writes files
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _chain(e: BaseException | None):
    """`e` and the exceptions it was raised from: torch.save and Pillow wrap the OSError of a failed write
    in their own RuntimeError / OSError."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _caused_by(e: BaseException, errnos: set[int], text: str) -> bool:
    return any((isinstance(x, OSError) and x.errno in errnos) or text in str(x) for x in _chain(e))


def _reason(e: BaseException) -> str:
    """The strerror of the OSError behind `e` ("permission denied", "read-only file system")."""
    found = next((x for x in _chain(e) if isinstance(x, OSError) and x.strerror), None)
    return (found.strerror if found else str(e)).lower()


def write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection): a run directory,
# image path or metric name from a run someone sent could carry "=HYPERLINK(...)".
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(header: list[Any], rows: list[list[Any]]) -> str:
    """CSV of `header` and `rows` in which no text cell can act as a spreadsheet formula: text starting with
    = + - @ tab or CR (and not a number) gets a leading apostrophe, as OWASP recommends. Numbers stay numbers."""
    import csv

    def cell(v: Any) -> Any:
        if isinstance(v, str) and v.startswith(FORMULA_START):
            try:
                float(v)
                return v
            except ValueError:
                return "'" + v
        return v

    buf = io.StringIO()
    writer = csv.writer(buf)
    for row in [header, *rows]:
        writer.writerow([cell(v) for v in row])
    return buf.getvalue()


def finite_json(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None, so that json.dumps writes strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def write_json(path, obj: Any) -> Path:
    return write_text(path, json.dumps(finite_json(obj), indent=2, allow_nan=False) + "\n")


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
