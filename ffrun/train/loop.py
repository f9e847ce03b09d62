"""The one training loop: Adam, optional lr decay, periodic evaluation and checkpoints, a progress bar,
and the three ways a run ends: completed, interrupted (SIGINT/SIGTERM) or diverged (loss not finite).

The loop has a member axis: it trains K networks in lockstep and keeps K records, checkpoints and
statuses. A single run is K = 1 (`SingleField`, through `train`); a vectorized sweep is K > 1
(`ffrun.train.vectorized.BatchedTraining`, one batched network). Both go through `train_members`, line for line.

It knows nothing about any task beyond the Task interface (sample, backward, evaluate, state_dict), and
nothing about a trainee beyond `step` (one optimisation step of every member, their losses as a (K,)
tensor left on the device), `field(k)` (member k's weights in a Field) and `optimizer(k)` (its optimizer
state, as a separate run's).
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ffrun.config import LR_SCHEDULES as SCHEDULE_NAMES
from ffrun.models.field import Field
from ffrun.tasks.base import Task
from ffrun.train.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint, set_rng_state
from ffrun.train.status import Status
from ffrun.util.errors import ignore_late_signals

log = logging.getLogger("ffrun")


@dataclass
class TrainResult:
    status: Status = Status.COMPLETED  # completed | interrupted | diverged
    reason: str | None = None
    step: int = 0  # steps done
    metrics: dict[str, float] = dc_field(default_factory=dict)  # the last evaluation
    history: list[dict[str, float]] = dc_field(default_factory=list)  # every evaluation, with its step
    wall_s: float = 0.0  # training time, summed over resumed segments
    checkpoint_step: int | None = None  # the step of the last checkpoint written
    signal: int | None = None  # interrupted: the signal's number (the exit status is 128 + it)


# trainer.lr_schedule's named schedules (null: trainer.lr_decay / lr_decay_steps): the lr factor at a step
# of a run of `steps` steps. Plain functions of (step, steps), so a checkpoint holds no schedule code, only
# the step count (LambdaLR's last_epoch), and a resumed run rebuilds the schedule from its config.
LR_SCHEDULES = {
    "constant": None,  # the lr throughout (SIREN's reference scripts)
    # WIRE's reference scripts: LambdaLR(optim, lambda x: 0.1 ** min(x / niters, 1)), to 0.1 lr at the end
    "wire": lambda step, steps: 0.1 ** min(step / steps, 1),
}
assert tuple(LR_SCHEDULES) == SCHEDULE_NAMES, "ffrun.config names the schedules validation accepts"


def make_optimizer(field: torch.nn.Module, lr: float, lr_decay: float = 1.0, lr_decay_steps: int = 0,
                   kind: str = "adam", *, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                   lr_schedule: str | None = None, steps: int | None = None):
    """The optimizer and its lr schedule (a LambdaLR stepped once per training step, or None for a constant
    lr). `lr_schedule` names a schedule of LR_SCHEDULES over `steps` steps, replacing lr_decay and
    lr_decay_steps; None keeps them: continuous exponential decay lr * lr_decay^(step / lr_decay_steps).
    `betas` and `eps` are Adam's (SGD has neither). Runs read all of these from their trainer config:
    `optimizer_for`."""
    params = list(field.parameters())
    if kind == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr)
    else:
        # foreach: one multi-tensor op per update stage instead of a dozen small ops per parameter (the
        # CPU default is the per-parameter loop: 50 ms against 1.4 ms a step for the 4x256 MLP, measured).
        # Not fused: the fused CPU kernel's result depends on memory alignment, so a resumed run stopped
        # being bit-identical to an uninterrupted one.
        optimizer = torch.optim.Adam(params, lr=lr, betas=(float(betas[0]), float(betas[1])), eps=float(eps),
                                     foreach=True)
    if lr_schedule is not None:
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={lr_schedule!r}: use None or one of {', '.join(LR_SCHEDULES)}")
        factor = LR_SCHEDULES[lr_schedule]
        if factor is None:
            return optimizer, None
        if steps is None or steps < 1:
            raise ValueError(f"lr_schedule={lr_schedule!r} decays over the run: give its steps (>= 1)")
        total = int(steps)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: factor(s, total))
    if lr_decay_steps > 0 and lr_decay < 1.0:
        # Continuous exponential decay: lr * decay^(step / decay_steps), as optax.exponential_decay.
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_decay ** (s / lr_decay_steps))
    else:
        schedule = None
    return optimizer, schedule


def optimizer_for(field: torch.nn.Module, lr: float, trainer_cfg):
    """`make_optimizer` with every optimizer setting of a run's trainer config (trainer.optimizer, betas, eps,
    lr_schedule over trainer.steps, or lr_decay/lr_decay_steps); `lr` is the run's resolved learning rate."""
    tr = trainer_cfg
    return make_optimizer(field, lr, tr.lr_decay, tr.lr_decay_steps, tr.optimizer, betas=tuple(tr.betas),
                          eps=tr.eps, lr_schedule=tr.lr_schedule, steps=tr.steps)


def autocast_dtype(precision: str) -> torch.dtype | None:
    """trainer.precision -> the dtype the network's forward is autocast to (None: float32)."""
    return torch.bfloat16 if precision == "bf16" else None


FP32_LAYERS = {"none": (), "first": ("first",), "last": ("last",), "ends": ("first", "last")}


def keep_fp32_layers(field: Field, choice: str) -> None:
    """trainer.fp32_layers under trainer.precision=bf16: the ReLU MLP's first and/or last Linear layer keep
    float32 products (docs/performance.md, "bf16 on the CPU"); other networks autocast every layer."""
    mlp = getattr(field, "mlp", None)
    if mlp is not None and hasattr(mlp, "fp32_layers"):
        mlp.fp32_layers = FP32_LAYERS[choice]
    elif choice != "none":
        from ffrun.util.errors import FfrunError

        raise FfrunError(f"trainer.fp32_layers={choice}: only the ReLU MLP (model=mlp) keeps layers in float32; "
                         f"{type(mlp).__name__} autocasts every layer under bf16. Use trainer.fp32_layers=none")


@contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """The matrix-multiply mode of a training step. tf32: TensorFloat-32 matmuls on CUDA (Ampere and
    later) for the network's forward and backward; evaluation, outside this context, stays float32.
    bf16 is not set here but on the network (`Field.autocast_dtype`), which autocasts its own forward
    only; the Fourier features are float32 in every mode (`fourier_features`)."""
    if precision == "tf32" and device.type == "cuda":
        previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous
        return
    yield


def train_step(task: Task, field: Field, optimizer, schedule, step: int) -> Tensor:
    """One optimisation step; returns the loss as a tensor on the device (reading it would synchronise)."""
    optimizer.zero_grad(set_to_none=True)
    loss = task.backward(field, task.sample(step))
    optimizer.step()
    if schedule is not None:
        schedule.step()
    return loss


class Trainee(Protocol):
    """What the loop trains: K members sharing one task, one device and one lr schedule."""

    task: Task
    device: torch.device
    schedule: object | None
    size: int

    def step(self, step: int) -> Tensor: ...  # every member's loss, shape (K,), left on the device

    def field(self, k: int) -> Field: ...  # a Field holding member k's current weights

    def optimizer(self, k: int) -> object: ...  # its optimizer state (`state_dict()`) as a separate run's


class SingleField:
    """K = 1: one Field, its optimizer and its task's own backward (chunked, rendered, ...)."""

    size = 1

    def __init__(self, task: Task, field: Field, optimizer, schedule, precision: str = "fp32",
                 fp32_layers: str = "none"):
        self.task, self._field, self._optimizer, self.schedule = task, field, optimizer, schedule
        self.device = next(field.parameters()).device
        field.autocast_dtype = autocast_dtype(precision)
        keep_fp32_layers(field, fp32_layers)

    def step(self, step: int) -> Tensor:
        self._field.train()
        return train_step(self.task, self._field, self._optimizer, self.schedule, step).reshape(1)

    def field(self, k: int) -> Field:
        return self._field

    def optimizer(self, k: int):
        return self._optimizer


# The signals that stop a run at the end of its step, with a checkpoint (exit status 128 + the signal): Ctrl-C and
# kill, and in a job of ffrun's SLURM launcher also submitit's signal before the time limit or at a preemption.
STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM]


def stop_also_on(signum: int) -> None:
    """Make `signum` one of the STOP_SIGNALS of this process (ffrun's SLURM launcher, in its jobs: SIGUSR2)."""
    if signum not in STOP_SIGNALS:
        STOP_SIGNALS.append(signum)


class StopSignal(BaseException):
    """A stop signal that cannot wait for the end of a step: a second one during training, or one
    outside the training loop. BaseException, like KeyboardInterrupt, so no `except Exception` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class StopRequest:
    """Set by SIGINT/SIGTERM; the loop checks it between steps so a step is never cut in half."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


def _importing(frame) -> bool:
    """Whether the interrupted code is running an import (a frame of importlib's bootstrap on its stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


@contextmanager
def catch_stop_signals() -> Iterator[StopRequest]:
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        yield stop
        return

    raised = False

    def handler(signum, frame):
        nonlocal raised
        if not stop:
            stop.signum = signum
        elif not raised and not _importing(frame):
            # a second signal: stop now, the checkpoint on disk is still the last good one. Not inside an import
            # (the first picture's matplotlib): a module cut halfway stays broken for the pictures the stopped
            # run still draws; there the run stops at the end of its step, as after one signal.
            raised = True
            raise StopSignal(stop.signum)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        ignore_late_signals()  # where the program's end was decided inside the loop


@dataclass
class Member:
    """One network on the loop's member axis: where its checkpoint goes and who hears of its progress."""

    run_dir: Path
    config: dict  # the resolved config, saved with its checkpoints
    lr: float
    result: TrainResult = dc_field(default_factory=TrainResult)
    on_checkpoint: Callable[[TrainResult], None] | None = None  # after each checkpoint (metrics.json "running")
    on_evaluate: Callable[[TrainResult], None] | None = None  # after each evaluation (loggers)


class _Lockstep:
    """One call of `train_members`: the members' results, the step they share, and who is still training."""

    def __init__(self, trainee: Trainee, members: list[Member], trainer_cfg):
        self.trainee, self.members, self.cfg = trainee, members, trainer_cfg
        self.task, self.device = trainee.task, trainee.device
        self.results = [m.result for m in members]
        self.step = self.results[0].step
        self.active = list(range(len(members)))
        self.last_loss = [math.nan] * len(members)
        self.resumed_wall = [r.wall_s for r in self.results]
        self.start = time.perf_counter()
        # Reading the losses synchronises a GPU with the host, so there they are read only at evaluations and
        # checkpoints; a non-finite loss in between is remembered on the device and reported then.
        self.read_every_step = self.device.type == "cpu"
        self.nonfinite = torch.zeros(len(members), dtype=torch.bool, device=self.device)
        self.postfix: dict[str, str] = {}

    def stamp(self, k: int) -> TrainResult:
        """Member k's result with the loop's own step and time (every record and checkpoint carries them)."""
        r = self.results[k]
        r.step, r.wall_s = self.step, self.resumed_wall[k] + time.perf_counter() - self.start
        return r

    def checkpoint(self, k: int) -> None:
        r = self.stamp(k)
        member = self.members[k]
        save_checkpoint(member.run_dir / CHECKPOINT, field=self.trainee.field(k), optimizer=self.trainee.optimizer(k),
                        schedule=self.trainee.schedule, task=self.task, step=self.step, history=r.history,
                        wall_s=r.wall_s, config=member.config)
        r.checkpoint_step = self.step
        if member.on_checkpoint is not None:
            member.on_checkpoint(r)

    def evaluate(self, k: int) -> None:
        r = self.stamp(k)
        field = self.trainee.field(k)
        field.eval()
        r.metrics = self.task.evaluate(field)
        r.history.append({"step": self.step, "loss": self.last_loss[k], **r.metrics})
        if self.members[k].on_evaluate is not None:
            self.members[k].on_evaluate(r)

    def diverge(self, k: int, when: str) -> None:
        r = self.stamp(k)
        r.status = Status.DIVERGED
        loss = self.last_loss[k]
        last_good = (f"the last good checkpoint is at step {r.checkpoint_step}" if r.checkpoint_step is not None
                     else "no checkpoint had been written yet")
        r.reason = (f"the loss became {loss if not math.isfinite(loss) else 'nan'} {when}; the learning rate "
                    f"(trainer.lr={self.members[k].lr:g}) or the encoding's scale (sigma / encoding.scale) is likely "
                    f"too large; {last_good}")

    def interrupt(self, signum: int) -> None:
        """A signal between steps: every active member checkpoints and ends interrupted."""
        for k in self.active:
            r = self.results[k]
            r.status, r.signal = Status.INTERRUPTED, signum
            r.reason = f"stopped by {signal.Signals(signum).name} at step {self.step}"
            self.checkpoint(k)

    def cut_short(self, signum: int) -> None:
        """A second signal, anywhere (mid-step, mid-checkpoint): nothing more is written, and the checkpoint on
        disk (atomic, so never half-written) is the last good one, at `checkpoint_step`."""
        for k in self.active:
            r = self.stamp(k)
            r.status, r.signal = Status.INTERRUPTED, signum
            last = (f"the last checkpoint is at step {r.checkpoint_step}" if r.checkpoint_step is not None
                    else "no checkpoint had been written yet")
            r.reason = f"stopped by a second {signal.Signals(signum).name} at step {self.step}; {last}"

    def read_losses(self, losses: Tensor) -> None:
        """The step's losses on the host: members with a non-finite one diverge and leave the axis."""
        values = losses.tolist()
        flagged = [False] * len(self.members) if self.read_every_step else self.nonfinite.tolist()
        for k in list(self.active):
            self.last_loss[k] = values[k]
            if flagged[k] or not math.isfinite(values[k]):
                self.diverge(k, f"at step {self.step}" if self.read_every_step else f"by step {self.step}")
                self.active.remove(k)
        if not self.active:
            return
        best = min(self.active, key=lambda k: self.last_loss[k])
        self.postfix["loss"] = f"{self.last_loss[best]:.4g}"
        train_psnr = self.task.train_psnr_from_loss(self.last_loss[best])
        if train_psnr is not None:
            self.postfix["psnr"] = f"{train_psnr:.2f}"

    def evaluate_all(self) -> None:
        for k in self.active:
            self.evaluate(k)
        metric = self.task.primary_metric
        scores = [v for k in self.active if (v := self.results[k].metrics.get(metric)) is not None
                  and math.isfinite(v)]
        if scores:
            self.postfix[metric] = f"{max(scores):.2f}"

    def run(self, stop: StopRequest, bar) -> None:
        """Step every active member to trainer.steps, unless a signal or divergence stops them all first."""
        steps, eval_every, ckpt_every = self.cfg.steps, self.cfg.eval_every, self.cfg.ckpt_every
        while self.step < steps and self.active:
            if stop:
                self.interrupt(stop.signum)
                return
            with precision_context(self.cfg.precision, self.device):
                losses = self.trainee.step(self.step)
            if not self.read_every_step:
                self.nonfinite |= ~torch.isfinite(losses)
            self.step += 1
            bar.update(1)
            is_eval = self.step % eval_every == 0 or self.step == steps
            is_ckpt = self.step == steps or (ckpt_every > 0 and self.step % ckpt_every == 0)
            if self.read_every_step or is_eval or is_ckpt:
                self.read_losses(losses)
                if not self.active:
                    return
            if is_eval:
                self.evaluate_all()
            if is_ckpt:
                for k in self.active:
                    self.checkpoint(k)
            if self.postfix and self.step % 10 == 0:
                bar.set_postfix(self.postfix, refresh=False)
        for k in self.active:
            if not self.results[k].history or self.results[k].history[-1]["step"] != self.step:
                self.evaluate(k)  # resumed from a finished checkpoint: report its metrics


def train_members(trainee: Trainee, members: list[Member], trainer_cfg, desc: str = "ffrun") -> list[TrainResult]:
    """Train every member to `trainer_cfg.steps`; returns their results, in order. Members start at the
    same step (their results' `step`, nonzero when resumed) and move in lockstep; a member that diverges
    leaves the axis (no more evaluations or checkpoints) while the others go on."""
    loop = _Lockstep(trainee, members, trainer_cfg)
    bar = tqdm(total=trainer_cfg.steps, initial=loop.step, desc=desc, disable=not trainer_cfg.progress,
               dynamic_ncols=True)
    with catch_stop_signals() as stop:
        try:
            loop.run(stop, bar)
        except StopSignal:
            loop.cut_short(stop.signum)
    bar.close()
    for k in loop.active:
        if loop.results[k].status == Status.COMPLETED:
            loop.stamp(k)
            trainee.field(k).eval()  # the field holds the member's final weights, for the task's outputs
    return loop.results


def train(
    task: Task,
    field: Field,
    trainer_cfg,
    lr: float,
    run_dir: Path,
    config: dict,
    resume_from: Path | None = None,
    on_checkpoint: Callable[[TrainResult], None] | None = None,
    on_evaluate: Callable[[TrainResult], None] | None = None,
    desc: str = "ffrun",
    result: TrainResult | None = None,
) -> TrainResult:
    """A single run (K = 1), optionally continued from a checkpoint. `result`, when given, is the record
    filled in as training goes (the caller still has it when training raises)."""
    optimizer, schedule = optimizer_for(field, lr, trainer_cfg)
    result = TrainResult() if result is None else result
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        field.load_state_dict(state["field"])
        optimizer.load_state_dict(state["optimizer"])
        if schedule is not None and state.get("schedule") is not None:
            schedule.load_state_dict(state["schedule"])
        planned = (state.get("config") or {}).get("trainer", {}).get("steps")
        if schedule is not None and trainer_cfg.lr_schedule is not None and planned != trainer_cfg.steps:
            # A named schedule spans trainer.steps: a run extended past its planned steps follows the new span
            # from the checkpoint's step on, so it is no longer the run it would have been at these steps.
            log.warning("trainer.lr_schedule=%s spans trainer.steps: the resumed run was planned for %s steps, "
                        "this one for %s, so the lr continues along the new span from step %s",
                        trainer_cfg.lr_schedule, planned, trainer_cfg.steps, state["step"])
        task.load_state_dict(state["task"])
        set_rng_state(state["rng"])
        result.step, result.history, result.wall_s = state["step"], state["history"], state["wall_s"]
        last = result.history[-1] if result.history else {}
        result.metrics = {k: v for k, v in last.items() if k not in ("step", "loss")}
        result.checkpoint_step = result.step
        log.info("resuming from step %d of %s", result.step, resume_from)
    trainee = SingleField(task, field, optimizer, schedule, trainer_cfg.precision,
                          trainer_cfg.get("fp32_layers", "none"))
    member = Member(run_dir, config, lr, result, on_checkpoint, on_evaluate)
    return train_members(trainee, [member], trainer_cfg, desc)[0]
