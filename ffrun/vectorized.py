"""Vectorized sweeps: K compatible jobs (same task and data, same network shape and learning rate,
different sigma, seed or encoding) trained together as one batched network in one process.

Each member keeps its own encoding (its own B) and its own initial weights, drawn exactly as its separate
run would draw them; the K MLPs are stacked along a leading axis and run with batched matrix products
(`torch.baddbmm`), and the loss is the sum of the members' losses, so each member's gradient, and its
Adam update (element-wise), is that of its separate run up to float rounding. Every member still gets
its own run directory, metrics.json, history, checkpoint (loadable and resumable as a separate run's) and
pictures.

Used through the Hydra launcher `hydra/launcher=vectorized` (ffrun's plugin in
`hydra_plugins/ffrun_launcher`); jobs that cannot be batched (tasks other than full-batch point
regression, i.e. image and toy1d; resumed runs; NTK parametrization) run one after another as usual.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ffrun.checkpoint import CHECKPOINT, save_checkpoint
from ffrun.config import flatten
from ffrun.train import TrainResult, catch_stop_signals, make_optimizer, precision_context

log = logging.getLogger("ffrun.vectorized")

# Keys in which members of one vectorized group may differ.
MEMBER_KEYS = ("sigma", "seed", "encoding.")


class BatchedMLP(nn.Module):
    """K ReLU MLPs of the same shape as one module: weights (K, fan_out, fan_in), biases (K, fan_out);
    input (K, N, fan_in) -> output (K, N, out_dim)."""

    def __init__(self, mlps: list[nn.Module]):
        super().__init__()
        linears = [[m for m in mlp.net if isinstance(m, nn.Linear)] for mlp in mlps]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer in zip(*linears):
            self.weights.append(nn.Parameter(torch.stack([l.weight.detach() for l in layer]).clone()))
            self.biases.append(nn.Parameter(torch.stack([l.bias.detach() for l in layer]).clone()))
        self.out_activation = mlps[0].out_activation

    def ordered_parameters(self) -> list[nn.Parameter]:
        """W0, b0, W1, b1, ...: the order of a single Field's parameters (mlp.net.0.weight, .bias, ...)."""
        return [p for pair in zip(self.weights, self.biases) for p in pair]

    def forward(self, h: Tensor) -> Tensor:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if i < last:
                h = torch.relu_(h)
        return torch.sigmoid(h) if self.out_activation == "sigmoid" else h

    @torch.no_grad()
    def copy_member_into(self, k: int, field) -> None:
        """Write member k's weights into a single Field (so its task code and checkpoints apply unchanged)."""
        linears = [m for m in field.mlp.net if isinstance(m, nn.Linear)]
        for layer, w, b in zip(linears, self.weights, self.biases):
            layer.weight.copy_(w[k])
            layer.bias.copy_(b[k])


class MemberOptimizerState:
    """Member k's slice of the batched Adam state, in the layout of the optimizer of a separate run, so
    its checkpoint resumes as one (`optimizer.load_state_dict`)."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], k: int):
        self.optimizer, self.params, self.k = optimizer, params, k

    def state_dict(self) -> dict[str, Any]:
        full = self.optimizer.state_dict()
        state = {}
        for i, p in enumerate(self.params):
            s = self.optimizer.state.get(p)
            if s:
                state[i] = {key: (v[self.k].clone() if key in ("exp_avg", "exp_avg_sq") else v.clone())
                            for key, v in s.items()}
        groups = [{**g, "params": list(range(len(self.params)))} for g in full["param_groups"]]
        return {"state": state, "param_groups": groups}


def group_key(config: dict) -> tuple:
    """Jobs with equal keys can be trained together: everything but sigma, seed and the encoding."""
    flat = flatten(config)
    return tuple(sorted((k, repr(v)) for k, v in flat.items()
                        if not any(k == m or (m.endswith(".") and k.startswith(m)) for m in MEMBER_KEYS)))


def why_not_vectorizable(cfg) -> str | None:
    """None when a job with this config can join a vectorized group, else the reason; decided from the
    config alone, before any data is loaded."""
    from ffrun.tasks import task_class
    from ffrun.tasks.base import PointRegressionTask

    if not issubclass(task_class(cfg.task.name), PointRegressionTask):
        return f"task={cfg.task.name} is not a full-batch point-regression task (image, toy1d)"
    if cfg.trainer.batch_size is not None:
        return "trainer.batch_size is set (members would draw different minibatches)"
    if cfg.trainer.resume:
        return "trainer.resume is set"
    if cfg.model.parametrization != "standard" or cfg.encoding.name == "grid":
        return "only standard-parametrization MLP fields are batched"
    return None


@dataclass
class Member:
    job: Any  # ffrun.cli.Job
    result: TrainResult
    logger: Any  # ffrun.loggers.RunLogger
    done: bool = False  # diverged: excluded from further evaluation and checkpoints


class BatchedTraining:
    """The batched network of a group of jobs sharing one point-regression task, its static features
    (each member's own gamma(v), computed once) and one optimizer over the stacked weights."""

    def __init__(self, jobs: list):
        first, tr = jobs[0], jobs[0].cfg.trainer
        coords, self.values = first.task.train
        with torch.no_grad():
            self.features = torch.stack([job.field.encoding(coords) for job in jobs])  # (K, N, F)
        self.batched = BatchedMLP([job.field.mlp for job in jobs]).to(first.device)
        self.params = self.batched.ordered_parameters()
        holder = nn.Module()
        holder.params = nn.ParameterList(self.params)
        self.optimizer, self.schedule = make_optimizer(holder, first.lr, tr.lr_decay, tr.lr_decay_steps, tr.optimizer)

    def step(self) -> Tensor:
        """One optimisation step of every member; returns the members' losses, shape (K,)."""
        self.optimizer.zero_grad(set_to_none=True)
        pred = self.batched(self.features)
        per_member = 0.5 * torch.mean((pred - self.values) ** 2, dim=(1, 2))  # each member's own loss
        per_member.sum().backward()  # members share no parameters: each gets its own gradient
        self.optimizer.step()
        if self.schedule is not None:
            self.schedule.step()
        return per_member


def train_vectorized(jobs: list, progress: bool = True) -> list[TrainResult]:
    """Train jobs that share a task object (see `group_key`) as one batched network; each job's run
    directory gets what its separate run would write. Returns one TrainResult per job."""
    from tqdm.auto import tqdm

    from ffrun.loggers import RunLogger

    first = jobs[0]
    task, device, tr = first.task, first.device, first.cfg.trainer
    steps, eval_every, ckpt_every = tr.steps, tr.eval_every, tr.ckpt_every
    group = BatchedTraining(jobs)
    batched, params, optimizer, schedule = group.batched, group.params, group.optimizer, group.schedule
    members = [Member(job, TrainResult(), RunLogger(job.run_dir, job.cfg.logger.name, job.cfg.logger.images))
               for job in jobs]

    def sync_member(k: int) -> None:
        batched.copy_member_into(k, members[k].job.field)

    def checkpoint(k: int) -> None:
        m = members[k]
        sync_member(k)
        save_checkpoint(m.job.run_dir / CHECKPOINT, field=m.job.field, optimizer=MemberOptimizerState(optimizer, params, k),
                        schedule=schedule, task=task, step=m.result.step, history=m.result.history,
                        wall_s=m.result.wall_s, config=m.job.config)
        m.result.checkpoint_step = m.result.step
        m.job.record(m.result, "running")

    def evaluate(k: int, loss_value: float) -> None:
        m = members[k]
        sync_member(k)
        m.job.field.eval()
        metrics = task.evaluate(m.job.field)
        m.result.history.append({"step": m.result.step, "loss": loss_value, **metrics})
        m.result.metrics = metrics
        m.logger.log(m.result.history, task.preview(m.job.field) if m.logger.wants_images else None)

    bar = tqdm(total=steps, desc=f"{first.cfg.task.name} x{len(jobs)} (vectorized)", disable=not progress,
               dynamic_ncols=True)
    step = 0
    with catch_stop_signals() as stop:
        start = time.perf_counter()
        while step < steps:
            if stop:
                for k, m in enumerate(members):
                    if not m.done:
                        m.result.wall_s = time.perf_counter() - start
                        checkpoint(k)
                        m.result.status = "interrupted"
                        m.result.reason = f"stopped by signal {stop.signum} at step {step}"
                break
            with precision_context(tr.precision, device):
                per_member = group.step()
            step += 1
            bar.update(1)
            is_eval = step % eval_every == 0 or step == steps
            is_ckpt = step == steps or (ckpt_every > 0 and step % ckpt_every == 0)
            if not (is_eval or is_ckpt or device.type == "cpu"):
                continue
            losses = per_member.detach().cpu().tolist()
            for k, m in enumerate(members):
                if m.done:
                    continue
                m.result.step = step
                if not math.isfinite(losses[k]):
                    m.done = True
                    m.result.status = "diverged"
                    m.result.wall_s = time.perf_counter() - start
                    m.result.reason = (f"the loss became {losses[k]} at step {step}; the learning rate "
                                       f"(trainer.lr={m.job.lr:g}) or the encoding's scale is likely too large")
                    continue
                if is_eval:
                    evaluate(k, losses[k])
                if is_ckpt:
                    m.result.wall_s = time.perf_counter() - start
                    checkpoint(k)
            if all(m.done for m in members):
                break
        wall = time.perf_counter() - start
    bar.close()
    for k, m in enumerate(members):
        m.logger.close()
        if m.result.status == "completed":
            m.result.wall_s = wall
            sync_member(k)
            m.job.field.eval()
    return [m.result for m in members]


def bench_vectorized(k: int, steps: int, device: torch.device, overrides: list[str]) -> list[dict]:
    """Training time of a K-job sigma sweep, sequential (K separate ffrun training loops) against
    vectorized (one batched loop), on the image protocol and on a 16x16 image (64 training points, where
    the per-step overhead of a training loop, not arithmetic, dominates)."""
    from ffrun.bench import compose
    from ffrun.cli import prepare
    from ffrun.train import train_step

    sigmas = [2.0 ** i for i in range(k)]
    out = []
    for label, extra in (("paper_image 512x512", []), ("16x16", ["task.resolution=16"])):
        base = ["experiment=paper_image", f"device={device}", "trainer.progress=false", *overrides, *extra]
        cfgs = [compose([*base, "encoding=gauss", f"sigma={s}"]) for s in sigmas]
        jobs = [prepare(cfgs[0], Path("."))]
        jobs += [prepare(c, Path("."), task=jobs[0].task) for c in cfgs[1:]]
        t = time.perf_counter()
        for job in jobs:
            optimizer, schedule = make_optimizer(job.field, job.lr, 1.0, 0)
            for i in range(steps):
                train_step(job.task, job.field, optimizer, schedule, i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        sequential = time.perf_counter() - t
        t = time.perf_counter()
        group = BatchedTraining(jobs)  # the static features are computed inside the timing, once
        for i in range(steps):
            group.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        vectorized = time.perf_counter() - t
        out.append({"label": label, "k": k, "steps": steps, "sequential_s": sequential, "vectorized_s": vectorized,
                    "speedup": sequential / vectorized})
        print(f"vectorized sweep {label}: K={k} x {steps} steps, sequential {sequential:.2f} s, vectorized "
              f"{vectorized:.2f} s, {sequential / vectorized:.2f}x", flush=True)
    return out
