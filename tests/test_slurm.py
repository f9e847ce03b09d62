"""ffrun's SLURM launcher against a running one-node cluster (scripts/local_slurm.sh; .ci/run starts it): a sweep, a
failed job in the sweep's exit status, a preempted run requeued to continue from its checkpoint; with `-m slurm_slow`
(.ci/run) a run through time limits, and ffrun-reproduce / ffrun-compare with --launcher slurm."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ffrun_cmd

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "local_slurm.sh"
# The local node: 2 CPUs, no GPU; one CPU per job, so two jobs run at once.
SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]
TOY = ["experiment=smoke", "task=toy1d", "device=cpu"]


def _script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def slurm():
    """The local cluster: the running one, or one started here (and stopped after the tests) when the packages are
    installed or can be; skipped with the script's one line where they cannot."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    started = _script("status").returncode != 0
    if started:
        res = _script("start")
        if res.returncode != 0:
            pytest.skip(f"no local SLURM cluster: {(res.stderr or res.stdout).strip().splitlines()[-1]}")
    conf = _script("env").stdout.strip().split("=", 1)[1]
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield conf
    if saved is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = saved
    if started:
        _script("stop")


def _record(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def _job_id(sweep: Path) -> str | None:
    """The SLURM job id of the sweep's one job: submitit's folder for it is named so."""
    folders = sorted(p.name for p in (sweep / ".submitit").glob("*") if p.is_dir() and p.name[0].isdigit())
    return folders[0] if folders else None


def _squeue(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True, text=True).stdout.strip()


def _release_requeue_hold(job: str) -> None:
    """SLURM holds a requeued job for two minutes (its BeginTime); the tests start it at once, as `scontrol
    update` lets an operator do."""
    if "BeginTime" in _squeue(job):
        subprocess.run(["scontrol", "update", f"jobid={job}", "starttime=now"], capture_output=True)


def _wait(proc: subprocess.Popen, sweep: Path, timeout: float, signal_at_step: int | None = None,
          signal: str = "USR2") -> tuple[int, str]:
    """Wait for the sweep command `proc`, starting requeued jobs at once; with `signal_at_step`, send the job
    `scancel --signal=SIGNAL` (USR2: a preemption) once its run has passed that step. Returns (exit status, stderr)."""
    deadline = time.monotonic() + timeout
    signalled = signal_at_step is None
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the sweep did not end in {timeout:.0f} s: {proc.communicate()[1][-3000:]}")
        job = _job_id(sweep)
        rec = _record(sweep / "0")
        if not signalled and job and rec and (rec.get("step") or 0) >= signal_at_step:
            subprocess.run(["scancel", f"--signal={signal}", job], check=True, capture_output=True)
            signalled = True
        if job:
            _release_requeue_hold(job)
        time.sleep(2)
    return proc.returncode, proc.stderr.read()


def _sweep(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([ffrun_cmd(), "-m", *SLURM, *TOY, *overrides,
                             "trainer.progress=false", "hydra.sweep.dir=sweep"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_job_sweep_completes_and_a_too_short_limit_gets_a_shorter_signal_delay(slurm, tmp_path, monkeypatch):
    monkeypatch.setenv("FFRUN_MKL_SHIM", "force")  # MKL's vendor shim on any x86 CPU: each job must load it first
    monkeypatch.setenv("FFRUN_CACHE", str(tmp_path / "cache"))
    code, err = _wait(_sweep(tmp_path, "sigma=1,10", "hydra.launcher.timeout_min=2"), tmp_path / "sweep", 300)
    assert code == 0, err[-3000:]
    runs = [_record(tmp_path / "sweep" / str(i)) for i in range(2)]
    assert [r["status"] for r in runs] == ["completed", "completed"] and [r["sigma"] for r in runs] == [1.0, 10.0]
    assert all(r["requeues"] == 0 for r in runs)
    # a submitit job imports ffrun before torch, so the shim could bind MKL's vendor test (ffrun.util.blas)
    assert not any(r["blas"]["vendor_shim"].startswith("unavailable (torch was imported") for r in runs), runs[0]
    # Hydra's 120 s is all of a 2-minute limit: the job would be told to checkpoint as it starts
    adjusted = [ln for ln in err.splitlines() if "signal_delay_s" in ln]
    assert len(adjusted) == 1 and "using signal_delay_s=60" in adjusted[0], err[-2000:]
    script = next((tmp_path / "sweep" / ".submitit").rglob("*_submission.sh")).read_text()
    assert "#SBATCH --signal=USR2@60" in script and "#SBATCH --time=2" in script


def test_a_failed_job_makes_the_sweep_exit_non_zero_naming_it(slurm, tmp_path):
    code, err = _wait(_sweep(tmp_path, "sigma=1,-5"), tmp_path / "sweep", 300)
    assert code == 1, err[-3000:]
    assert _record(tmp_path / "sweep" / "0")["status"] == "completed"
    run = tmp_path / "sweep" / "1"
    lines = [ln for ln in err.splitlines() if ln.startswith("ffrun: error: job 1")]
    assert len(lines) == 1 and f"({run}) failed: " in lines[0] and "sigma=-5.0 is out of range" in lines[0], err
    assert f"1 job(s) of the sweep did not complete: {run} (failed)" in err


def test_a_limit_under_a_minute_is_refused_with_one_line(tmp_path, run_cli):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    res = run_cli("-m", *SLURM, *TOY, "hydra.launcher.timeout_min=0", "hydra.sweep.dir=sweep")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "ffrun: error: hydra.launcher.timeout_min=0: give the job's time limit in whole minutes, at least 1"]
    assert not (tmp_path / "sweep" / ".submitit").exists()  # nothing was submitted


def _stops_and_resumes(run: Path) -> tuple[list[int], list[int]]:
    """The steps at which the run in `run` stopped interrupted, and those it resumed from (its cli.log, which every
    job of the run appends to)."""
    log = (run / "cli.log").read_text()
    return ([int(s) for s in re.findall(r"interrupted at step (\d+)", log)],
            [int(s) for s in re.findall(r"resuming from step (\d+)", log)])


def test_a_preempted_run_is_requeued_and_continues_from_its_checkpoint(slurm, tmp_path):
    steps, every = 40000, 5000
    code, err = _wait(_sweep(tmp_path, "sigma=1", f"trainer.steps={steps}", f"trainer.ckpt_every={every}",
                             f"trainer.eval_every={every}", "hydra.launcher.timeout_min=30"),
                      tmp_path / "sweep", 400, signal_at_step=every)
    assert code == 0, err[-3000:]
    run = tmp_path / "sweep" / "0"
    rec = _record(run)
    assert rec["status"] == "completed" and rec["step"] == steps and rec["requeues"] == 1, rec.get("reason")
    assert rec["resumed_from"] == str(run / "checkpoint.pt")
    assert [h["step"] for h in rec["history"]] == list(range(every, steps + 1, every))  # every evaluation, once
    stopped, resumed = _stops_and_resumes(run)
    assert "stopped by SIGUSR2 at step" in next((tmp_path / "sweep" / ".submitit").rglob("*_log.err")).read_text()
    assert len(stopped) == 1 and stopped[0] >= every and resumed == stopped  # not a step lost


@pytest.mark.parametrize("signal, extra, code, why", [
    ("TERM", [], 143, "stopped by SIGTERM at step"),  # SIGTERM alone: checkpointed, not requeued
    ("USR2", ["hydra.launcher.max_num_timeout=0"], 140, "Job not requeued because: timed-out too many times"),
])
def test_a_run_stopped_and_not_requeued_is_named_with_its_checkpoint(slurm, tmp_path, signal, extra, code, why):
    steps, every = 200000, 5000
    code_, err = _wait(_sweep(tmp_path, "sigma=1", f"trainer.steps={steps}", f"trainer.ckpt_every={every}",
                              f"trainer.eval_every={every}", "hydra.launcher.timeout_min=10", *extra),
                       tmp_path / "sweep", 300, signal_at_step=every, signal=signal)
    run = tmp_path / "sweep" / "0"
    rec = _record(run)
    assert code_ == code and rec["status"] == "interrupted" and rec["requeues"] == 0, err[-3000:]
    assert rec["checkpoint_step"] == rec["step"] >= every and (run / "checkpoint.pt").is_file()
    lines = [ln for ln in err.splitlines() if ln.startswith("ffrun: error: job 0")]
    assert len(lines) == 1 and f"({run}) interrupted: " in lines[0] and why in lines[0], err[-3000:]
    assert f"trainer.resume={run}" in lines[0]  # the command that continues it


def _steps_for_seconds(tmp_path: Path, seconds: float) -> tuple[int, int]:
    """(steps, ckpt_every) of the toy run that trains for about `seconds` on this machine, measured by a short
    run of the same settings outside SLURM (a fixed count went from three allocations' work to one and a half as
    the steps got faster)."""
    calib = 30000
    out = subprocess.run([ffrun_cmd(), *TOY, "sigma=1", f"trainer.steps={calib}",
                          f"trainer.ckpt_every={calib // 3}", f"trainer.eval_every={calib // 3}",
                          "trainer.progress=false", "hydra.run.dir=calibration"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rate = calib / _record(tmp_path / "calibration")["wall_s"]
    every = max(1000, int(rate * seconds / 24) // 1000 * 1000)
    return every * 24, every


@pytest.mark.slurm_slow
def test_a_run_longer_than_its_time_limit_completes_through_requeues(slurm, tmp_path):
    """About three allocations of work (220 s of training, as measured here) under a 3-minute limit, with the
    preset's signal delay (120 s, lowered to 90 s for this limit), so SLURM signals each allocation 66-86 s after
    it starts: each ends with SIGUSR2, a checkpoint and a requeue, the last one completes."""
    steps, every = _steps_for_seconds(tmp_path, 220)
    started = time.monotonic()
    code, err = _wait(_sweep(tmp_path, "sigma=1", f"trainer.steps={steps}", f"trainer.ckpt_every={every}",
                             f"trainer.eval_every={every}", "hydra.launcher.timeout_min=3"),
                      tmp_path / "sweep", 1500)
    assert code == 0, err[-3000:]
    run = tmp_path / "sweep" / "0"
    rec = _record(run)
    stopped, resumed = _stops_and_resumes(run)
    print(f"\n{steps} steps: {time.monotonic() - started:.0f} s, {rec['requeues']} requeues, stopped at steps "
          f"{stopped}, training {rec['wall_s']:.0f} s")
    assert rec["status"] == "completed" and rec["step"] == steps, rec.get("reason")
    assert rec["requeues"] == len(stopped) >= 2 and resumed == stopped
    assert [h["step"] for h in rec["history"]] == list(range(every, steps + 1, every))
    assert "using signal_delay_s=90" in err


def _table(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slurm_slow  # about two minutes: each app twice, with the basic launcher and on SLURM
@pytest.mark.parametrize("app, args, table", [
    ("ffrun-reproduce", ["--scale", "smoke", "--tasks", "image"], "table1.csv"),
    ("ffrun-compare", ["--scale", "smoke", "--tasks", "image", "--methods", "gauss,siren"], "compare.csv"),
])
def test_reproduce_and_compare_on_slurm_write_the_basic_launchers_tables(slurm, tmp_path, app, args, table):
    exe = ffrun_cmd(app)
    basic = subprocess.run([exe, *args, "--out", "basic", "device=cpu"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=600)
    assert basic.returncode == 0, basic.stderr[-3000:]
    on_slurm = subprocess.run([exe, *args, "--out", "slurm", "--launcher", "slurm", "device=cpu", *SLURM[1:]],
                              cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert on_slurm.returncode == 0, on_slurm.stderr[-3000:]
    assert list((tmp_path / "slurm").rglob(".submitit"))  # the runs went through SLURM
    timed = ("wall_s", "s_per_step")  # how long a run took differs; what it reached does not
    rows = {out: [{k: v for k, v in r.items() if k not in timed} for r in _table(tmp_path / out / table)]
            for out in ("basic", "slurm")}
    assert rows["slurm"] and rows["slurm"] == rows["basic"]
