"""A dense grid of learned values, read by d-linear or bicubic interpolation: the baseline of "Grids Often
Outperform Implicit Neural Representations" (2025) at any resolution.

Vertex k_i = 0..R_i - 1 of axis i sits at u_i = k_i / (R_i - 1) of the box mapped onto [0, 1]^d (grid_sample's
align_corners=True). `linear`: a point between vertices gets sum_c w_c g[c] with w_c = prod_i (frac_i or
1 - frac_i), so a function linear in each coordinate is reproduced exactly. `bicubic` (the Grids benchmark's
image grid): the tensor product of Keys' cubic convolution (a = -0.75) over the 4 vertices around the point on
each axis, taps beyond the grid clamped to its edge: PyTorch's grid_sample(mode="bicubic", align_corners=True,
padding_mode="border"), in any dimension. Points outside the box take the value on its faces. `features: null`
stores the task's outputs themselves (with `model=direct`, the Grids paper's field); a number stores that many
features per vertex for a network to decode (a hybrid).

Both are separable: on a regular lattice of points (a whole image, every training step of a fit) the
interpolation is one small matrix per axis, M_i (points along axis i x R_i), and the field is
M_y G M_x^T per channel: two matrix products instead of 4^d gathers per point, and the same for the backward
pass. The encoding recognises such a lattice (the points of an H x W image, x varying fastest) and takes that path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ffrun.models.configs import EncodingConfig
from ffrun.models.registry import Budget, FieldSpec, register_encoding


@dataclass
class DenseGridConfig(EncodingConfig):
    # EncodingConfig's Fourier keys (m, scale, two_pi, ...) are inherited, unused here, so that a task
    # preset's Fourier settings compose with every encoding.
    name: str = "densegrid"
    resolution: Any = 128  # vertices per axis: one number, or a list with one per axis; model.params sizes it
    features: Optional[int] = None  # values per vertex; null = the task's output channels (no decoder needed)
    init: float = 0.1  # every vertex starts here (INR-benchmark's 0.1; above 0: a ReLU density (NeRF) gets gradients)
    interpolation: str = "linear"  # linear (d-linear) | bicubic (the Grids benchmark's image grid)


def axis_resolutions(resolution: Any, d: int) -> tuple[int, ...]:
    from omegaconf import ListConfig

    listed = isinstance(resolution, (list, tuple, ListConfig))
    res = tuple(int(r) for r in resolution) if listed else (int(resolution),) * d
    if len(res) != d or min(res) < 2:
        raise ValueError(f"encoding.resolution={resolution}: give one number >= 2 or {d} of them")
    return res


INTERPOLATIONS = ("linear", "bicubic")
CUBIC_A = -0.75  # Keys' cubic convolution parameter, as PyTorch's and OpenCV's bicubic


def axis_weights(pos: Tensor, size: int, mode: str) -> tuple[Tensor, Tensor]:
    """The vertices and weights one axis contributes at positions `pos` (N,) in vertex units [0, size - 1]:
    (indices (N, T), weights (N, T)) with T = 2 (linear) or 4 (bicubic; taps clamped to the grid)."""
    if mode == "linear":
        cell = torch.floor(pos).long().clamp(0, size - 2)  # the last cell holds u = 1
        t = pos - cell
        return torch.stack([cell, cell + 1], -1), torch.stack([1.0 - t, t], -1)
    base = torch.floor(pos)
    t = pos - base
    a = CUBIC_A
    # Keys' kernel at distances 1 + t, t, 1 - t, 2 - t
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    s = 1 - t
    w2 = ((a + 2) * s - (a + 3)) * s * s + 1
    w3 = ((a * (s + 1) - 5 * a) * (s + 1) + 8 * a) * (s + 1) - 4 * a
    taps = base.long().unsqueeze(-1) + torch.arange(-1, 3, device=pos.device)
    return taps.clamp(0, size - 1), torch.stack([w0, w1, w2, w3], -1)


def interpolate(values: Tensor, u: Tensor, mode: str = "linear") -> Tensor:
    """Interpolation of `values` (R_1, ..., R_d, C) at u (N, d) in [0, 1]^d; returns (N, C)."""
    d = u.shape[-1]
    shape = values.shape[:d]
    flat = values.reshape(-1, values.shape[-1])
    idx, wts = zip(*(axis_weights(u[:, i] * (shape[i] - 1), shape[i], mode) for i in range(d)))
    taps = idx[0].shape[-1]
    out = 0.0
    for corner in range(taps**d):
        digits = [(corner // taps**i) % taps for i in range(d)]
        index = sum(idx[i][:, k] * math.prod(shape[i + 1 :]) for i, k in enumerate(digits))
        w = math.prod(wts[i][:, k] for i, k in enumerate(digits))
        out = out + w.unsqueeze(-1) * flat[index]
    return out


def axis_matrix(u: Tensor, size: int, mode: str) -> Tensor:
    """The interpolation along one axis as a matrix (len(u), size): row j holds point j's weights."""
    idx, w = axis_weights(u * (size - 1), size, mode)
    m = torch.zeros(u.shape[0], size, dtype=w.dtype, device=u.device)
    return m.scatter_add_(1, idx, w)  # clamped taps at an edge add onto the edge vertex


def image_lattice(u: Tensor) -> tuple[Tensor, Tensor] | None:
    """(x values (W,), y values (H,)) when the points u (N, 2) are an H x W image's lattice, row by row with x
    varying fastest (how ffrun lays out pixels); None otherwise."""
    n = u.shape[0]
    if u.dim() != 2 or u.shape[1] != 2 or n < 4:
        return None
    w = int(torch.count_nonzero(u[:, 1] == u[0, 1]))  # the first row's length, if it is a lattice
    if w < 2 or n % w or n // w < 2:
        return None
    grid = u.reshape(n // w, w, 2)
    xs, ys = grid[0, :, 0], grid[:, 0, 1]
    if not (torch.equal(grid[..., 0], xs.expand_as(grid[..., 0])) and torch.equal(grid[..., 1], ys[:, None].expand_as(
            grid[..., 1]))):
        return None
    return xs, ys


class DenseGridEncoding(nn.Module):
    """Learned values on a regular grid over the box `bounds`, interpolated: (..., d) -> (..., C)."""

    separable = True  # a whole pixel lattice is two matrix products (`_lattice`)

    def __init__(self, in_dim: int, resolution: Any, features: int, bounds: tuple[float, float] = (0.0, 1.0),
                 init: float = 0.0, interpolation: str = "linear"):
        super().__init__()
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"encoding.interpolation={interpolation!r}: choose one of {', '.join(INTERPOLATIONS)}")
        self.in_dim, self.out_dim = in_dim, features
        self.resolution = axis_resolutions(resolution, in_dim)
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.interpolation = interpolation
        self.values = nn.Parameter(torch.full((*self.resolution, features), float(init)))

    def forward(self, v: Tensor) -> Tensor:
        matrices = self._lattice(v)
        if matrices is not None:
            mx, my = (m.to(self.values.dtype) for m in matrices)  # (W, R_x), (H, R_y); values (R_x, R_y, C)
            out = my @ self.values.permute(2, 1, 0) @ mx.T  # (C, H, W): M_y G_c M_x^T per channel
            return out.permute(1, 2, 0).reshape(*v.shape[:-1], self.out_dim)
        return interpolate(self.values, self._unit(v), self.interpolation).reshape(*v.shape[:-1], self.out_dim)

    def _unit(self, v: Tensor) -> Tensor:
        """The points in the unit box, (N, d), clamped to it."""
        lo, hi = self.bounds
        v = v if v.dtype == torch.float64 else v.float()
        return ((v - lo) / (hi - lo)).clamp(0.0, 1.0).reshape(-1, self.in_dim)

    def _lattice(self, v: Tensor) -> tuple[Tensor, Tensor] | None:
        """The axis matrices of an image lattice, kept while the same points come back (every training step)."""
        if self.in_dim != 2 or v.dim() != 2:
            return None
        key = (v.data_ptr(), tuple(v.shape), v._version, v.device, self.resolution)
        cached = self.__dict__.get("_lattice_cache")
        if cached is None or cached[0] != key:
            axes = image_lattice(self._unit(v))
            mats = None if axes is None else (axis_matrix(axes[0], self.resolution[0], self.interpolation),
                                              axis_matrix(axes[1], self.resolution[1], self.interpolation))
            cached = (key, mats)
            self.__dict__["_lattice_cache"] = cached
        return cached[1]


def _features(cfg, spec: FieldSpec) -> int:
    return spec.out_dim if cfg.features is None else int(cfg.features)


def _build(cfg, spec: FieldSpec) -> nn.Module:
    return DenseGridEncoding(spec.in_dim, cfg.resolution, _features(cfg, spec), spec.bounds, cfg.init,
                             cfg.interpolation)


def _candidates(budget: int, spec: FieldSpec, cfg) -> list[Any]:
    """Per-axis resolutions around the budget's d-th root: r on some axes and r + 1 on the others, so
    consecutive choices differ by a factor (1 + 1/r) and land within 5 % of any budget of r >= 10."""
    d = spec.in_dim
    r = max(2, int((budget / _features(cfg, spec)) ** (1.0 / d)))
    return [[r + 1] * k + [r] * (d - k) for k in range(d + 1)] + [[max(2, r - 1)] * d]


def _check(cfg) -> str | None:
    res = list(cfg.resolution) if not isinstance(cfg.resolution, (int, float)) else [cfg.resolution]
    if not res or any(not isinstance(r, int) or isinstance(r, bool) or r < 2 for r in res):
        return "use encoding.resolution >= 2 (one number, or one per axis)"
    if cfg.features is not None and cfg.features < 1:
        return "use encoding.features >= 1, or null for the task's outputs"
    if cfg.interpolation not in INTERPOLATIONS:
        return f"use encoding.interpolation = {' or '.join(INTERPOLATIONS)}"
    return None


register_encoding("densegrid", DenseGridConfig, Budget("encoding.resolution", candidates=_candidates),
                  _check)(_build)
