"""`experiment=smoke` gives a seconds-long run of whichever task and method is chosen, end to end through the CLI:
every task, then several methods on tasks with different coordinate dimensions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TASKS = ["image", "ct", "mri", "toy1d", "shape", "nerf"]


def completed_runs(sweep: Path) -> dict[Path, dict]:
    """run dir -> metrics.json of every run under `sweep`, each required to have completed."""
    runs = {p.parent: json.loads(p.read_text()) for p in sweep.rglob("metrics.json")}
    assert runs, f"no run under {sweep}"
    for run_dir, rec in runs.items():
        assert rec["status"] == "completed", (run_dir, rec.get("reason"))
    return runs


def test_smoke_runs_every_task(run_cli, tmp_path):
    r = run_cli("-m", "experiment=smoke", f"task={','.join(TASKS)}", "hydra.sweep.dir=sweep", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = completed_runs(tmp_path / "sweep")
    assert sorted(rec["task"] for rec in runs.values()) == sorted(TASKS)
    for run_dir, rec in runs.items():
        assert rec["steps"] == 20 and rec["step"] == 20, run_dir
        assert rec["config"]["device"] == "cpu"
        assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "config.yaml").is_file()


@pytest.mark.parametrize("task", ["image", "shape", "toy1d"])
def test_smoke_runs_methods(run_cli, tmp_path, task):
    methods = ["siren", "wire", "hashgrid", "densegrid"]
    r = run_cli("-m", "experiment=smoke", f"task={task}", f"method={','.join(methods)}", "hydra.sweep.dir=sweep",
                timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = completed_runs(tmp_path / "sweep")
    assert sorted(rec["method"] for rec in runs.values()) == sorted(methods)


def test_smoke_preset_sizes_follow_the_task(compose):
    """Each task gets its own small size keys (shape has no resolution; nerf a tiny built-in scene)."""
    shape = compose("experiment=smoke", "task=shape")
    assert shape.task.test_points == 512 and shape.task.mesh_resolution == 8 and shape.trainer.batch_size == 512
    nerf = compose("experiment=smoke", "task=nerf")
    assert nerf.task.builtin_resolution == 8 and nerf.task.turntable_frames == 0
    assert compose("experiment=smoke", "task=mri").task.resolution == 8
    assert compose("experiment=smoke", "task=image").task.resolution == 32
    # a task's own preset is untouched outside the smoke experiment
    assert compose("task=shape").task.test_points == 262144
