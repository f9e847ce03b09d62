"""The real `ffrun` and `ffrun-summary` entry points, as a user runs them."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ffrun.models.encodings import gaussian_matrix


def only_run_dir(tmp_path: Path) -> Path:
    dirs = [p.parent for p in (tmp_path / "outputs").rglob("metrics.json")]
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_smoke_run_writes_a_complete_run_directory(run_cli, tmp_path):
    r = run_cli("experiment=smoke", "sigma=4", "seed=3")
    assert r.returncode == 0, r.stderr
    run = only_run_dir(tmp_path)
    assert run.parent.parent.name == "outputs"  # Hydra's outputs/<date>/<time> layout
    for name in ("config.yaml", ".hydra/config.yaml", "metrics.json", "checkpoint.pt",
                 "reconstruction.png", "ground_truth.png", "comparison.png"):
        assert (run / name).is_file(), name
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "completed"
    assert (m["task"], m["encoding"], m["sigma"], m["seed"], m["steps"]) == ("image", "gauss", 4.0, 3, 20)
    assert set(m["metrics"]) == {"train_psnr", "test_psnr", "full_psnr"}
    assert [h["step"] for h in m["history"]] == [10, 20]
    assert m["wall_s"] > 0
    resolved = OmegaConf.load(run / "config.yaml")
    assert resolved.encoding.sigma == 4.0  # interpolation resolved

    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    B = ckpt["field"]["encoding.B"]
    torch.testing.assert_close(B, gaussian_matrix(2, 16, 4.0, torch.Generator().manual_seed(3)))
    assert ckpt["optimizer"]["state"] and ckpt["step"] == 20


def test_cpu_runs_are_repeatable(run_cli, tmp_path):
    for name in ("a", "b"):
        assert run_cli("experiment=smoke", "seed=5", f"hydra.run.dir={name}").returncode == 0
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("a", "b"))
    assert a["history"] == b["history"] and a["metrics"] == b["metrics"]


def test_bad_key_and_bad_input_exit_2_with_one_clear_line(run_cli):
    r = run_cli("experiment=smoke", "trainer.stpes=3")
    assert r.returncode == 2 and "stpes" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("experiment=smoke", "task.image=/nonexistent/cat.png")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("ffrun: error: task.image='/nonexistent/cat.png': no such file")
    assert "Traceback" not in r.stderr
    r = run_cli("experiment=smoke", "task.resolution=33")
    assert r.returncode == 2 and "even size" in r.stderr
    r = run_cli("experiment=smoke", "device=cuda:7")
    if not torch.cuda.is_available():
        assert r.returncode == 2 and "no CUDA device" in r.stderr


def test_multirun_then_summary(run_cli, tmp_path):
    r = run_cli("-m", "experiment=smoke", "encoding=none,gauss", "sigma=1,10", "seed=0,1", "hydra.sweep.dir=sweep")
    assert r.returncode == 0, r.stderr
    sweep = tmp_path / "sweep"
    assert len(list(sweep.glob("*/metrics.json"))) == 8
    r = run_cli("sweep", name="ffrun-summary")
    assert r.returncode == 0, r.stderr
    assert "| image | gauss | 10 | 2 |" in r.stdout
    assert "| image | none | - | 2 |" in r.stdout  # none ran once per sigma: duplicates counted once
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert len(rows) == 3
    per_run = list(csv.DictReader((sweep / "runs.csv").open()))
    assert len(per_run) == 8
    # The mean in the table is the mean of the two seeds' runs.
    g10 = [float(r["test_psnr"]) for r in per_run if r["encoding"] == "gauss" and r["sigma"] == "10.0"]
    row = next(r for r in rows if r["encoding"] == "gauss" and r["sigma"] == "10.0")
    assert abs(float(row["test_psnr_mean"]) - sum(g10) / 2) < 1e-9
    for metric in ("test_psnr", "full_psnr", "train_psnr"):
        assert (sweep / f"summary_{metric}.png").stat().st_size > 1000


def test_summary_rejects_a_directory_without_runs(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_cli("empty", name="ffrun-summary")
    assert r.returncode == 2 and "no metrics.json" in r.stderr


def test_the_benchmark_sweep_refuses_a_folder_that_holds_files(tmp_path, monkeypatch, capsys):
    """scripts/sweep.py writes a sweep into --out; a folder already holding files is left as it is."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    from sweep import run_sweep

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as e:
        run_sweep(["experiment=smoke"], tmp_path / "mine")
    assert e.value.code == 2 and "nothing was deleted" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    sys.modules.pop("sweep", None)
