"""A careless user's mistakes cost no run: a refused rerun into a finished run's folder leaves it byte for
byte, another experiment cannot overwrite it, a typo'd key is refused however it arrives, an interrupted run
holds its pictures and prints the whole command that resumes it."""

from __future__ import annotations

import hashlib
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ffrun_cmd

SMOKE = ["experiment=smoke", "trainer.progress=false"]


def digest(run_dir: Path) -> dict[str, str]:
    """metrics.json, config.yaml and every file of .hydra/, by content."""
    files = [run_dir / "metrics.json", run_dir / "config.yaml", *sorted((run_dir / ".hydra").iterdir())]
    return {str(f.relative_to(run_dir)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("finished")
    r = subprocess.run([ffrun_cmd(), *SMOKE, "method=siren", "hydra.run.dir=run"], cwd=where, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return where / "run"


@pytest.mark.parametrize("bad", ["sigma=-1", "trainer.threads=0", "encoding.backend=tcnn", "model.depth=0"])
def test_a_refused_rerun_leaves_the_finished_run_byte_identical(finished, run_cli, bad):
    before = digest(finished)
    r = run_cli(*SMOKE, "method=siren", bad, f"hydra.run.dir={finished}")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("ffrun: error:")
    assert digest(finished) == before
    assert not (finished / ".hydra.incoming").exists()


def test_another_experiment_into_a_finished_run_is_refused_naming_the_keys(finished, run_cli):
    before = digest(finished)
    ckpt = (finished / "checkpoint.pt").read_bytes()
    r = run_cli(*SMOKE, "method=hashgrid", f"hydra.run.dir={finished}")
    assert r.returncode == 2, r.stderr[-2000:]
    line = r.stderr.strip().splitlines()[-1]
    assert "holds a completed run of another experiment" in line and "encoding.name ('none' -> 'hashgrid')" in line
    assert digest(finished) == before and (finished / "checkpoint.pt").read_bytes() == ckpt


@pytest.mark.parametrize("override", ["+trainer.stpes=1", "++trainer.stpes=1", "trainer.stpes=1"])
def test_a_typo_is_refused_however_it_arrives_naming_the_closest_key(run_cli, tmp_path, override):
    r = run_cli(*SMOKE, override, "hydra.run.dir=run")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "trainer.stpes" in line and "did you mean trainer.steps?" in line, line
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_parameter_budget_runs(run_cli, tmp_path):
    r = run_cli(*SMOKE, "model.params=1e4", "hydra.run.dir=run")
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert rec["status"] == "completed" and abs(rec["params"] - 1e4) <= 0.05 * 1e4


def test_an_interrupted_run_holds_its_pictures_and_the_printed_command_resumes_it(spawn, tmp_path):
    """SIGINT after the first evaluation: reconstruction.png is there, and the command printed on stderr, run
    as printed, continues the run from its checkpoint to the end."""
    args = [*SMOKE, "sigma=2", "trainer.steps=100000", "trainer.eval_every=20", "trainer.ckpt_every=20",
            "hydra.run.dir=run"]
    proc = spawn([ffrun_cmd(), *args], cwd=tmp_path)
    picture = tmp_path / "run" / "reconstruction.png"  # written (atomically) at the first evaluation
    deadline = time.time() + 300
    while not picture.is_file():  # the condition asserted below, not history.csv's row (written before it)
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert (tmp_path / "run" / "reconstruction.png").is_file() and (tmp_path / "run" / "comparison.png").is_file()
    line = err.strip().splitlines()[-1]
    command = line.split("resume with: ", 1)[1]
    argv = shlex.split(command)
    run = tmp_path / "run"
    assert argv[0] == "ffrun" and "sigma=2" in argv, command
    assert f"trainer.resume={run}" in argv and f"hydra.run.dir={run}" in argv, command
    stopped = json.loads((tmp_path / "run" / "metrics.json").read_text())["checkpoint_step"]
    # the same command with a reachable step count (the original asked for 100000)
    argv = [a if not a.startswith("trainer.steps=") else f"trainer.steps={stopped + 20}" for a in argv]
    r = subprocess.run([ffrun_cmd(), *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert rec["status"] == "completed" and rec["step"] == stopped + 20
    assert rec["resumed_from"] == str(run / "checkpoint.pt")


def test_python_is_the_interpreter_here():  # the console scripts above run from this environment
    assert Path(ffrun_cmd()).parent == Path(sys.executable).parent
