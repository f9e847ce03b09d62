"""Shared by the benchmark scripts: run one `ffrun -m` sweep into a fresh folder and read its runs back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ffrun.run.record import RECORD, RunRecord
from ffrun.sweep.commands import multirun_command


def run_sweep(args: list[str], out: Path) -> tuple[int, list[dict]]:
    """`ffrun -m ARGS trainer.progress=false hydra.sweep.dir=OUT`; returns its exit status and every job's
    record (metrics.json, as a dict), in job order. OUT must be new or empty: it is never cleared, since it
    may hold a user's files, and a sweep written over an older one would mix their runs."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"sweep: --out {out} already exists and is not an empty folder; give a new one (nothing was "
              "deleted)", file=sys.stderr)
        sys.exit(2)
    cmd = multirun_command([*args, "trainer.progress=false"], out, program=["ffrun"])
    print("$", " ".join(cmd), flush=True)
    code = subprocess.run(cmd).returncode
    jobs = sorted(out.glob(f"*/{RECORD}"), key=lambda f: int(f.parent.name) if f.parent.name.isdigit() else 0)
    return code, [RunRecord.load(f).to_dict() for f in jobs]
