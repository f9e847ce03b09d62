"""Multiresolution hash encoding (Instant-NGP, Mueller et al. 2022), in PyTorch so it runs anywhere.

Level l (of L) is a grid of resolution N_l = N_min * b^l, b = exp((ln N_max - ln N_min) / (L - 1)), holding
F learned features per vertex in a table of T entries. As in tiny-cuda-nn, a point u in [0, 1]^d is at
pos = u * (N_l - 1) + 1/2 on level l; its 2^d surrounding vertices c are looked up at

    index(c) = sum_i c_i * prod_{j<i} R_l             if the level's dense grid (R_l = ceil(N_l - 1) + 1
                                                      vertices per axis) fits the table, else
    index(c) = (c_1 * 1) xor (c_2 * 2654435761) xor (c_3 * 805459861)   (in 32-bit arithmetic)

modulo the level's table size, and their features are blended with d-linear weights
w_c = prod_i (frac_i if c_i is the upper vertex else 1 - frac_i), which sum to 1. The levels' features are
concatenated: out_dim = L * F. Tables start at U(-1e-4, 1e-4).

`backend: auto` uses tiny-cuda-nn's fused encoding when it is importable, the points are on a CUDA device
and the table size is a power of two (its `log2_hashmap_size`), training this module's own parameters;
`tests/test_methods.py` checks that it agrees with this one where it can run (scripts/gpu_methods.sh).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from ffrun.models.configs import EncodingConfig
from ffrun.models.registry import Budget, FieldSpec, register_encoding

log = logging.getLogger("ffrun.hashgrid")

PRIMES = (1, 2654435761, 805459861)  # tiny-cuda-nn's spatial hash, one prime per dimension
MASK32 = 0xFFFFFFFF


@dataclass
class HashGridConfig(EncodingConfig):
    # EncodingConfig's Fourier keys (m, scale, two_pi, ...) are inherited, unused here, so that a task
    # preset's Fourier settings compose with every encoding.
    name: str = "hashgrid"
    levels: int = 16  # L
    features: int = 2  # F per level
    table_size: int = 524288  # T = 2^19 entries per level (tiny-cuda-nn's log2_hashmap_size 19); model.params sizes it
    min_resolution: int = 16  # N_min
    max_resolution: int = 2048  # N_max (Instant-NGP's NeRF setting 2048 per unit box)
    backend: str = "auto"  # auto (tiny-cuda-nn on CUDA when importable) | torch | tcnn
    # unit: the box mapped onto [0, 1] and clamped (tiny-cuda-nn's intended input); benchmark: the box mapped onto
    # [-1, 1) and fed unclamped, as the Grids benchmark feeds tiny-cuda-nn, through its float32 positions and
    # unsigned 32-bit index arithmetic (negative cells wrap), with per_level_scale b and N_l - 1 = N_min b^l - 1
    positions: str = "unit"
    per_level_scale: Optional[float] = None  # b directly (tiny-cuda-nn's per_level_scale) instead of max_resolution


def level_scales(levels: int, n_min: float, n_max: float) -> list[float]:
    """N_l - 1 for each level: tiny-cuda-nn's `scale`, with per_level_scale b from N_min and N_max."""
    b = math.exp((math.log(n_max) - math.log(n_min)) / (levels - 1)) if levels > 1 else 1.0
    return [n_min * b**level - 1.0 for level in range(levels)]


def tcnn_level_scales(levels: int, base_resolution: int, per_level_scale: float) -> list[float]:
    """N_l - 1 as tiny-cuda-nn computes it in float32: exp2f(l * log2f(b)) * N_min - 1 (grid_scale)."""
    log2_b = np.log2(np.float32(per_level_scale), dtype=np.float32)
    return [float(np.exp2(np.float32(level) * log2_b, dtype=np.float32) * np.float32(base_resolution)
                  - np.float32(1.0)) for level in range(levels)]


def level_sizes(d: int, table_size: int, scales: list[float]) -> list[tuple[int, int, bool]]:
    """(vertices per axis R_l, entries, dense) per level: a level whose R_l^d vertices (rounded up to a
    multiple of 8, as tiny-cuda-nn) fit in the table stores them densely, the others hash into T entries."""
    out = []
    for scale in scales:
        res = math.ceil(scale) + 1
        dense = res**d
        dense = -(-dense // 8) * 8
        out.append((res, min(dense, table_size), dense <= table_size))
    return out


def spatial_hash(corners: Tensor) -> Tensor:
    """XOR over the d axes of corner_i * PRIMES[i], in unsigned 32-bit arithmetic; (..., d) int64 -> (...)."""
    h = torch.zeros(corners.shape[:-1], dtype=torch.int64, device=corners.device)
    for i in range(corners.shape[-1]):
        h = h ^ ((corners[..., i] * PRIMES[i]) & 0xFFFFFFFF)
    return h


def corner_offsets(d: int, device=None) -> Tensor:
    """The 2^d corners of a cell as 0/1 offsets, (2^d, d)."""
    return torch.tensor([[(c >> i) & 1 for i in range(d)] for c in range(1 << d)], dtype=torch.int64, device=device)


def hash_encode(u: Tensor, tables: list[Tensor], scales: list[float], sizes: list[tuple[int, int, bool]]) -> Tensor:
    """The formula of the module docstring for points u of shape (N, d) in [0, 1]^d; returns (N, L * F)."""
    d = u.shape[-1]
    offsets = corner_offsets(d, u.device)  # (C, d)
    feats = []
    for table, scale, (res, entries, dense) in zip(tables, scales, sizes):
        pos = u * scale + 0.5
        cell = torch.floor(pos)
        frac = pos - cell  # (N, d)
        corners = cell.long()[:, None, :] + offsets  # (N, C, d)
        if dense:
            strides = torch.tensor([res**i for i in range(d)], dtype=torch.int64, device=u.device)
            index = (corners * strides).sum(-1)
        else:
            index = spatial_hash(corners)
        index = index % entries
        weights = torch.where(offsets.bool(), frac[:, None, :], 1.0 - frac[:, None, :]).prod(-1)  # (N, C)
        feats.append((table[index] * weights[..., None]).sum(1))  # (N, F)
    return torch.cat(feats, dim=-1)


def tcnn_positions(x: Tensor, scale: float) -> Tensor:
    """tiny-cuda-nn's pos = fmaf(scale, x, 0.5) in float32: the float64 product of two floats is exact, and so is
    its sum with 0.5 while |scale x| >= 2^-6 (the bits then span at most 53), so one rounding to float32, as fmaf;
    below that (points within 2^-6 / scale of 0) the float64 sum may round first, by an ulp at most."""
    return (x.double() * float(scale) + 0.5).float()


def wrap32_mul(a: Tensor, factor: int) -> Tensor:
    """(a mod 2^32) * factor mod 2^32 for int64 a, without overflowing int64: in 16-bit halves (each product
    below 2^48)."""
    a = a & MASK32
    factor &= MASK32
    return ((a & 0xFFFF) * factor + ((((a >> 16) * factor) & 0xFFFF) << 16)) & MASK32


def corner_lookup(u: Tensor, scales: list[float], sizes: list[tuple[int, int, bool]],
                  features: int, wrap: bool = False) -> tuple[list[Tensor], Tensor]:
    """Where every level's 2^d corners of the points u (N, d) in [0, 1]^d are in the flat parameter vector, and
    their d-linear weights, all levels at once: per feature f the positions (L * 2^d, N) of that feature (levels
    one after another, F features per entry), and the weights (L * 2^d, N). The formula of `hash_encode`,
    built from per-axis (N,) vectors in a layout where every write and every later gather is contiguous.

    `wrap` (encoding.positions=benchmark): u is not clamped to [0, 1], positions are tiny-cuda-nn's float32
    fmaf, and the corner arithmetic is its unsigned 32-bit one: a cell -k is 2^32 - k, a dense index
    sum_i c_i R^i and a hash xor_i c_i P_i both wrap modulo 2^32 before the modulo of the level's size."""
    n, d = u.shape
    corners = 1 << d
    axes = u.t().contiguous()  # (d, N): each axis contiguous
    total = sum(entries for _, entries, _ in sizes) * features
    # int32 positions where they fit: half the memory, and index_select gathers faster with them
    rows = torch.empty(len(scales), corners, n, dtype=torch.int32 if total < 2**31 else torch.int64, device=u.device)
    index = torch.empty(n, dtype=torch.int64, device=u.device)  # one corner's, in 64-bit arithmetic
    weights = torch.empty(len(scales), corners, n, dtype=u.dtype, device=u.device)
    start = 0
    for level, (scale, (res, entries, dense)) in enumerate(zip(scales, sizes)):
        pos = tcnn_positions(axes, scale) if wrap else axes * scale + 0.5
        cell = torch.floor(pos)
        hi = pos - cell
        lo = 1.0 - hi
        cell = cell.long()
        if wrap:  # every term in unsigned 32-bit arithmetic, as tiny-cuda-nn's grid_index
            parts = [[wrap32_mul(cell[i] + o, res**i if dense else PRIMES[i]) for o in (0, 1)] for i in range(d)]
        elif dense:  # index = sum_i (cell_i + o_i) R^i: a base and a constant per corner
            base = cell[0].clone()
            for i in range(1, d):
                base.add_(cell[i], alpha=res**i)
            parts = None
        else:  # (cell_i + o_i) * prime_i in 32 bits, for o_i = 0 and 1, xor-ed per corner
            parts = [[((cell[i] + o) * PRIMES[i]) & 0xFFFFFFFF for o in (0, 1)] for i in range(d)]
        for c in range(corners):
            upper = [(c >> i) & 1 for i in range(d)]
            w = weights[level, c]
            torch.mul(hi[0] if upper[0] else lo[0], hi[1] if upper[1] else lo[1], out=w) if d > 1 else \
                w.copy_(hi[0] if upper[0] else lo[0])
            for i in range(2, d):
                w.mul_(hi[i] if upper[i] else lo[i])
            if wrap and dense:
                index.copy_(parts[0][upper[0]])
                for i in range(1, d):
                    index.add_(parts[i][upper[i]])
                index.bitwise_and_(MASK32)
            elif dense:
                torch.add(base, sum(upper[i] * res**i for i in range(d)), out=index)
            else:
                torch.bitwise_xor(parts[0][upper[0]], parts[1][upper[1]], out=index) if d > 1 else \
                    index.copy_(parts[0][upper[0]])
                for i in range(2, d):
                    index.bitwise_xor_(parts[i][upper[i]])
            if entries & (entries - 1) == 0:
                index.bitwise_and_(entries - 1)
            else:
                index.remainder_(entries)
            rows[level, c].copy_(index.add_(start).mul_(features))
        start += entries
    rows = rows.view(len(scales) * corners, n)
    return [rows] + [rows + f for f in range(1, features)], weights.view(len(scales) * corners, n)


class HashLookup(torch.autograd.Function):
    """out[n, l, f] = sum_c w[l, c, n] params[pos_f[l, c, n]]: per feature one contiguous gather of every
    level's corners and one reduction over the corners; in the backward per feature one index_add of the
    weighted output gradient into the parameters (positions and weights need no gradient)."""

    @staticmethod
    def forward(ctx, params: Tensor, weights: Tensor, levels: int, *positions: Tensor) -> Tensor:
        k, n = weights.shape
        ctx.save_for_backward(weights, *positions)
        ctx.levels, ctx.numel = levels, params.numel()
        out = torch.empty(n, levels, len(positions), dtype=params.dtype, device=params.device)
        for f, pos in enumerate(positions):
            gathered = params.index_select(0, pos.view(-1)).view(k, n).mul_(weights)  # (L * C, N)
            out[:, :, f] = gathered.view(levels, k // levels, n).sum(1).t()
        return out.view(n, levels * len(positions))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        weights, *positions = ctx.saved_tensors
        levels, n = ctx.levels, weights.shape[1]
        g = grad.reshape(n, levels, len(positions))
        params_grad = torch.zeros(ctx.numel, dtype=grad.dtype, device=grad.device)
        for f, pos in enumerate(positions):
            per_level = g[:, :, f].t().contiguous()  # (L, N)
            contrib = weights.view(levels, weights.shape[0] // levels, n) * per_level[:, None, :]
            params_grad.index_add_(0, pos.view(-1), contrib.view(-1))
        return (params_grad, None, None, *([None] * len(positions)))


class HashGridEncoding(nn.Module):
    """Multiresolution hash encoding over the box `bounds`: (..., d) -> (..., levels * features)."""

    def __init__(self, in_dim: int, levels: int = 16, features: int = 2, table_size: int = 1 << 19,
                 min_resolution: int = 16, max_resolution: int = 2048, bounds: tuple[float, float] = (0.0, 1.0),
                 backend: str = "auto", generator: torch.Generator | None = None, positions: str = "unit",
                 per_level_scale: float | None = None):
        super().__init__()
        if in_dim > len(PRIMES):
            raise ValueError(f"the hash grid supports up to {len(PRIMES)} coordinate dimensions, not {in_dim}")
        self.in_dim, self.out_dim = in_dim, levels * features
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.positions = positions
        if positions == "benchmark":  # tiny-cuda-nn's own float32 scales from N_min and b
            b = per_level_scale if per_level_scale is not None else \
                math.exp((math.log(max_resolution) - math.log(min_resolution)) / max(1, levels - 1))
            self.scales = tcnn_level_scales(levels, min_resolution, b)
        elif per_level_scale is not None:
            self.scales = [min_resolution * per_level_scale**level - 1.0 for level in range(levels)]
        else:
            self.scales = level_scales(levels, min_resolution, max_resolution)
        self.sizes = level_sizes(in_dim, table_size, self.scales)
        self.table_size, self.min_resolution, self.max_resolution = table_size, min_resolution, max_resolution
        self.backend = backend
        # One flat table in tiny-cuda-nn's layout (level after level, F features per entry), so the fused
        # encoding can train the very same parameter; `tables` are per-level views of it.
        total = sum(entries for _, entries, _ in self.sizes) * features
        self.params = nn.Parameter(torch.rand(total, generator=generator) * 2e-4 - 1e-4)
        self.features = features

    @property
    def tables(self) -> list[Tensor]:
        out, start = [], 0
        for _, entries, _ in self.sizes:
            out.append(self.params[start : start + entries * self.features].view(entries, self.features))
            start += entries * self.features
        return out

    def normalized(self, v: Tensor) -> Tensor:
        """v mapped from the box onto [0, 1]^d (points outside are clamped to its faces); with
        positions=benchmark onto [-1, 1)^d, unclamped, as the Grids benchmark feeds tiny-cuda-nn."""
        lo, hi = self.bounds
        if self.positions == "benchmark":
            return (v - lo) * (2.0 / (hi - lo)) - 1.0
        return ((v - lo) / (hi - lo)).clamp(0.0, 1.0)

    def forward(self, v: Tensor) -> Tensor:  # (..., d) -> (..., L * F)
        u = self.normalized(v.float()).reshape(-1, self.in_dim)
        fused = self.fused(u.device)
        if fused is not None:
            out = fused(u).float()
        elif u.requires_grad or torch._C._are_functorch_transforms_active():  # a gradient in the points too
            if self.positions != "unit":
                from ffrun.util.errors import FfrunError

                raise FfrunError("encoding.positions=benchmark gives no gradient with respect to the points (the "
                                 "benchmark trains the tables only); use encoding.positions=unit")
            out = hash_encode(u, self.tables, self.scales, self.sizes)
        else:
            positions, weights = self.lookup(v, u)
            out = HashLookup.apply(self.params, weights, len(self.scales), *positions)
        return out.reshape(*v.shape[:-1], self.out_dim)

    # The lookup of one training set is kept up to this size (rows and weights: 12 bytes a corner a level with
    # two features); above it, and for evaluations, chunks (views) and inference, it is made at every call.
    LOOKUP_CACHE_BYTES = 1 << 30

    def lookup(self, v: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """`corner_lookup` of the points, kept for the training set of a full-batch task, which trains on the same
        points every step: the rows and weights depend on the points alone (`v` is held, and its version counter
        read, so edits in place are seen)."""
        wrap = self.positions == "benchmark"
        cacheable = (torch.is_grad_enabled() and not torch.is_inference_mode_enabled() and not v.is_inference()
                     and v._base is None and not v.requires_grad)
        cached = self.__dict__.get("_lookup")
        if cacheable:
            key = (v.data_ptr(), tuple(v.shape), v.dtype, v.device, v._version)
            if cached is not None and cached[0] is v and cached[1] == key:
                return cached[2]
        with torch.no_grad():
            value = corner_lookup(u, self.scales, self.sizes, self.features, wrap=wrap)
        size = sum(t.numel() * t.element_size() for t in [*value[0], value[1]])
        if cacheable and size <= self.LOOKUP_CACHE_BYTES:
            self.__dict__["_lookup"] = (v, key, value)  # not state: rebuilt from the points after a load
        return value

    def fused(self, device: torch.device):
        """tiny-cuda-nn's HashGrid training this module's own `params`, or None where it cannot be used
        (backend torch, not CUDA, not importable, or a table size that is not a power of two)."""
        if self.backend == "tcnn" and device.type != "cuda":
            from ffrun.util.errors import FfrunError

            raise FfrunError("encoding.backend=tcnn: tiny-cuda-nn runs on CUDA devices only; use device=cuda, or "
                             "encoding.backend=auto / torch")
        if self.backend == "tcnn" and self.positions == "benchmark":
            from ffrun.util.errors import FfrunError

            raise FfrunError("encoding.backend=tcnn with encoding.positions=benchmark: the benchmark's positions are "
                             "ffrun's PyTorch rendering of tiny-cuda-nn's arithmetic; use encoding.backend=torch")
        if self.backend == "torch" or device.type != "cuda" or self.positions == "benchmark":
            return None
        if self.__dict__.get("_fused") is not None:
            return self.__dict__["_fused"]
        try:
            import tinycudann as tcnn
        except ImportError:
            if self.backend == "tcnn":
                from ffrun.util.errors import FfrunError

                raise FfrunError("encoding.backend=tcnn: tiny-cuda-nn is not importable; install its PyTorch "
                                 "bindings or use encoding.backend=torch") from None
            return None
        if self.table_size & (self.table_size - 1):
            if self.backend == "tcnn":
                from ffrun.util.errors import FfrunError

                raise FfrunError(f"encoding.backend=tcnn: tiny-cuda-nn needs a power-of-two table size, not "
                                 f"{self.table_size}; use encoding.backend=auto or torch")
            log.info("hash grid: table size %d is not a power of two, which tiny-cuda-nn needs; using PyTorch",
                     self.table_size)
            return None
        module = tcnn.Encoding(self.in_dim, tcnn_config(self), dtype=torch.float32).to(device)
        if module.params.numel() != self.params.numel():
            log.info("hash grid: tiny-cuda-nn lays out %d parameters, ffrun %d; using PyTorch",
                     module.params.numel(), self.params.numel())
            return None
        module.params = self.params  # the same Parameter: one set of weights for both paths
        self.__dict__["_fused"] = module  # not a submodule: the weights are saved once, as `params`
        return module


def tcnn_config(enc: HashGridEncoding) -> dict:
    """The same encoding in tiny-cuda-nn's terms (for `tcnn.Encoding(d, config)`)."""
    b = math.exp((math.log(enc.max_resolution) - math.log(enc.min_resolution)) / (len(enc.scales) - 1)) \
        if len(enc.scales) > 1 else 1.0
    return {"otype": "HashGrid", "n_levels": len(enc.scales), "n_features_per_level": enc.features,
            "log2_hashmap_size": int(math.log2(enc.table_size)), "base_resolution": enc.min_resolution,
            "per_level_scale": b}


def _check(cfg) -> Optional[str]:
    if cfg.levels < 1 or cfg.features < 1 or cfg.table_size < 8:
        return "use encoding.levels >= 1, encoding.features >= 1 and encoding.table_size >= 8"
    if not 1 <= cfg.min_resolution <= cfg.max_resolution:
        return "use 1 <= encoding.min_resolution <= encoding.max_resolution"
    if cfg.backend not in ("auto", "torch", "tcnn"):
        return "use encoding.backend=auto, torch or tcnn"
    if cfg.positions not in ("unit", "benchmark"):
        return "use encoding.positions=unit (the box onto [0, 1]) or benchmark (onto [-1, 1), as the Grids benchmark)"
    if cfg.per_level_scale is not None and not cfg.per_level_scale >= 1:
        return "use encoding.per_level_scale >= 1 (or null: from encoding.max_resolution)"
    return None


def _build(cfg, spec: FieldSpec) -> nn.Module:
    return HashGridEncoding(spec.in_dim, cfg.levels, cfg.features, cfg.table_size, cfg.min_resolution,
                            cfg.max_resolution, spec.bounds, cfg.backend, spec.generator(), cfg.positions,
                            cfg.per_level_scale)


register_encoding("hashgrid", HashGridConfig, Budget("encoding.table_size", 8, 1 << 26), _check)(_build)
