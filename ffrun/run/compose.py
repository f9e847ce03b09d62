"""ffrun's config without an app: Hydra's compose API over the packaged configs (tests, benchmarks,
ffrun-reproduce's planning)."""

from __future__ import annotations

from omegaconf import DictConfig

from ffrun.config import register_configs


def compose(overrides: list[str]) -> DictConfig:
    """ffrun's config with these overrides, through Hydra's compose API (no app, no run directory). Hydra's own
    settings (`hydra.launcher.partition=gpu`, `hydra/launcher=slurm`) are left to the command that runs them: they
    are no part of the run's config."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    register_configs()
    run_keys = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    with initialize_config_module(config_module="ffrun.configs", version_base="1.3"):
        return hydra_compose(config_name="config", overrides=run_keys)
