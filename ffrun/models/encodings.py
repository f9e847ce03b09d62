"""Fourier-feature mappings.

Every mapping of the paper is one formula,

    gamma(v) = [sin(2 pi v B^T), cos(2 pi v B^T)]        (v: (..., d), B: (m, d), gamma: (..., 2m))

and the encodings differ only in the matrix B:

- basic:  B = I_d
- posenc: B is block-diagonal; axis k gets the frequencies 2**linspace(0, scale, m // d) - 1
          (the notebooks' "posenc_new", which includes frequency 0; `levels` and `offset` give NeRF's
          octaves 2^0..2^scale instead)
- gauss:  B ~ N(0, sigma^2), shape (m, d)
- learned: gauss's B as a trainable parameter (initialised as gauss)
- multiscale: Gaussian blocks at several sigmas stacked into one B (Wang, Wang and Perdikaris 2021):
          B = [B_1; ...; B_k], B_j ~ N(0, sigma_j^2), m // k rows each

`none` is the identity (raw coordinates). Two switches cover the paper's task-specific variants:
`two_pi=False` drops the 2 pi factor (the NeRF mapping) and `normalize=True` divides the features by
sqrt(m) (the shape task).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ffrun.models.registry import FieldSpec, register_encoding


def fourier_features(v: Tensor, B: Tensor, two_pi: bool = True, normalize: bool = False) -> Tensor:
    """gamma(v) = [sin(2 pi v B^T), cos(2 pi v B^T)] for v of shape (..., d) and B of shape (m, d).

    Returns shape (..., 2m) in float32 (float64 for float64 inputs); divided by sqrt(m) when `normalize`.

    Always float32, whatever the training precision: with sigma 10 the phases reach hundreds of radians,
    where a bfloat16 or TensorFloat-32 product (8 or 10 bits of mantissa) moves the features, which lie in
    [-1, 1], by up to 1.8 or 0.2 (measured on the image protocol; float32: 4e-5). So autocast is off here,
    and for the coordinates of every task (d <= 3) the projection is an elementwise sum over d, which no
    matmul backend can lower; a wider d takes a float64 product, which has no reduced-precision mode.
    """
    dtype = torch.promote_types(torch.promote_types(v.dtype, B.dtype), torch.float32)  # float64 stays
    with torch.autocast(v.device.type, enabled=False):
        v, B = v.to(dtype), B.to(dtype)
        d = B.shape[1]
        if d <= 3:
            proj = v[..., :1] * B[:, 0]
            for j in range(1, d):
                proj = proj.addcmul_(v[..., j : j + 1], B[:, j])
        else:
            proj = (v.double() @ B.double().T).to(dtype)
        if two_pi:
            proj = proj.mul_(2.0 * math.pi)
        out = torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)
        if normalize:
            out = out / math.sqrt(B.shape[0])
    return out


def basic_matrix(d: int) -> Tensor:
    """B = I_d: gamma(v) = [sin(2 pi v), cos(2 pi v)]."""
    return torch.eye(d)


def posenc_matrix(d: int, m: int, scale: float, levels: int | None = None, offset: float = 1.0) -> Tensor:
    """Axis-aligned log-linear frequencies, per axis 2**linspace(0, scale, levels) - offset.

    levels defaults to m // d. offset 1 gives the notebooks' "posenc_new" (frequency 0 included); offset 0
    with levels = scale + 1 gives NeRF's octaves 2^0, 2^1, ..., 2^scale.
    Rows are grouped by axis (all of axis 0 first), as in the notebooks; shape (d * levels, d).
    """
    per_axis = m // d if levels is None else levels
    if per_axis < 1:
        raise ValueError(f"posenc needs m >= d (got m={m}, d={d})")
    freqs = 2.0 ** torch.linspace(0.0, float(scale), per_axis, dtype=torch.float64) - offset
    B = torch.zeros(d * per_axis, d, dtype=torch.float64)
    for axis in range(d):
        B[axis * per_axis : (axis + 1) * per_axis, axis] = freqs
    return B.float()


def gaussian_matrix(d: int, m: int, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """B ~ N(0, sigma^2), shape (m, d), drawn on the CPU from `generator` so a seed fixes it anywhere."""
    return sigma * torch.randn(m, d, generator=generator)


def numpy_gaussian_matrix(d: int, m: int, sigma: float, seed: int) -> Tensor:
    """B ~ N(0, sigma^2), shape (m, d), as numpy's legacy global generator draws it after np.random.seed(seed)
    (a RandomState of its own here, the same stream): the Grids benchmark's FourFeat B, row for row."""
    import numpy as np

    return torch.tensor(np.random.RandomState(seed).normal(size=(m, d)), dtype=torch.float32) * sigma


class IdentityEncoding(nn.Module):
    """`none`: the raw coordinates, gamma(v) = v, or, when `center`, the box (lo, hi) mapped onto [-1, 1]:
    2 (v - lo) / (hi - lo) - 1 (2v - 1 on [0, 1]: the paper's shape task; SIREN's input range)."""

    def __init__(self, in_dim: int, center: bool = False, bounds: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = in_dim
        self.center = center
        self.bounds = (float(bounds[0]), float(bounds[1]))

    def forward(self, v: Tensor) -> Tensor:  # (..., d) -> (..., d)
        if not self.center:
            return v
        lo, hi = self.bounds
        return v * (2.0 / (hi - lo)) - (2.0 * lo / (hi - lo) + 1.0)


class FourierEncoding(nn.Module):
    """gamma(v) = [sin(2 pi v B^T), cos(2 pi v B^T)]. B is saved with the weights: a fixed buffer, or a
    trainable parameter when `trainable` (learned Fourier features)."""

    def __init__(self, B: Tensor, two_pi: bool = True, normalize: bool = False, trainable: bool = False):
        super().__init__()
        B = B.detach().clone().float()
        if trainable:
            self.B = nn.Parameter(B)
        else:
            self.register_buffer("B", B)
        self.two_pi = two_pi
        self.normalize = normalize
        self.in_dim = B.shape[1]
        self.out_dim = 2 * B.shape[0]

    def forward(self, v: Tensor) -> Tensor:  # (..., d) -> (..., 2m)
        return fourier_features(v, self.B, self.two_pi, self.normalize)


def multiscale_matrix(d: int, m: int, sigmas, generator: torch.Generator | None = None) -> Tensor:
    """B = [B_1; ...; B_k] with B_j ~ N(0, sigma_j^2) of m // k rows (the first m % k blocks get one more),
    so the k scales share the m frequencies."""
    sigmas = [float(s) for s in sigmas]
    if not sigmas:
        raise ValueError("multiscale needs at least one sigma")
    k = len(sigmas)
    rows = [m // k + (1 if j < m % k else 0) for j in range(k)]
    return torch.cat([gaussian_matrix(d, r, s, generator) for r, s in zip(rows, sigmas) if r > 0])


FOURIER_NAMES = ("none", "basic", "posenc", "gauss", "learned", "multiscale")


def build_encoding(
    name: str,
    in_dim: int,
    m: int = 256,
    sigma: float = 10.0,
    scale: float = 6.0,
    two_pi: bool = True,
    normalize: bool = False,
    generator: torch.Generator | None = None,
    center: bool = False,
    levels: int | None = None,
    offset: float = 1.0,
    sigmas=(),
    bounds: tuple[float, float] = (0.0, 1.0),
    numpy_seed: int | None = None,
) -> nn.Module:
    """The Fourier-family encoding called `name` (FOURIER_NAMES) for `in_dim`-dimensional coordinates:
    they differ only in B (and `none`, which has no B). gauss and learned draw B from `generator`, or from
    numpy's legacy stream seeded by `numpy_seed` when it is given."""
    if name == "none":
        return IdentityEncoding(in_dim, center, bounds)
    if name == "basic":
        B = basic_matrix(in_dim)
    elif name == "posenc":
        B = posenc_matrix(in_dim, m, scale, levels, offset)
    elif name in ("gauss", "learned"):
        B = numpy_gaussian_matrix(in_dim, m, sigma, numpy_seed) if numpy_seed is not None else \
            gaussian_matrix(in_dim, m, sigma, generator)
    elif name == "multiscale":
        B = multiscale_matrix(in_dim, m, sigmas, generator)
    else:
        raise ValueError(f"unknown encoding {name!r}; choose one of {', '.join(FOURIER_NAMES)}")
    return FourierEncoding(B, two_pi=two_pi, normalize=normalize, trainable=name == "learned")


def _build_fourier(cfg, spec: FieldSpec) -> nn.Module:
    return build_encoding(cfg.name, spec.in_dim, m=cfg.m, sigma=cfg.sigma, scale=cfg.scale, two_pi=cfg.two_pi,
                          normalize=cfg.normalize, generator=spec.generator(), center=cfg.center,
                          levels=cfg.levels, offset=cfg.offset, sigmas=list(cfg.sigmas or ()),
                          bounds=spec.bounds, numpy_seed=spec.seed if cfg.draw == "numpy" else None)


def _check_posenc(cfg) -> str | None:
    """posenc's frequencies are 2**linspace(0, scale, levels) - offset: a negative scale turns them into
    fractions below 1 (or negative), which no setting of the paper means."""
    if not cfg.scale >= 0:
        return f"encoding.scale={cfg.scale!r} is out of range: use scale >= 0 (the top frequency is 2**scale - offset)"
    return None


# Range checks beside the one generic to the family (m, sigma, levels, sigmas: ffrun.config.validate).
def _check_draw(cfg) -> str | None:
    """encoding.draw names who draws B's normals: only gauss and learned draw them."""
    if cfg.draw not in ("torch", "numpy"):
        return f"encoding.draw={cfg.draw!r}: choose torch (ffrun's draw of B) or numpy (the Grids benchmark's)"
    if cfg.draw == "numpy" and cfg.name not in ("gauss", "learned"):
        return f"encoding.draw=numpy applies to encoding=gauss or learned, not {cfg.name}; leave it torch"
    return None


def _check_fourier(cfg) -> str | None:
    return _check_draw(cfg) or (_check_posenc(cfg) if cfg.name == "posenc" else None)


def _register_fourier() -> None:
    from ffrun.models.configs import EncodingConfig

    for name in FOURIER_NAMES:
        register_encoding(name, EncodingConfig, check=_check_fourier, fourier=True,
                          static=name != "learned")(_build_fourier)

    @register_encoding("grid", EncodingConfig)
    def _grid(cfg, spec: FieldSpec) -> nn.Module:  # a whole field of the task's own pixels: see build_field
        raise ValueError("encoding=grid is built by ffrun.models.field.build_field from the task's grid")


_register_fourier()
