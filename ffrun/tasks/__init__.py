"""One module per task: its config schema and limits, forward model, loss, metrics, sigma=auto proxy and
outputs, registered by name (ffrun.tasks.registry)."""

from __future__ import annotations

from ffrun.tasks.base import Task, TaskConfig
from ffrun.tasks.registry import Limit, build_task, register_task, registered, task_class, task_entry

__all__ = ["Limit", "Task", "TaskConfig", "build_task", "register_task", "registered", "task_class", "task_entry"]
