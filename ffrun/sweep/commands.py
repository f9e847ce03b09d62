"""The `ffrun` command lines a sweep runs: one Hydra multirun per group of jobs, and the resumption of one run.

Every sweep (ffrun-reproduce's table and sigma search, ffrun-compare, the benchmark scripts) builds its
multirun here, so the sweep folder, the job subfolders and the launcher are spelled one way.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ffrun.run.resume import hydra_quote

# --launcher of the sweep commands -> Hydra launcher plugin (None: Hydra's own, one job after another)
LAUNCHERS = {"basic": None, "joblib": "joblib", "vectorized": "vectorized", "slurm": "slurm"}


def ffrun_command() -> list[str]:
    """ffrun under this Python (the same installation as the sweep command, whatever PATH holds)."""
    return [sys.executable, "-m", "ffrun.apps.cli"]


def multirun_command(overrides: list[str], sweep_dir: Path, subdir: str | None = None, launcher: str = "basic",
                     program: list[str] | None = None) -> list[str]:
    """`ffrun -m OVERRIDES` into `sweep_dir`, each job in the subfolder `subdir` names (a Hydra interpolation
    such as `${encoding.name}`; Hydra's job number when None), through the launcher named `launcher`."""
    args = [*(program or ffrun_command()), "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    if subdir:
        args.append(f"hydra.sweep.subdir={subdir}")
    if LAUNCHERS[launcher]:
        args.append(f"hydra/launcher={LAUNCHERS[launcher]}")
    return args


def resume_command(overrides: list[str], run_dir: Path) -> list[str]:
    """`ffrun OVERRIDES` continuing the run in `run_dir` from its own checkpoint, in that directory."""
    where = hydra_quote(str(run_dir))  # a comma or '=' in the path is no sweep and no syntax error
    return [*ffrun_command(), *overrides, f"trainer.resume={where}", f"hydra.run.dir={where}"]
