"""What a task hands sigma=auto and FreSh (ffrun.sigma) about its training data: the measurements and the
forward model they were taken through, never the test data. One kind per way a field is observed; the
sigma package scores each kind (`Task.sigma_proxy` returns one, or None where there is no proxy)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch
from torch import Tensor


@dataclass(frozen=True)
class PointSamples:
    """Direct supervision: the field's target values at the training points (the lattice proxy needs them
    on a regular grid, in row-major order)."""

    coords: Tensor  # (N, d)
    values: Tensor  # (N, C)

    @property
    def device(self) -> torch.device:
        return self.coords.device


@dataclass(frozen=True)
class Projections:
    """CT: the measured sinogram of an n x n image and the projector it was measured through."""

    sinogram: Tensor  # (angles, n)
    coords: Tensor  # (n * n, 2): the pixel centres the field is evaluated at, row-major
    n: int
    project: Callable[[Tensor], Tensor]  # (n, n) image -> (angles, n), the task's own projector
    # angle indices -> the projector of those angles alone, as a sparse (len(indices) * n, n * n) matrix
    matrix: Callable[[Sequence[int]], Tensor]

    @property
    def num_angles(self) -> int:
        return self.sinogram.shape[0]

    @property
    def device(self) -> torch.device:
        return self.sinogram.device


@dataclass(frozen=True)
class KSpaceSamples:
    """MRI: mask * FFT(volume) of an n^3 volume (unnormalised FFT, unshifted layout) and the mask."""

    observed: Tensor  # (n, n, n) complex
    mask: Tensor  # (n, n, n) bool
    coords: Tensor  # (n^3, 3): the voxel coordinates the field is evaluated at, C order
    n: int

    @property
    def device(self) -> torch.device:
        return self.observed.device


SigmaProxy = Union[PointSamples, Projections, KSpaceSamples]
