"""Where ffrun finds real data (scenes, meshes, volumes) that it does not ship, and where it caches data
it builds itself (the built-in shape and scene, test point sets)."""

from __future__ import annotations

import os
from pathlib import Path

from ffrun.util.paths import expand_user

# A checkout's sibling folder `shared/data` (the layout of the project's CI and benchmark machines).
_BESIDE_CHECKOUT = Path(__file__).resolve().parents[3] / "shared" / "data"


def data_dir() -> Path:
    """$FFRUN_DATA, else `../shared/data` beside a checkout of ffrun. One folder per kind of data:
    `nerf/<scene>/`, `meshes/*.obj`, `mri/*.nii.gz`. The folder may not exist: callers check and fall
    back to built-in stand-ins (or skip) with a message naming this setting."""
    env = os.environ.get("FFRUN_DATA")
    return expand_user(env, f"$FFRUN_DATA={env}") if env else _BESIDE_CHECKOUT


def cache_dir() -> Path:
    """$FFRUN_CACHE, else ~/.cache/ffrun (an empty $FFRUN_CACHE too: it would be the current folder)."""
    env = os.environ.get("FFRUN_CACHE")
    return expand_user(env, f"$FFRUN_CACHE={env}") if env else Path.home() / ".cache" / "ffrun"
