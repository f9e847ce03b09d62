"""A dense grid of learned values, read by d-linear interpolation (bilinear in 2D, trilinear in 3D): the
baseline of "Grids Often Outperform Implicit Neural Representations" (2025) at any resolution.

Vertex k_i = 0..R_i - 1 of axis i sits at u_i = k_i / (R_i - 1) of the box mapped onto [0, 1]^d (grid_sample's
align_corners=True); a point between vertices gets sum_c w_c g[c] with w_c = prod_i (frac_i or 1 - frac_i),
so a function linear in each coordinate is reproduced exactly. Points outside the box take the value on its
faces. `features: null` stores the task's outputs themselves (with `model=direct`, the Grids paper's field);
a number stores that many features per vertex for a network to decode (a hybrid).
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


def axis_resolutions(resolution: Any, d: int) -> tuple[int, ...]:
    from omegaconf import ListConfig

    listed = isinstance(resolution, (list, tuple, ListConfig))
    res = tuple(int(r) for r in resolution) if listed else (int(resolution),) * d
    if len(res) != d or min(res) < 2:
        raise ValueError(f"encoding.resolution={resolution}: give one number >= 2 or {d} of them")
    return res


def interpolate(values: Tensor, u: Tensor) -> Tensor:
    """d-linear interpolation of `values` (R_1, ..., R_d, C) at u (N, d) in [0, 1]^d; returns (N, C)."""
    d = u.shape[-1]
    res = torch.tensor(values.shape[:d], device=u.device)
    pos = u * (res - 1)
    cell = torch.minimum(torch.floor(pos).long(), res - 2).clamp_min(0)  # the last cell holds u = 1
    frac = pos - cell
    strides = torch.tensor([math.prod(values.shape[i + 1 : d]) for i in range(d)], device=u.device)
    flat = values.reshape(-1, values.shape[-1])
    out = 0.0
    for corner in range(1 << d):
        upper = torch.tensor([(corner >> i) & 1 for i in range(d)], device=u.device)
        w = torch.where(upper.bool(), frac, 1.0 - frac).prod(-1, keepdim=True)
        out = out + w * flat[((cell + upper) * strides).sum(-1)]
    return out


class DenseGridEncoding(nn.Module):
    """Learned values on a regular grid over the box `bounds`, d-linearly interpolated: (..., d) -> (..., C)."""

    def __init__(self, in_dim: int, resolution: Any, features: int, bounds: tuple[float, float] = (0.0, 1.0),
                 init: float = 0.0):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, features
        self.resolution = axis_resolutions(resolution, in_dim)
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.values = nn.Parameter(torch.full((*self.resolution, features), float(init)))

    def forward(self, v: Tensor) -> Tensor:
        lo, hi = self.bounds
        u = ((v.float() - lo) / (hi - lo)).clamp(0.0, 1.0).reshape(-1, self.in_dim)
        return interpolate(self.values, u).reshape(*v.shape[:-1], self.out_dim)


def _features(cfg, spec: FieldSpec) -> int:
    return spec.out_dim if cfg.features is None else int(cfg.features)


def _build(cfg, spec: FieldSpec) -> nn.Module:
    return DenseGridEncoding(spec.in_dim, cfg.resolution, _features(cfg, spec), spec.bounds, cfg.init)


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
    return None


register_encoding("densegrid", DenseGridConfig, Budget("encoding.resolution", candidates=_candidates),
                  _check)(_build)
