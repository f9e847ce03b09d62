"""Classes of fault a hostile pass over the newer surfaces found: each refused in one line, or accepted and
doing what it says."""

from __future__ import annotations

import json

import pytest
from conftest import SMOKE


@pytest.mark.parametrize("budgets,said", [("-1e4", "--budgets '-1e4': give parameter counts >= 1"),
                                          ("inf", "--budgets 'inf': give finite parameter counts"),
                                          ("1e4,-inf", "--budgets '1e4,-inf': give finite parameter counts")])
def test_a_budget_that_is_no_count_is_one_line(run_cli, budgets, said):
    r = run_cli("--scale", "smoke", "--budgets", budgets, "--out", "c", name="ffrun-compare", timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ffrun-compare: error: {said}"), lines


def test_a_sweep_that_leaves_a_run_unfinished_does_not_exit_0(tmp_path, capsys):
    from ffrun.apps.compare import sweep_exit
    from ffrun.sweep.runs import Run

    runs = [Run("image", "astronaut", enc, tmp_path / enc) for enc in ("gauss", "siren")]
    for run, status in zip(runs, ("completed", "interrupted")):
        run.dir.mkdir()
        (run.dir / "metrics.json").write_text(json.dumps({"status": status, "task": "image", "step": 5}))
    assert sweep_exit(runs, False, "the table holds") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 of 2 runs did not finish" in err[0] and "run the same command again" in err[0]
    (runs[1].dir / "metrics.json").write_text(json.dumps({"status": "completed", "task": "image", "step": 5}))
    assert sweep_exit(runs, False, "the table holds") == 0


def test_another_thread_count_continues_a_run(run_cli, tmp_path):
    """trainer.threads changes no result: a run continued with another count is the same experiment."""
    assert run_cli(*SMOKE, "trainer.threads=1", "hydra.run.dir=D").returncode == 0
    r = run_cli(*SMOKE, "trainer.threads=2", "trainer.steps=30", "trainer.resume=D", "hydra.run.dir=D")
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((tmp_path / "D" / "metrics.json").read_text())
    assert rec["step"] == 30 and rec["resumed_from"] == "D/checkpoint.pt"
    again = run_cli(*SMOKE, "trainer.threads=2", "trainer.steps=30", "hydra.run.dir=D")
    assert again.returncode == 0 and "already holds this run, completed at step 30" in again.stdout


@pytest.fixture(scope="module")
def grids_export(tmp_path_factory):
    """A run sized by the Grids benchmark's rule (model.budget_rule=grids), exported."""
    import subprocess

    from conftest import ffrun_cmd

    where = tmp_path_factory.mktemp("grids_export")
    train = [ffrun_cmd(), *SMOKE, "method=siren", "model.budget_rule=grids", "model.params=3000", "hydra.run.dir=run"]
    for cmd in (train, [ffrun_cmd("ffrun-export"), "run"]):
        r = subprocess.run(cmd, cwd=where, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    return where / "run" / "export"


def test_an_export_of_a_grids_benchmark_run_loads(grids_export):
    import torch

    from ffrun.apps.export import load_exported

    meta = json.loads((grids_export / "field.json").read_text())
    assert "benchmark_params" in meta["network"]["sizes"]  # a count beside the config keys
    field = load_exported(grids_export)
    assert field(torch.rand(7, 2)).shape == (7, 3)


@pytest.mark.parametrize("edit", ["method", "w0", "bounds", "activation"])
def test_an_edited_field_json_is_refused(grids_export, tmp_path, edit):
    import shutil

    from ffrun.apps.export import load_exported
    from ffrun.util.errors import FfrunError

    folder = tmp_path / "export"
    shutil.copytree(grids_export, folder)
    meta = json.loads((folder / "field.json").read_text())
    if edit == "method":
        meta["method"] = "wire"
    elif edit == "w0":
        meta["config"]["model"]["w0"] = 90.0
    elif edit == "bounds":
        meta["network"]["bounds"] = [-1.0, 1.0]
    else:
        meta["network"]["out_activation"] = "none" if meta["network"]["out_activation"] != "none" else "sigmoid"
    (folder / "field.json").write_text(json.dumps(meta))
    with pytest.raises(FfrunError, match="field.json: changed since ffrun-export wrote it"):
        load_exported(folder)
    annotated = json.loads((grids_export / "field.json").read_text())
    annotated["metrics"]["note"] = 1.0  # an annotation outside the definition is no change of the field
    (folder / "field.json").write_text(json.dumps(annotated))
    load_exported(folder)


@pytest.mark.parametrize("args,said", [
    (["method=siren", "model.params=10"], "model.params=10 is too small for the Grids benchmark's siren"),
    (["method=wire", "model.params=5"], "model.params=5 is too small for the Grids benchmark's wire"),
    (["encoding=gauss", "model.params=20"], "model.params=20 is too small for the Grids benchmark's ffn"),
    (["method=densegrid", "model=direct", "model.params=1"],
     "model.params=1 is too small for the Grids benchmark's grid"),
    (["method=hashgrid", "model.params=100"], "model.params=100 is below the benchmark's Instant-NGP decoder"),
])
def test_the_grids_budget_rule_refuses_a_budget_too_small_in_one_line(run_cli, args, said):
    r = run_cli(*SMOKE, "model.budget_rule=grids", *args, "hydra.run.dir=run")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0] and "raise model.params" in lines[0], lines


def test_the_grids_budget_rule_sizes_a_network_with_no_hidden_layer(compose):
    from ffrun.models.grids_budget import grids_sizes, layer_width

    cfg = compose("experiment=smoke", "method=siren", "model.depth=2", "model.budget_rule=grids", "model.params=3000")
    width = grids_sizes(cfg.encoding, cfg.model, 2, 3)["model.width"]
    # the benchmark's equation L w^2 + (n_in + n_out + L) w + (n_in + n_out - P) = 0 at L = 0: linear, not 0 / 0
    assert width == layer_width(2, 3, 0, 3000) == (3000 - 5) // 5


@pytest.mark.parametrize("args,said", [
    (["task.protocol=fit", "task.noise_std=0.1"], "task.noise_std=0.1 acts under task.protocol=denoise only"),
    (["task.protocol=fit", "task.reference=div2k_grids:hr/00"],
     "task.reference='div2k_grids:hr/00' is scored under task.protocol=superres only"),
    (["task.protocol=superres", "task.reference=/no/such.png"], "task.reference='/no/such.png': no such file"),
    (["task.protocol=superres", "task.reference=div2k_grids:hr/01"],
     "task.reference='div2k_grids:hr/01': no image 01.png in"),
])
def test_a_protocol_setting_is_refused_where_it_would_not_act_and_named_as_given(run_cli, args, said):
    r = run_cli(*SMOKE, "task.image=div2k_grids:x4/00", "task.resolution=native", *args, "hydra.run.dir=run")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0] and "task.image=" not in lines[0].split(said)[1], lines
    if "hr/01" in said:  # the indices offered are the files present
        assert "(it holds 00, 06, 07, 09)" in lines[0] and "N in 0, 6, 7, 9" in lines[0], lines


def test_a_reference_that_is_no_whole_multiple_of_the_image_is_refused(tmp_path):
    import numpy as np
    from PIL import Image
    from test_grids_protocols import image_cfg

    from ffrun.tasks.image import ImageTask
    from ffrun.util.errors import FfrunError

    lo, hi = tmp_path / "lo.png", tmp_path / "hi.png"
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(lo)
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(hi)  # 4x in height, 50/12 in width
    import torch

    with pytest.raises(FfrunError, match=r"50 x 40 pixels is not an integer multiple of the training image's 12 x 10"):
        ImageTask(image_cfg(str(lo), protocol="superres", reference=str(hi)), torch.device("cpu"))


def test_an_output_activation_the_grid_baseline_would_ignore_is_refused(run_cli, tmp_path):
    r = run_cli(*SMOKE, "task=ct", "encoding=grid", "model.out_activation=none", "hydra.run.dir=run")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.out_activation=none has no effect with encoding=grid" in lines[0], lines
    assert run_cli(*SMOKE, "task=ct", "encoding=grid", "hydra.run.dir=ok").returncode == 0
