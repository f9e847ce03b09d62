"""Kernel regression on a regular lattice, the arithmetic of sigma=auto's proxies (ffrun.sigma.auto).

On a regular lattice a stationary kernel matrix is a convolution, so kernel regression is diagonal in the
Fourier basis. The lattice is mirrored at its edges (a periodic signal without jumps), the kernel's row is
evaluated once per sigma on the lattice offsets, and gradient descent for time t on 0.5 * ||f - y||^2 has
the closed form f_t = (I - exp(-eta t K)) y, one FFT per candidate; the expected mapping kernel
exp(-2 pi^2 sigma^2 |d|^2) keeps the score a smooth function of sigma.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ffrun.models.encodings import FourierEncoding
from ffrun.sigma.kernels import analytic_ntk, relu_ntk
from ffrun.tasks.proxy import PointSamples
from ffrun.util.errors import FfrunError


def lattice_offsets(shape: tuple[int, ...], steps: Tensor, shift: Tensor | None = None) -> Tensor:
    """Displacements (prod(shape), d) of a periodic lattice with `shape` points per axis and step vectors
    `steps` (one row per axis, in coordinate space): index k along an axis stands for its nearest periodic
    image (k or k - n), plus `shift`."""
    idx = []
    for n in shape:
        k = torch.arange(n, dtype=torch.float64, device=steps.device)
        idx.append(torch.where(k > n // 2, k - n, k))
    grids = torch.meshgrid(*idx, indexing="ij")
    k = torch.stack([g.reshape(-1) for g in grids], dim=-1)  # (P, axes)
    out = k @ steps.double()
    return out if shift is None else out + shift.double()


def kernel_on_offsets(unit_b: Tensor | None, sigma: float, offsets: Tensor, model_cfg, two_pi: bool = True) -> Tensor:
    """Theta(0, d) of the composed NTK at each displacement d: by stationarity, every entry of the kernel
    matrix between lattice points. `unit_b` None: the expected mapping kernel over B ~ N(0, sigma^2),
    exp(-2 pi^2 sigma^2 |d|^2) (m -> infinity). Float64, (len(offsets),)."""
    if unit_b is None:
        scale = 2 * math.pi * sigma if two_pi else sigma
        k_in = 0.5 * torch.exp(-0.5 * scale**2 * (offsets.double() ** 2).sum(-1))  # <gamma, gamma'> / 2m
        half = torch.full((1,), 0.5, dtype=torch.float64, device=offsets.device)
        return relu_ntk((k_in[None], half, torch.full_like(k_in, 0.5)), model_cfg.depth, model_cfg.w_std,
                        model_cfg.b_std)[0]
    enc = FourierEncoding(sigma * unit_b, two_pi=two_pi).double().to(offsets.device)
    enc.B = enc.B.double()
    origin = torch.zeros(1, offsets.shape[1], dtype=torch.float64, device=offsets.device)
    return analytic_ntk(enc, origin, offsets, model_cfg.depth, model_cfg.w_std, model_cfg.b_std)[0]


def mirror(values: Tensor, dims: int) -> Tensor:
    """Whole-sample symmetric extension of the first `dims` axes (period 2n - 2): a periodic signal with
    no jump at the edges, on the same lattice spacing."""
    for axis in range(dims):
        n = values.shape[axis]
        if n > 2:
            inner = values.narrow(axis, 1, n - 2).flip(axis)
            values = torch.cat([values, inner], dim=axis)
    return values


def gd_filter(lam: Tensor, tau: float) -> Tensor:
    """(1 - exp(-tau lam / lam_max)) / lam: gradient descent for time tau / lam_max from f = 0, per mode
    (its limit tau / lam_max where lam -> 0); tau = inf is the interpolating kernel regression."""
    lam = lam.clamp_min(0.0)
    top = lam.max()
    if math.isinf(tau):
        return torch.where(lam > top * 1e-12, 1.0 / lam.clamp_min(1e-300), torch.zeros_like(lam))
    a = tau * lam / top
    return torch.where(a > 1e-12, -torch.expm1(-a) / lam.clamp_min(1e-300), tau / top * torch.ones_like(lam))


def lattice_holdout(train: Tensor, val: Tensor, steps: Tensor, shift: Tensor, unit_b: Tensor | None,
                    sigmas: list[float], model_cfg, tau: float, clip: tuple[float, float] | None,
                    two_pi: bool = True, init=None) -> list[float]:
    """PSNR on `val` of the kernel fit to `train`, for each sigma.

    `train`: values (n_1, ..., n_a, C) on a regular lattice with step vectors `steps` (a, d); `val`: values
    (m_1, ..., m_a, C), m_i <= n_i, where val[i] sits at the position of train[i] plus `shift` (d,).
    `init(sigma)`: None, or the untrained network's output (f0 at the train points, f0 at the val points):
    then the fit is the linearised network's, f0 + K-regression of (y - f0), so the part of the random
    initial function the kernel cannot remove from between the training points counts as error."""
    axes = train.dim() - 1
    shape = tuple(n if n <= 2 else 2 * n - 2 for n in train.shape[:axes])
    dims = tuple(range(axes))
    base = lattice_offsets(shape, steps)
    shifted = lattice_offsets(shape, steps, shift)
    crop = tuple(slice(0, n) for n in val.shape[:axes])
    target = val.double()
    out = []
    for s in sigmas:
        f0_train, f0_val = (0.0, 0.0) if init is None else (t.double() for t in init(s))
        resid = train.double() - f0_train
        mean = resid.reshape(-1, resid.shape[-1]).mean(0)
        y_hat = torch.fft.fftn(mirror(resid - mean, axes), dim=dims)
        k0 = kernel_on_offsets(unit_b, s, base, model_cfg, two_pi).reshape(shape)
        ks = kernel_on_offsets(unit_b, s, shifted, model_cfg, two_pi).reshape(shape)
        lam = torch.fft.fftn(k0).real
        coef = y_hat * gd_filter(lam, tau)[..., None]
        pred = torch.fft.ifftn(coef * torch.fft.fftn(ks)[..., None], dim=dims).real[crop] + mean + f0_val
        if clip is not None:
            pred = pred.clamp(*clip)
        mse = torch.mean((pred - target) ** 2).item()
        out.append(-10.0 * math.log10(max(mse, 1e-30)))
    return out


def training_grid(samples: PointSamples, label: str) -> tuple[Tensor, Tensor, Tensor]:
    """The training set of a point-regression task (`label`, for messages) laid out as its regular lattice:
    values (n_1, ..., n_a, C), the step vectors (a, d) and the first point (d,). The image and 1D tasks
    store their training points in row-major grid order (ffrun.tasks.image / toy1d); anything else is
    refused."""
    coords, values = (t.detach().double() for t in (samples.coords, samples.values))
    d = coords.shape[1]
    side = round(coords.shape[0] ** (1.0 / d))
    shape = (side,) * d
    if side ** d != coords.shape[0]:
        raise FfrunError(f"sigma=auto: the {coords.shape[0]} training points of task={label} do not "
                         "form a square grid; give sigma as a number")
    if side < 4:
        raise FfrunError(f"sigma=auto: the training grid is {side} points per axis and the held-out fit needs at "
                         f"least 4 (task.resolution >= 8, or task.n_points >= 8); use a larger task or give sigma "
                         "as a number")
    grid = coords.reshape(*shape, d)
    steps = torch.stack([grid[tuple(1 if a == b else 0 for b in range(d))] - grid[(0,) * d] for a in range(d)])
    idx = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64, device=coords.device) for n in shape],
                                     indexing="ij"), -1)
    expected = grid[(0,) * d] + idx.reshape(-1, d) @ steps
    if not torch.allclose(expected.reshape(*shape, d), grid, atol=1e-6):
        raise FfrunError("sigma=auto: the training points are not a regular grid; give sigma as a number")
    return values.reshape(*shape, values.shape[-1]), steps, grid[(0,) * d]
