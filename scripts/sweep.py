"""Shared by the benchmark scripts: run one `ffrun -m` sweep into a fresh folder and read its runs back."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path


def run_sweep(args: list[str], out: Path) -> tuple[int, list[dict]]:
    """`ffrun -m ARGS hydra.sweep.dir=OUT trainer.progress=false`; returns its exit status and every job's
    metrics.json, in job order."""
    if out.exists():
        shutil.rmtree(out)
    cmd = ["ffrun", "-m", *args, f"hydra.sweep.dir={out}", "trainer.progress=false"]
    print("$", " ".join(cmd), flush=True)
    code = subprocess.run(cmd).returncode
    jobs = sorted(out.glob("*/metrics.json"), key=lambda f: int(f.parent.name) if f.parent.name.isdigit() else 0)
    return code, [json.loads(f.read_text()) for f in jobs]
