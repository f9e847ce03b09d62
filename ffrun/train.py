"""The one training loop: Adam, optional lr decay, periodic evaluation and checkpoints, a progress bar,
and the three ways a run ends: completed, interrupted (SIGINT/SIGTERM) or diverged (loss not finite).

It knows nothing about any task beyond the Task interface (sample, loss, evaluate, state_dict).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Callable, Iterator

import torch
from tqdm.auto import tqdm

from ffrun.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint, set_rng_state
from ffrun.models.field import Field
from ffrun.tasks.base import Task


@dataclass
class TrainResult:
    status: str = "completed"  # completed | interrupted | diverged
    reason: str | None = None
    step: int = 0  # steps done
    metrics: dict[str, float] = dc_field(default_factory=dict)  # the last evaluation
    history: list[dict[str, float]] = dc_field(default_factory=list)  # every evaluation, with its step
    wall_s: float = 0.0  # training time, summed over resumed segments
    checkpoint_step: int | None = None  # the step of the last checkpoint written


def make_optimizer(field: Field, lr: float, lr_decay: float, lr_decay_steps: int, kind: str = "adam"):
    params = list(field.parameters())
    if kind == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr)
    else:
        # foreach: one multi-tensor op per update stage instead of a dozen small ops per parameter (the
        # CPU default is the per-parameter loop: 50 ms against 1.4 ms a step for the 4x256 MLP, measured).
        # Not fused: the fused CPU kernel's result depends on memory alignment, so a resumed run stopped
        # being bit-identical to an uninterrupted one.
        optimizer = torch.optim.Adam(params, lr=lr, foreach=True)
    if lr_decay_steps > 0 and lr_decay < 1.0:
        # Continuous exponential decay: lr * decay^(step / decay_steps), as optax.exponential_decay.
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_decay ** (s / lr_decay_steps))
    else:
        schedule = None
    return optimizer, schedule


@contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """fp32: plain float32. tf32: float32 tensors, TensorFloat-32 matmuls on CUDA (Ampere and later).
    bf16: autocast to bfloat16 for the forward and backward of the training step (weights, Adam and
    evaluation stay float32)."""
    if precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
        return
    if precision == "tf32" and device.type == "cuda":
        previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous
        return
    yield


def train_step(task: Task, field: Field, optimizer, schedule, step: int) -> torch.Tensor:
    """One optimisation step; returns the loss as a tensor on the device (reading it would synchronise)."""
    optimizer.zero_grad(set_to_none=True)
    loss = task.backward(field, task.sample(step))
    optimizer.step()
    if schedule is not None:
        schedule.step()
    return loss


class StopRequest:
    """Set by SIGINT/SIGTERM; the loop checks it between steps so a step is never cut in half."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextmanager
def catch_stop_signals() -> Iterator[StopRequest]:
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        yield stop
        return

    def handler(signum, frame):
        if stop:  # a second signal: stop now, the checkpoint on disk is still the last good one
            raise KeyboardInterrupt
        stop.signum = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


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
) -> TrainResult:
    steps, eval_every, ckpt_every = trainer_cfg.steps, trainer_cfg.eval_every, trainer_cfg.ckpt_every
    optimizer, schedule = make_optimizer(field, lr, trainer_cfg.lr_decay, trainer_cfg.lr_decay_steps,
                                         trainer_cfg.optimizer)
    result = TrainResult()
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        field.load_state_dict(state["field"])
        optimizer.load_state_dict(state["optimizer"])
        if schedule is not None and state.get("schedule") is not None:
            schedule.load_state_dict(state["schedule"])
        task.load_state_dict(state["task"])
        set_rng_state(state["rng"])
        result.step, result.history, result.wall_s = state["step"], state["history"], state["wall_s"]
        last = result.history[-1] if result.history else {}
        result.metrics = {k: v for k, v in last.items() if k not in ("step", "loss")}
        result.checkpoint_step = result.step

    def checkpoint() -> None:
        save_checkpoint(run_dir / CHECKPOINT, field=field, optimizer=optimizer, schedule=schedule, task=task,
                        step=result.step, history=result.history, wall_s=result.wall_s, config=config)
        result.checkpoint_step = result.step
        if on_checkpoint is not None:
            on_checkpoint(result)

    def evaluate(loss_value: float) -> None:
        field.eval()
        metrics = task.evaluate(field)
        result.history.append({"step": result.step, "loss": loss_value, **metrics})
        result.metrics = metrics
        if on_evaluate is not None:
            on_evaluate(result)

    device = next(field.parameters()).device
    precision = trainer_cfg.precision
    # Reading the loss synchronises a GPU with the host, so there it is read only at evaluations and
    # checkpoints; a non-finite loss in between is remembered on the device and reported then.
    check_every = 1 if device.type == "cpu" else 0
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    bar = tqdm(total=steps, initial=result.step, desc=desc, disable=not trainer_cfg.progress, dynamic_ncols=True)
    postfix: dict[str, str] = {}
    loss_value = math.nan
    with catch_stop_signals() as stop:
        segment_start = time.perf_counter()
        while result.step < steps:
            if stop:
                result.wall_s += time.perf_counter() - segment_start
                segment_start = time.perf_counter()
                checkpoint()
                result.status = "interrupted"
                result.reason = f"stopped by {signal.Signals(stop.signum).name} at step {result.step}"
                break
            field.train()
            with precision_context(precision, device):
                loss = train_step(task, field, optimizer, schedule, result.step)
            if check_every == 0:
                nonfinite |= ~torch.isfinite(loss)
            result.step += 1
            bar.update(1)
            done = result.step
            is_eval = done % eval_every == 0 or done == steps
            is_ckpt = done == steps or (ckpt_every > 0 and done % ckpt_every == 0)
            if is_eval or is_ckpt or (check_every and done % check_every == 0):
                loss_value = loss.item()
                if not math.isfinite(loss_value) or bool(nonfinite):
                    when = f"at step {done}" if check_every else f"by step {done}"
                    result.status = "diverged"
                    result.reason = (
                        f"the loss became {loss_value if not math.isfinite(loss_value) else 'nan'} {when}; the learning rate "
                        f"(trainer.lr={lr:g}) or the encoding's scale (sigma / encoding.scale) is likely too "
                        "large; " + (f"the last good checkpoint is at step {result.checkpoint_step}"
                                     if result.checkpoint_step is not None else "no checkpoint had been written yet")
                    )
                    result.wall_s += time.perf_counter() - segment_start
                    break
                postfix["loss"] = f"{loss_value:.4g}"
                train_psnr = task.train_psnr_from_loss(loss_value)
                if train_psnr is not None:
                    postfix["psnr"] = f"{train_psnr:.2f}"
            if is_eval:
                evaluate(loss_value)
                value = result.metrics.get(task.primary_metric)
                if value is not None and math.isfinite(value):
                    postfix[task.primary_metric] = f"{value:.2f}"
            if is_ckpt:
                result.wall_s += time.perf_counter() - segment_start
                segment_start = time.perf_counter()
                checkpoint()
            if postfix and done % 10 == 0:
                bar.set_postfix(postfix, refresh=False)
        else:
            result.wall_s += time.perf_counter() - segment_start
            if not result.history or result.history[-1]["step"] != result.step:
                evaluate(loss_value)  # resumed from a finished checkpoint: report its metrics
    bar.close()
    return result
