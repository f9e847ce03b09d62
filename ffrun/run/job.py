"""Running experiments: compose a config, prepare a job (device, seed, task, field, the checkpoint to
resume), train it alone or with the other members of a vectorized group through the one training loop,
write its run directory, and turn its outcome into ffrun's exit status.

Used by the `ffrun` app (ffrun.apps.cli), the vectorized launcher (hydra_plugins/ffrun_launcher) and the
benchmarks (ffrun.apps.bench); it imports none of them.

Exit status: 0 completed; 2 bad input or config (one line on stderr); 3 diverged; 128 + signal number
when interrupted by SIGINT/SIGTERM (after a checkpoint). In a multirun a failed or diverged job is
recorded in its metrics.json and the sweep goes on; the sweep then exits with the worst job's status.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ffrun.util.allocator import tune_cpu
from ffrun.util.atomic import write_json, write_text
from ffrun.train.checkpoint import CHECKPOINT, find_checkpoint, load_checkpoint
from ffrun.config import check_settings, flatten, register_configs, validate
from ffrun.util.errors import FfrunError
from ffrun.util.loggers import RunLogger, check_logger
from ffrun.models.field import build_field
from ffrun.models.registry import count_parameters, method_name
from ffrun.sigma.auto import is_auto, resolve_auto_sigma
from ffrun.tasks import Task, build_task
from ffrun.train.loop import Member, StopSignal, TrainResult, train, train_members

log = logging.getLogger("ffrun")

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3

# Keys that may differ between a run and the run that resumes it.
RESUME_FREE_KEYS = {"trainer.resume", "trainer.progress", "trainer.steps", "trainer.eval_every",
                    "trainer.ckpt_every", "device", "logger.name", "logger.images",
                    "trainer.precision"}

failed_jobs: list[tuple[Path, str, int]] = []  # multirun jobs that did not complete, in this process
sweep_dirs: dict[str, int] = {}  # multirun: each sweep folder of this process -> its jobs reported so far


def compose(overrides: list[str]) -> DictConfig:
    """ffrun's config with these overrides, through Hydra's compose API (no app, no run directory)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    register_configs()
    with initialize_config_module(config_module="ffrun.configs", version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


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


def memory_bytes(device: torch.device) -> int:
    """The memory of the device a run trains on: the GPU's, or this machine's physical memory."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(cfg: DictConfig, device: torch.device) -> None:
    """Refuse a network whose first layer obviously cannot fit (encoding.m=1e8): its 2m x width weights, their
    gradient and Adam's two moments in float32, against the whole memory of the device."""
    if cfg.encoding.name not in ("gauss", "posenc"):
        return
    need = 4 * 4 * 2 * int(cfg.encoding.m) * int(cfg.model.width)
    have = memory_bytes(device)
    if need > have:
        raise FfrunError(f"config: encoding.m={cfg.encoding.m} with model.width={cfg.model.width}: the first layer "
                         f"alone needs {need / 2**30:.1f} GiB for training, more than the {have / 2**30:.1f} GiB of "
                         f"{device}; use a smaller encoding.m (the paper's is 256)")


SMALL_STEP_FLOPS = 1e10  # below this (a 128 px image, 4x256) trainer.threads=auto takes one CPU thread (scripts/threads.py)


def step_flops(cfg: DictConfig, task: Task) -> float | None:
    """Floating-point operations of one training step of a point-regression task (forward and backward of
    the MLP, 6 per multiply-add and point), or None when the task does not say how many points it trains on."""
    train = getattr(task, "train", None)
    if not isinstance(train, tuple) or not hasattr(train[0], "shape"):
        return None
    points = cfg.trainer.batch_size or train[0].shape[0]
    width = int(cfg.model.width)
    first = 2 * int(cfg.encoding.m) if cfg.encoding.name in ("gauss", "posenc") else task.in_dim
    return 6.0 * points * width * (first + (int(cfg.model.depth) - 1) * width)


def set_threads(cfg: DictConfig, task: Task, device: torch.device) -> None:
    """trainer.threads on the CPU: a number, or auto (one thread when a step is small: with two or more
    threads a small step mostly waits on synchronisation, many times slower on a loaded machine)."""
    threads = cfg.trainer.get("threads", "auto")
    if device.type != "cpu":
        return
    if isinstance(threads, str) and threads.strip().lower() == "auto":
        flops = step_flops(cfg, task)
        if flops is not None and flops < SMALL_STEP_FLOPS and torch.get_num_threads() > 1:
            log.info("trainer.threads=auto: one CPU thread for this small problem (%.2g FLOP per step)", flops)
            torch.set_num_threads(1)
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise FfrunError(f"config: trainer.threads={threads!r} is out of range: use auto or a number of threads >= 1")
    torch.set_num_threads(threads)


def memory_error(e: BaseException) -> bool:
    """An allocation that failed (CPU or CUDA), as torch or Python report it."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    return isinstance(e, RuntimeError) and any(s in str(e) for s in ("can't allocate memory", "out of memory"))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def config_differences(old: dict, new: dict, free: frozenset[str] = frozenset()) -> list[str]:
    """The keys (other than RESUME_FREE_KEYS and `free`) in which two resolved configs differ, as
    `key (old -> new)`."""
    fa, fb = flatten(old), flatten(new)
    # A key only one side has was added or removed by an ffrun update, not chosen by the user.
    keys = sorted((set(fa) & set(fb)) - RESUME_FREE_KEYS - free)
    return [f"{k} ({fa.get(k)!r:.40} -> {fb.get(k)!r:.40})" for k in keys if fa.get(k) != fb.get(k)]


def _unfinished(run_dir: Path, steps: int) -> bool:
    """A run with training left to do for `steps`: interrupted, killed, failed, or completed at fewer steps.
    One whose metrics.json cannot be read was killed before its first record."""
    try:
        rec = json.loads((run_dir / "metrics.json").read_text())
        return rec.get("status") != "completed" or int(rec.get("step") or 0) < steps
    except (OSError, ValueError, TypeError, AttributeError):
        return True


SIGMA_KEYS = frozenset({"sigma", "encoding.sigma"})


def _chose_sigma_auto(run_dir: Path) -> bool:
    """Whether the run in `run_dir` predicted its sigma (sigma=auto): its metrics.json records how."""
    try:
        return isinstance(json.loads((run_dir / "metrics.json").read_text()).get("sigma_auto"), dict)
    except (OSError, ValueError, AttributeError):
        return False


def find_resume_checkpoint(resume: bool | str, config: dict, run_dir: Path, auto: bool = False) -> Path | None:
    """The checkpoint to continue from: that of the given run directory (refused when that run is another
    experiment, or already past trainer.steps), or (resume=true) of the newest unfinished run of the same
    experiment under ./outputs. The checkpoint's own config decides, not the config.yaml beside it.
    `auto` (sigma=auto): a run that predicted its own sigma matches whatever sigma it chose, since the
    prediction depends on the step count; `prepare` then keeps that sigma."""
    if isinstance(resume, str):
        ckpt = find_checkpoint(resume, f"trainer.resume={resume}")
        state = load_checkpoint(ckpt)
        free = SIGMA_KEYS if auto and _chose_sigma_auto(ckpt.parent) else frozenset()
        differences = config_differences(state["config"], config, free)
        if differences:
            shown = ", ".join(differences[:6]) + (f" and {len(differences) - 6} more" if len(differences) > 6 else "")
            raise FfrunError(f"trainer.resume={resume}: that run is another experiment, it differs in {shown}; "
                             "resume with the run's own settings, or start a new run without trainer.resume")
        steps = config["trainer"]["steps"]
        if isinstance(state["step"], int) and state["step"] > steps:
            raise FfrunError(f"trainer.resume={resume}: that run is already at step {state['step']}, past "
                             f"trainer.steps={steps}; ask for trainer.steps>={state['step']} to continue it")
        return ckpt
    candidates = []
    for ckpt in Path("outputs").rglob(CHECKPOINT):
        other = ckpt.parent
        if (not ckpt.is_file() or other.resolve() == run_dir.resolve()
                or not _unfinished(other, config["trainer"]["steps"])):
            continue  # not a regular file (reading a FIFO would wait forever), itself, or nothing left to train
        free = SIGMA_KEYS if auto and _chose_sigma_auto(other) else frozenset()
        try:
            other_cfg = OmegaConf.to_container(OmegaConf.load(other / "config.yaml"))
        except Exception:
            continue
        if not config_differences(other_cfg, config, free):
            candidates.append((ckpt, free))
    for ckpt, free in sorted(candidates, key=lambda c: c[0].stat().st_mtime, reverse=True):
        try:  # config.yaml is only the quick look: the checkpoint is what resuming loads
            if not config_differences(load_checkpoint(ckpt)["config"], config, free):
                return ckpt
        except FfrunError as e:
            log.warning("trainer.resume=true: skipping %s: %s", ckpt, e)
    return None


def write_config(cfg: DictConfig, run_dir: Path) -> None:
    """The resolved config as config.yaml, before any training: `trainer.resume=true` finds a killed run by it.
    With sigma=auto not yet predicted, sigma stays `auto` (rewritten with the chosen value by `prepare`)."""
    if is_auto(cfg.sigma):
        plain = OmegaConf.to_container(cfg, resolve=False)
        plain["encoding"]["sigma"] = "auto"
        cfg = OmegaConf.create(plain)
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


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

    def record(self, result: TrainResult, status: str) -> dict:
        """Write metrics.json for `result` with `status`; returns its content."""
        rec = self.content(result, status)
        write_json(self.run_dir / "metrics.json", rec)
        return rec

    def content(self, result: TrainResult, status: str) -> dict:
        """metrics.json's content for `result` with `status`."""
        cfg = self.cfg
        rec = {
            "status": status,
            "reason": result.reason,
            "task": cfg.task.name,
            "encoding": cfg.encoding.name,
            "model": cfg.model.get("name", "mlp"),
            "method": method_name(cfg.encoding.name, cfg.model.get("name", "mlp")),
            "params": count_parameters(self.field),
            "sizes": dict(getattr(self.field, "sizes", {})),
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
        if result.signal is not None:
            rec["signal"] = result.signal
        if self.sigma_auto is not None:
            rec["sigma_auto"] = self.sigma_auto
        return rec

    def finish(self, result: TrainResult) -> dict:
        """Write the task's outputs (when completed) and the final metrics.json."""
        if result.status == "completed":
            self.task.save(self.field, self.run_dir)
        rec = self.record(result, result.status)
        summary = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
        log.info("%s %s at step %d: %s (%.1f s)", self.label, result.status, result.step, summary, result.wall_s)
        return rec

    def member(self, logger: RunLogger, result: TrainResult | None = None) -> Member:
        """This job on the training loop's member axis: checkpoints mark metrics.json "running", and every
        evaluation goes to its logger."""

        def log_evaluation(r: TrainResult) -> None:
            logger.log(r.history, self.task.preview(self.field) if logger.wants_images else None)

        return Member(self.run_dir, self.config, self.lr, result or TrainResult(),
                      on_checkpoint=lambda r: self.record(r, "running"), on_evaluate=log_evaluation)

    def logger(self) -> RunLogger:
        return RunLogger(self.run_dir, self.cfg.logger.name, self.cfg.logger.images)


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
    sigma_auto = None
    if auto:
        chosen, sigma_auto = resolve_auto_sigma(cfg, task)
        if chosen is not None:
            log.info("sigma=auto: %s chose sigma %.4g in %.1f s", sigma_auto["method"], chosen, sigma_auto["seconds"])
        if (run_dir / "config.yaml").is_file():
            write_config(cfg, run_dir)  # now with the chosen sigma
    config = OmegaConf.to_container(cfg, resolve=True)
    resume_from = find_resume_checkpoint(cfg.trainer.resume, config, run_dir, auto) if cfg.trainer.resume else None
    if resume_from is not None and auto and cfg.encoding.name == "gauss":
        # The resumed run's own choice: predicted for its step count, it is what its weights were trained with.
        kept = load_checkpoint(resume_from)["config"]["sigma"]
        if kept != cfg.sigma:
            log.info("sigma=auto: keeping sigma %.4g chosen by the resumed run %s", kept, resume_from.parent)
            OmegaConf.update(cfg, "sigma", float(kept))
            sigma_auto = {**(sigma_auto or {}), "sigma": float(kept), "predicted_now": chosen,
                          "kept_from": str(resume_from.parent)}
            config = OmegaConf.to_container(cfg, resolve=True)
            if (run_dir / "config.yaml").is_file():
                write_config(cfg, run_dir)
    if cfg.trainer.resume is True and resume_from is None:
        log.warning("trainer.resume=true: no earlier run of this experiment under ./outputs has a checkpoint; "
                    "starting from step 0")
    check_fits(cfg, device)
    if task is None:
        task = build_task(cfg.task, device, cfg.trainer.batch_size, cfg.seed)
    field = build_field(cfg.encoding, cfg.model, task.in_dim, task.out_dim, task.out_activation, cfg.seed,
                        grid_shape=task.grid_shape, bounds=task.bounds)
    field.to(device)
    set_threads(cfg, task, device)
    sigma = float(cfg.encoding.sigma) if cfg.encoding.name == "gauss" else None
    label = f"{cfg.task.name}/{method_name(cfg.encoding.name, cfg.model.get('name', 'mlp'))}" + (
        f" sigma={sigma:g}" if sigma is not None else "")
    return Job(cfg, run_dir, device, config, task, field, float(cfg.trainer.lr), sigma, label, resume_from,
               sigma_auto)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """One experiment end to end; returns the metrics.json content (its `status` says how it ended)."""
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
        # What the run had when it stopped (history, step, checkpoint step), for the failure record.
        e.ffrun_record = job.content(member.result, "failed")
        raise
    finally:
        logger.close()


def train_together(jobs: list[Job]) -> list[TrainResult]:
    """Train jobs that share a task object (see `ffrun.train.vectorized.group_key`) as one batched network, through
    the same loop as a single run; each job's run directory gets what its separate run would write, its
    config.yaml first. Returns one TrainResult per job (its final metrics.json is left to `Job.finish`)."""
    from ffrun.train.vectorized import BatchedTraining

    for job in jobs:
        # The vectorized launcher claims its members' directories first, and leaves refused jobs to `report`.
        refused = None if job.run_dir.resolve() in _locks else claim_run_dir(job.run_dir, job=None)
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


def _config_for_record(cfg: DictConfig) -> dict:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # the resolution itself failed: keep what was given
        return OmegaConf.to_container(cfg, resolve=False)


def _bare_record(cfg: DictConfig) -> dict:
    """metrics.json for a run that stopped before its first step."""
    return {"task": cfg.task.name, "encoding": cfg.encoding.name, "seed": cfg.seed, "step": 0,
            "checkpoint_step": None, "metrics": {}, "history": [], "config": _config_for_record(cfg)}


def fail(run_dir: Path, cfg: DictConfig, status: str, reason: str, code: int, exit_on_signal: bool = True,
         partial: dict | None = None) -> None:
    """Report a run that did not complete: one line on stderr, metrics.json (what the run had when it
    stopped, or a bare record when it stopped before training), and its exit status. In a multirun the
    sweep goes on (the status is remembered and returned by the app at the end), except on a signal."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    unwritten = ""
    if partial is not None or status == "failed":
        rec = dict(partial) if partial else _bare_record(cfg)
        rec = {"status": status, "reason": reason, **{k: v for k, v in rec.items() if k not in ("status", "reason")}}
        if status == "interrupted":
            rec["signal"] = code - 128
        try:
            write_json(run_dir / "metrics.json", rec)
        except Exception as e:  # a full disk: said on the same line, the run's own reason comes first
            unwritten = f" ({run_dir / 'metrics.json'} not written: {' '.join(str(e).split())[:200]})"
    print(f"ffrun: {'error' if status == 'failed' else status}: {reason}{unwritten}", file=sys.stderr)
    if status == "interrupted" and not exit_on_signal:
        return  # a member of a vectorized group: the launcher exits once every member is reported
    if HydraConfig.get().mode == RunMode.MULTIRUN and status != "interrupted":
        failed_jobs.append((run_dir, status, code))
        return
    sys.exit(code)


LOCK_FILE = ".ffrun.lock"
_locks: dict[Path, int] = {}  # run directories this process holds, by resolved path -> the lock file's fd
_claims: dict[Path, object] = {}  # run directories a job of this process has used -> that job's number


def _job_number() -> object:
    from hydra.core.hydra_config import HydraConfig

    try:
        return OmegaConf.select(HydraConfig.get(), "job.num", default=None, throw_on_missing=False)
    except Exception:  # outside a Hydra job
        return None


def claim_run_dir(run_dir: Path, job: object = "current") -> str | None:
    """Hold `run_dir` for one job (`job`: its number in the sweep; by default the current Hydra job's):
    None when held, else why not, as one line. Refused: a directory another process holds, one an earlier
    job of this process (another job of the same sweep) used, and a lock that cannot be taken."""
    job = _job_number() if job == "current" else job
    key = run_dir.resolve()
    if key in _claims and _claims[key] != job:
        return (f"{run_dir} is also the run directory of job {_claims[key]} of this sweep; give every job its "
                "own directory (hydra.sweep.subdir)")
    try:
        held = lock_run_dir(run_dir)
    except OSError as e:
        return (f"cannot lock {run_dir / LOCK_FILE}: {e.strerror or e}; it must be a regular file (remove it) in "
                "a writable run directory, or give this run another hydra.run.dir")
    if not held:
        return (f"{run_dir} is in use by another ffrun run (it holds {run_dir / LOCK_FILE}); give this run its own "
                "hydra.run.dir, or wait for that run to end")
    _claims[key] = job
    return None


def _claim_before_hydra_writes(subdir: str) -> str | None:
    """`hydra.output_subdir` (configs/config.yaml): Hydra resolves it inside each job just before it writes
    `.hydra/` into the run directory, so the directory is claimed there; a refused job gets None, and Hydra
    writes nothing into a directory that belongs to another run (`report` then refuses the job)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        output_dir = HydraConfig.get().runtime.output_dir
    except Exception:  # not inside a job (printing the config): nothing to claim
        return subdir
    return subdir if claim_run_dir(Path(output_dir)) is None else None


OmegaConf.register_new_resolver("ffrun_claim", _claim_before_hydra_writes, replace=True)


def lock_run_dir(run_dir: Path) -> bool:
    """Hold `run_dir` for this process (an exclusive flock on a file in it; the OS releases it when the
    process ends, crashed or not). False when another process holds it. Reentrant within a process."""
    key = run_dir.resolve()
    if key in _locks:
        return True
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _locks[key] = fd
    return True


def unlock_run_dir(run_dir: Path) -> None:
    fd = _locks.pop(run_dir.resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor releases the flock


def _raise_stop(signum, frame):
    raise StopSignal(signum)


def report(cfg: DictConfig, run_dir: Path, produce: Callable[[], dict], exit_on_signal: bool = True) -> float:
    """Run `produce()` (a job, or the end of one trained by the vectorized launcher) inside a Hydra job:
    hold the run directory, save the resolved config, turn its outcome into ffrun's exit status, and
    return the job's primary metric to the sweeper (nan when it did not complete)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.get().mode == RunMode.MULTIRUN:  # `ffrun -m` names the folder for ffrun-summary at the end
        sweep = str(HydraConfig.get().sweep.dir)
        sweep_dirs[sweep] = sweep_dirs.get(sweep, 0) + 1

    refused = claim_run_dir(run_dir)
    if refused:
        # Nothing is written: the directory and every file in it belong to the run that holds it.
        print(f"ffrun: error: {refused}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            failed_jobs.append((run_dir, "failed", EXIT_BAD_INPUT))
            return float("nan")
        sys.exit(EXIT_BAD_INPUT)
    # SIGINT/SIGTERM outside the training loop (loading data, writing outputs) end the run as interrupted;
    # the loop installs its own handler, which finishes the current step first.
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        return _report(cfg, run_dir, produce, exit_on_signal)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        unlock_run_dir(run_dir)


def _report(cfg: DictConfig, run_dir: Path, produce: Callable[[], dict], exit_on_signal: bool) -> float:
    try:
        check_settings(cfg)  # before write_config resolves anything derived from a bad setting
        write_config(cfg, run_dir)
        rec = produce()
    except StopSignal as e:
        name = signal.Signals(e.signum).name
        partial = getattr(e, "ffrun_record", None)
        where = "before training started" if partial is None else f"at step {partial.get('step')}"
        if partial is None:
            partial = _bare_record(cfg)
        ckpt = partial.get("checkpoint_step")
        hint = f"; resume with trainer.resume={run_dir}" if ckpt is not None else "; run the command again"
        fail(run_dir, cfg, "interrupted", f"stopped by {name} {where}{hint}", 128 + e.signum, exit_on_signal,
             partial=partial)
        return float("nan")
    except FfrunError as e:
        fail(run_dir, cfg, "failed", str(e), EXIT_BAD_INPUT, partial=getattr(e, "ffrun_record", None))
        return float("nan")
    except Exception as e:  # a bug or an environment fault: keep the traceback in cli.log, record the failure
        if memory_error(e):
            first = " ".join(str(e).split())[:200]
            fail(run_dir, cfg, "failed", f"out of memory ({first}); use a smaller encoding.m, model.width, "
                 "task size or trainer.batch_size, or a device with more memory", EXIT_BAD_INPUT,
                 partial=getattr(e, "ffrun_record", None))
            return float("nan")
        log.error("unexpected error", exc_info=True)
        fail(run_dir, cfg, "failed", f"{type(e).__name__}: {e} (traceback in {run_dir / 'cli.log'})", 1,
             partial=getattr(e, "ffrun_record", None))
        return float("nan")
    if rec["status"] == "interrupted":
        fail(run_dir, cfg, "interrupted", rec["reason"] + f"; resume with trainer.resume={run_dir}",
             128 + rec["signal"], exit_on_signal)
    if rec["status"] == "diverged":
        fail(run_dir, cfg, "diverged", rec["reason"], EXIT_DIVERGED)
    return rec["metrics"].get(rec["primary_metric"], float("nan"))
