"""How a job ends, as ffrun reports it: one line on stderr, metrics.json, and the exit status.

Exit status: 0 completed; 2 bad input or config (one line on stderr); 3 diverged; 128 + signal number
when interrupted by SIGINT/SIGTERM (after a checkpoint). In a multirun a failed or diverged job is
recorded in its metrics.json and the sweep goes on; the app then exits with the worst job's status, which
it reads from the `SweepTally` that `report` kept while the app ran (see `tallying`).
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

from omegaconf import DictConfig, OmegaConf

from ffrun.config import check_settings, validate
from ffrun.run.device import memory_error
from ffrun.run.record import RECORD, RunRecord, Status
from ffrun.run.resume import (
    continue_here,
    finished_here,
    refuse_another_experiment,
    resume_command,
    unfinished_run_to_continue,
)
from ffrun.run.rundir import (
    LOCK_FILE,
    STAGED_HYDRA,
    adopt_staged_hydra,
    claim_run_dir,
    discard_staged_hydra,
    holds_earlier_run,
    set_aside,
    unlock_run_dir,
    write_config,
)
from ffrun.train.checkpoint import CHECKPOINT
from ffrun.train.loop import STOP_SIGNALS, StopSignal
from ffrun.util.atomic import NotWritable
from ffrun.util.errors import FfrunError, ending, is_ending

log = logging.getLogger("ffrun")

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3

# What a run stopped before its first step writes into metrics.json: these keys only.
BARE_KEYS = ("status", "reason", "task", "encoding", "seed", "step", "checkpoint_step", "metrics", "history", "config")


@dataclass
class SweepTally:
    """What the jobs of the app's sweeps leave for it to say once Hydra returns: each sweep folder with the
    number of its jobs reported, and every job that did not complete (run directory, status, exit status)."""

    sweeps: dict[str, int] = field(default_factory=dict)
    failed: list[tuple[Path, Status, int]] = field(default_factory=list)
    reported: set[Path] = field(default_factory=set)  # run directories of the jobs `report` ran in this process

    def exit_status(self) -> int:
        """0 when every job completed; else bad input (2) if any job had it, or the highest other status."""
        codes = {code for _, _, code in self.failed}
        if not codes:
            return 0
        return EXIT_BAD_INPUT if EXIT_BAD_INPUT in codes else max(codes)


_tally = SweepTally()  # where `report` counts jobs: the running app's tally (see `tallying`)


@contextmanager
def tallying(tally: SweepTally) -> Iterator[SweepTally]:
    """Count the jobs reported while the block runs into `tally` (the launcher reports jobs in-process, so the
    app cannot hand its tally to each call of `report` itself)."""
    global _tally
    previous, _tally = _tally, tally
    try:
        yield tally
    finally:
        _tally = previous


def tally_job(sweep_dir: Path, run_dir: Path | None, num: int, note: str = "", say: bool = True) -> None:
    """A job of a sweep that ran in another process (a SLURM job, a joblib worker): its record says how it ended. One
    that did not complete counts in the exit status and, with `say` (its own line went to a log, not to this
    terminal), is one line on stderr with its run directory, its reason and `note`."""
    if run_dir is not None and run_dir.resolve() in _tally.reported:
        return  # it ran in this process (joblib with one job at a time): `report` has counted it
    _tally.sweeps[str(sweep_dir)] = _tally.sweeps.get(str(sweep_dir), 0) + 1
    rec = RunRecord.read(run_dir) if run_dir is not None else None
    if rec is not None and rec.status == Status.COMPLETED:
        return
    status = rec.status if rec is not None and isinstance(rec.status, Status) else Status.FAILED
    if rec is None:
        reason = f"no {RECORD} in its run directory" if run_dir is not None else "it did not run"
    elif status == Status.RUNNING:
        reason = f"it ended without a final record (killed?) at step {rec.step}; its {RECORD} still says running"
    else:
        reason = rec.reason or f"{RECORD} gives no reason"
        if status == Status.INTERRUPTED and rec.checkpoint_step is not None and "resume with" not in reason:
            reason += f"; resume with: {resume_command(run_dir, in_job=False)}"
    code = 1
    if status == Status.DIVERGED:
        code = EXIT_DIVERGED
    elif status == Status.INTERRUPTED:
        code = 128 + int(rec.get("signal") or signal.SIGTERM)
    where = run_dir if run_dir is not None else f"job {num}"
    if say:
        print(f"ffrun: error: job {num} ({where}) {status}: {reason}" + (f" ({note})" if note else ""),
              file=sys.stderr)
    _tally.failed.append((run_dir if run_dir is not None else Path(f"job {num}"), status, code))


def _multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def _config_for_record(cfg: DictConfig) -> dict:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # the resolution itself failed: keep what was given
        return OmegaConf.to_container(cfg, resolve=False)


def bare_record(cfg: DictConfig) -> RunRecord:
    """metrics.json for a run that stopped before its first step."""
    return RunRecord(task=cfg.task.name, encoding=cfg.encoding.name, seed=cfg.seed, step=0, checkpoint_step=None,
                     config=_config_for_record(cfg), present=BARE_KEYS)


def failure_record(cfg: DictConfig, status: Status, reason: str, code: int,
                   partial: RunRecord | None = None) -> RunRecord:
    """What a run that did not complete leaves in metrics.json: what it had when it stopped (`partial`), or
    a bare record; an interrupted one also names its signal."""
    rec = replace(partial if partial is not None else bare_record(cfg), status=Status(status), reason=reason)
    if status == Status.INTERRUPTED:
        rec.extra = {**rec.extra, "signal": code - 128}
    return rec


def fail(run_dir: Path, cfg: DictConfig, status: Status, reason: str, code: int, exit_on_signal: bool = True,
         partial: RunRecord | None = None, record: bool = True) -> None:
    """Report a run that did not complete: one line on stderr, metrics.json (what the run had when it
    stopped, or a bare record when it stopped before training; `record=False`: none, the directory holds an
    earlier run), and its exit status. In a multirun the sweep goes on (the status is kept in the app's
    tally), except on a signal."""
    if status == Status.INTERRUPTED or not _multirun():
        ending()  # the program ends after this report: a late Ctrl-C must not cut it (see ffrun.util.errors)
    unwritten = ""
    if status == Status.FAILED:
        reason += _kept(run_dir, partial)
    if record and partial is None and status == Status.FAILED and not _multirun() and _remove_unstarted(run_dir):
        record = False  # refused before it began: no folder is left to clutter ffrun-summary (a sweep keeps its job's)
    if record and (partial is not None or status == Status.FAILED):
        try:
            failure_record(cfg, status, reason, code, partial).write(run_dir)
        except NotWritable:  # the folder turned read-only: said once, by the reason
            unwritten = f" ({RECORD} not written either)"
        except Exception as e:  # a full disk: said on the same line, the run's own reason comes first
            unwritten = f" ({run_dir / RECORD} not written: {' '.join(str(e).split())[:200]})"
    print(f"ffrun: {'error' if status == Status.FAILED else status}: {reason}{unwritten}", file=sys.stderr)
    if status == Status.INTERRUPTED and not exit_on_signal:
        return  # a member of a vectorized group: the launcher exits once every member is reported
    if _multirun() and status != Status.INTERRUPTED:
        _tally.failed.append((run_dir, Status(status), code))
        return
    sys.exit(code)


# What a run directory holds before its run begins: Hydra's files, the lock, the log and the config.
_BEFORE_START = {".hydra", STAGED_HYDRA, "cli.log", LOCK_FILE, "config.yaml", RECORD}


def _remove_unstarted(run_dir: Path) -> bool:
    """Remove `run_dir` when it holds only what a run leaves before it begins (and no earlier run's record);
    True when it is gone."""
    try:
        if holds_earlier_run(run_dir) or not {p.name for p in run_dir.iterdir()} <= _BEFORE_START:
            return False
        shutil.rmtree(run_dir)
        return True
    except OSError:
        return False


def _kept(run_dir: Path, partial: RunRecord | None) -> str:
    """What a run that failed mid-training (an unwritable folder, out of memory) keeps: its own last
    checkpoint, and the command that resumes from it."""
    if partial is None or partial.checkpoint_step is None or not (run_dir / CHECKPOINT).is_file():
        return ""
    return f"; its checkpoint of step {partial.checkpoint_step} is kept: resume with: {resume_command(run_dir)}"


@contextmanager
def in_its_own_folder(cfg: DictConfig, run_dir: Path) -> Iterator[Path]:
    """The run directory of a job. trainer.resume=true that finds an unfinished run of the experiment continues
    it in that run's own folder (its log appended to that folder's cli.log), and the folder Hydra made for this
    job, which then holds only Hydra's own files, is removed: no second partial run is left."""
    found = None
    if cfg.trainer.get("resume") is True and not holds_earlier_run(run_dir):
        found = unfinished_run_to_continue(cfg, run_dir)
    if found is None:
        yield run_dir
        return
    OmegaConf.update(cfg, "trainer.resume", str(found))
    handler = logging.FileHandler(found / "cli.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    log.info("trainer.resume=true: continuing the unfinished run in its own folder %s (not in %s)", found, run_dir)
    try:
        yield found
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
        unlock_run_dir(run_dir)
        if {p.name for p in run_dir.iterdir()} <= {".hydra", "cli.log", LOCK_FILE}:
            shutil.rmtree(run_dir, ignore_errors=True)


def _raise_stop(signum, frame):
    if not is_ending():  # a second Ctrl-C while the interrupted run writes its record changes nothing
        raise StopSignal(signum)


def report(cfg: DictConfig, run_dir: Path, produce: Callable[[], RunRecord], exit_on_signal: bool = True) -> float:
    """Run `produce()` (a job, or the end of one trained by the vectorized launcher) inside a Hydra job:
    hold the run directory, save the resolved config, turn its outcome into ffrun's exit status, and
    return the job's primary metric to the sweeper (nan when it did not complete)."""
    from hydra.core.hydra_config import HydraConfig

    if _multirun():  # `ffrun -m` names the folder for ffrun-summary at the end
        sweep = str(HydraConfig.get().sweep.dir)
        _tally.sweeps[sweep] = _tally.sweeps.get(sweep, 0) + 1
        _tally.reported.add(run_dir.resolve())

    refused = claim_run_dir(run_dir)
    if refused:
        # Nothing is written: the directory and every file in it belong to the run that holds it.
        print(f"ffrun: error: {refused}", file=sys.stderr)
        if _multirun():
            _tally.failed.append((run_dir, Status.FAILED, EXIT_BAD_INPUT))
            return float("nan")
        ending()
        sys.exit(EXIT_BAD_INPUT)
    # SIGINT/SIGTERM outside the training loop (loading data, writing outputs) end the run as interrupted;
    # the loop installs its own handler, which finishes the current step first.
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, _raise_stop) for s in STOP_SIGNALS} if main else {}
    try:
        return _report(cfg, run_dir, produce, exit_on_signal)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        unlock_run_dir(run_dir)


def _report(cfg: DictConfig, run_dir: Path, produce: Callable[[], RunRecord], exit_on_signal: bool) -> float:
    earlier = holds_earlier_run(run_dir)
    fresh = bool(cfg.trainer.get("fresh", False))
    try:
        check_settings(cfg)  # before write_config resolves anything derived from a bad setting
        if earlier:  # a bad value is named as such, before the config is compared with the earlier run's
            validate(cfg)
            if not fresh:  # trainer.fresh=true moves the earlier run aside, whatever it was
                refuse_another_experiment(cfg, run_dir)
    except FfrunError as e:  # refused before it began: an earlier run in run_dir is left exactly as it was
        if not earlier:
            fail(run_dir, cfg, Status.FAILED, str(e), EXIT_BAD_INPUT)
            return float("nan")
        discard_staged_hydra(run_dir)
        fail(run_dir, cfg, Status.FAILED, str(e), EXIT_BAD_INPUT, record=False)
        return float("nan")
    if earlier:
        done = None if fresh else finished_here(cfg, run_dir)
        if done is not None:  # the same command again: the run it made is the answer, left byte for byte
            discard_staged_hydra(run_dir)
            return _already_done(cfg, run_dir, done)
        _take_over(cfg, run_dir, fresh)
    try:
        adopt_staged_hydra(run_dir)
        write_config(cfg, run_dir)
        rec = produce()
    except StopSignal as e:
        _stopped(cfg, run_dir, e, exit_on_signal)
        return float("nan")
    except FfrunError as e:
        fail(run_dir, cfg, Status.FAILED, str(e), EXIT_BAD_INPUT, partial=getattr(e, "ffrun_record", None))
        return float("nan")
    except Exception as e:  # a bug or an environment fault: keep the traceback in cli.log, record the failure
        _crashed(cfg, run_dir, e)
        return float("nan")
    if rec.status == Status.INTERRUPTED:
        fail(run_dir, cfg, Status.INTERRUPTED, rec.reason + f"; resume with: {resume_command(run_dir)}",
             128 + rec.extra["signal"], exit_on_signal)
    if rec.status == Status.DIVERGED:
        fail(run_dir, cfg, Status.DIVERGED, rec.reason, EXIT_DIVERGED)
    return rec.metrics.get(rec.primary_metric, float("nan"))


def _already_done(cfg: DictConfig, run_dir: Path, rec: RunRecord) -> float:
    """The run directory already holds this experiment's finished run: say so, train nothing. Exit status 0 for
    a completed run (its metric is the sweeper's), that of a diverged run for a diverged one."""
    again = (f"trainer.fresh=true trains it again (moving this run to {run_dir}.earlier-N), or give "
             "hydra.run.dir another folder")
    if rec.status == Status.DIVERGED:
        fail(run_dir, cfg, Status.DIVERGED, f"{run_dir} already holds this experiment's run, which "
             f"diverged at step {rec.step} ({rec.reason}); nothing retrained: the same settings diverge again; "
             f"{again}", EXIT_DIVERGED, record=False)
        return float("nan")
    value = rec.metrics.get(rec.primary_metric) if rec.primary_metric else None
    shown = f"{rec.primary_metric} {value:.4g}" if isinstance(value, (int, float)) else "no metric"
    print(f"ffrun: {run_dir} already holds this run, completed at step {rec.step} ({shown}); nothing retrained; "
          f"{again}")
    return float(value) if isinstance(value, (int, float)) else float("nan")


def _take_over(cfg: DictConfig, run_dir: Path, fresh: bool) -> None:
    """A new job in a directory that holds an earlier run: trainer.fresh=true moves that run aside; else the
    run (the same experiment, with training left) is continued from its own checkpoint, and a completed run
    that is extended to more steps is kept, copied aside, first."""
    rec = RunRecord.read(run_dir)
    if fresh:
        aside = set_aside(run_dir)
        log.info("trainer.fresh=true: the earlier run of %s is now in %s; training from step 0", run_dir, aside)
        return
    if not continue_here(cfg, run_dir):
        return  # no checkpoint to continue from (a run stopped before its first one): it trains from step 0
    if rec is not None and rec.status == Status.COMPLETED:
        aside = set_aside(run_dir, copy=True)
        log.info("%s holds this run completed at step %s: continuing it to trainer.steps=%s; the completed run is "
                 "kept in %s", run_dir, rec.step, cfg.trainer.steps, aside)
    else:
        log.info("%s holds this run, %s at step %s: continuing it from its checkpoint", run_dir,
                 rec.status if rec is not None else "stopped", rec.step if rec is not None else "?")


def _stopped(cfg: DictConfig, run_dir: Path, e: StopSignal, exit_on_signal: bool) -> None:
    """A signal outside the training loop (or a second one inside it): the run ends interrupted."""
    name = signal.Signals(e.signum).name
    partial = getattr(e, "ffrun_record", None)
    where = "before training started" if partial is None else f"at step {partial.step}"
    if partial is None:
        partial = bare_record(cfg)
    hint = (f"; resume with: {resume_command(run_dir)}" if partial.checkpoint_step is not None
            else "; run the command again")
    fail(run_dir, cfg, Status.INTERRUPTED, f"stopped by {name} {where}{hint}", 128 + e.signum, exit_on_signal,
         partial=partial)


def _crashed(cfg: DictConfig, run_dir: Path, e: Exception) -> None:
    """An unexpected exception: out of memory is bad input (exit 2, with the fix); anything else exits 1."""
    partial = getattr(e, "ffrun_record", None)
    if memory_error(e):
        first = " ".join(str(e).split())[:200]
        budget = cfg.model.get("params") if "model" in cfg else None
        knobs = (f"a smaller model.params (now {float(budget):g}), task size or trainer.batch_size" if budget
                 else "a smaller encoding.m, model.width, task size or trainer.batch_size")
        fail(run_dir, cfg, Status.FAILED, f"out of memory ({first}); use {knobs}, or a device with more memory",
             EXIT_BAD_INPUT, partial=partial)
        return
    log.error("unexpected error", exc_info=True)
    fail(run_dir, cfg, Status.FAILED, f"{type(e).__name__}: {e} (traceback in {run_dir / 'cli.log'})", 1,
         partial=partial)
