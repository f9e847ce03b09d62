"""`ffrun`: the Hydra app. Compose the config, build task and field, train, write the run directory.

    ffrun task=image encoding=gauss sigma=10
    ffrun -m task=image encoding=gauss sigma=1,10,100
"""

from __future__ import annotations

import logging
import random
import sys
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ffrun import __version__
from ffrun.atomic import save_torch, write_json, write_text
from ffrun.config import register_configs, validate
from ffrun.errors import FfrunError
from ffrun.models.field import build_field
from ffrun.tasks import build_task
from ffrun.train import train

log = logging.getLogger("ffrun")


def resolve_device(spec: str) -> torch.device:
    """auto -> CUDA when available, else CPU; cpu; cuda; cuda:N."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise FfrunError(f"device={spec}: this machine has no CUDA device; use device=cpu or device=auto")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FfrunError(
                f"device={spec}: only {torch.cuda.device_count()} CUDA device(s) here; use cuda:0..."
            )
        return dev
    raise FfrunError(f"device={spec!r} is not a device; use auto, cpu, cuda or cuda:N")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """One experiment end to end; returns the metrics.json content."""
    validate(cfg)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    task = build_task(cfg.task, device, cfg.trainer.batch_size, cfg.seed)
    field = build_field(cfg.encoding, cfg.model, task.in_dim, task.out_dim, task.out_activation, cfg.seed)
    field.to(device)
    lr = float(cfg.trainer.lr)
    sigma = float(cfg.encoding.sigma) if cfg.encoding.name == "gauss" else None
    label = f"{cfg.task.name}/{cfg.encoding.name}" + (f" sigma={sigma:g}" if sigma is not None else "")
    log.info("run %s on %s -> %s", label, device, run_dir)

    result = train(task, field, cfg.trainer, lr, desc=label)

    task.save(field, run_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    save_torch(
        run_dir / "checkpoint.pt",
        {
            "field": field.state_dict(),  # includes encoding.B
            "optimizer": result.optimizer.state_dict(),
            "step": cfg.trainer.steps,
            "config": config,
            "ffrun_version": __version__,
        },
    )
    record = {
        "status": "completed",
        "task": cfg.task.name,
        "encoding": cfg.encoding.name,
        "sigma": sigma,
        "seed": cfg.seed,
        "steps": cfg.trainer.steps,
        "lr": lr,
        "device": str(device),
        "wall_s": round(result.wall_s, 3),
        "primary_metric": task.primary_metric,
        "metrics": result.metrics,
        "history": result.history,
        "config": config,
    }
    write_json(run_dir / "metrics.json", record)
    summary = ", ".join(f"{k} {v:.2f}" for k, v in result.metrics.items())
    log.info("%s: %s (%.1f s)", label, summary, result.wall_s)
    return record


register_configs()


@hydra.main(config_path="pkg://ffrun.configs", config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    try:
        record = run(cfg, run_dir)
    except FfrunError as e:
        print(f"ffrun: error: {e}", file=sys.stderr)
        sys.exit(2)
    return record["metrics"].get(record["primary_metric"], float("nan"))


def main() -> None:
    try:
        _app()
    except SystemExit as e:
        # Hydra reports a bad override or config (unknown key, wrong type, missing option) in one
        # message and exits 1; ffrun's contract for bad input is exit status 2.
        if e.code == 1:
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
