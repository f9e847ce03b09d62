"""Per-method optimizer settings (trainer.betas, trainer.eps, trainer.lr_schedule) reach the optimizer a run
builds, single and vectorized; bad values are refused in one line; a run with a schedule resumes bit for bit."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from ffrun.util.errors import FfrunError

TINY = ["task=image", "task.resolution=32", "encoding=gauss", "sigma=4", "encoding.m=16", "model.depth=3",
        "model.width=32", "trainer.progress=false", "device=cpu"]


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)


def adam_group(run_dir: Path) -> dict:
    """The hyperparameters of the optimizer the run trained with, as its checkpoint holds them."""
    (group,) = checkpoint(run_dir)["optimizer"]["param_groups"]
    return group


def lr_after(optimizer, schedule, steps: int) -> float:
    for _ in range(steps):
        optimizer.step()
        schedule.step()
    return optimizer.param_groups[0]["lr"]


def test_betas_and_eps_reach_the_adam_of_a_run_and_of_a_vectorized_group(compose, tmp_path):
    from ffrun.run.job import prepare, run, train_together
    from ffrun.run.rundir import unlock_run_dir
    from ffrun.train.loop import optimizer_for

    cfg = compose(*TINY, "trainer.steps=2", "trainer.betas=[0.8,0.95]", "trainer.eps=1e-6")
    job = prepare(cfg, tmp_path / "built")
    optimizer, schedule = optimizer_for(job.field, job.lr, cfg.trainer)
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.Adam) and schedule is None
    assert (group["betas"], group["eps"], group["foreach"], group["fused"]) == ((0.8, 0.95), 1e-6, True, None)
    run(cfg, tmp_path / "plain")
    (result,) = train_together([prepare(cfg, tmp_path / "vec")])
    unlock_run_dir(tmp_path / "vec")  # train_together leaves its members held for the launcher's report
    for name in ("plain", "vec"):
        group = adam_group(tmp_path / name)
        assert (tuple(group["betas"]), group["eps"]) == ((0.8, 0.95), 1e-6), name
    # the defaults are torch's Adam defaults
    default = optimizer_for(job.field, job.lr, compose(*TINY).trainer)[0].param_groups[0]
    assert (default["betas"], default["eps"]) == ((0.9, 0.999), 1e-8)


def test_method_hashgrid_trains_with_instant_ngps_adam(compose, tmp_path):
    """Composed with method=hashgrid, the optimizer a run builds has tiny-cuda-nn's betas (0.9, 0.99), eps 1e-15."""
    from ffrun.run.job import run

    cfg = compose("experiment=smoke", "task=image", "method=hashgrid", "encoding.backend=torch", "trainer.steps=2")
    assert (list(cfg.trainer.betas), cfg.trainer.eps, cfg.trainer.lr) == ([0.9, 0.99], 1e-15, 1e-2)
    assert run(cfg, tmp_path)["status"] == "completed"
    group = adam_group(tmp_path)
    assert (tuple(group["betas"]), group["eps"], group["lr"]) == ((0.9, 0.99), 1e-15, 1e-2)


def test_the_wire_schedule_decays_to_a_tenth_of_the_lr_over_trainer_steps():
    """WIRE's LambdaLR(optim, lambda x: 0.1 ** min(x / niters, 1)): lr 5e-3 at step 0, 5e-3 * 0.1^(k/10) after
    k of 10 steps (values computed by hand), 5e-4 at the end and after it."""
    from ffrun.train.loop import make_optimizer

    def fresh():
        return make_optimizer(torch.nn.Linear(1, 1), 5e-3, lr_schedule="wire", steps=10)

    optimizer, schedule = fresh()
    assert optimizer.param_groups[0]["lr"] == 5e-3  # the lr of the first update
    for k, expected in ((1, 3.971641173621408e-3), (5, 1.5811388300841897e-3),  # 0.1^0.1, 0.1^0.5
                        (9, 6.294627058970836e-4),  # 0.1^0.9: the lr of the last update (step 9 of 0..9)
                        (10, 5e-4), (13, 5e-4)):  # at trainer.steps, and held there past it
        optimizer, schedule = fresh()
        assert lr_after(optimizer, schedule, k) == pytest.approx(expected, rel=1e-12), k


def test_null_keeps_lr_decay_and_constant_overrides_it(compose):
    """lr_schedule=null is the lr_decay/lr_decay_steps behaviour as before; a named schedule replaces it
    (method=siren: constant, as SIREN's reference, even under an experiment's decay)."""
    from ffrun.train.loop import optimizer_for

    decay = ["trainer.lr_decay=0.5", "trainer.lr_decay_steps=4"]
    optimizer, schedule = optimizer_for(torch.nn.Linear(1, 1), 1e-3, compose(*TINY, *decay).trainer)
    assert lr_after(optimizer, schedule, 4) == pytest.approx(5e-4, rel=1e-12)  # 1e-3 * 0.5^(4/4)
    siren = compose("method=siren", *decay)
    assert siren.trainer.lr_schedule == "constant"
    optimizer, schedule = optimizer_for(torch.nn.Linear(1, 1), siren.trainer.lr, siren.trainer)
    assert schedule is None and optimizer.param_groups[0]["lr"] == 1e-4
    wire = compose("method=wire", "trainer.steps=8")
    optimizer, schedule = optimizer_for(torch.nn.Linear(1, 1), wire.trainer.lr, wire.trainer)
    assert wire.trainer.lr == 5e-3 and lr_after(optimizer, schedule, 8) == pytest.approx(5e-4, rel=1e-12)


BAD = [("trainer.betas=[0.9,1.0]", "trainer.betas=[0.9, 1.0] is out of range"),
       ("trainer.betas=[0.9]", "trainer.betas=[0.9] is out of range"),
       ("trainer.betas=[-0.1,0.99]", "trainer.betas=[-0.1, 0.99] is out of range"),
       ("trainer.eps=0", "trainer.eps=0.0 is out of range"),
       ("trainer.lr_schedule=cosine", "trainer.lr_schedule='cosine' is out of range")]


@pytest.mark.parametrize("override,message", BAD)
def test_bad_optimizer_settings_are_refused_by_validation(compose, override, message):
    from ffrun.config import validate

    with pytest.raises(FfrunError, match=r"^config: " + message.replace("[", r"\[").replace("]", r"\]")):
        validate(compose("task=toy1d", "trainer.steps=3", override))


@pytest.mark.parametrize("override,message", [BAD[0], BAD[3], BAD[4]])
def test_bad_optimizer_settings_on_the_command_line_are_one_line_and_exit_2(run_cli, tmp_path, override, message):
    r = run_cli("task=toy1d", "trainer.steps=3", "trainer.progress=false", override)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ffrun: error: config: {message}: "), r.stderr[-2000:]
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("checkpoint.pt"))


def test_a_run_with_a_schedule_resumed_after_an_interruption_equals_an_uninterrupted_one(compose, tmp_path):
    """The wire schedule spans trainer.steps, so the interrupted run is the same 20-step run stopped (SIGINT)
    at its step-10 checkpoint; resumed, it ends where 20 straight steps end, schedule state included."""
    from ffrun.run.job import prepare, run
    from ffrun.train.loop import train
    from ffrun.train.status import Status

    common = [*TINY, "trainer.batch_size=64", "trainer.lr_schedule=wire", "trainer.betas=[0.9,0.99]",
              "trainer.eps=1e-15", "trainer.steps=20", "trainer.eval_every=5", "trainer.ckpt_every=10"]
    straight = run(compose(*common), tmp_path / "straight")

    job = prepare(compose(*common), tmp_path / "first")
    sent = []

    def stop_at_10(result):
        if result.step == 10 and not sent:
            sent.append(True)
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C: the loop stops between steps, checkpointed

    first = train(job.task, job.field, job.cfg.trainer, job.lr, tmp_path / "first", job.config,
                  on_checkpoint=stop_at_10)
    assert (first.status, first.step, first.checkpoint_step) == (Status.INTERRUPTED, 10, 10)

    resumed = run(compose(*common, f"trainer.resume={tmp_path / 'first'}"), tmp_path / "resumed")
    assert resumed["resumed_from"] == str(tmp_path / "first" / "checkpoint.pt")
    assert resumed["history"] == straight["history"] and resumed["metrics"] == straight["metrics"]
    a, b = checkpoint(tmp_path / "resumed"), checkpoint(tmp_path / "straight")
    assert a["step"] == b["step"] == 20
    for k in a["field"]:
        assert torch.equal(a["field"][k], b["field"][k]), k
    for i, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["optimizer"]["state"][i][key])), (i, key)
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert a["schedule"] == b["schedule"] and a["schedule"]["last_epoch"] == 20
    assert a["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.1 * job.lr, rel=1e-12)
    # the schedule matters: the same run at a constant lr ends elsewhere
    constant = run(compose(*[c for c in common if "lr_schedule" not in c]), tmp_path / "constant")
    assert constant["metrics"] != straight["metrics"]
