"""Reading a run directory back in Python (notebooks, analysis): the trained field and its task.

    import ffrun
    field = ffrun.load("outputs/2026-11-27/10-00-00", device="cuda")   # encoding + MLP, B included
    rgb = field(coords)                                                 # (..., in_dim) -> (..., out_dim)
    task = ffrun.load_task("outputs/2026-11-27/10-00-00")               # its data, forward model, metrics
    task.evaluate(field)                                                # the metrics the run reported
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ffrun.checkpoint import find_checkpoint, load_checkpoint
from ffrun.config import TASK_SCHEMAS, EncodingConfig, ModelConfig


def _checkpoint(run_dir: str | Path) -> dict[str, Any]:
    return load_checkpoint(find_checkpoint(run_dir, str(run_dir)))


def run_config(run_dir: str | Path) -> DictConfig:
    """The run's resolved config, completed with today's defaults for keys added since it was written."""
    saved = _checkpoint(run_dir)["config"]
    return _complete(saved)


def _complete(saved: dict) -> DictConfig:
    cfg = OmegaConf.create(saved)
    cfg.encoding = OmegaConf.merge(OmegaConf.structured(EncodingConfig), saved["encoding"])
    cfg.model = OmegaConf.merge(OmegaConf.structured(ModelConfig), saved["model"])
    schema = TASK_SCHEMAS.get(saved["task"]["name"])
    if schema is not None:
        cfg.task = OmegaConf.merge(OmegaConf.structured(schema), saved["task"])
    return cfg


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The trained field of a run (f(v) = MLP(gamma(v)), or the grid baseline) on `device`, in eval mode,
    with the weights of its last checkpoint. `field.config` holds the run's resolved config."""
    from ffrun.models.field import build_field
    from ffrun.tasks import task_class

    state = _checkpoint(run_dir)
    cfg = _complete(state["config"])
    cls = task_class(cfg.task.name)
    grid_shape = tuple(state["field"]["values"].shape[:-1]) if cfg.encoding.name == "grid" else None
    with torch.random.fork_rng(devices=[]):  # building draws B and an init from the seed: keep the caller's RNG
        field = build_field(cfg.encoding, cfg.model, cls.in_dim, cls.out_dim, cls.out_activation, cfg.seed,
                            grid_shape=grid_shape)
    field.load_state_dict(state["field"])
    field.config = OmegaConf.to_container(cfg)
    field.step = state["step"]
    return field.to(device).eval()


def load_task(run_dir: str | Path, device: str | torch.device = "cpu"):
    """The run's task rebuilt from its config (its data, forward model, metrics and outputs)."""
    from ffrun.tasks import build_task

    cfg = run_config(run_dir)
    return build_task(cfg.task, torch.device(device), cfg.trainer.batch_size, cfg.seed)
