"""Tasks are plug-ins, as methods are: the registered names, one limit check with one message, and a task
written outside ffrun (a module and a yaml, nothing else) that trains, chooses sigma=auto, summarises,
exports and sweeps through ffrun's own commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import ROOT, ffrun_cmd

from ffrun.tasks import Task, build_task, registered
from ffrun.tasks.registry import PLUGINS_ENV, load_builtins
from ffrun.util.errors import FfrunError


def test_every_registered_task_is_covered_here():
    tasks = registered()
    assert list(tasks) == ["image", "toy1d", "ct", "mri", "shape", "nerf"]
    for name, entry in tasks.items():
        assert issubclass(entry.cls, Task) and entry.schema().name == name
        assert (ROOT / "configs" / "task" / f"{name}.yaml").is_file(), name
        assert entry.cls.coordinates, name  # ffrun-export's note on what the field's coordinates mean


@pytest.mark.parametrize("overrides, says", [
    (["task.resolution=31"], "task.resolution=31 is out of range for task=image: use an even size >= 4"),
    (["task=toy1d", "task.n_points=9"], "task.n_points=9 is out of range for task=toy1d: use an even number >= 8"),
    (["task=ct", "task.resolution=4"], "task.resolution=4 is out of range for task=ct: use at least 8 pixels"),
])
def test_a_task_limit_is_one_check_with_one_message(compose, overrides, says):
    from ffrun.config import validate

    cfg = compose(*overrides)
    with pytest.raises(FfrunError) as by_config:
        validate(cfg)
    with pytest.raises(FfrunError) as by_building:  # building the task directly says the same
        build_task(cfg.task, torch.device("cpu"), None, 0)
    assert says in str(by_config.value) and str(by_building.value) == str(by_config.value)


def test_a_plugin_that_cannot_be_imported_is_named(monkeypatch):
    monkeypatch.setenv(PLUGINS_ENV, "ffrun_no_such_plugin")
    with pytest.raises(FfrunError, match=f"{PLUGINS_ENV}: cannot import 'ffrun_no_such_plugin'"):
        load_builtins()


WAVE = '''
    """A task outside ffrun: a sine wave sampled on a grid, the even points train and the odd ones test."""

    import math
    from dataclasses import dataclass

    import torch

    from ffrun.tasks import Limit, TaskConfig, register_task
    from ffrun.tasks.base import PointRegressionTask
    from ffrun.util.atomic import write_text


    @dataclass
    class WaveConfig(TaskConfig):
        name: str = "wave"
        n_points: int = 64
        frequency: float = 3.0


    @register_task("wave", WaveConfig, limits={"n_points": Limit(8, "an even number >= 8", even=True)})
    class WaveTask(PointRegressionTask):
        in_dim, out_dim, out_activation, primary_metric = 1, 1, "none", "test_psnr"
        coordinates = "x in [0, 1); output 0.5 + 0.5 sin(2 pi f x)"

        def __init__(self, cfg, device, batch_size=None, seed=0):
            x = torch.linspace(0, 1, cfg.n_points + 1, device=device)[:-1, None]
            y = 0.5 + 0.5 * torch.sin(2 * math.pi * cfg.frequency * x)
            self.device = device
            self.train, self.test = (x[::2], y[::2]), (x[1::2], y[1::2])
            self._init_sampler(batch_size, seed)

        def evaluate(self, field):
            mse = torch.mean((field.predict(self.test[0]) - self.test[1]) ** 2).item()
            return {"test_psnr": -10 * math.log10(max(mse, 1e-12))}

        def save(self, field, run_dir):
            write_text(run_dir / "wave.csv", "".join(f"{v:.6g}\\n" for v in field.predict(self.test[0])[:, 0]))
'''

WAVE_YAML = """\
defaults:
  - /schema/task@_here_: wave
  - _self_

name: wave
n_points: 64
frequency: 3.0
default_sigma: 2.0
"""

SMALL = ["encoding.m=16", "model.width=16", "model.depth=2", "trainer.steps=30", "trainer.eval_every=15",
         "trainer.progress=false", "device=cpu"]


@pytest.fixture
def plugin(tmp_path):
    """The wave task's module on PYTHONPATH and named in FFRUN_PLUGINS, its yaml in a config folder given to
    Hydra's search path; returns a runner of ffrun's console scripts in tmp_path with that environment."""
    (tmp_path / "wave.py").write_text(textwrap.dedent(WAVE))
    (tmp_path / "configs" / "task").mkdir(parents=True)
    (tmp_path / "configs" / "task" / "wave.yaml").write_text(WAVE_YAML)
    env = {**os.environ, PLUGINS_ENV: "wave",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'configs'}]"

    def run(*args: str, name: str = "ffrun") -> subprocess.CompletedProcess:
        args = (*args, searchpath) if name == "ffrun" else args
        return subprocess.run([ffrun_cmd(name), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)

    return run


def test_a_task_written_outside_ffrun_trains_summarises_exports_and_sweeps(plugin, tmp_path):
    r = plugin("task=wave", "sigma=auto", *SMALL, "hydra.run.dir=run")
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert rec["status"] == "completed" and rec["task"] == "wave" and rec["step"] == 30
    assert rec["sigma_auto"]["method"] == "held-out NTK (lattice)"  # a point-regression task's proxy, for free
    assert (tmp_path / "run" / "wave.csv").is_file()

    r = plugin("run", name="ffrun-summary")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "wave" in (tmp_path / "run" / "summary.md").read_text()

    r = plugin("run", "--out", "export", name="ffrun-export")
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((tmp_path / "export" / "field.json").read_text())
    assert meta["task"] == "wave" and meta["coordinates"] == "x in [0, 1); output 0.5 + 0.5 sin(2 pi f x)"
    from ffrun.apps.export import load_exported  # no ffrun config, no plug-in: torch and safetensors alone

    assert load_exported(tmp_path / "export")(torch.rand(5, 1)).shape == (5, 1)

    r = plugin("-m", "hydra/launcher=vectorized", "task=wave", *SMALL, "seed=0,1", "hydra.sweep.dir=sweep")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "training 2 jobs as one batched network" in r.stdout + r.stderr  # Task.vectorizable, inherited
    runs = [json.loads((tmp_path / "sweep" / str(i) / "metrics.json").read_text()) for i in (0, 1)]
    assert [(r["task"], r["seed"], r["status"]) for r in runs] == [("wave", 0, "completed"), ("wave", 1, "completed")]

    r = plugin("task=wave", "task.n_points=9", *SMALL, "hydra.run.dir=bad")  # its limit: one line, exit 2
    assert r.returncode == 2 and "task.n_points=9 is out of range for task=wave" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_resume_command_of_a_plug_in_run_keeps_its_plug_in_and_search_path(plugin, tmp_path):
    r = plugin("task=wave", *SMALL, "hydra.run.dir=run")
    assert r.returncode == 0, r.stderr[-3000:]
    env = {**os.environ, PLUGINS_ENV: "wave"}
    command = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from ffrun.run.resume "
                              "import resume_command; print(resume_command(Path('run')))"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, check=True).stdout.strip()
    assert command.startswith("FFRUN_PLUGINS=wave ffrun ") and "hydra.searchpath=[file://" in command, command
    # run as printed (asking for more steps), from a shell that has only PYTHONPATH for the plug-in's module
    shell_env = {k: v for k, v in env.items() if k != PLUGINS_ENV}
    shell_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    shell_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    again = subprocess.run(["bash", "-c", command + " trainer.steps=45"], cwd=tmp_path, env=shell_env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    rec = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert rec["task"] == "wave" and rec["step"] == 45 and rec["resumed_from"] == "run/checkpoint.pt"


BROKEN = {
    "raises": ("raise ValueError('boom')\n", "importing 'broken' raised ValueError: boom; fix the module"),
    "replaces": ("from ffrun.tasks.registry import register_task\n"
                 "from ffrun.tasks.image import ImageTask, ImageTaskConfig\n"
                 "@register_task('image', ImageTaskConfig)\nclass Mine(ImageTask):\n    pass\n",
                 "task 'image' of broken.Mine would replace the task 'image' of ffrun.tasks.image"),
    "schema": ("from ffrun.tasks.registry import register_task\nfrom ffrun.tasks.image import ImageTask\n"
               "@register_task('mine', dict)\nclass Mine(ImageTask):\n    pass\n",
               "task 'mine' of broken.Mine: its schema <class 'dict'> is not a dataclass with a `name` field"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_plug_in_is_one_line_and_nothing_runs(tmp_path, kind):
    code, said = BROKEN[kind]
    (tmp_path / "broken.py").write_text(code)
    env = {**os.environ, PLUGINS_ENV: "broken",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([ffrun_cmd(), "experiment=smoke", "hydra.run.dir=run"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ffrun: error: {PLUGINS_ENV}: ") and said in lines[0], lines
    assert not (tmp_path / "run").exists()  # the built-in image task was not run in the plug-in's place
