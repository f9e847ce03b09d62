"""What a hostile or careless user does to ffrun: Ctrl-C under ffrun-reproduce, overrides that fight the
scale's, runs that all fail, two runs in one directory, resuming the wrong thing, crafted or edited files.
Nothing is lost, nothing wrong is reported as right, and every refusal is one line saying the true reason."""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ffrun_cmd
from omegaconf import OmegaConf

from ffrun.apps import reproduce
from ffrun.run import job as runner
from ffrun.run import resume, rundir
from ffrun.train.checkpoint import CHECKPOINT, find_checkpoint, load_checkpoint
from ffrun.util.errors import FfrunError

SMOKE = ["experiment=smoke", "trainer.progress=false"]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def done_run(tmp_path_factory) -> Path:
    """One completed smoke run (20 steps, sigma 3, checkpoints every 10)."""
    where = tmp_path_factory.mktemp("done")
    r = subprocess.run([ffrun_cmd(), *SMOKE, "sigma=3", "trainer.steps=20", "trainer.eval_every=10",
                        "trainer.ckpt_every=10", "hydra.run.dir=run"], cwd=where, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return where / "run"


# --- ffrun-reproduce ------------------------------------------------------------------------------------


def test_ctrl_c_under_reproduce_checkpoints_the_run_and_the_rerun_resumes_it(spawn, tmp_path):
    out = tmp_path / "t1"
    cmd = [ffrun_cmd("ffrun-reproduce"), "--scale", "smoke", "--tasks", "image", "--out", str(out), "device=cpu",
           "trainer.steps=150", "trainer.eval_every=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = out / "runs" / "image" / "astronaut" / "gauss"  # the sweep's last job: the rerun resumes it alone
    proc = spawn(cmd, cwd=tmp_path, env=env)
    deadline = time.time() + 240
    while not (run / "history.csv").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # as Ctrl-C at a terminal reaches ffrun-reproduce
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    m = metrics(run)
    assert m["status"] == "interrupted" and (run / CHECKPOINT).is_file(), m.get("reason")
    stopped = m["checkpoint_step"]
    assert 3 <= stopped < 150 and load_checkpoint(run / CHECKPOINT)["step"] == stopped
    assert "interrupted" in (out / "table1.md").read_text()

    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "(3 already done)" in again.stdout
    m = metrics(run)
    assert m["status"] == "completed" and m["step"] == 150 and str(run) in m["resumed_from"]
    steps = [h["step"] for h in m["history"]]
    assert steps == list(range(3, 151, 3))  # the history goes on from the interrupted run's


def test_a_trailing_override_of_a_key_the_scale_sets_counts_with_its_last_value(tmp_path):
    """`ffrun-reproduce ... trainer.steps=5` after the scale's trainer.steps=30: Hydra runs 5 steps and records
    trainer.steps=5 once; the rerun must find that run complete, not move it aside as stale."""
    run_dir = tmp_path / "gauss"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"status": "completed"}))
    recorded = ["experiment=paper_image", "trainer.progress=False", "trainer.steps=5", "encoding=gauss"]
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in recorded))
    planned = ["experiment=paper_image", "encoding=gauss", "trainer.progress=false", "trainer.steps=30",
               "trainer.steps=5"]
    assert reproduce.Run("image", "x", "gauss", run_dir, planned).status() == "completed"
    assert reproduce.Run("image", "x", "gauss", run_dir, [*planned[:-1], "trainer.steps=6"]).status() == "stale"


@pytest.mark.parametrize("override, needle", [
    ("trainer.stpes=10", "trainer.stpes"),
    ("model.depth=0", "model.depth=0 is out of range"),
    ("encoding=gauss", "the table sweeps every encoding itself"),
])
def test_reproduce_refuses_bad_overrides_before_recording_anything(tmp_path, capsys, override, needle):
    out = tmp_path / "t1"
    assert reproduce.main(["--scale", "smoke", "--tasks", "image", "--out", str(out), override]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("ffrun-reproduce: error: ") and needle in line
    assert not (out / "reproduce.json").exists()


def test_reproduce_exits_2_naming_failed_runs_and_takes_corrected_settings(tmp_path, capsys, monkeypatch):
    """Every run failed (a GPU that is not there, a data folder of garbage): exit 2 naming them; the folder holds
    no result, so the corrected command is taken, not refused as "other settings"."""

    def all_fail(task, plan, item, encodings, sweep_dir, launcher, extra):
        for enc in encodings:
            (sweep_dir / enc).mkdir(parents=True, exist_ok=True)
            (sweep_dir / enc / "metrics.json").write_text(json.dumps({"status": "failed", "reason": "no GPU here"}))
        return 2

    monkeypatch.setattr(reproduce, "launch", all_fail)
    monkeypatch.setattr(reproduce, "gallery", lambda *a: None)
    out = tmp_path / "t1"
    assert reproduce.main(["--scale", "smoke", "--tasks", "image", "--out", str(out), "seed=1"]) == 2
    err = capsys.readouterr().err
    assert "4 of 4 runs failed: image/none [astronaut] (no GPU here)" in err and "Traceback" not in err
    assert reproduce.main(["--scale", "smoke", "--tasks", "image", "--out", str(out), "seed=2"]) == 2
    err = capsys.readouterr().err
    assert "runs failed" in err and "other settings" not in err
    assert json.loads((out / "reproduce.json").read_text())["overrides"] == ["seed=2"]


def test_a_closed_stdout_pipe_stops_the_printing_not_the_reproduction(tmp_path):
    script = "from ffrun.apps.reproduce import say\nfor i in range(2000):\n    say('line %d ' % i + 'x' * 200)\n" \
             "print('done', file=__import__('sys').stderr)\n"
    r = subprocess.run(f"{sys.executable} -c \"{script}\" | head -c 10", shell=True, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert "Traceback" not in r.stderr and "Error" not in r.stderr and r.stderr.strip() == "done", r.stderr


# --- two runs, one directory --------------------------------------------------------------------------


def test_a_run_refused_by_the_lock_writes_nothing_there(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- seed=0\n")  # the running run's own
    (run_dir / "cli.log").write_text("the running run's log\n")
    holder = os.open(run_dir / rundir.LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        r = subprocess.run([ffrun_cmd(), *SMOKE, "seed=5", "hydra.run.dir=run"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    finally:
        os.close(holder)
    assert r.returncode == 2 and f"{run_dir} is in use by another ffrun run" in one_line(r.stderr)
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == "- seed=0\n"
    assert (run_dir / "cli.log").read_text() == "the running run's log\n"
    assert sorted(p.name for p in run_dir.iterdir()) == [".ffrun.lock", ".hydra", "cli.log"]
    assert [p.name for p in (run_dir / ".hydra").iterdir()] == ["overrides.yaml"]
    # A lock that is a folder: one line, not a traceback.
    (tmp_path / "other" / rundir.LOCK_FILE).mkdir(parents=True)
    r = subprocess.run([ffrun_cmd(), *SMOKE, "hydra.run.dir=other"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and f"cannot lock {tmp_path / 'other' / rundir.LOCK_FILE}" in one_line(r.stderr)


@pytest.mark.parametrize("launcher", ["basic", "vectorized"])
def test_two_jobs_of_one_sweep_in_one_directory_are_refused(tmp_path, launcher):
    r = subprocess.run([ffrun_cmd(), "-m", *SMOKE, "trainer.steps=2", "trainer.eval_every=2", "encoding=gauss",
                        "sigma=1,2", "hydra.sweep.dir=sw", "hydra.sweep.subdir=same",
                        *([] if launcher == "basic" else ["hydra/launcher=vectorized"])],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "is also the run directory of job 0 of this sweep" in r.stderr
    run_dir = tmp_path / "sw" / "same"
    assert metrics(run_dir)["sigma"] == 1.0 and metrics(run_dir)["status"] == "completed"
    assert "sigma=1" in (run_dir / ".hydra" / "overrides.yaml").read_text()


# --- resuming -----------------------------------------------------------------------------------------


def test_sigma_auto_resumes_with_the_sigma_the_run_chose(done_run, hydra_job, tmp_path, monkeypatch):
    """The prediction depends on the step count, so asking for more steps predicts another sigma: the resumed
    run keeps its own (its weights were trained with it)."""
    run = tmp_path / "auto"
    shutil.copytree(done_run, run)
    (run / "metrics.json").write_text(json.dumps({**metrics(run), "sigma_auto": {"method": "heldout", "sigma": 3.0}}))

    def predicts_7(cfg, task):
        OmegaConf.update(cfg, "sigma", 7.0)
        return 7.0, {"method": "heldout", "sigma": 7.0, "seconds": 0.0}

    monkeypatch.setattr(runner, "resolve_auto_sigma", predicts_7)
    job = runner.prepare(hydra_job("sigma=auto", "trainer.steps=40", f"trainer.resume={run}"), tmp_path / "new")
    assert job.resume_from == run / CHECKPOINT
    assert job.sigma == 3.0 and job.config["encoding"]["sigma"] == 3.0 and job.sigma_auto["sigma"] == 3.0
    # A run that chose its sigma itself is another experiment.
    with pytest.raises(FfrunError, match="encoding.sigma"):
        runner.prepare(hydra_job("sigma=auto", "trainer.steps=40", f"trainer.resume={done_run}"), tmp_path / "n2")


def test_resuming_a_run_past_the_steps_asked_for_is_refused(done_run, hydra_job, tmp_path):
    with pytest.raises(FfrunError) as e:
        runner.prepare(hydra_job("sigma=3", "trainer.steps=10", f"trainer.resume={done_run}"), tmp_path / "new")
    assert "already at step 20, past trainer.steps=10" in str(e.value) and "\n" not in str(e.value)


def test_resume_true_trusts_the_checkpoint_not_a_planted_config_nor_a_fifo(done_run, hydra_job, tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    wider = hydra_job("sigma=3", "model.width=48", "trainer.steps=20")
    config = OmegaConf.to_container(wider, resolve=True)
    planted = tmp_path / "outputs" / "planted"
    shutil.copytree(done_run, planted)  # a width-32 checkpoint under a config.yaml that claims width 48
    (planted / "metrics.json").write_text(json.dumps({**metrics(planted), "status": "running", "step": 10}))
    (planted / "config.yaml").write_text(OmegaConf.to_yaml(wider, resolve=True))
    fifo = tmp_path / "outputs" / "fifo"
    shutil.copytree(planted, fifo)
    (fifo / CHECKPOINT).unlink()
    os.mkfifo(fifo / CHECKPOINT)
    assert resume.find_resume_checkpoint(True, config, Path("outputs/c")) is None
    with pytest.raises(FfrunError, match="not a regular file"):
        find_checkpoint(fifo, f"trainer.resume={fifo}")
    with pytest.raises(FfrunError, match="not a regular file"):
        load_checkpoint(fifo / CHECKPOINT)


# --- files that are not what they say ------------------------------------------------------------------


class Payload:
    def __reduce__(self):
        return os.system, ("true",)


def test_a_crafted_pickle_is_refused_as_code_and_random_bytes_as_damaged(tmp_path):
    torch.save({"x": Payload()}, tmp_path / "crafted.pt")
    with open(tmp_path / "raw.pt", "wb") as f:
        pickle.dump({"x": Payload()}, f)
    (tmp_path / "random.pt").write_bytes(bytes(range(256)) * 7 + os.urandom(3000))
    for name in ("crafted.pt", "raw.pt"):
        with pytest.raises(FfrunError) as e:
            load_checkpoint(tmp_path / name)
        msg = str(e.value)
        assert "refused: it holds Python objects other than tensors" in msg and "system" in msg, msg
        assert "weights_only" not in msg and "damaged" not in msg and "\n" not in msg
    with pytest.raises(FfrunError) as e:
        load_checkpoint(tmp_path / "random.pt")
    msg = str(e.value)
    assert "cannot be read (damaged" in msg and "refused" not in msg and "weights_only" not in msg, msg


def test_an_export_whose_json_b_differs_from_its_weights_is_refused(done_run, tmp_path):
    from ffrun.apps.export import export, load_exported

    folder = export(done_run, tmp_path / "exp")
    assert load_exported(folder) is not None
    meta = json.loads((folder / "field.json").read_text())
    meta["encoding"]["B"][0][0] += 1.0
    (folder / "field.json").write_text(json.dumps(meta))
    with pytest.raises(FfrunError) as e:
        load_exported(folder)
    assert str(e.value).startswith(f"{folder}: field.json's encoding.B differs") and "\n" not in str(e.value)


@pytest.mark.parametrize("seed, ok", [(0, True), (2**32 - 1, True), (2**32, False), (2**64, False), (-1, False)])
def test_seeds_outside_numpys_range_are_refused(compose, seed, ok):
    from ffrun.config import validate

    cfg = compose("experiment=smoke", f"seed={seed}")
    if ok:
        validate(cfg)
    else:
        with pytest.raises(FfrunError, match=r"seed=.* is out of range: use 0 <= seed < 2\*\*32"):
            validate(cfg)


def test_bench_refuses_zero_repeats_with_one_line(capsys):
    from ffrun.apps.bench import main

    assert main(["--repeats", "0"]) == 2
    assert one_line(capsys.readouterr().err) == "ffrun-bench: error: --repeats 0: give at least 1"


def test_loading_a_run_onto_cuda_without_cuda_is_one_line(done_run, monkeypatch):
    import ffrun

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FfrunError, match="device=cuda: this machine has no CUDA device"):
        ffrun.load(done_run, device="cuda")


# --- issue 28, item 7: outputs that go nowhere, folders that cannot be written, two quick Ctrl-C's -----------


def test_an_empty_out_is_refused_not_the_current_folder(done_run, tmp_path, monkeypatch, capsys):
    from ffrun.apps import export, summary

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FfrunError, match="--out '': an empty folder name"):
        export.export(done_run, "")
    with pytest.raises(SystemExit) as e:
        export.main([str(done_run), "--out", ""])
    assert e.value.code == 2 and "empty folder name" in one_line(capsys.readouterr().err)
    assert summary.main([str(done_run), "--out", ""]) == 2
    assert "empty folder name" in one_line(capsys.readouterr().err)
    assert reproduce.main(["--scale", "smoke", "--tasks", "image", "--out", ""]) == 2
    assert "empty folder name" in one_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_summary_skips_a_record_without_its_keys_with_one_line(done_run, tmp_path, capsys):
    from ffrun.apps.summary import main

    shutil.copytree(done_run, tmp_path / "sweep" / "0")
    for name, content in (("1", "{}"), ("2", '{"status": "completed"}')):
        (tmp_path / "sweep" / name).mkdir()
        (tmp_path / "sweep" / name / "metrics.json").write_text(content)
    assert main([str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr()
    skipped = [ln for ln in out.err.splitlines() if "skipping" in ln]
    assert len(skipped) == 2 and all("not an ffrun run record (it has no task, encoding or metrics)" in ln
                                     for ln in skipped), out.err
    table = (tmp_path / "sweep" / "summary.md").read_text()
    assert "| - | - | - |" not in table and "| image | gauss | 3 | 1 |" in table, table
    shutil.rmtree(tmp_path / "sweep" / "0")
    assert main([str(tmp_path / "sweep")]) == 2  # nothing usable left: refused, naming why
    assert "no usable run record under" in capsys.readouterr().err


@pytest.fixture
def read_only_folder(tmp_path, monkeypatch):
    """An existing folder this process may not write: chmod a-w, or (as root, whom permissions do not stop)
    writes into it failing as on a read-only mount."""
    import errno
    import tempfile

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real = tempfile.TemporaryFile

        def refused(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).resolve() == folder.resolve():
                raise OSError(errno.EROFS, "Read-only file system", str(folder))
            return real(*args, dir=dir, **kwargs)
        monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    yield folder
    folder.chmod(0o755)


@pytest.mark.parametrize("tool", ["reproduce", "compare"])
def test_a_read_only_out_folder_is_refused_before_any_run(read_only_folder, monkeypatch, capsys, tool):
    from ffrun.apps import compare

    app = reproduce if tool == "reproduce" else compare
    monkeypatch.setattr(app, "execute", lambda *a, **k: pytest.fail("a run started"))
    assert app.main(["--scale", "smoke", "--tasks", "image", "--out", str(read_only_folder)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"ffrun-{tool}: error: --out {read_only_folder}: cannot write there (") and \
        "give --out a folder you can write to" in line, line
    assert list(read_only_folder.iterdir()) == []


def test_a_run_folder_made_unwritable_mid_run_keeps_its_checkpoint(hydra_job, tmp_path, monkeypatch, capsys):
    """The disk turns read-only (or the permissions go) while the run trains: one line saying what failed and
    the command that resumes from the checkpoint kept, exit status 2, no temporary file left."""
    import errno

    from ffrun.run.job import execute
    from ffrun.run.outcome import report
    from ffrun.util import atomic, errors

    monkeypatch.setattr(errors, "_phase", "starting")  # fail() marks the program as ending: undone after the test
    run_dir = tmp_path / "run"
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst).parent == run_dir and (run_dir / CHECKPOINT).is_file():
            raise PermissionError(errno.EACCES, "Permission denied", str(src))
        return real_replace(src, dst)
    monkeypatch.setattr(atomic.os, "replace", replace)
    cfg = hydra_job("trainer.steps=50", "trainer.eval_every=5", "trainer.ckpt_every=5")
    with pytest.raises(SystemExit) as e:
        report(cfg, run_dir, lambda: execute(cfg, run_dir))
    assert e.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"ffrun: error: cannot write {run_dir}/") and "permission denied" in line, line
    assert "its checkpoint of step 5 is kept: resume with: " in line and "trainer.resume=" in line, line
    assert load_checkpoint(run_dir / CHECKPOINT)["step"] == 5
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_two_quick_ctrl_cs_end_the_run_once_with_the_truth(spawn, tmp_path):
    """The second Ctrl-C 30 ms after the first lands while the run checkpoints or shuts down: no traceback
    from the interpreter's exit, no "nothing was written" beside a checkpoint, exit status 130."""
    proc = spawn([ffrun_cmd(), *SMOKE, "task.resolution=32", "trainer.steps=100000", "trainer.eval_every=5",
                  "trainer.ckpt_every=5", "hydra.run.dir=run"], cwd=tmp_path)
    deadline = time.time() + 240
    while not (tmp_path / "run" / CHECKPOINT).exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.03)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "Exception ignored" not in err and "nothing was written" not in err, err
    assert "resume with: " in [ln for ln in err.splitlines() if ln.startswith("ffrun")][-1]
    m = metrics(tmp_path / "run")
    assert m["status"] == "interrupted"
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT)["step"] == m["checkpoint_step"]


def test_a_late_ctrl_c_is_ignored_once_the_program_is_ending(monkeypatch, capsys):
    from ffrun.util import errors

    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(sys, "argv", ["ffrun"])
    monkeypatch.setattr(errors, "_phase", "starting")
    try:
        errors.quiet_interrupt_while_starting()
        stop = signal.getsignal(signal.SIGINT)
        with pytest.raises(SystemExit):
            stop(signal.SIGINT, None)
        assert "before any run began; nothing was written" in capsys.readouterr().err
        assert errors.is_ending()  # a second one now (the exit under way) does nothing
        assert stop(signal.SIGINT, None) is None and capsys.readouterr().err == ""
        monkeypatch.setattr(errors, "_phase", "running")  # a sweep between two runs
        with pytest.raises(SystemExit):
            stop(signal.SIGINT, None)
        assert "nothing was written" not in capsys.readouterr().err
    finally:
        signal.signal(signal.SIGINT, before)
