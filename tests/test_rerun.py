"""An earlier result is never erased by an accepted command: the same command into a completed run's folder
trains nothing and names the run, trainer.fresh=true keeps the old run aside, an interrupted run's folder given
again continues it, and trainer.resume=true continues a run in its own folder, leaving no second one."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ffrun_cmd

SMOKE = ["experiment=smoke", "trainer.progress=false"]
# ~3 ms a step: slow enough that a signal lands mid-run, fast enough for the suite
LONG = [*SMOKE, "task.resolution=64", "model.width=64", "trainer.steps=300", "trainer.eval_every=50",
        "trainer.ckpt_every=25"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def run_folders(root: Path) -> list[Path]:
    return sorted(p.parent.relative_to(root) for p in root.rglob("metrics.json"))


def stop_after_checkpoint(spawn, cwd: Path, run_dir: Path, *args: str, sig=signal.SIGKILL) -> dict:
    """Start `ffrun *args`, wait until its metrics.json records a checkpoint past step 50, stop it with `sig`;
    returns the record it left."""
    proc = spawn([ffrun_cmd(), *args], cwd=cwd)
    deadline = time.time() + 180
    while True:
        try:
            rec = record(run_dir)
            if rec["status"] == "running" and (rec["checkpoint_step"] or 0) >= 50:
                break
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    return record(run_dir)


@pytest.mark.parametrize("sweep", [False, True])
def test_the_same_command_twice_leaves_the_completed_run_byte_identical(run_cli, tmp_path, sweep):
    args = ["-m", *SMOKE, "seed=0,1", "hydra.sweep.dir=S"] if sweep else [*SMOKE, "hydra.run.dir=D"]
    runs = [tmp_path / "S" / "0", tmp_path / "S" / "1"] if sweep else [tmp_path / "D"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {d: (sha(d / "metrics.json"), sha(d / "checkpoint.pt"), sha(d / "config.yaml")) for d in runs}
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    for d in runs:
        assert (sha(d / "metrics.json"), sha(d / "checkpoint.pt"), sha(d / "config.yaml")) == before[d]
        assert record(d)["resumed_from"] is None and record(d)["status"] == "completed"
        line = next(ln for ln in again.stdout.splitlines() if ln.startswith(f"ffrun: {d} already holds this run"))
        assert "completed at step 20 (test_psnr " in line and "nothing retrained" in line
        assert "trainer.fresh=true" in line
        assert not (d / ".hydra.incoming").exists()
    assert "Traceback" not in again.stderr


def test_trainer_fresh_moves_the_old_run_aside_and_trains_again(run_cli, tmp_path):
    assert run_cli(*SMOKE, "hydra.run.dir=D").returncode == 0
    old = (sha(tmp_path / "D" / "metrics.json"), sha(tmp_path / "D" / "checkpoint.pt"))
    r = run_cli(*SMOKE, "trainer.fresh=true", "hydra.run.dir=D")
    assert r.returncode == 0, r.stderr[-2000:]
    aside = tmp_path / "D.earlier-1"
    assert (sha(aside / "metrics.json"), sha(aside / "checkpoint.pt")) == old
    assert (aside / ".hydra" / "overrides.yaml").is_file() and (aside / "reconstruction.png").is_file()
    new = record(tmp_path / "D")
    assert new["status"] == "completed" and new["resumed_from"] is None
    assert new["metrics"] == record(aside)["metrics"]  # the same experiment, trained again from step 0
    assert run_cli(*SMOKE, "trainer.fresh=true", "hydra.run.dir=D").returncode == 0
    assert (tmp_path / "D.earlier-2" / "metrics.json").is_file() and (aside / "metrics.json").is_file()
    both = run_cli(*SMOKE, "trainer.fresh=true", "trainer.resume=true", "hydra.run.dir=D")
    assert both.returncode == 2 and both.stderr.strip().splitlines()[-1].startswith("ffrun: error:")
    assert "trainer.fresh" in both.stderr.strip().splitlines()[-1]


def test_more_steps_into_a_completed_run_continue_it_and_keep_the_completed_one(run_cli, tmp_path):
    assert run_cli(*SMOKE, "trainer.eval_every=10", "hydra.run.dir=D").returncode == 0
    completed = sha(tmp_path / "D" / "metrics.json")
    r = run_cli(*SMOKE, "trainer.eval_every=10", "trainer.steps=30", "hydra.run.dir=D")
    assert r.returncode == 0, r.stderr[-2000:]
    rec = record(tmp_path / "D")
    assert rec["step"] == 30 and [h["step"] for h in rec["history"]] == [10, 20, 30]
    assert rec["resumed_from"] == str(tmp_path / "D" / "checkpoint.pt")
    assert sha(tmp_path / "D.earlier-1" / "metrics.json") == completed


def test_an_interrupted_runs_folder_given_again_continues_it(spawn, run_cli, tmp_path):
    full = run_cli(*LONG, "hydra.run.dir=full")
    assert full.returncode == 0, full.stderr[-2000:]
    killed = stop_after_checkpoint(spawn, tmp_path, tmp_path / "D", *LONG, "hydra.run.dir=D")
    assert killed["status"] == "running" and killed["step"] < 300
    r = run_cli(*LONG, "hydra.run.dir=D")  # the same command again
    assert r.returncode == 0, r.stderr[-2000:]
    rec = record(tmp_path / "D")
    assert rec["status"] == "completed" and rec["resumed_from"] == str(tmp_path / "D" / "checkpoint.pt")
    assert rec["metrics"] == record(tmp_path / "full")["metrics"]  # bit for bit on a CPU
    assert run_folders(tmp_path) == [Path("D"), Path("full")]


def test_resume_true_continues_the_run_in_its_own_folder_and_leaves_one_run_folder(spawn, run_cli, tmp_path):
    stopped = stop_after_checkpoint(spawn, tmp_path, tmp_path / "outputs" / "a", *LONG, "hydra.run.dir=outputs/a",
                                    sig=signal.SIGTERM)
    assert stopped["status"] == "interrupted"
    r = run_cli(*LONG, "trainer.resume=true")  # Hydra names a new folder: outputs/<date>/<time>
    assert r.returncode == 0, r.stderr[-2000:]
    assert run_folders(tmp_path / "outputs") == [Path("a")]
    rec = record(tmp_path / "outputs" / "a")
    assert rec["status"] == "completed" and rec["step"] == 300
    assert rec["resumed_from"] == "outputs/a/checkpoint.pt"
    assert "continuing the unfinished run in its own folder outputs/a" in r.stdout + r.stderr
    assert "continuing the unfinished run" in (tmp_path / "outputs" / "a" / "cli.log").read_text()
    outputs = tmp_path / "outputs"
    assert [p for p in outputs.rglob("*") if p.is_file() and p.relative_to(outputs).parts[0] != "a"] == []


def test_the_printed_resume_command_works_for_a_folder_hydra_and_the_shell_both_quote(run_cli, tmp_path):
    from ffrun.run.resume import hydra_quote

    run = tmp_path / "it's a run, b=c [1] "
    r = run_cli(*SMOKE, f"hydra.run.dir={hydra_quote(str(run))}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert record(run)["status"] == "completed"
    # outside a job (a fresh interpreter: no Hydra job of this process), read from the run's .hydra/
    command = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from ffrun.run.resume "
                              "import resume_command; print(resume_command(Path(sys.argv[1])))", str(run)],
                             capture_output=True, text=True, check=True).stdout.strip()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    again = subprocess.run(["bash", "-c", command + " trainer.steps=30"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert record(run)["step"] == 30 and record(run)["resumed_from"] == str(run / "checkpoint.pt")
