"""One module per task: its forward model, loss, metrics and outputs."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from ffrun.errors import FfrunError
from ffrun.tasks.base import Task

TASKS = ("image", "toy1d", "ct", "mri", "shape", "nerf")


def build_task(cfg: DictConfig, device: torch.device, batch_size: int | None, seed: int) -> Task:
    """The task named by `cfg.name`, with its data loaded onto `device`; `seed` drives its minibatches."""
    if cfg.name == "image":
        from ffrun.tasks.image import ImageTask

        return ImageTask(cfg, device, batch_size=batch_size, seed=seed)
    if cfg.name == "ct":
        from ffrun.tasks.ct import CTTask

        return CTTask(cfg, device, batch_size=batch_size, seed=seed)
    if cfg.name == "mri":
        from ffrun.tasks.mri import MRITask

        return MRITask(cfg, device, batch_size=batch_size, seed=seed)
    if cfg.name == "shape":
        from ffrun.tasks.shape import ShapeTask

        return ShapeTask(cfg, device, batch_size=batch_size, seed=seed)
    if cfg.name == "nerf":
        from ffrun.tasks.nerf import NeRFTask

        return NeRFTask(cfg, device, batch_size=batch_size, seed=seed)
    if cfg.name == "toy1d":
        from ffrun.tasks.toy1d import Toy1DTask

        return Toy1DTask(cfg, device, batch_size=batch_size, seed=seed)
    raise FfrunError(f"task.name={cfg.name!r} is not a task; choose one of {', '.join(TASKS)}")


__all__ = ["Task", "TASKS", "build_task"]
