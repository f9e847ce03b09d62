"""Bad settings, files and environments refused with their true reason: one line, exit status 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ffrun.config import validate
from ffrun.util.errors import FfrunError


@pytest.mark.parametrize("overrides,named", [
    (["task.resolution=-2"], "task.resolution=-2"),
    (["task=mri", "task.resolution=-8"], "task.resolution=-8"),
    (["task=nerf", "task.downscale=-1"], "task.downscale=-1"),
    (["task=nerf", "task.downscale=0"], "task.downscale=0"),  # sigma's formula divides by it
    (["task=nerf", "task.builtin_resolution=0"], "task.builtin_resolution=0"),
    (["task=shape", "task.chunk=0"], "task.chunk=0"),
    (["task=shape", "task.surface_std=-1"], "task.surface_std=-1"),
    (["task=ct", "task.resolution=0"], "task.resolution=0"),
    (["sigma=abc"], "sigma='abc' is not a number"),
    (["sigma=automatic"], "sigma='automatic' is not a number"),
    (["+foo=1"], "foo: not a setting of ffrun"),
])
def test_the_raw_setting_is_named_not_what_it_derives(compose, overrides, named):
    with pytest.raises(FfrunError) as e:
        validate(compose(*overrides))
    assert named in str(e.value)
    if "sigma=" not in named:
        assert "sigma" not in str(e.value)  # not blamed on the sigma derived from it


def test_a_bad_sigma_string_is_one_line_and_exit_2(run_cli):
    r = run_cli("experiment=smoke", "sigma=automatic")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "ffrun: error: config: sigma='automatic' is not a number" in r.stderr


def test_sigma_auto_on_a_tiny_grid_names_the_grid_size(run_cli):
    r = run_cli("experiment=smoke", "sigma=auto", "task.resolution=4")
    assert r.returncode == 2, r.stderr
    assert "2 points per axis" in r.stderr and "at least 4" in r.stderr and "square grid" not in r.stderr


def test_a_first_layer_that_cannot_fit_is_refused_before_allocating(compose):
    from ffrun.run.device import check_fits, memory_bytes, memory_error

    cpu = torch.device("cpu")
    with pytest.raises(FfrunError, match=r"encoding.m=100000000 .* GiB"):
        check_fits(compose("encoding.m=100000000"), cpu)
    check_fits(compose(), cpu)  # the defaults fit
    assert memory_bytes(cpu) > 2**28
    assert memory_error(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 bytes"))
    assert not memory_error(RuntimeError("shape mismatch"))


def test_random_bytes_named_obj_are_not_a_point_cloud(tmp_path):
    from ffrun.data.meshes import load_mesh

    p = tmp_path / "garbage.obj"
    p.write_bytes(bytes(range(256)) * 12)
    with pytest.raises(FfrunError, match="not a readable OBJ mesh") as e:
        load_mesh(p)
    assert "point cloud" not in str(e.value)
    (tmp_path / "cloud.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    with pytest.raises(FfrunError, match="point cloud"):
        load_mesh(tmp_path / "cloud.obj")


@pytest.mark.parametrize("path,words", [("/proc/ffrun-no/x", "a folder you can write to"),
                                        ("a" * 300, "shorter path")])
def test_an_unwritable_or_too_long_run_directory_is_one_line(run_cli, path, words):
    r = run_cli("experiment=smoke", f"hydra.run.dir={path}")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and words in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_vectorized_launcher_refuses_max_group_0(run_cli):
    r = run_cli("-m", "experiment=smoke", "hydra/launcher=vectorized", "hydra.launcher.max_group=0", "sigma=1,2")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "hydra.launcher.max_group=0 is out of range" in r.stderr


def test_missing_tensorboard_in_a_vectorized_sweep_is_one_line_per_job(tmp_path):
    from conftest import ffrun_cmd

    shadow = tmp_path / "shadow" / "tensorboard"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('tensorboard is not installed')\n")
    env = {**os.environ, "PYTHONPATH": str(shadow.parent)}
    r = subprocess.run([ffrun_cmd(), "-m", "experiment=smoke", "hydra/launcher=vectorized", "logger=tensorboard",
                        "sigma=1,2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.count("logger=tensorboard needs the tensorboard package") == 2


def test_ctrl_c_while_starting_is_one_line_and_130(tmp_path):
    from conftest import ffrun_cmd

    p = subprocess.Popen([ffrun_cmd(), "experiment=smoke"], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # past the interpreter's start, inside the imports of torch and Hydra
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    if p.returncode == 0:
        pytest.skip("the run finished before the signal came")
    assert "Traceback" not in err, err
    assert p.returncode == 130 and "interrupted" in err


def test_the_signal_handler_is_only_for_console_scripts(monkeypatch):
    from ffrun.util.errors import quiet_interrupt_while_starting

    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(sys, "argv", ["python"])
    quiet_interrupt_while_starting()
    assert signal.getsignal(signal.SIGINT) is before  # `import ffrun.apps.cli` in a notebook keeps Ctrl-C as it was
