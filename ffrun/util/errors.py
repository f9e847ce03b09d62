"""The one exception type ffrun turns into a single-line message and exit status 2."""


class FfrunError(Exception):
    """Bad input or configuration: the message says what is wrong, where, and how to fix it."""


# Where the program is, for what a Ctrl-C outside a run's own handler means: "starting" (nothing written yet),
# "running" (a job of the app has begun: a sweep between two runs), "ending" (the exit status is decided, a
# stopped run has written its checkpoint: a late signal, such as the second of two quick Ctrl-C's, changes nothing
# and must not raise into the interpreter's shutdown, where it printed a traceback from an atexit callback).
_phase = "starting"


def run_began() -> None:
    """A job of the app has begun (`ffrun.run.app.mark_job_started`)."""
    global _phase
    if _phase == "starting":
        _phase = "running"


_console = False  # quiet_interrupt_while_starting installed its handler: a console script's main thread


def ending() -> None:
    """The program's exit status is decided (a run was stopped and checkpointed, a job failed, the app returned):
    from here on ffrun's signal handlers ignore SIGINT and SIGTERM, and in a console script the process does
    too (`ignore_late_signals`)."""
    global _phase
    _phase = "ending"
    ignore_late_signals()


def ignore_late_signals() -> None:
    """In a console script that is ending, SIGINT and SIGTERM set to SIG_IGN: the interpreter's shutdown resets
    a Python handler to the default action before the process exits, so a signal landing there (the second of
    two quick Ctrl-C's) killed the process (status -2, not 130); an ignored signal stays ignored."""
    if not (_console and _phase == "ending"):
        return
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)


def is_ending() -> bool:
    return _phase == "ending"


def quiet_interrupt_while_starting() -> None:
    """In a console script (`ffrun`, `ffrun-...`), Ctrl-C while the program starts (importing torch, composing
    the config: nothing is written yet) ends with one line and exit status 130 instead of a traceback. Each
    run installs its own handler (which checkpoints) once it starts; library imports are left alone. After a
    run has begun the same handler says so instead, and once the program is ending it does nothing."""
    import signal
    import sys
    import threading
    from pathlib import Path

    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if not name.startswith("ffrun") or threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, frame):
        if _phase == "ending":
            return
        if _phase == "running":
            print(f"{name}: interrupted while no run was in progress; what earlier runs wrote is kept",
                  file=sys.stderr)
        else:
            print(f"{name}: interrupted while starting, before any run began; nothing was written", file=sys.stderr)
        ending()
        raise SystemExit(128 + signum)

    global _console
    _console = True
    signal.signal(signal.SIGINT, stop)


def closest_name(name: str, valid) -> str | None:
    """The valid name a typo most likely meant (`stpes` -> `steps`, `M` -> `m`), or None."""
    import difflib

    by_lower = {v.lower(): v for v in valid}
    found = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[found[0]] if found else None
