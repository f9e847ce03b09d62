"""A sample of scripts/fuzz.py's table, run the same way (each case in a forked child), so it stays honest."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import fuzz  # noqa: E402

SAMPLE = ["ffrun sigma=automatic", "ffrun task.resolution=-2", "ffrun encoding.m=100000000",
          "ffrun hydra.run.dir=/etc/passwd/x", "ffrun task=nerf task.downscale=0",
          "ffrun task=shape task.mesh=rand.obj",
          "ffrun task.image=garbage.png", "ffrun-summary sweep", "python: ffrun.load(run)  # checkpoint: pickle",
          "ffrun-export /nonexistent", "ffrun-bench --tasks foo", "ffrun experiment=nope", "ffrun ",
          "ffrun model.w_std=-1", "ffrun task.image=div2k:3  # 03.png is a folder",
          "ffrun-compare --out ro  # an existing read-only folder"]


def _sample() -> list[fuzz.Case]:
    by_command: dict[str, fuzz.Case] = {}
    for case in fuzz.cases():
        by_command.setdefault(case.command, case)  # the first of a command (ffrun-summary sweep: not JSON)
    return [by_command[c] for c in SAMPLE]


@pytest.mark.parametrize("case", _sample(), ids=lambda c: c.command)
def test_fuzz_case(case):
    import ffrun.apps.cli  # noqa: F401 (imported before forking, as the script does)

    result = fuzz.run_case(case, timeout=120)
    try:
        outcome, said = fuzz.classify(case, result)
    finally:
        fuzz.remove_case_files(result)
    assert outcome == "ok", f"{case.command}: {outcome}: {said}"
