"""What a new user meets first: --help, where a sweep and ffrun-sigma put their outputs, readable numbers,
the thread count of small runs, `import ffrun` beside a clone, and git-ignored output folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_help_is_ffrun_s_own_without_schema_groups(run_cli):
    r = run_cli("--help")
    assert r.returncode == 0, r.stderr
    assert "schema" not in r.stdout and "Powered by Hydra" not in r.stdout
    for words in ("task ", "image, mri, nerf", "encoding", "gauss", "experiment", "smoke", "outputs/", "Examples"):
        assert words in r.stdout, words


def test_a_multirun_names_its_folder_for_ffrun_summary(run_cli, tmp_path):
    r = run_cli("-m", "experiment=smoke", "trainer.steps=2", "sigma=1,2", f"hydra.sweep.dir={tmp_path / 'sw'}")
    assert r.returncode == 0, r.stderr
    assert f"ffrun-summary {tmp_path / 'sw'}" in r.stdout and "sweep of 2 run(s)" in r.stdout


def test_summary_keeps_tiny_values_readable():
    from ffrun.apps.summary import summarise, to_markdown

    runs = [{"status": "completed", "task": "image", "encoding": "gauss", "sigma": 1.0, "seed": s, "wall_s": 0.004,
             "metrics": {"loss": 3e-5 * (s + 1)}, "config": {"seed": s}} for s in (0, 1)]
    varying, rows = summarise(runs)
    md = to_markdown(rows, varying, runs)
    assert "4.5e-05 ± 1.5e-05" in md and "0.004" in md and "0.00 " not in md


def test_auto_threads_one_for_a_small_problem(compose, tmp_path):
    from ffrun.run.device import SMALL_STEP_FLOPS, step_flops
    from ffrun.run.job import prepare

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        job = prepare(compose("experiment=smoke"), tmp_path)
        assert step_flops(job.cfg, job.task, job.field) < SMALL_STEP_FLOPS
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        prepare(compose("experiment=smoke", "trainer.threads=2"), tmp_path)
        assert torch.get_num_threads() == 2
        big = compose("task.resolution=512")  # 256^2 training pixels, 512 features, 4x256 (ffrun.tasks.cost)
        task = type("T", (), {"points_per_step": lambda self: 256**2, "out_dim": 3})()
        field = type("F", (), {"encoding": type("E", (), {"out_dim": 512})()})()
        assert 2 * 256**2 * (2 * 512 * 256 + 3 * (2 * 256 * 256 + 256 * 3)) == step_flops(big, task, field)
    finally:
        torch.set_num_threads(before)


def test_import_ffrun_from_the_folder_above_a_clone(tmp_path):
    (tmp_path / "ffrun").symlink_to(ROOT)
    r = subprocess.run([sys.executable, "-c", "import ffrun, ffrun.run.job; print(ffrun.__file__); ffrun.load"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(str(Path("ffrun") / "ffrun" / "__init__.py"))


def test_default_output_folders_are_git_ignored():
    r = subprocess.run(["git", "check-ignore", "outputs/x", "reproduce/x", "multirun/x", "compare/x"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.stdout.split() == ["outputs/x", "reproduce/x", "multirun/x", "compare/x"]
