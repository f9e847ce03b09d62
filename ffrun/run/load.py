"""Reading a run directory back in Python (notebooks, analysis): the trained field and its task.

    import ffrun
    field = ffrun.load("outputs/2026-11-27/10-00-00", device="cuda")   # encoding + MLP, B included
    rgb = field(coords)                                                 # (..., in_dim) -> (..., out_dim)
    task = ffrun.load_task("outputs/2026-11-27/10-00-00")               # its data, forward model, metrics
    task.evaluate(field)                                                # the metrics the run reported

The checkpoint is read without running code (see ffrun.train.checkpoint), and a checkpoint whose config or
weights do not make a field is reported as one line naming the file (FfrunError), never half-loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ffrun.models.registry import encoding_entry, network_entry
from ffrun.tasks.registry import registered
from ffrun.train.checkpoint import find_checkpoint, load_checkpoint
from ffrun.util.errors import FfrunError


def _checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    path = find_checkpoint(run_dir, str(run_dir))
    return path, load_checkpoint(path)


def run_config(run_dir: str | Path) -> DictConfig:
    """The run's resolved config, completed with today's defaults for keys added since it was written."""
    path, state = _checkpoint(run_dir)
    return _complete(state["config"], path)


def _interpolations(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node] if "${" in node else []
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    return [s for child in children for s in _interpolations(child)]


def _complete(saved: dict, path: Path) -> DictConfig:
    # ffrun saves the resolved config; an interpolation in it could only come from someone else's file,
    # and resolving one (e.g. ${oc.env:...}) would copy this machine's values into field.config and exports.
    found = _interpolations(saved)
    if found:
        raise FfrunError(f"{path}: its config holds an interpolation ({found[0][:80]!r}); ffrun saves resolved "
                         "configs, so this checkpoint was not written by ffrun")
    tasks = registered()  # a plug-in that cannot be imported is named here, not as a bad config
    try:
        cfg = OmegaConf.create(saved)
        cfg.encoding = OmegaConf.merge(OmegaConf.structured(encoding_entry(saved["encoding"]["name"]).schema),
                                       saved["encoding"])
        cfg.model = OmegaConf.merge(OmegaConf.structured(network_entry(saved["model"].get("name", "mlp")).schema),
                                    saved["model"])
        entry = tasks.get(saved["task"]["name"])
        if entry is None:
            raise ValueError(f"task {saved['task']['name']!r} is not one of {', '.join(tasks)}")
        cfg.task = OmegaConf.merge(OmegaConf.structured(entry.schema), saved["task"])
    except Exception as e:  # a config from a file ffrun did not write: missing keys, wrong types
        raise FfrunError(f"{path}: its config is not an ffrun config ({type(e).__name__}: "
                         f"{' '.join(str(e).split())})") from None
    return cfg


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The trained field of a run (f(v) = MLP(gamma(v)), or the grid baseline) on `device`, in eval mode,
    with the weights of its last checkpoint. `field.config` holds the run's resolved config."""
    from ffrun.models.field import build_field
    from ffrun.tasks import task_class

    path, state = _checkpoint(run_dir)
    cfg = _complete(state["config"], path)
    cls = task_class(cfg.task.name)
    try:
        grid_shape = tuple(state["field"]["values"].shape[:-1]) if cfg.encoding.name == "grid" else None
        with torch.random.fork_rng(devices=[]):  # building draws B and an init from the seed: keep the caller's RNG
            field = build_field(cfg.encoding, cfg.model, cls.in_dim, cls.out_dim, cls.out_activation, cfg.seed,
                                grid_shape=grid_shape, bounds=cls.bounds)
        field.load_state_dict(state["field"])
    except (KeyError, TypeError, AttributeError, RuntimeError) as e:
        raise FfrunError(f"{path}: its weights do not fit the field its config describes "
                         f"({' '.join(str(e).split())[:300]})") from None
    field.config = OmegaConf.to_container(cfg)
    field.step = state["step"]
    return field.to(_device(device)).eval()


def _device(device: str | torch.device) -> torch.device:
    """`device` checked as a run checks it: FfrunError (one line) for cuda without a CUDA device."""
    from ffrun.run.device import resolve_device

    return resolve_device(str(device))


def load_task(run_dir: str | Path, device: str | torch.device = "cpu"):
    """The run's task rebuilt from its config (its data, forward model, metrics and outputs)."""
    from ffrun.tasks import build_task

    cfg = run_config(run_dir)
    return build_task(cfg.task, _device(device), cfg.trainer.batch_size, cfg.seed)
