"""Where tasks are found by name: each task is one module that registers its class, its config schema
(a dataclass, registered in Hydra's ConfigStore by ffrun.config under `schema/task`) and the limits of
the settings other values derive from. Adding a task is that module and a yaml in configs/task/: no
config, runner, sigma or app code changes.

    @dataclass
    class ImageTaskConfig(TaskConfig):
        name: str = "image"
        resolution: int = 512

    @register_task("image", ImageTaskConfig, limits={"resolution": Limit(4, "an even size >= 4", even=True)})
    class ImageTask(PointRegressionTask): ...

A limit is checked on the raw setting, before any interpolation that derives from it is resolved
(`check_limits`, called by `ffrun.config.check_settings` and by `build_task`), so a bad one is named
itself rather than through what it derives (task.resolution=-2 is not "sigma=-0.04 is out of range").

Plug-ins: a task outside ffrun is a module that registers itself the same way. Name it, importable on
`sys.path`, in the environment variable FFRUN_PLUGINS (comma-separated modules), and its yaml in a
config folder added to Hydra's search path:

    FFRUN_PLUGINS=my_tasks.wave ffrun task=wave 'hydra.searchpath=[file:///path/to/configs]'

Every ffrun command that reads a run of that task (ffrun-export, ffrun.load) needs the same variable. A
plug-in module may register encodings and networks as well (ffrun.models.registry): it is imported before
ffrun's configs are registered.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass, field
from typing import Any

from ffrun.util.errors import FfrunError

PLUGINS_ENV = "FFRUN_PLUGINS"

# Modules whose import registers the tasks ffrun ships; each registers itself.
BUILTIN_MODULES = ("ffrun.tasks.image", "ffrun.tasks.toy1d", "ffrun.tasks.ct", "ffrun.tasks.mri",
                   "ffrun.tasks.shape", "ffrun.tasks.nerf")


@dataclass(frozen=True)
class Limit:
    """The smallest sensible value of a task setting (and, where the protocol splits its points in two,
    evenness); `rule` says it in words for the error message."""

    low: float
    rule: str
    even: bool = False

    def allows(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return True  # not a number: the schema's types decide
        return value >= self.low and not (self.even and isinstance(value, int) and value % 2)


@dataclass(frozen=True)
class TaskEntry:
    name: str
    cls: type
    schema: type
    limits: dict[str, Limit] = field(default_factory=dict)


TASKS: dict[str, TaskEntry] = {}


def register_task(name: str, schema: type, limits: dict[str, Limit] | None = None):
    """Class decorator: `cls(cfg, device, batch_size=None, seed=0)` is the task called `name` (config
    group `task`), configured by `schema`."""

    def decorate(cls: type) -> type:
        where = f"{cls.__module__}.{cls.__qualname__}"
        if not dataclasses.is_dataclass(schema) or "name" not in {f.name for f in dataclasses.fields(schema)}:
            raise FfrunError(f"task {name!r} of {where}: its schema {schema!r:.60} is not a dataclass with a `name` "
                             "field (see ffrun.tasks.base.TaskConfig); give register_task such a dataclass")
        earlier = TASKS.get(name)
        if earlier is not None and f"{earlier.cls.__module__}.{earlier.cls.__qualname__}" != where:
            raise FfrunError(f"task {name!r} of {where} would replace the task {name!r} of {earlier.cls.__module__}; "
                             "give the plug-in's task a name of its own")
        TASKS[name] = TaskEntry(name, cls, schema, dict(limits or {}))
        return cls

    return decorate


def plugin_modules() -> list[str]:
    """The modules named in FFRUN_PLUGINS."""
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


def load_builtins() -> None:
    """Import the built-in task modules and the plug-ins (each import registers its tasks; Python imports a
    module once)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for module in plugin_modules():
        try:
            importlib.import_module(module)
        except FfrunError as e:  # a refused registration says what it is
            raise FfrunError(f"{PLUGINS_ENV}: {module!r}: {e}") from None
        except ImportError as e:
            raise FfrunError(f"{PLUGINS_ENV}: cannot import {module!r} ({e}); give modules importable on "
                             "sys.path (PYTHONPATH), separated by commas") from None
        except Exception as e:  # noqa: BLE001 (the plug-in's own code failed while it was imported)
            said = " ".join(str(e).split())[:200]
            raise FfrunError(f"{PLUGINS_ENV}: importing {module!r} raised {type(e).__name__}: {said}; fix the "
                             f"module, or leave it out of {PLUGINS_ENV}") from None


def registered() -> dict[str, TaskEntry]:
    """Every task, built-in and plug-in, by name: the built-in ones in BUILTIN_MODULES' order (whichever module
    a program happened to import first), then the plug-ins as they registered."""
    load_builtins()
    rank = {module: i for i, module in enumerate(BUILTIN_MODULES)}
    order = sorted(TASKS, key=lambda name: rank.get(TASKS[name].cls.__module__, len(rank)))
    if list(TASKS) != order:
        ordered = {name: TASKS[name] for name in order}
        TASKS.clear()
        TASKS.update(ordered)
    return TASKS


def task_entry(name: str) -> TaskEntry:
    tasks = registered()
    if name not in tasks:
        raise FfrunError(f"task.name={name!r} is not a task; choose one of {', '.join(tasks)}")
    return tasks[name]


def task_class(name: str) -> type:
    """The class of the task called `name` (its in_dim, out_dim and out_activation need no data)."""
    return task_entry(name).cls


def check_limits(cfg: Any) -> None:
    """The task config's limited settings against their limits; FfrunError naming the raw setting. A task
    name that is not registered has none here (building it says so)."""
    entry = registered().get(getattr(cfg, "name", None))
    for key, limit in (entry.limits if entry else {}).items():
        value = cfg.get(key)
        if not limit.allows(value):
            raise FfrunError(f"config: task.{key}={value!r} is out of range for task={entry.name}: use {limit.rule}")


def build_task(cfg: Any, device, batch_size: int | None, seed: int):
    """The task named by `cfg.name`, with its data loaded onto `device`; `seed` drives its minibatches."""
    check_limits(cfg)
    return task_class(cfg.name)(cfg, device, batch_size=batch_size, seed=seed)
