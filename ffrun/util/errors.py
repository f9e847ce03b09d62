"""The one exception type ffrun turns into a single-line message and exit status 2."""


class FfrunError(Exception):
    """Bad input or configuration: the message says what is wrong, where, and how to fix it."""


def quiet_interrupt_while_starting() -> None:
    """In a console script (`ffrun`, `ffrun-...`), Ctrl-C while the program starts (importing torch, composing
    the config: nothing is written yet) ends with one line and exit status 130 instead of a traceback. Each
    run installs its own handler (which checkpoints) once it starts; library imports are left alone."""
    import signal
    import sys
    import threading
    from pathlib import Path

    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if not name.startswith("ffrun") or threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, frame):
        print(f"{name}: interrupted while starting, before any run began; nothing was written", file=sys.stderr)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, stop)


def closest_name(name: str, valid) -> str | None:
    """The valid name a typo most likely meant (`stpes` -> `steps`, `M` -> `m`), or None."""
    import difflib

    by_lower = {v.lower(): v for v in valid}
    found = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[found[0]] if found else None
