"""Vectorized sweeps: K compatible jobs (same task and data, same network shape and learning rate,
different sigma, seed or encoding) trained together as one batched network in one process.

Each member keeps its own encoding (its own B) and its own initial weights, drawn exactly as its separate
run would draw them; the K MLPs are stacked along a leading axis and run with batched matrix products,
and the loss is the sum of the members' losses, so each member's gradient, and its Adam update
(element-wise), is that of its separate run up to float rounding (bit for bit when K = 1 on a CPU: the
batched products mirror a Field's, the first layer's bias folded into its product). `BatchedTraining`
is a trainee of ffrun's one training loop (`ffrun.train.loop.train_members`), so every member gets what its
separate run would get: its own run directory, metrics.json, history, checkpoint (loadable and resumable
as a separate run's), status and pictures.

Used through the Hydra launcher `hydra/launcher=vectorized` (ffrun's plugin in
`hydra_plugins/ffrun_launcher`); jobs that cannot be batched (tasks other than full-batch point
regression, `Task.vectorizable`: image and toy1d; encodings that train; resumed runs; NTK
parametrization) run one after another as usual.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ffrun.config import flatten
from ffrun.models.field import network_autocast
from ffrun.models.fused import augmented_linear
from ffrun.tasks.base import half_mse
from ffrun.train.loop import autocast_dtype, optimizer_for

# Keys in which members of one vectorized group may differ.
MEMBER_KEYS = ("sigma", "seed", "encoding.")


class BatchedMLP(nn.Module):
    """K ReLU MLPs of the same shape as one module: weights (K, fan_out, fan_in), biases (K, fan_out);
    input [x, 1] (K, N, fan_in + 1) -> output (K, N, out_dim), the same products as `MLP.forward_augmented`."""

    def __init__(self, mlps: list[nn.Module]):
        super().__init__()
        linears = [[m for m in mlp.net if isinstance(m, nn.Linear)] for mlp in mlps]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer in zip(*linears):
            self.weights.append(nn.Parameter(torch.stack([lin.weight.detach() for lin in layer]).clone()))
            self.biases.append(nn.Parameter(torch.stack([lin.bias.detach() for lin in layer]).clone()))
        self.out_activation = mlps[0].out_activation

    def ordered_parameters(self) -> list[nn.Parameter]:
        """W0, b0, W1, b1, ...: the order of a single Field's parameters (mlp.net.0.weight, .bias, ...)."""
        return [p for pair in zip(self.weights, self.biases) for p in pair]

    def forward(self, x1: Tensor) -> Tensor:
        layers = list(zip(self.weights, self.biases))
        h = x1
        for i, layer in enumerate(layers):
            last = i == len(layers) - 1
            h = augmented_linear(h, layer, "linear" if last else "relu", ones_out=not last)
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
    from ffrun.models.registry import encoding_entry
    from ffrun.tasks import task_class

    if not task_class(cfg.task.name).vectorizable:
        return f"task={cfg.task.name} is not a full-batch point-regression task (image, toy1d)"
    if cfg.trainer.batch_size is not None:
        return "trainer.batch_size is set (members would draw different minibatches)"
    if cfg.trainer.resume:
        return "trainer.resume is set"
    if cfg.model.get("name", "mlp") != "mlp" or cfg.model.parametrization != "standard" or \
            cfg.model.get("linear_last_hidden", False):
        return "only standard-parametrization ReLU MLPs (model=mlp) are batched"
    if not encoding_entry(cfg.encoding.name).static:
        return f"encoding={cfg.encoding.name} trains (or has no network); only fixed Fourier features are batched"
    return None


class BatchedTraining:
    """A trainee of the training loop (`ffrun.train.loop.Trainee`): the batched network of a group of jobs
    sharing one point-regression task, its static features (each member's own [gamma(v), 1], computed
    once, as a Field caches them) and one optimizer over the stacked weights."""

    def __init__(self, jobs: list, precision: str = "fp32"):
        first, tr = jobs[0], jobs[0].cfg.trainer
        self.task, self.device, self.size = first.task, first.device, len(jobs)
        self.fields = [job.field for job in jobs]
        coords, self.values = self.task.train
        with torch.no_grad():
            g = torch.stack([field.encoding(coords) for field in self.fields])  # (K, N, F), float32
            self.features = torch.cat([g, torch.ones_like(g[..., :1])], dim=-1)
        self.batched = BatchedMLP([field.mlp for field in self.fields]).to(first.device)
        self.params = self.batched.ordered_parameters()
        holder = nn.Module()
        holder.params = nn.ParameterList(self.params)
        self._optimizer, self.schedule = optimizer_for(holder, first.lr, tr)
        self.autocast_dtype = autocast_dtype(precision)
        if self.autocast_dtype is not None and tr.get("fp32_layers", "none") != "none":
            from ffrun.util.errors import FfrunError

            raise FfrunError(f"trainer.fp32_layers={tr.fp32_layers}: the vectorized launcher autocasts every layer "
                             "of its batched networks; use trainer.fp32_layers=none there, or another launcher")

    def step(self, step: int = 0) -> Tensor:
        """One optimisation step of every member; returns the members' losses, shape (K,)."""
        self._optimizer.zero_grad(set_to_none=True)
        with network_autocast(self.device, self.autocast_dtype):
            pred = self.batched(self.features)
        per_member = half_mse(pred.float(), self.values, dim=(1, 2))  # each member's own loss
        per_member.sum().backward()  # members share no parameters: each gets its own gradient
        self._optimizer.step()
        if self.schedule is not None:
            self.schedule.step()
        return per_member.detach()

    def field(self, k: int):
        """Member k's Field with its current weights (so its task code and checkpoints apply unchanged)."""
        self.batched.copy_member_into(k, self.fields[k])
        return self.fields[k]

    def optimizer(self, k: int) -> MemberOptimizerState:
        return MemberOptimizerState(self._optimizer, self.params, k)
