"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the field's weights (the Fourier matrix B included, as the buffer `encoding.B`), the
optimizer and lr-schedule state, the step, the evaluation history, the elapsed training time, every
random-generator state (Python, NumPy, torch CPU and CUDA, the task's own sampler) and the resolved
config. It is written atomically, so a kill at any moment leaves the previous checkpoint or the new one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ffrun import __version__
from ffrun.atomic import save_torch

CHECKPOINT = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
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
    path = Path(spec).expanduser()
    ckpt = path if path.is_file() else path / CHECKPOINT
    if not ckpt.is_file():
        from ffrun.errors import FfrunError

        raise FfrunError(f"{where}: no {CHECKPOINT} there; give the directory of an ffrun run that holds one")
    return ckpt


def load_checkpoint(path: Path) -> dict[str, Any]:
    # weights_only=False: the checkpoint holds NumPy and Python RNG states; it is our own file.
    return torch.load(path, map_location="cpu", weights_only=False)
