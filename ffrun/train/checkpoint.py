"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the field's weights (the Fourier matrix B included, as the buffer `encoding.B`), the
optimizer and lr-schedule state, the step, the evaluation history, the elapsed training time, every
random-generator state (Python, NumPy, torch CPU and CUDA, the task's own sampler) and the resolved
config. It is written atomically, so a kill at any moment leaves the previous checkpoint or the new one.

Run directories are shared and downloaded, so a checkpoint is read with `torch.load(weights_only=True)`:
only tensors and plain Python values (dict, list, tuple, str, int, float, bool, None) come out of it, and
a file that asks the unpickler for anything else (a function to call, a class to build) is refused
before any of it runs. Everything ffrun saves is therefore kept in those types, the random states
included.
"""

from __future__ import annotations

import os
import random
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ffrun import __version__
from ffrun.util.atomic import save_torch
from ffrun.util.errors import FfrunError
from ffrun.util.paths import user_path

CHECKPOINT = "checkpoint.pt"
# What every ffrun checkpoint holds; a file without these is not one.
REQUIRED_KEYS = ("field", "optimizer", "task", "step", "history", "wall_s", "rng", "config")


def rng_state() -> dict[str, Any]:
    """Every global random state, as plain values and tensors that round-trip exactly."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {"bit_generator": name, "keys": [int(k) for k in keys], "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    if isinstance(py, dict):
        random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    else:  # checkpoints written before ffrun kept random states as plain values: random.getstate()'s tuple
        random.setstate((py[0], tuple(py[1]), py[2]))
    if isinstance(npy, dict):
        np.random.set_state((npy["bit_generator"], np.asarray(npy["keys"], dtype=np.uint32), npy["pos"],
                             npy["has_gauss"], npy["cached_gaussian"]))
    else:
        np.random.set_state(tuple(npy))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, *, field, optimizer, schedule, task, step: int, history: list, wall_s: float,
                    config: dict) -> Path:
    return save_torch(path, {
        "field": field.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict() if schedule is not None else None,
        "task": task.state_dict(),
        "step": step,
        "history": history,
        "wall_s": wall_s,
        "rng": rng_state(),
        "config": config,
        "ffrun_version": __version__,
    })


def find_checkpoint(spec: str | Path, where: str) -> Path:
    """The checkpoint named by `spec`: the file itself or the one in a run directory. `where` names the
    setting in the error (e.g. `trainer.resume=...`)."""
    path = user_path(spec, where)
    ckpt = path if path.is_file() else path / CHECKPOINT
    if ckpt.exists() and not ckpt.is_file():
        raise FfrunError(f"{where}: {ckpt} is not a regular file (a FIFO, device or folder); give the directory "
                         "of an ffrun run that holds a checkpoint.pt written by ffrun")
    if not ckpt.is_file():
        raise FfrunError(f"{where}: no {CHECKPOINT} there; give the directory of an ffrun run that holds one")
    return ckpt


def _legacy_numpy_globals() -> list:
    """What a checkpoint of an earlier ffrun needs beyond plain values: the uint32 array of NumPy's
    MT19937 state. Raw-byte arrays of that one dtype build no other object and call nothing."""
    core = getattr(np, "_core", None) or np.core
    allowed = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed.append(dtypes.UInt32DType)
    return allowed


def _pickle_globals(path: Path) -> list[str] | None:
    """The globals (module.name) a well-formed pickle asks for, read with pickletools (which runs nothing):
    that of a torch zip (its data.pkl) or the file itself. None when there is no well-formed pickle."""
    import io
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    return None
                data = z.read(name)
        else:
            with open(path, "rb") as f:
                data = f.read(64 << 20)
        found, strings = [], []
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if op.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL":
                found.append(".".join(strings[-2:]))
            if isinstance(arg, str):
                strings.append(arg)
        return found
    except Exception:  # not a zip, not a pickle, truncated: no well-formed pickle
        return None


def _why_unreadable(path: Path, e: BaseException) -> str:
    """Why torch.load(weights_only=True) refused `path`, in ffrun's words: a well-formed pickle that asks for
    other globals than tensors' (a crafted file), or a file that is damaged or no torch file at all. Torch's
    own advice for the first (load it with weights_only=False) is never passed on."""
    text = str(e)
    named = re.search(r"GLOBAL ([\w.]+)", text)
    asked = _pickle_globals(path)
    if named or asked:
        what = named.group(1) if named else asked[0]
        return (f"refused: it holds Python objects other than tensors and plain values (GLOBAL {what[:80]}); "
                "ffrun never unpickles code")
    detail = next((ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln
                   and "WeightsUnpickler" not in ln and "torch.serialization" not in ln), type(e).__name__)
    detail = re.sub(r"\s+", " ", detail).split(". ")[0]
    return f"cannot be read (damaged, truncated or not a torch file: {detail[:200]})"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's content, loaded without running any code the file may carry; FfrunError (one line
    naming the file) for a file that is not an ffrun checkpoint, is damaged, or asks for more than data."""
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)
    except OSError as e:
        raise FfrunError(f"{path}: cannot be read ({e.strerror}); use a checkpoint.pt written by ffrun") from None
    if not regular:  # a FIFO or a device would make the read wait forever or never end
        raise FfrunError(f"{path}: not a regular file (a FIFO, device or folder); use a checkpoint.pt written by ffrun")
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    try:
        if safe_globals is not None:
            with safe_globals(_legacy_numpy_globals()):
                state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise FfrunError(f"{path}: not a loadable ffrun checkpoint: {_why_unreadable(path, e)}; "
                         "use a checkpoint.pt written by ffrun") from None
    missing = [k for k in REQUIRED_KEYS if k not in state] if isinstance(state, dict) else list(REQUIRED_KEYS)
    if missing or not isinstance(state.get("config"), dict):
        raise FfrunError(f"{path}: not an ffrun checkpoint (it lacks {', '.join(missing) or 'a config'}); "
                         "use a checkpoint.pt written by ffrun")
    return state
