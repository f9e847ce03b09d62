"""`ffrun`: the Hydra app. Compose the config, build task and field, train, write the run directory.

    ffrun task=image encoding=gauss sigma=10
    ffrun -m task=image encoding=gauss sigma=1,10,100

Exit status: 0 completed; 2 bad input or config (one line on stderr); 3 diverged; 128 + signal number
when interrupted by SIGINT/SIGTERM (after a checkpoint). In a multirun a failed or diverged job is
recorded in its metrics.json and the sweep goes on; the sweep then exits with the worst job's status.
"""

from __future__ import annotations

import logging
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ffrun.allocator import tune_cpu
from ffrun.atomic import write_json, write_text
from ffrun.checkpoint import CHECKPOINT, find_checkpoint
from ffrun.config import flatten, register_configs, validate
from ffrun.errors import FfrunError
from ffrun.loggers import RunLogger
from ffrun.models.field import build_field
from ffrun.tasks import Task, build_task
from ffrun.train import TrainResult, train

log = logging.getLogger("ffrun")

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3

# Keys that may differ between a run and the run that resumes it.
RESUME_FREE_KEYS = {"trainer.resume", "trainer.progress", "trainer.steps", "trainer.eval_every",
                    "trainer.ckpt_every", "device", "logger.name", "logger.images",
                    "trainer.precision"}


def resolve_device(spec: str) -> torch.device:
    """auto -> CUDA when available, else CPU; cpu; cuda; cuda:N."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise FfrunError(f"device={spec}: this machine has no CUDA device; use device=cpu or device=auto")
        try:
            dev = torch.device(spec)
        except RuntimeError:
            raise FfrunError(f"device={spec!r} is not a device; use auto, cpu, cuda or cuda:N") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FfrunError(f"device={spec}: only {torch.cuda.device_count()} CUDA device(s) here; use cuda:0...")
        return dev
    raise FfrunError(f"device={spec!r} is not a device; use auto, cpu, cuda or cuda:N")


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this run: CUDA memory allocated by torch on a GPU, else the process's peak RSS."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _same_experiment(a: dict, b: dict) -> bool:
    fa, fb = flatten(a), flatten(b)
    keys = (set(fa) | set(fb)) - RESUME_FREE_KEYS
    return all(fa.get(k) == fb.get(k) for k in keys)


def find_resume_checkpoint(resume: bool | str, config: dict, run_dir: Path) -> Path | None:
    """The checkpoint to continue from: that of the given run directory, or (resume=true) of the newest
    unfinished run of the same experiment under ./outputs."""
    if isinstance(resume, str):
        return find_checkpoint(resume, f"trainer.resume={resume}")
    candidates = []
    for ckpt in Path("outputs").rglob(CHECKPOINT):
        other = ckpt.parent
        if other.resolve() == run_dir.resolve():
            continue
        try:
            other_cfg = OmegaConf.to_container(OmegaConf.load(other / "config.yaml"))
        except Exception:
            continue
        if _same_experiment(other_cfg, config):
            candidates.append(ckpt)
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime)


@dataclass
class Job:
    """One experiment, ready to train: its config, run directory, task, field and learning rate."""

    cfg: DictConfig
    run_dir: Path
    device: torch.device
    config: dict  # the resolved config, as saved with checkpoints and metrics
    task: Task
    field: torch.nn.Module
    lr: float
    sigma: float | None
    label: str
    resume_from: Path | None = None

    def record(self, result: TrainResult, status: str) -> dict:
        """Write metrics.json for `result` with `status`; returns its content."""
        cfg = self.cfg
        rec = {
            "status": status,
            "reason": result.reason,
            "task": cfg.task.name,
            "encoding": cfg.encoding.name,
            "sigma": self.sigma,
            "seed": cfg.seed,
            "steps": cfg.trainer.steps,
            "step": result.step,
            "checkpoint_step": result.checkpoint_step,
            "lr": self.lr,
            "device": str(self.device),
            "wall_s": round(result.wall_s, 3),
            "peak_memory_mb": peak_memory_mb(self.device),
            "primary_metric": self.task.primary_metric,
            "metrics": result.metrics,
            "history": result.history,
            "resumed_from": str(self.resume_from) if self.resume_from else None,
            "config": self.config,
        }
        write_json(self.run_dir / "metrics.json", rec)
        return rec

    def finish(self, result: TrainResult) -> dict:
        """Write the task's outputs (when completed) and the final metrics.json."""
        if result.status == "completed":
            self.task.save(self.field, self.run_dir)
        rec = self.record(result, result.status)
        summary = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
        log.info("%s %s at step %d: %s (%.1f s)", self.label, result.status, result.step, summary, result.wall_s)
        return rec


def prepare(cfg: DictConfig, run_dir: Path, task: Task | None = None) -> Job:
    """Validate the config and build the task (unless one is shared in) and the field on the device."""
    validate(cfg)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        tune_cpu()
    seed_everything(cfg.seed)
    config = OmegaConf.to_container(cfg, resolve=True)
    resume_from = find_resume_checkpoint(cfg.trainer.resume, config, run_dir) if cfg.trainer.resume else None
    if cfg.trainer.resume is True and resume_from is None:
        log.warning("trainer.resume=true: no earlier run of this experiment under ./outputs has a checkpoint; "
                    "starting from step 0")
    if task is None:
        task = build_task(cfg.task, device, cfg.trainer.batch_size, cfg.seed)
    field = build_field(cfg.encoding, cfg.model, task.in_dim, task.out_dim, task.out_activation, cfg.seed,
                        grid_shape=task.grid_shape)
    field.to(device)
    sigma = float(cfg.encoding.sigma) if cfg.encoding.name == "gauss" else None
    label = f"{cfg.task.name}/{cfg.encoding.name}" + (f" sigma={sigma:g}" if sigma is not None else "")
    return Job(cfg, run_dir, device, config, task, field, float(cfg.trainer.lr), sigma, label, resume_from)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """One experiment end to end; returns the metrics.json content (its `status` says how it ended)."""
    job = prepare(cfg, run_dir)
    if job.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(job.device)
    log.info("run %s on %s -> %s%s", job.label, job.device, run_dir,
             f" (resuming {job.resume_from})" if job.resume_from else "")
    logger = RunLogger(run_dir, cfg.logger.name, cfg.logger.images)

    def log_evaluation(result: TrainResult) -> None:
        logger.log(result.history, job.task.preview(job.field) if logger.wants_images else None)

    try:
        result = train(job.task, job.field, cfg.trainer, job.lr, run_dir, job.config, resume_from=job.resume_from,
                       on_checkpoint=lambda r: job.record(r, "running"), on_evaluate=log_evaluation, desc=job.label)
    finally:
        logger.close()
    return job.finish(result)


register_configs()


def register_launcher() -> None:
    """`hydra/launcher=vectorized`. Hydra's plugin scan finds it in a regular install, but an editable
    install's import hook hides it from that scan, so ffrun registers it itself."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.ffrun_launcher.vectorized_launcher import VectorizedLauncher

    Plugins.instance().register(VectorizedLauncher)


register_launcher()

_job_started = False  # set once Hydra hands a composed config to the app
_failed_jobs: list[tuple[Path, str, int]] = []  # multirun jobs that did not complete, in this process


def _fail(run_dir: Path, cfg: DictConfig, status: str, reason: str, code: int) -> None:
    """Report a run that did not complete: one line on stderr, and its exit status. In a multirun the
    sweep goes on (the status is remembered and returned by main at the end), except on a signal."""
    print(f"ffrun: {'error' if status == 'failed' else status}: {reason}", file=sys.stderr)
    if status == "failed":
        write_json(run_dir / "metrics.json", {"status": "failed", "reason": reason, "task": cfg.task.name,
                                              "encoding": cfg.encoding.name, "seed": cfg.seed, "metrics": {},
                                              "config": OmegaConf.to_container(cfg)})
    if HydraConfig.get().mode == RunMode.MULTIRUN and status != "interrupted":
        _failed_jobs.append((run_dir, status, code))
        return
    sys.exit(code)


@hydra.main(config_path="pkg://ffrun.configs", config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> float:
    mark_job_started()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    return report(cfg, run_dir, lambda: run(cfg, run_dir))


def report(cfg: DictConfig, run_dir: Path, produce) -> float:
    """Run `produce()` (a job, or the end of one trained by the vectorized launcher) inside a Hydra job:
    save the resolved config, turn its outcome into ffrun's exit status, and return the job's primary
    metric to the sweeper (nan when it did not complete)."""
    try:
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        rec = produce()
    except FfrunError as e:
        _fail(run_dir, cfg, "failed", str(e), EXIT_BAD_INPUT)
        return float("nan")
    except Exception as e:  # a bug or an environment fault: keep the traceback in cli.log, record the failure
        log.error("unexpected error", exc_info=True)
        _fail(run_dir, cfg, "failed", f"{type(e).__name__}: {e} (traceback in {run_dir / 'cli.log'})", 1)
        return float("nan")
    if rec["status"] == "interrupted":
        import signal

        signum = signal.SIGTERM if "SIGTERM" in (rec["reason"] or "") else signal.SIGINT
        _fail(run_dir, cfg, "interrupted", rec["reason"] + f"; resume with trainer.resume={run_dir}", 128 + signum)
    if rec["status"] == "diverged":
        _fail(run_dir, cfg, "diverged", rec["reason"], EXIT_DIVERGED)
    return rec["metrics"].get(rec["primary_metric"], float("nan"))


def mark_job_started() -> None:
    """Called first by every Hydra app of ffrun: from here on, exit status 1 is not a config error."""
    global _job_started
    _job_started = True


def run_hydra_app(app) -> None:
    """Run a Hydra app, turning Hydra's exit 1 for a bad override or config (unknown key, wrong type,
    missing option), raised before the app starts, into ffrun's exit status 2 for bad input."""
    try:
        app()
    except SystemExit as e:
        if e.code == 1 and not _job_started:
            sys.exit(EXIT_BAD_INPUT)
        raise


def main() -> None:
    run_hydra_app(_app)
    if _failed_jobs:
        print(f"ffrun: {len(_failed_jobs)} job(s) of the sweep did not complete: "
              + "; ".join(f"{d} ({status})" for d, status, _ in _failed_jobs), file=sys.stderr)
        codes = {code for _, _, code in _failed_jobs}
        sys.exit(EXIT_BAD_INPUT if EXIT_BAD_INPUT in codes else max(codes))


if __name__ == "__main__":
    main()
