"""Bad settings, files and environments refused with their true reason: one line, exit status 2."""

from __future__ import annotations

import os
import re
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


def test_ctrl_c_while_starting_is_one_line_and_130(spawn, tmp_path):
    from conftest import ffrun_cmd

    p = spawn([ffrun_cmd(), "experiment=smoke"], cwd=tmp_path)
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


# --- issue 28, item 7: mistakes that were silent or a traceback ----------------------------------------------


@pytest.mark.parametrize("overrides,named", [
    (["encoding=posenc", "encoding.scale=-3"], "encoding.scale=-3.0 is out of range: use scale >= 0"),
    (["model.w_std=-1"], "model.w_std=-1.0 is out of range: use w_std > 0"),
    (["model.b_std=-1"], "model.b_std=-1.0 is out of range: use b_std >= 0"),
])
def test_negative_scales_and_standard_deviations_are_refused(compose, overrides, named):
    with pytest.raises(FfrunError, match=re.escape(named)):
        validate(compose("experiment=smoke", *overrides))
    validate(compose("experiment=smoke", "encoding=posenc", "encoding.scale=0", "model.b_std=0"))  # the edges pass


def _too_long(tmp_path):
    from ffrun.data.images import load_image
    from ffrun.data.meshes import load_mesh
    from ffrun.data.scenes import load_blender
    from ffrun.data.volumes import load_nifti
    from ffrun.train.checkpoint import find_checkpoint

    name = str(tmp_path / ("a" * 300))
    return {"task.image": lambda: load_image(name + ".png", 16), "task.mesh": lambda: load_mesh(name + ".obj"),
            "task.volume": lambda: load_nifti(name + ".nii.gz"), "task.data": lambda: load_blender(name, "train"),
            "trainer.resume": lambda: find_checkpoint(name, f"trainer.resume={name}")}


@pytest.mark.parametrize("key", ["task.image", "task.mesh", "task.volume", "task.data", "trainer.resume"])
def test_a_file_name_too_long_for_the_file_system_is_one_line(tmp_path, key):
    with pytest.raises(FfrunError) as e:
        _too_long(tmp_path)[key]()
    msg = str(e.value)
    assert msg.startswith(key) and "too long" in msg and "give a shorter path" in msg and "\n" not in msg, msg
    assert len(msg) < 400  # the name is shortened, the fix stays on screen


def test_a_tilde_for_a_user_that_does_not_exist_is_one_line(monkeypatch):
    from ffrun.apps import reproduce
    from ffrun.data.location import cache_dir, data_dir

    monkeypatch.setenv("FFRUN_DATA", "~nouser-ffrun/x")
    with pytest.raises(FfrunError, match=r"^\$FFRUN_DATA=~nouser-ffrun/x: cannot expand ~nouser-ffrun: no such user"):
        data_dir()
    monkeypatch.setenv("FFRUN_CACHE", "~nouser-ffrun/c")
    with pytest.raises(FfrunError, match=r"^\$FFRUN_CACHE=~nouser-ffrun/c: cannot expand"):
        cache_dir()
    monkeypatch.setenv("FFRUN_CACHE", "")  # empty: the default, not the current folder
    assert cache_dir().is_absolute()
    assert reproduce.main(["--scale", "smoke", "--tasks", "image"]) == 2


@pytest.fixture
def image_set(tmp_path, monkeypatch):
    """$FFRUN_DATA/images/div2k/test holding 00..02.png and a folder named 03.png."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "images" / "div2k" / "test"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / f"{i:02d}.png")
    (folder / "03.png").mkdir()
    monkeypatch.setenv("FFRUN_DATA", str(tmp_path))
    return folder


@pytest.mark.parametrize("spec,words", [
    ("div2k:-1", "not an image of the set 'div2k'"),
    ("div2k", "no such file; 'div2k' is an image set"),
    ("div2k:3", "03.png is a folder, not an image (it holds 00..02)"),
    ("div2k:7", "no image 07.png in"),
])
def test_a_wrong_image_set_name_names_the_set_syntax(image_set, spec, words):
    from ffrun.data.images import load_image

    with pytest.raises(FfrunError) as e:
        load_image(spec, 8)
    msg = str(e.value)
    assert words in msg and "use div2k:N with N in 0..2 (e.g. div2k:0)" in msg and "\n" not in msg, msg
    assert load_image("div2k:2", 8).shape == (8, 8, 3)
