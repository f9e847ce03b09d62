"""A run's life: resuming only the same experiment, one run per directory, failures and signals that keep
what the run had. In-process where the runner can be called directly; a subprocess only for signals."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ffrun_cmd
from omegaconf import OmegaConf

from ffrun.run import job as runner
from ffrun.run import outcome, resume, rundir
from ffrun.util.errors import FfrunError

SMOKE = ["experiment=smoke", "trainer.progress=false"]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def done_run(tmp_path_factory) -> Path:
    """One completed smoke run (20 steps, checkpoints every 10), shared by the tests that only read it."""
    where = tmp_path_factory.mktemp("done")
    r = subprocess.run([ffrun_cmd(), *SMOKE, "trainer.steps=20", "trainer.eval_every=10", "trainer.ckpt_every=10",
                        "hydra.run.dir=run"], cwd=where, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return where / "run"


def test_resume_from_another_experiment_is_refused_naming_the_keys(done_run, hydra_job, tmp_path):
    cfg = hydra_job("trainer.steps=30", "sigma=3", "trainer.lr=0.01", f"trainer.resume={done_run}")
    with pytest.raises(FfrunError) as e:
        runner.prepare(cfg, tmp_path / "new")
    msg = str(e.value)
    assert msg.startswith(f"trainer.resume={done_run}: that run is another experiment")
    assert "encoding.sigma (0.625 -> 3.0)" in msg and "trainer.lr (0.001 -> 0.01)" in msg and "\n" not in msg
    # Settings that do not change the experiment (more steps, the cadence) are free, also into its own directory.
    same = hydra_job("trainer.steps=30", "trainer.eval_every=5", f"trainer.resume={done_run}")
    assert runner.prepare(same, done_run).resume_from == done_run / "checkpoint.pt"


def test_resume_true_takes_the_newest_unfinished_run(done_run, hydra_job, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("old_killed", "new_completed"):
        shutil.copytree(done_run, tmp_path / "outputs" / name)
    killed = tmp_path / "outputs/old_killed"
    (killed / "metrics.json").write_text(json.dumps({**metrics(killed), "status": "running", "step": 10}))
    past = time.time() - 100
    os.utime(killed / "checkpoint.pt", (past, past))  # the completed run is the newer one
    cfg = hydra_job("trainer.steps=20", "trainer.resume=true")
    config = OmegaConf.to_container(cfg, resolve=True)
    assert resume.find_resume_checkpoint(True, config, Path("outputs/c")) == Path("outputs/old_killed/checkpoint.pt")
    (killed / "metrics.json").write_text(json.dumps({**metrics(killed), "status": "completed", "step": 20}))
    assert resume.find_resume_checkpoint(True, config, Path("outputs/c")) is None  # nothing left to train
    # A completed run asked for more steps has training left: it continues.
    more = OmegaConf.to_container(hydra_job("trainer.steps=40"), resolve=True)
    assert resume.find_resume_checkpoint(True, more, Path("outputs/c")) == Path("outputs/new_completed/checkpoint.pt")


def test_a_held_run_directory_is_refused_and_left_untouched(hydra_job, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text('{"status": "running"}')
    holder = os.open(run_dir / rundir.LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another process's run, as far as this one can tell
    called = []
    try:
        with pytest.raises(SystemExit) as e:
            outcome.report(hydra_job(), run_dir, lambda: called.append(1))
        assert e.value.code == 2 and not called
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"ffrun: error: {run_dir} is in use by another ffrun run")
        assert sorted(p.name for p in run_dir.iterdir()) == [rundir.LOCK_FILE, "metrics.json"]
        assert metrics(run_dir) == {"status": "running"}
    finally:
        os.close(holder)
    # Once free, the directory is reused as before, and released again at the end.
    assert rundir.lock_run_dir(run_dir) and run_dir.resolve() in rundir._locks
    rundir.unlock_run_dir(run_dir)
    assert run_dir.resolve() not in rundir._locks


def test_a_failed_run_keeps_its_history_and_resolved_config(hydra_job, tmp_path, monkeypatch, capsys):
    from ffrun.tasks.image import ImageTask

    def broken_save(self, field, run_dir):
        raise FfrunError("cannot write the pictures")

    monkeypatch.setattr(ImageTask, "save", broken_save)
    cfg = hydra_job("trainer.steps=20", "trainer.eval_every=10", "trainer.ckpt_every=10")
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        outcome.report(cfg, run_dir, lambda: runner.execute(cfg, run_dir))
    assert e.value.code == 2
    m = metrics(run_dir)
    # the reason, then what is kept: the run's last checkpoint and the command that resumes it
    assert m["status"] == "failed" and m["reason"].startswith("cannot write the pictures; its checkpoint of step 20")
    assert f"trainer.resume={run_dir}" in m["reason"]
    assert m["step"] == 20 and m["checkpoint_step"] == 20 and [h["step"] for h in m["history"]] == [10, 20]
    assert m["config"]["trainer"]["lr"] == 0.001  # resolved (the preset's lr is an interpolation)
    assert capsys.readouterr().err.strip().splitlines() == [f"ffrun: error: {m['reason']}"]  # one line


def test_a_full_disk_while_recording_a_failure_is_still_one_line(hydra_job, tmp_path, monkeypatch, capsys):
    def full(path, obj):
        raise FfrunError(f"no space left on device: {path}")

    monkeypatch.setattr("ffrun.run.record.write_json", full)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("the user's own file: the folder is kept, and the record tried")
    cfg = hydra_job("device=cuda:99")
    with pytest.raises(SystemExit) as e:
        outcome.report(cfg, tmp_path / "run", lambda: runner.execute(cfg, tmp_path / "run"))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (len(err) == 1 and err[0].startswith("ffrun: error: device=cuda:99")
            and "not written: no space left" in err[0])


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)


def _run_script(spawn, tmp_path: Path, patch: str, *overrides: str) -> subprocess.Popen:
    """`ffrun` in a subprocess with `patch` (Python) applied first: to hold the run at a chosen moment."""
    script = (f"import sys, time\nfrom pathlib import Path\n{patch}\nfrom ffrun.apps.cli import main\n"
              f"sys.argv = ['ffrun', *{list(SMOKE) + list(overrides) + ['hydra.run.dir=run']!r}]\nmain()\n")
    return spawn([sys.executable, "-c", script], cwd=tmp_path)


def test_a_second_sigint_ends_interrupted_with_the_last_good_checkpoint(spawn, tmp_path):
    # From step 20 on, a checkpoint takes a while to write: the second SIGINT lands while the first
    # one's checkpoint is being written, and the one on disk stays the last good one (step 10).
    patch = (
        "from ffrun.train import loop as train\n"
        "save = train.save_checkpoint\n"
        "def slow(path, **kw):\n"
        "    if kw['step'] >= 20:\n"
        "        Path('saving').touch()\n"
        "        time.sleep(30)\n"
        "    save(path, **kw)\n"
        "train.save_checkpoint = slow\n"
    )
    proc = _run_script(spawn, tmp_path, patch, "trainer.steps=100000", "trainer.eval_every=10", "trainer.ckpt_every=10")
    _wait_for(proc, (tmp_path / "saving").exists)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    m = metrics(tmp_path / "run")
    assert m["status"] == "interrupted" and m["signal"] == signal.SIGINT and "second SIGINT" in m["reason"]
    assert m["checkpoint_step"] == 10 and m["step"] == 20 and [h["step"] for h in m["history"]] == [10, 20]
    from ffrun.train.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 10


def test_sigterm_while_loading_data_records_an_interrupted_run(spawn, tmp_path):
    # The task takes long to build (as a large volume or scene does): the signal lands before training.
    patch = "from ffrun.run import job as runner\ndef slow(*a, **k):\n    Path('loading').touch()\n" \
            "    time.sleep(60)\nrunner.build_task = slow\n"
    proc = _run_script(spawn, tmp_path, patch)
    _wait_for(proc, (tmp_path / "loading").exists)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("ffrun: interrupted: stopped by SIGTERM before training started")
    m = metrics(tmp_path / "run")
    assert m["status"] == "interrupted" and m["step"] == 0 and m["checkpoint_step"] is None and m["history"] == []
