"""One module per task: its forward model, loss, metrics and outputs."""

from __future__ import annotations

import importlib

import torch
from omegaconf import DictConfig

from ffrun.util.errors import FfrunError
from ffrun.tasks.base import Task

# task name -> (module, class); a task's module is imported only when that task is used
TASK_CLASSES = {
    "image": ("ffrun.tasks.image", "ImageTask"),
    "toy1d": ("ffrun.tasks.toy1d", "Toy1DTask"),
    "ct": ("ffrun.tasks.ct", "CTTask"),
    "mri": ("ffrun.tasks.mri", "MRITask"),
    "shape": ("ffrun.tasks.shape", "ShapeTask"),
    "nerf": ("ffrun.tasks.nerf", "NeRFTask"),
}
TASKS = tuple(TASK_CLASSES)


def task_class(name: str) -> type[Task]:
    """The class of the task called `name` (its in_dim, out_dim and out_activation need no data)."""
    if name not in TASK_CLASSES:
        raise FfrunError(f"task.name={name!r} is not a task; choose one of {', '.join(TASKS)}")
    module, cls = TASK_CLASSES[name]
    return getattr(importlib.import_module(module), cls)


def build_task(cfg: DictConfig, device: torch.device, batch_size: int | None, seed: int) -> Task:
    """The task named by `cfg.name`, with its data loaded onto `device`; `seed` drives its minibatches."""
    return task_class(cfg.name)(cfg, device, batch_size=batch_size, seed=seed)


__all__ = ["Task", "TASKS", "build_task", "task_class"]
