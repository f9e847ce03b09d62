"""A run's directory: one run at a time holds it (an flock the OS releases when the process ends), and
its config.yaml is written before any training, so `trainer.resume=true` finds a run killed at any moment.

The holdings are per process (`_locks`, `_claims`): a sweep's jobs run in one process, one after another or
as a vectorized group, and the lock file's descriptor must stay open for as long as the run holds it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ffrun.sigma.auto import is_auto
from ffrun.util.atomic import write_text

LOCK_FILE = ".ffrun.lock"
# Where Hydra writes a job's `.hydra/` when its directory already holds an earlier run: moved over `.hydra/` once the
# job is accepted (`adopt_staged_hydra`), removed when it is refused, so a refusal leaves the earlier run as it was.
STAGED_HYDRA = ".hydra.incoming"
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
        output_dir = Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # not inside a job (printing the config): nothing to claim
        return subdir
    if claim_run_dir(output_dir) is not None:
        return None
    return STAGED_HYDRA if holds_earlier_run(output_dir) else subdir


def holds_earlier_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds what an earlier run left that a new run must not overwrite: a checkpoint, or the
    record of a run that got past its start (a run refused before it began leaves nothing worth keeping)."""
    from ffrun.run.record import RunRecord, Status

    if (run_dir / "checkpoint.pt").is_file():
        return True
    if not (run_dir / "metrics.json").is_file():
        return False
    rec = RunRecord.read(run_dir)
    return rec is None or rec.status != Status.FAILED or bool(rec.step)


def adopt_staged_hydra(run_dir: Path) -> None:
    """The job in `run_dir` was accepted: Hydra's files for it replace the earlier run's `.hydra/`."""
    staged = run_dir / STAGED_HYDRA
    if staged.is_dir():
        shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
        os.replace(staged, run_dir / ".hydra")


def set_aside(run_dir: Path, copy: bool = False) -> Path:
    """Keep the run in `run_dir` as `<run_dir>.earlier-N` (the first N free) before a new run takes the directory:
    its files are moved there (`copy`: copied, for a run the new one continues), nothing is deleted. The lock and
    Hydra's staged files of the new job stay; cli.log, which the running job's logger appends to, is copied and
    emptied. Returns where the earlier run now is."""
    n = 1
    while (aside := run_dir.with_name(f"{run_dir.name}.earlier-{n}")).exists():
        n += 1
    aside.mkdir()
    for entry in sorted(run_dir.iterdir()):
        if entry.name in (LOCK_FILE, STAGED_HYDRA):
            continue
        if entry.is_dir() and not entry.is_symlink() and copy:
            shutil.copytree(entry, aside / entry.name, symlinks=True)
        elif (copy or entry.name == "cli.log") and not entry.is_dir():
            shutil.copy2(entry, aside / entry.name, follow_symlinks=False)
            if not copy:
                os.truncate(entry, 0)
        else:
            os.replace(entry, aside / entry.name)
    return aside


def discard_staged_hydra(run_dir: Path) -> None:
    """The job in `run_dir` was refused: the earlier run's `.hydra/` stays, Hydra's new files go."""
    shutil.rmtree(run_dir / STAGED_HYDRA, ignore_errors=True)


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


def holds(run_dir: Path) -> bool:
    """Whether this process holds `run_dir` already (the vectorized launcher claims its members first)."""
    return run_dir.resolve() in _locks


def write_config(cfg: DictConfig, run_dir: Path) -> None:
    """The resolved config as config.yaml, before any training: `trainer.resume=true` finds a killed run by it.
    With sigma=auto not yet predicted, sigma stays `auto` (rewritten with the chosen value by `prepare`)."""
    if is_auto(cfg.sigma):
        plain = OmegaConf.to_container(cfg, resolve=False)
        plain["encoding"]["sigma"] = "auto"
        cfg = OmegaConf.create(plain)
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
