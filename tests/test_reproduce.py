"""ffrun-reproduce: the Table 1 command, its verdicts, galleries and resumability (smoke scale)."""

from __future__ import annotations

import csv
import json
import os
import subprocess

import pytest
from conftest import ffrun_cmd
from PIL import Image

from ffrun.sweep.paper import ENCODINGS, PAPER, TASKS
from ffrun.sweep.table1 import Row, verdict


def rows(task: str, **means: float) -> dict[str, Row]:
    return {e: Row(task, e, PAPER[task][0], [v]) for e, v in means.items()}


def test_verdict_holds_and_names_what_breaks():
    ok = verdict("image", rows("image", none=19.0, basic=21.0, posenc=25.0, gauss=24.6))
    assert "holds" in ok and "NOT" not in ok  # gauss within 0.5 dB below posenc is allowed
    bad = verdict("image", rows("image", none=19.0, basic=21.0, posenc=25.0, gauss=24.4))
    assert "does NOT hold" in bad and "gauss >= posenc - 0.5" in bad and "none < basic" not in bad
    swapped = verdict("nerf", rows("nerf", none=22.5, basic=21.8, posenc=24.5, gauss=27.2))
    assert "NOT" in swapped and "expected none < basic, got none 22.5 >= basic 21.8" in swapped
    assert "22.5 < 21.8" not in swapped  # a failed check never reads as if it held
    missing = verdict("image", rows("image", none=19.0, basic=21.0, posenc=25.0))
    assert "no verdict" in missing and "gauss" in missing


def test_verdict_places_grid_where_the_paper_does():
    # CT: basic 23.31 < grid 24.99 < posenc 26.89; MRI: posenc 32.23 < grid 32.71 < gauss 34.51
    ct = dict(none=16.0, basic=23.0, posenc=27.0, gauss=28.0)
    assert "NOT" not in verdict("ct", rows("ct", **ct, grid=25.0))
    low = verdict("ct", rows("ct", **ct, grid=22.0))
    assert "NOT" in low and "expected basic < grid < posenc (the paper: 23.31 < 24.99 < 26.89)" in low
    assert "got grid 22 <= basic 23" in low
    high = verdict("ct", rows("ct", **ct, grid=27.5))
    assert "got grid 27.5 >= posenc 27" in high
    mri = dict(none=26.0, basic=28.0, posenc=32.0, gauss=34.0)
    assert "NOT" not in verdict("mri", rows("mri", **mri, grid=33.0))
    assert "NOT" in verdict("mri", rows("mri", **mri, grid=31.0))


def test_verdict_uses_an_iou_tolerance_for_shape():
    assert "NOT" not in verdict("shape", rows("shape", none=0.86, basic=0.89, posenc=0.960, gauss=0.956))
    assert "NOT" in verdict("shape", rows("shape", none=0.86, basic=0.89, posenc=0.960, gauss=0.950))


def test_std_of_one_scene_is_its_spread_over_views():
    r = Row("nerf", "gauss", "test_psnr", [25.0], view_std=0.8)
    assert r.mean == 25.0 and r.std == 0.8
    r = Row("image", "gauss", "test_psnr", [24.0, 26.0])
    assert r.mean == 25.0 and r.std == pytest.approx(1.0)  # population std, as the notebooks


def reproduce(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([ffrun_cmd("ffrun-reproduce"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke reproduction of every task (what CI runs), shared by the tests below."""
    root = tmp_path_factory.mktemp("reproduce")
    proc = reproduce("--scale", "smoke", "--out", str(root / "t1"), "device=cpu", cwd=root)
    return root, proc


def test_smoke_runs_every_task_and_writes_the_table(smoke):
    root, proc = smoke
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = root / "t1"
    with open(out / "table1.csv") as f:
        table = list(csv.DictReader(f))
    for col in ("task", "encoding", "metric", "ffrun", "ffrun_std", "n", "paper", "paper_std", "scale"):
        assert col in table[0]
    got = {(r["task"], r["encoding"]) for r in table}
    want = {(t, e) for t in TASKS for e in PAPER[t][1]}
    assert got == want
    for r in table:
        assert r["scale"] == "smoke" and r["n"] == "1"
        assert float(r["paper"]) == pytest.approx(PAPER[r["task"]][1][r["encoding"]][0])
        run = out / "runs" / r["task"]
        metrics = json.loads(next(run.rglob(f"{r['encoding']}/metrics.json")).read_text())
        assert metrics["status"] == "completed"
        assert float(r["ffrun"]) == pytest.approx(metrics["metrics"][r["metric"]], abs=0.006)
    md = (out / "table1.md").read_text()
    assert md.count("the paper's ordering") + md.count("no verdict") == len(TASKS)
    for task in TASKS:
        with Image.open(out / f"gallery_{task}.png") as g:
            n_panels = len(PAPER[task][1]) + (0 if task == "shape" else 1)  # shape previews hold their truth
            assert g.width >= n_panels * 256 and g.height >= 256, (task, g.size)
    for line in ("image/none", "mri/grid", "nerf/gauss"):
        assert line in proc.stdout  # a progress line per run
    assert "left" in proc.stdout


def test_rerun_skips_completed_and_resumes_interrupted(smoke):
    root, _ = smoke
    out = root / "t1"
    run = out / "runs" / "image" / "astronaut" / "gauss"
    rec = json.loads((run / "metrics.json").read_text())
    rec["status"] = "interrupted"  # as a SIGTERM leaves it: a checkpoint and an interrupted record
    (run / "metrics.json").write_text(json.dumps(rec))
    other = out / "runs" / "image" / "astronaut" / "none" / "metrics.json"
    before = other.stat().st_mtime_ns
    proc = reproduce("--scale", "smoke", "--tasks", "image", "--out", str(out), "device=cpu", cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 already done" not in proc.stdout and "(3 already done)" in proc.stdout
    after = json.loads((run / "metrics.json").read_text())
    assert after["status"] == "completed" and after["resumed_from"] and str(run) in after["resumed_from"]
    assert other.stat().st_mtime_ns == before  # completed runs are not touched


def test_other_settings_into_the_same_folder_are_refused(smoke):
    root, _ = smoke
    proc = reproduce("--scale", "cpu", "--tasks", "image", "--out", str(root / "t1"), cwd=root)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "another --out" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["--tasks", "image,imgae"], "unknown task"),
    (["--scale", "huge"], "invalid choice"),
    (["--data", "/nonexistent/data"], "no such folder"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, needle):
    proc = reproduce(*args, "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr


def test_every_encoding_of_table1_is_covered():
    assert set(ENCODINGS) <= set(PAPER["image"][1]) and "grid" in PAPER["ct"][1] and "grid" in PAPER["mri"][1]


def test_a_completed_run_is_not_stale_because_hydra_reserialised_its_overrides(tmp_path):
    """Hydra writes a sweep job's overrides back re-serialised (trainer.lr=2e-3 as 0.002, false as False): the
    same command must still find the run complete, not move it aside as run with other settings."""
    from ffrun.sweep.runs import Run

    run_dir = tmp_path / "gauss"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"status": "completed"}))
    recorded = ["experiment=paper_shape", "encoding=gauss", "trainer.progress=False", "trainer.lr=0.002",
                "trainer.steps=600"]
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in recorded))
    ours = ["experiment=paper_shape", "encoding=gauss", "trainer.progress=false", "trainer.lr=2e-3",
            "trainer.steps=600"]
    assert Run("shape", "dragon", "gauss", run_dir, ours).status() == "completed"
    assert Run("shape", "dragon", "gauss", run_dir, [*ours[:3], "trainer.lr=1e-3", ours[4]]).status() == "stale"


def test_a_run_made_before_its_preset_was_edited_is_stale(tmp_path):
    """Same overrides, but the preset they name composes to other settings than the run was made with (a seed
    edited since): its score is not this command's, so it is stale, and the message names the setting. An option
    added since (a key the recorded config lacks) is no change."""
    from omegaconf import OmegaConf

    from ffrun.run.compose import compose
    from ffrun.sweep.runs import Run

    ours = ["experiment=grids_div2k", "method=grids/ffn", "task.protocol=fit", "model.params=10000"]
    run_dir = tmp_path / "ffn"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"status": "completed"}))
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in ours))
    cfg = OmegaConf.to_container(compose(ours), resolve=False)
    config = run_dir / ".hydra" / "config.yaml"

    def record(c):
        config.write_text(OmegaConf.to_yaml(OmegaConf.create(c)))
        os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))  # the cache's stamp

    record(cfg)
    run = Run("image", "00", "ffn", run_dir, ours)
    assert run.status() == "completed" and run.config_changes() == []
    del cfg["model"]["linear_last_hidden"]  # made before the option existed
    record(cfg)
    assert run.status() == "completed"
    cfg["seed"] = 0  # made before the preset's seed changed
    record(cfg)
    assert run.status() == "stale"
    assert "seed: 0 -> 1234" in run.recorded_differences()
