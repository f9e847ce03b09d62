"""What a sweep command does at the terminal: print through a pipe that may close, turn SIGINT and SIGTERM
into an interruption handed on to the run in progress, and say how to continue after one."""

from __future__ import annotations

import os
import signal
import sys

INTERRUPTED = 130  # exit status after a Ctrl-C or SIGTERM (the table is written as it stands)


class Stop(KeyboardInterrupt):
    """SIGINT or SIGTERM to a sweep command (see `run_console`): handed on to the ffrun process running."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def say(text: str) -> None:
    """Print to stdout; a reader that went away (`| head`) stops the printing, not the reproduction."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def error(prog: str, msg: str) -> int:
    """One line on stderr, `PROG: error: MSG`; returns the exit status of a refused command, 2."""
    print(f"{prog}: error: {msg}", file=sys.stderr)
    return 2


def interrupted(prog: str) -> int:
    print(f"{prog}: interrupted; run the same command again to continue", file=sys.stderr)
    return INTERRUPTED


def run_console(main_fn) -> None:
    """A console entry point around `main_fn`: argparse errors exit 2 as usual; no traceback for a user's
    Ctrl-C. SIGINT and SIGTERM are handed on to the run in progress (see `ffrun.sweep.execute.run_ffrun`),
    then the table is written as it stands."""

    def stop(signum, frame):
        raise Stop(signum)

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, stop)
    try:
        code = main_fn()
    except KeyboardInterrupt:
        code = INTERRUPTED
    sys.exit(code)
