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


def test_a_record_reads_back_and_writes_the_same_keys_in_the_same_order(tmp_path):
    """metrics.json written by an earlier ffrun (a full record with its optional keys, and the bare record of a
    run stopped before training) goes through RunRecord unchanged, byte for byte."""
    from ffrun.run.record import RunRecord, Status

    full = {**record("gauss", 10.0, 0, 20.0), "reason": None, "model": "mlp", "method": "gauss", "params": 10,
            "sizes": {}, "step": 10, "checkpoint_step": 10, "lr": 0.001, "device": "cpu", "peak_memory_mb": 1.0,
            "primary_metric": "test_psnr", "history": [{"step": 10, "loss": 0.1, "test_psnr": 20.0}],
            "resumed_from": None, "signal": 2, "sigma_auto": {"method": "heldout"}}
    order = ["status", "reason", "task", "encoding", "model", "method", "params", "sizes", "sigma", "seed", "steps",
             "step", "checkpoint_step", "lr", "device", "wall_s", "peak_memory_mb", "primary_metric", "metrics",
             "history", "resumed_from", "config", "signal", "sigma_auto"]
    full = {k: full[k] for k in order}
    bare = {"status": "failed", "reason": "bad", "task": "image", "encoding": "gauss", "seed": 0, "step": 0,
            "checkpoint_step": None, "metrics": {}, "history": [], "config": {}}
    for i, written in enumerate([full, bare]):
        (tmp_path / str(i)).mkdir()
        text = json.dumps(written, indent=2) + "\n"
        (tmp_path / str(i) / "metrics.json").write_text(text)
        rec = RunRecord.read(tmp_path / str(i))
        assert rec.status is Status(written["status"]) and rec.to_dict() == written
        rec.write(tmp_path / str(i))
        assert (tmp_path / str(i) / "metrics.json").read_text() == text
    assert RunRecord.read(tmp_path / "0").succeeded() and not RunRecord.read(tmp_path / "1").succeeded()
