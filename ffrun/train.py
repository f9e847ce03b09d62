"""The one training loop: Adam, optional lr decay, periodic evaluation, a progress bar.

It knows nothing about any task beyond the Task interface (sample, loss, evaluate).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field as dc_field

import torch
from tqdm.auto import tqdm

from ffrun.models.field import Field
from ffrun.tasks.base import Task


@dataclass
class TrainResult:
    metrics: dict[str, float]  # the final evaluation
    history: list[dict[str, float]] = dc_field(default_factory=list)  # every evaluation, with its step
    wall_s: float = 0.0
    optimizer: torch.optim.Optimizer | None = None


def make_optimizer(field: Field, lr: float, lr_decay: float, lr_decay_steps: int):
    optimizer = torch.optim.Adam(field.parameters(), lr=lr)
    if lr_decay_steps > 0 and lr_decay < 1.0:
        # Continuous exponential decay: lr * decay^(step / decay_steps), as optax.exponential_decay.
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_decay ** (s / lr_decay_steps))
    else:
        schedule = None
    return optimizer, schedule


def train(task: Task, field: Field, trainer_cfg, lr: float, desc: str = "ffrun") -> TrainResult:
    steps, eval_every = trainer_cfg.steps, trainer_cfg.eval_every
    optimizer, schedule = make_optimizer(field, lr, trainer_cfg.lr_decay, trainer_cfg.lr_decay_steps)
    result = TrainResult(metrics={}, optimizer=optimizer)
    bar = tqdm(range(steps), desc=desc, disable=not trainer_cfg.progress, dynamic_ncols=True)
    postfix: dict[str, str] = {}
    start = time.perf_counter()
    for step in bar:
        field.train()
        loss = task.loss(field, task.sample(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        done = step + 1
        is_eval = done % eval_every == 0 or done == steps
        # Reading the loss forces a device sync, so only do it when the bar or an evaluation needs it.
        if is_eval or (trainer_cfg.progress and done % 10 == 0):
            loss_value = loss.item()
            postfix["loss"] = f"{loss_value:.4g}"
            train_psnr = task.train_psnr_from_loss(loss_value)
            if train_psnr is not None:
                postfix["psnr"] = f"{train_psnr:.2f}"
        if is_eval:
            field.eval()
            metrics = task.evaluate(field)
            result.history.append({"step": done, "loss": loss_value, **metrics})
            result.metrics = metrics
            value = metrics.get(task.primary_metric)
            if value is not None and math.isfinite(value):
                postfix[task.primary_metric] = f"{value:.2f}"
        if postfix:
            bar.set_postfix(postfix, refresh=False)
    result.wall_s = time.perf_counter() - start
    return result
