"""sigma=auto through `ffrun`: predicted before training, recorded in metrics.json and config.yaml."""

from __future__ import annotations

import json

import yaml


def test_sigma_auto_run_records_the_choice(run_cli, tmp_path):
    res = run_cli("experiment=smoke", "sigma=auto", "device=cpu", "hydra.run.dir=run")
    assert res.returncode == 0, res.stderr[-2000:]
    rec = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert rec["status"] == "completed" and isinstance(rec["sigma"], float) and rec["sigma"] > 0
    auto = rec["sigma_auto"]
    assert auto["method"] and auto["seconds"] >= 0 and len(auto["candidates"]) == len(auto["scores"]) > 1
    assert min(auto["candidates"]) <= rec["sigma"] <= max(auto["candidates"])
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["sigma"] == rec["sigma"] == cfg["encoding"]["sigma"] == rec["config"]["encoding"]["sigma"]
