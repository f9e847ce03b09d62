"""ffrun-summary's grouping and statistics against hand-computed values."""

from __future__ import annotations

import json


from ffrun.apps.summary import main, summarise


def record(encoding, sigma, seed, test_psnr, image="astronaut", lr=1e-3, status="completed"):
    cfg = {"task": {"name": "image", "image": image, "resolution": 64, "data_seed": 0},
           "encoding": {"name": encoding, "m": 16, "sigma": sigma or 10.0, "scale": 6.0},
           "trainer": {"lr": lr, "steps": 10, "progress": False}, "sigma": sigma or 10.0, "seed": seed,
           "device": "cpu"}
    return {"status": status, "task": "image", "encoding": encoding, "sigma": sigma, "seed": seed,
            "steps": 10, "wall_s": 1.0, "metrics": {"test_psnr": test_psnr}, "config": cfg}


def test_seeds_and_images_average_into_one_setting():
    runs = [record("gauss", 10.0, 0, 20.0), record("gauss", 10.0, 1, 24.0, image="text"),
            record("gauss", 1.0, 0, 15.0), record("none", None, 0, 12.0)]
    varying, rows = summarise(runs)
    assert varying == []
    by = {(r["encoding"], r["sigma"]): r for r in rows}
    mean, std, n = by[("gauss", 10.0)]["test_psnr"]
    assert (mean, std, n) == (22.0, 2.0, 2)  # population std of {20, 24}
    assert by[("gauss", 10.0)]["n"] == 2 and by[("none", None)]["n"] == 1
    assert [r["encoding"] for r in rows] == ["none", "gauss", "gauss"]


def test_a_swept_key_becomes_a_column():
    runs = [record("gauss", 10.0, 0, 20.0, lr=1e-3), record("gauss", 10.0, 0, 21.0, lr=1e-2)]
    varying, rows = summarise(runs)
    assert varying == ["trainer.lr"]
    assert sorted(r["trainer.lr"] for r in rows) == [1e-3, 1e-2]


def test_cli_lists_runs_that_did_not_complete(tmp_path, capsys):
    for i, rec in enumerate([record("gauss", 10.0, 0, 20.0),
                             {**record("gauss", 10.0, 1, 0.0), "status": "failed", "reason": "bad image",
                              "metrics": {}}]):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "metrics.json").write_text(json.dumps(rec))
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "metrics.json").write_text("{truncated")
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "| 1 | failed | bad image |" in out.out
    assert "unreadable" in out.err
    assert (tmp_path / "summary.md").read_text().startswith("| task |")
