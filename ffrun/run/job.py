"""One experiment from config to outputs: prepare a job (device, seed, task, field, the checkpoint to
resume), train it alone or with the other members of a vectorized group through the one training loop,
and write its run directory, metrics.json through `RunRecord`.

Used by the `ffrun` app (ffrun.apps.cli, through `ffrun.run.outcome.report`), the vectorized launcher
(hydra_plugins/ffrun_launcher) and the benchmarks (ffrun.apps.bench); it imports none of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ffrun.config import validate
from ffrun.models.field import build_field
from ffrun.models.registry import count_parameters, method_name
from ffrun.run.device import check_fits, peak_memory_mb, resolve_device, seed_everything, set_threads
from ffrun.run.record import RunRecord, Status, best_evaluation
from ffrun.run.resume import find_resume_checkpoint, keep_resumed_sigma
from ffrun.run.rundir import claim_run_dir, holds, write_config
from ffrun.sigma.auto import is_auto, resolve_auto_sigma
from ffrun.tasks import Task, build_task
from ffrun.train.loop import Member, TrainResult, train, train_members
from ffrun.util import blas
from ffrun.util.allocator import tune_cpu
from ffrun.util.errors import FfrunError
from ffrun.util.loggers import RunLogger, check_logger

log = logging.getLogger("ffrun")

# In a job of ffrun's SLURM launcher: how many times the job was requeued (time limits, preemptions) to get here,
# recorded in metrics.json as `requeues`; None elsewhere.
_requeues: int | None = None


def set_requeues(count: int | None) -> None:
    global _requeues
    _requeues = count


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
    sigma_auto: dict | None = None  # sigma=auto: how sigma was chosen (method, candidates, scores, seconds)

    def record(self, result: TrainResult, status: Status) -> RunRecord:
        """Write metrics.json for `result` with `status`; returns the record."""
        rec = self.content(result, status)
        rec.write(self.run_dir)
        return rec

    def content(self, result: TrainResult, status: Status) -> RunRecord:
        """The record of `result` with `status` (what metrics.json holds)."""
        cfg = self.cfg
        extra = {}
        if result.signal is not None:
            extra["signal"] = result.signal
        if self.sigma_auto is not None:
            extra["sigma_auto"] = self.sigma_auto
        if _requeues is not None:
            extra["requeues"] = _requeues
        if getattr(self.task, "protocol", None):
            extra["protocol"] = self.task.protocol  # which pixels a score is of (the image task's protocols)
        if self.device.type == "cpu":
            extra["blas"] = blas.report()  # the matrix path this run's products took (ffrun.util.blas)
        best = best_evaluation(result.history, self.task.primary_metric, self.task.selection_metric)
        if best is not None:
            extra["best"] = best
        return RunRecord(
            status=Status(status), reason=result.reason, task=cfg.task.name, encoding=cfg.encoding.name,
            model=cfg.model.get("name", "mlp"), method=method_name(cfg.encoding.name, cfg.model.get("name", "mlp")),
            params=count_parameters(self.field), sizes=dict(getattr(self.field, "sizes", {})), sigma=self.sigma,
            seed=cfg.seed, steps=cfg.trainer.steps, step=result.step, checkpoint_step=result.checkpoint_step,
            lr=self.lr, device=str(self.device), wall_s=round(result.wall_s, 3),
            peak_memory_mb=peak_memory_mb(self.device), primary_metric=self.task.primary_metric,
            metrics=result.metrics, history=result.history,
            resumed_from=str(self.resume_from) if self.resume_from else None, config=self.config, extra=extra)

    def finish(self, result: TrainResult) -> RunRecord:
        """Write the task's outputs (when completed) and the final metrics.json."""
        if result.status == Status.COMPLETED:
            self.task.save(self.field, self.run_dir)
        elif result.status == Status.INTERRUPTED:
            self.save_progress()  # the pictures of the field it stopped with, beside its checkpoint
        rec = self.record(result, result.status)
        summary = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
        log.info("%s %s at step %d: %s (%.1f s)", self.label, result.status, result.step, summary, result.wall_s)
        return rec

    def save_progress(self, previews: dict | None = None) -> None:
        """The task's pictures of the field so far; a picture that cannot be written never stops training."""
        try:
            self.task.save_progress(self.field, self.run_dir, previews)
        except Exception as e:  # noqa: BLE001 (a picture must never turn a run into a failure)
            log.warning("%s: progress pictures not written: %s", self.label, e)

    def member(self, logger: RunLogger, result: TrainResult | None = None) -> Member:
        """This job on the training loop's member axis: checkpoints mark metrics.json "running", and every
        evaluation goes to its logger."""

        def log_evaluation(r: TrainResult) -> None:
            previews = self.task.preview(self.field)
            logger.log(r.history, previews if logger.wants_images else None)
            self.save_progress(previews)

        return Member(self.run_dir, self.config, self.lr, result or TrainResult(),
                      on_checkpoint=lambda r: self.record(r, Status.RUNNING), on_evaluate=log_evaluation)

    def logger(self) -> RunLogger:
        return RunLogger(self.run_dir, self.cfg.logger.name, self.cfg.logger.images)


def _choose_sigma(cfg: DictConfig, task: Task, run_dir: Path) -> tuple[float | None, dict | None]:
    """sigma=auto: predict sigma from the task's training data into `cfg` (and config.yaml, when written)."""
    chosen, sigma_auto = resolve_auto_sigma(cfg, task)
    if chosen is not None:
        log.info("sigma=auto: %s chose sigma %.4g in %.1f s", sigma_auto["method"], chosen, sigma_auto["seconds"])
    if (run_dir / "config.yaml").is_file():
        write_config(cfg, run_dir)  # now with the chosen sigma
    return chosen, sigma_auto


def prepare(cfg: DictConfig, run_dir: Path, task: Task | None = None) -> Job:
    """Validate the config and build the task (unless one is shared in) and the field on the device."""
    validate(cfg)
    check_logger(cfg.logger.name)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        tune_cpu()
    seed_everything(cfg.seed)
    auto = is_auto(cfg.sigma)
    if task is None and auto:  # sigma=auto is predicted from the task's training data, before anything else
        task = build_task(cfg.task, device, cfg.trainer.batch_size, cfg.seed)
    chosen, sigma_auto = _choose_sigma(cfg, task, run_dir) if auto else (None, None)
    config = OmegaConf.to_container(cfg, resolve=True)
    resume_from = find_resume_checkpoint(cfg.trainer.resume, config, run_dir, auto) if cfg.trainer.resume else None
    if resume_from is not None and auto and cfg.encoding.name == "gauss":
        kept = keep_resumed_sigma(cfg, run_dir, resume_from, chosen, sigma_auto)
        if kept is not None:
            sigma_auto, config = kept, OmegaConf.to_container(cfg, resolve=True)
    if cfg.trainer.resume is True and resume_from is None:
        log.warning("trainer.resume=true: no earlier run of this experiment under ./outputs has a checkpoint; "
                    "starting from step 0")
    check_fits(cfg, device)
    if task is None:
        task = build_task(cfg.task, device, cfg.trainer.batch_size, cfg.seed)
    field = build_field(cfg.encoding, cfg.model, task.in_dim, task.out_dim, task.out_activation, cfg.seed,
                        grid_shape=task.grid_shape, bounds=task.bounds)
    field.to(device)
    set_threads(cfg, task, field, device)
    sigma = float(cfg.encoding.sigma) if cfg.encoding.name == "gauss" else None
    label = f"{cfg.task.name}/{method_name(cfg.encoding.name, cfg.model.get('name', 'mlp'))}" + (
        f" sigma={sigma:g}" if sigma is not None else "")
    return Job(cfg, run_dir, device, config, task, field, float(cfg.trainer.lr), sigma, label, resume_from,
               sigma_auto)


def execute(cfg: DictConfig, run_dir: Path) -> RunRecord:
    """One experiment end to end; returns its record (its `status` says how it ended). An exception keeps
    what the run had when it stopped (history, step, checkpoint step) as `ffrun_record`, for the failure
    record `ffrun.run.outcome.report` writes."""
    job = prepare(cfg, run_dir)
    if job.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(job.device)
    log.info("run %s on %s -> %s%s", job.label, job.device, run_dir,
             f" (resuming {job.resume_from})" if job.resume_from else "")
    logger = job.logger()
    member = job.member(logger)
    try:
        result = train(job.task, job.field, cfg.trainer, job.lr, run_dir, job.config, resume_from=job.resume_from,
                       on_checkpoint=member.on_checkpoint, on_evaluate=member.on_evaluate, desc=job.label,
                       result=member.result)
        return job.finish(result)
    except BaseException as e:
        e.ffrun_record = job.content(member.result, Status.FAILED)
        raise
    finally:
        logger.close()


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """One experiment end to end (notebooks, scripts, ffrun-ntk); returns what it wrote to metrics.json."""
    return execute(cfg, run_dir).to_dict()


def train_together(jobs: list[Job]) -> list[TrainResult]:
    """Train jobs that share a task object (see `ffrun.train.vectorized.group_key`) as one batched network, through
    the same loop as a single run; each job's run directory gets what its separate run would write, its
    config.yaml first. Returns one TrainResult per job (its final metrics.json is left to `Job.finish`)."""
    from ffrun.train.vectorized import BatchedTraining

    for job in jobs:
        # The vectorized launcher claims its members' directories first, and leaves refused jobs to `report`.
        refused = None if holds(job.run_dir) else claim_run_dir(job.run_dir, job=None)
        if refused:
            raise FfrunError(refused)
        write_config(job.cfg, job.run_dir)
    trainee = BatchedTraining(jobs, jobs[0].cfg.trainer.precision)
    loggers = [job.logger() for job in jobs]
    try:
        return train_members(trainee, [job.member(lg) for job, lg in zip(jobs, loggers)], jobs[0].cfg.trainer,
                             desc=f"{jobs[0].cfg.task.name} x{len(jobs)} (vectorized)")
    finally:
        for lg in loggers:
            lg.close()
