"""The interface every task implements; the trainer, the runner, sigma=auto and the apps know nothing else
about a task: what they need to know, the task answers (`points_per_step`, `sigma_proxy`, `coordinates`,
`vectorizable`)."""

from __future__ import annotations

import logging
import math
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import MISSING
from torch import Tensor

from ffrun.models.field import Field
from ffrun.tasks.proxy import PointSamples, SigmaProxy

log = logging.getLogger("ffrun.tasks")


@dataclass
class TaskConfig:
    """What every task's schema has (each task's module extends it with its own settings)."""

    name: str = MISSING
    # The top-level `sigma` defaults to this: the paper's sigma for the task, scaled to the task's size
    # by samples per unit length (each task's yaml holds the formula; docs/protocol.md, "Reduced sizes").
    default_sigma: float = 10.0


class Task(ABC):
    in_dim: int  # coordinate dimension
    out_dim: int  # field output channels
    out_activation: str  # the MLP's output activation ("sigmoid" | "none")
    primary_metric: str  # the held-out metric a sweep or search optimises (higher is better)
    # The metric that picks a run's best evaluation (metrics.json `best`); None: the primary metric. A protocol
    # that must not peek at its test data picks by the training fit (the Grids benchmark's superres, denoise).
    selection_metric: str | None = None
    grid_shape: tuple[int, ...] | None = None  # the pixel/voxel grid a `grid` baseline optimises
    # The box [lo, hi]^d the coordinates fill: hash and dense grids normalise by it, SIREN centres by it.
    bounds: tuple[float, float] = (0.0, 1.0)
    # What the field's coordinates and outputs mean, for readers of an exported field (ffrun-export).
    coordinates: str = ""
    # Whether jobs of this task can train as one batched network (hydra/launcher=vectorized): full-batch
    # point regression on shared training points, 0.5 * MSE (ffrun.train.vectorized).
    vectorizable: bool = False

    def points_per_step(self) -> int | None:
        """Coordinates the field is evaluated at in one training step (FLOP counts, the CPU thread rule);
        None where the task does not say."""
        return None

    def sigma_proxy(self) -> SigmaProxy | None:
        """The training data, as sigma=auto reads it (ffrun.tasks.proxy): the measurements and the forward
        model they were taken through, never test data. None: this task has no proxy."""
        return None

    @abstractmethod
    def sample(self, step: int) -> Any:
        """The training batch for this step (all points, or a random subset when batch_size is set)."""

    @abstractmethod
    def loss(self, field: Field, batch: Any) -> Tensor:
        """Scalar training loss; applies the task's forward model to the field's output."""

    def backward(self, field: Field, batch: Any) -> Tensor:
        """Accumulate the loss's gradients into the field's parameters; returns the detached loss.
        A task whose full-batch graph would not fit in memory overrides this with an exact chunked
        version."""
        loss = self.loss(field, batch)
        loss.backward()
        return loss.detach()

    @abstractmethod
    def evaluate(self, field: Field) -> dict[str, float]:
        """The paper's held-out metrics, by name."""

    @abstractmethod
    def save(self, field: Field, run_dir: Path) -> None:
        """Write the task's outputs (pictures, meshes, volumes) into run_dir."""

    def save_progress(self, field: Field, run_dir: Path, previews: dict[str, np.ndarray] | None = None) -> None:
        """The pictures of the field so far, written at each evaluation and when a run is interrupted, so a long
        run's folder shows where it stands (`save` writes the full outputs at the end). Default: each `preview`
        picture as `<name>.png`."""
        from ffrun.util.atomic import write_png

        for name, picture in (self.preview(field) if previews is None else previews).items():
            write_png(run_dir / f"{name}.png", picture)

    def preview(self, field: Field) -> dict[str, np.ndarray]:
        """Pictures of the current field, by name, logged at each evaluation (TensorBoard): float arrays
        in [0, 1], (H, W) or (H, W, 3). Kept cheap next to `evaluate`."""
        return {}

    def memo(self, field: Field, name: str, compute: Callable[[], Any]) -> Any:
        """compute() once per state of the field's parameters, so evaluate, preview and save of one step
        share a costly prediction. Optimizer steps and load_state_dict change parameters in place, which
        bumps their version counters; equal versions mean equal weights."""
        key = (id(field), tuple(p._version for p in field.parameters()))
        cache = self.__dict__.setdefault("_memo", {})
        if name not in cache or cache[name][0] != key:
            cache[name] = (key, compute())
        return cache[name][1]

    def train_psnr_from_loss(self, loss: float) -> float | None:
        """PSNR implied by the training loss, shown on the progress bar; None where it has no meaning."""
        return None

    @classmethod
    def gallery_pictures(cls, run_dir: Path) -> tuple[np.ndarray | None, np.ndarray] | None:
        """(ground truth or None, reconstruction) as float images in [0, 1], read back from a completed
        run's outputs, for side-by-side galleries (`ffrun-reproduce`); None when the files are absent.
        Default: `ground_truth.png` and `reconstruction.png`."""
        from ffrun.util.pictures import read_png

        rec = run_dir / "reconstruction.png"
        if not rec.is_file():
            return None
        truth = run_dir / "ground_truth.png"
        return (read_png(truth) if truth.is_file() else None), read_png(rec)

    def state_dict(self) -> dict[str, Any]:
        """The task's own sampling state (its minibatch generator, a uint8 tensor), saved in checkpoints."""
        gen = getattr(self, "generator", None)
        return {"generator": gen.get_state(), "generator_device": gen.device.type} if gen is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" not in state:
            return
        saved = state.get("generator_device", "cpu")
        if saved == self.generator.device.type:
            self.generator.set_state(state["generator"])
            return
        # A device generator's state only means something to a generator of its own kind (a CPU
        # Mersenne Twister is not a CUDA Philox); a run resumed on another device draws new minibatches,
        # seeded from the saved state so the continuation is still a function of the checkpoint.
        self.generator.manual_seed(zlib.crc32(state["generator"].numpy().tobytes()))
        log.warning("the checkpoint's minibatch generator is a %s one; on %s its draws continue from a new seed",
                    saved, self.generator.device.type)


class PointRegressionTask(Task):
    """Direct supervision: the field is fitted to known values at training points, 0.5 * MSE.

    Subclasses set `self.train = (coords, values)` and `self.device`, then call `_init_sampler`."""

    train: tuple[Tensor, Tensor]
    device: torch.device
    vectorizable = True

    def points_per_step(self) -> int:
        n = self.train[0].shape[0]
        return n if self.batch_size is None else min(self.batch_size, n)

    def sigma_proxy(self) -> PointSamples:
        return PointSamples(*self.train)

    def _init_sampler(self, batch_size: int | None, seed: int) -> None:
        self.batch_size = batch_size
        # on the task's device, so a minibatch's indices never cross between host and device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def sample(self, step: int) -> tuple[Tensor, Tensor]:
        idx = batch_indices(self.train[0].shape[0], self.batch_size, self.generator, self.device)
        return self.train if idx is None else (self.train[0][idx], self.train[1][idx])

    def loss(self, field: Field, batch: tuple[Tensor, Tensor]) -> Tensor:
        coords, values = batch
        pred = field.forward_static(coords) if coords is self.train[0] else field(coords)
        return half_mse(pred, values)

    def train_psnr_from_loss(self, loss: float) -> float | None:
        return -10.0 * math.log10(2.0 * loss) if loss > 0 else math.inf


def half_mse(pred: Tensor, target: Tensor, dim: tuple[int, ...] | None = None) -> Tensor:
    """0.5 * mean squared error, over everything or over `dim` (a vectorized sweep: one loss per member)."""
    sq = (pred - target) ** 2
    return 0.5 * (sq.mean() if dim is None else sq.mean(dim=dim))


def batch_indices(n: int, batch_size: int | None, generator: torch.Generator, device: torch.device):
    """Indices of a random minibatch of n points, or None for the full batch."""
    if batch_size is None or batch_size >= n:
        return None
    return torch.randint(0, n, (batch_size,), generator=generator, device=device)
