"""Bringing a sweep's runs to an end: ffrun processes launched one group at a time, interrupted runs resumed
from their checkpoints, runs recorded with other settings set aside, and a progress line per finished run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from ffrun.run.record import RECORD, Status
from ffrun.sweep.commands import resume_command
from ffrun.sweep.console import say
from ffrun.sweep.runs import STALE, Run, unreachable
from ffrun.sweep.tables import hms

# (task, item, the runs of that group that start fresh) -> the exit status of their multirun
LaunchGroup = Callable[[str, str, list[Run]], int]
SIGNALLED = (130, 143)  # an ffrun process that stopped on SIGINT or SIGTERM


def prog() -> str:
    return Path(sys.argv[0]).name


def run_ffrun(args: list[str], what: str) -> int:
    """Run one ffrun process; its log goes to each run's cli.log, its error lines are shown here.

    The process has its own process group, so a Ctrl-C at the terminal reaches the sweep command alone, which
    hands each signal on and waits: the run finishes its step, checkpoints and exits "interrupted" (a
    second Ctrl-C stops it at once, still with its last checkpoint), and a rerun resumes it."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, text=True, process_group=0)
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt as e:
                try:
                    os.killpg(proc.pid, getattr(e, "signum", signal.SIGINT))
                except ProcessLookupError:  # it has just ended
                    pass
        err.seek(0)
        stderr = err.read()
    if code != 0:
        say_errors(what, code, stderr)
    return code


_NOT_COMPLETED = re.compile(r"^ffrun: (\d+) job\(s\) of the sweep did not complete")
_UNREACHABLE = "ffrun: error: model.params="


def say_errors(what: str, code: int, stderr: str) -> None:
    """An ffrun process's error lines, shown here. A method that cannot be sized to the budget on its task is a
    known empty cell of the table: it is said as n/a, and is no error of the process."""
    lines = [ln for ln in stderr.splitlines() if ln.startswith("ffrun") or "Error" in ln]
    na = [ln for ln in lines if ln.startswith(_UNREACHABLE) and " is unreachable" in ln]
    for ln in na:
        print(f"{prog()}: {what}: n/a (not an error): {ln[len('ffrun: error: '):]}", file=sys.stderr, flush=True)
    summary = next((m for ln in lines if (m := _NOT_COMPLETED.match(ln))), None)
    others = [ln for ln in lines if ln not in na and not _NOT_COMPLETED.match(ln)]
    if na and not others and (summary is None or int(summary.group(1)) == len(na)):
        return  # every job that did not complete is an n/a cell
    lines = [ln for ln in lines if ln not in na][-5:]
    print(f"{prog()}: {what} exited {code}" + "".join(f"\n  {ln}" for ln in lines), file=sys.stderr, flush=True)


def resume(run: Run) -> int:
    """Continue an interrupted run from its own checkpoint, in its own directory."""
    return run_ffrun(resume_command(run.overrides, run.dir), f"resuming {run.label}")


class Progress:
    """A line per finished run: task, encoding, its metric, elapsed time and an estimate of what is left
    (from the mean time of the runs finished so far in this invocation)."""

    def __init__(self, runs: list[Run], todo: list[Run]):
        self.runs, self.todo = runs, todo
        self.start = time.perf_counter()
        self.t0 = time.time()  # a record older than this is an earlier invocation's (an interrupted run)
        self.reported = {r.dir for r in runs if r not in todo}
        self.done_here = 0
        self.lock = threading.Lock()

    def poll(self) -> None:
        with self.lock:
            for run in self.todo:
                if run.dir not in self.reported:
                    self._report(run)

    def _report(self, run: Run) -> None:
        try:
            fresh = (run.dir / RECORD).stat().st_mtime >= self.t0
        except OSError:
            return
        rec = run.record()
        if not fresh or rec is None or rec.status in (None, Status.RUNNING):
            return
        self.reported.add(run.dir)
        self.done_here += 1
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done_here * (len(self.todo) - self.done_here)
        value = rec.primary_value
        status = "n/a (cannot be sized to this budget)" if unreachable(rec) else rec.get("status")
        shown = f"{rec.primary_metric} {value:.4g}" if value is not None else status
        say(f"[{len(self.reported)}/{len(self.runs)}] {run.label}: {status}, {shown}, "
            f"{rec.get('wall_s') or 0:.0f} s; elapsed {hms(elapsed)}, ~{hms(left)} left")

    def watch(self, stop: threading.Event) -> None:
        while not stop.wait(2.0):
            self.poll()


def set_aside_stale(todo: list[Run]) -> None:
    """Move each run recorded with other settings beside its folder: another protocol's result is kept,
    never mixed into this table."""
    for run in todo:
        if run.status() == STALE:
            aside = run.dir.with_name(f"{run.dir.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
            run.dir.rename(aside)
            say(f"{prog()}: {run.dir} was run with other settings; moved to {aside.name}")


def run_groups(runs: list[Run], todo: list[Run], launch_group: LaunchGroup) -> None:
    """Resume or launch the runs still to do, one (task, item) group at a time; KeyboardInterrupt when a
    process was stopped by a signal."""
    for task, item in dict.fromkeys((r.task, r.item) for r in runs):
        pending = [r for r in todo if r.task == task and r.item == item]
        fresh = [r for r in pending if not (r.dir / "checkpoint.pt").is_file()]
        for run in pending:
            if run not in fresh and resume(run) in SIGNALLED:
                raise KeyboardInterrupt
        if fresh and launch_group(task, item, fresh) in SIGNALLED:
            raise KeyboardInterrupt


def execute(runs: list[Run], launch_group: LaunchGroup, what: str) -> tuple[list[Run], bool, float]:
    """Bring every run to an end: runs recorded with other settings are moved aside, interrupted ones
    resume from their checkpoints, and the rest start through `launch_group(task, item, fresh_runs)` (one
    Hydra multirun per task and data item), with a progress line per finished run. Returns (the runs that
    were not done, whether a signal interrupted, the wall time)."""
    todo = [r for r in runs if not r.done]
    set_aside_stale(todo)
    say(f"{prog()}: {what}: {len(runs)} runs ({len(runs) - len(todo)} already done)")
    progress = Progress(runs, todo)
    stop = threading.Event()
    watcher = threading.Thread(target=progress.watch, args=(stop,), daemon=True)
    watcher.start()
    start = time.perf_counter()
    interrupted = False
    try:
        run_groups(runs, todo, launch_group)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.set()
        watcher.join()
        progress.poll()
    return todo, interrupted, time.perf_counter() - start
