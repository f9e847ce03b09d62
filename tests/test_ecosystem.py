"""TensorBoard logging, Hydra launchers (submitit, joblib), the Optuna sweeper, ffrun.load and ffrun-export,
each through the real plugin or library."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch
import yaml

import ffrun

SMALL_IMAGE = ["task=image", "task.resolution=32", "encoding.m=16", "model.width=32", "model.depth=3",
               "trainer.progress=false", "device=cpu"]


def test_tensorboard_holds_the_logged_scalars_and_images(run_cli, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = run_cli(*SMALL_IMAGE, "trainer.steps=30", "trainer.eval_every=10", "logger=tensorboard", "hydra.run.dir=run")
    assert res.returncode == 0, res.stderr[-2000:]
    run = tmp_path / "run"
    history = json.loads((run / "metrics.json").read_text())["history"]
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    for tag, key in (("train/loss", "loss"), ("eval/test_psnr", "test_psnr"), ("eval/full_psnr", "full_psnr")):
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        assert logged == [(h["step"], pytest.approx(h[key], rel=1e-6)) for h in history]
    images = events.Images("reconstruction")
    assert [i.step for i in images] == [10, 20, 30] and (images[0].width, images[0].height) == (32, 32)
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [10, 20, 30]
    assert float(rows[-1]["test_psnr"]) == pytest.approx(history[-1]["test_psnr"])


def test_csv_logger_writes_history_without_tensorboard_files(run_cli, tmp_path):
    res = run_cli(*SMALL_IMAGE, "trainer.steps=20", "trainer.eval_every=10", "hydra.run.dir=run")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "run" / "history.csv").read_text().startswith("step,loss,train_psnr,test_psnr,full_psnr")
    assert not (tmp_path / "run" / "tensorboard").exists()


@pytest.mark.parametrize("launcher", ["submitit_local", "joblib"])
def test_multirun_through_a_real_launcher_then_summary(run_cli, tmp_path, launcher):
    pytest.importorskip("submitit" if launcher == "submitit_local" else "joblib")
    extra = ["hydra.launcher.timeout_min=10"] if launcher == "submitit_local" else ["hydra.launcher.n_jobs=2"]
    res = run_cli("-m", f"hydra/launcher={launcher}", *extra, "task=toy1d", "trainer.steps=30", "trainer.eval_every=30",
                  "model.width=32", "trainer.progress=false", "device=cpu", "sigma=1,10", "seed=0,1",
                  "hydra.sweep.dir=sweep", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = [json.loads((tmp_path / "sweep" / str(i) / "metrics.json").read_text()) for i in range(4)]
    assert all(r["status"] == "completed" for r in runs)
    assert sorted((r["sigma"], r["seed"]) for r in runs) == [(1.0, 0), (1.0, 1), (10.0, 0), (10.0, 1)]
    if launcher == "submitit_local":
        assert (tmp_path / "sweep" / ".submitit").is_dir()  # the jobs really went through submitit
    res = run_cli(str(tmp_path / "sweep"), name="ffrun-summary")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(open(tmp_path / "sweep" / "summary.csv")))
    assert sorted(float(r["sigma"]) for r in rows) == [1.0, 10.0] and all(int(r["n"]) == 2 for r in rows)


def test_optuna_search_sigma_runs_three_trials(run_cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    res = run_cli("-m", "experiment=search_sigma", "hydra.sweeper.n_trials=3", "task.resolution=32", "encoding.m=16",
                  "model.width=32", "trainer.steps=20", "trainer.eval_every=20", "trainer.progress=false",
                  "device=cpu", "hydra.sweep.dir=search", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    trials = [json.loads((tmp_path / "search" / str(i) / "metrics.json").read_text()) for i in range(3)]
    sigmas = [t["sigma"] for t in trials]
    assert len(set(sigmas)) == 3 and all(1.0 <= s <= 100.0 for s in sigmas)
    assert all(t["config"]["task"]["image"] == "chelsea" for t in trials)  # the tuning photo
    best = yaml.safe_load((tmp_path / "search" / "optimization_results.yaml").read_text())
    scores = [t["metrics"]["test_psnr"] for t in trials]
    assert best["best_value"] == pytest.approx(max(scores))  # the app returned the held-out metric
    assert best["best_params"]["sigma"] == pytest.approx(sigmas[scores.index(max(scores))])


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """Two finished runs: an image gauss field and an MRI `none` field (the grid-free baselines)."""
    root = tmp_path_factory.mktemp("runs")
    exe = [str(__import__("pathlib").Path(sys.executable).parent / "ffrun")]
    out = {}
    for name, args in {"gauss": [*SMALL_IMAGE, "encoding=gauss", "sigma=6"],
                       "none": ["task=mri", "task.resolution=12", "encoding=none", "model.width=32",
                                "trainer.progress=false", "device=cpu"],
                       "grid": ["task=ct", "task.resolution=16", "encoding=grid", "trainer.progress=false",
                                "device=cpu"]}.items():
        res = subprocess.run([*exe, *args, "trainer.steps=25", "trainer.eval_every=25", f"hydra.run.dir={name}"],
                             cwd=root, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        out[name] = root / name
    return out


@pytest.mark.parametrize("name", ["gauss", "none", "grid"])
def test_load_reproduces_the_reported_metric(finished_runs, name):
    run = finished_runs[name]
    reported = json.loads((run / "metrics.json").read_text())
    state = torch.get_rng_state()
    field = ffrun.load(run, device="cpu")
    assert torch.equal(torch.get_rng_state(), state)  # loading leaves the caller's random stream alone
    assert not field.training and field.step == 25
    task = ffrun.load_task(run)
    metrics = task.evaluate(field)
    assert metrics[reported["primary_metric"]] == pytest.approx(
        reported["metrics"][reported["primary_metric"]], abs=1e-9)


@pytest.mark.parametrize("name", ["gauss", "none", "grid"])
def test_export_reloads_without_hydra_and_matches_exactly(finished_runs, name, tmp_path, run_cli):
    run = finished_runs[name]
    res = run_cli(str(run), "--out", str(tmp_path / "exported"), name="ffrun-export")
    assert res.returncode == 0, res.stderr
    meta = json.loads((tmp_path / "exported" / "field.json").read_text())
    field = ffrun.load(run)
    if name == "gauss":
        assert torch.equal(torch.tensor(meta["encoding"]["B"]), field.encoding.B)
    coords = torch.rand(500, field.in_dim, generator=torch.Generator().manual_seed(0))
    # one thread on both sides: MKL splits a product by the threads it gets, and under load (the suite's other
    # worker) the two processes could get different splits, so different last bits, not a different field
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = field(coords).detach()
    finally:
        torch.set_num_threads(threads)
    torch.save({"coords": coords, "out": out}, tmp_path / "reference.pt")
    # A fresh interpreter in which importing Hydra or OmegaConf fails: the exported field must not need them.
    script = f"""
import sys
sys.modules["hydra"] = None
sys.modules["omegaconf"] = None
import ffrun, torch  # ffrun first: the same matrix path as this process (ffrun.util.blas)
torch.set_num_threads(1)
ref = torch.load({str(tmp_path / 'reference.pt')!r})
field = ffrun.load_exported({str(tmp_path / 'exported')!r})
assert torch.equal(field(ref["coords"]).detach(), ref["out"]), "outputs differ"
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_export_of_a_folder_without_a_run_is_one_line(run_cli, tmp_path):
    res = run_cli(str(tmp_path), name="ffrun-export")
    assert res.returncode == 2 and "no checkpoint.pt" in res.stderr and "Traceback" not in res.stderr
