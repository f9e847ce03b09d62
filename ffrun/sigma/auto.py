"""sigma=auto: choose the Gaussian encoding's sigma from the training data alone, without training.

The method ("held-out NTK"): split the task's TRAINING measurements into a proxy-training part and a
held-out part, fit the proxy part with the network's linearised training dynamics (the closed-form
infinite-width NTK of `ffrun.sigma.kernels` composed with the Fourier features' kernel, after a finite
gradient-descent time, starting from the run's own untrained network f0), score the prediction on the
held-out part, and take the centre of the sigmas that score best. Test pixels, views or points are
never read (tests/test_sigma_auto.py corrupts them and checks the prediction is unchanged).

Why a held-out split of the training data can stand in for the test split: the composed kernel is
stationary, k(x, x') = h(x - x'), and sigma only sets its scale. The image protocol trains on the even
pixels and tests on the odd ones between them; fitting the even points of the training grid and scoring
its odd points is the same problem with every distance doubled, so a kernel of bandwidth sigma on the
real problem acts as one of sigma / 2 on the proxy (`DENSITY_FACTOR`). The untrained network's output
enters as f0 + K-regression(y - f0): what f0 puts between the training points and the kernel cannot
remove is error, and it grows with sigma (the "noisy interpolation" of a too large sigma).

Trained networks (Adam, width 256) interpolate better than their kernel and peak at a lower sigma; the
kernel's choice is scaled by `NETWORK_FACTOR`, measured on tuning images (docs/sigma_auto.md).

How it is computed: on a regular lattice a stationary kernel matrix is a convolution, so the proxy's
kernel regression is diagonal in the Fourier basis. The lattice is mirrored at its edges (a periodic
signal without jumps), the kernel's row is evaluated once per sigma on the lattice offsets, and
gradient descent for time t on 0.5 * ||f - y||^2 has the closed form f_t = (I - exp(-eta t K)) y, one FFT
per candidate; the expected mapping kernel exp(-2 pi^2 sigma^2 |d|^2) keeps the score a smooth function
of sigma.

Tasks: image and toy1d (point regression on a regular grid). CT (the field seen through projections):
the proxy fits every other projection angle and scores the others, the projector as a sparse matrix and
the kernel as an FFT convolution on the pixel grid, solved in the measurement space. MRI (the field seen
through sampled k-space): no held-out split carries signal there, so the score is the linearised network's
expected volume error up to a constant (`_kspace_scores`). Shape and NeRF have no proxy here; `sigma=auto`
stops there with one line saying so.

`fresh_scores` implements FreSh (Kania et al., ICLR 2025) as a baseline: the sigma whose untrained
network's output spectrum is closest, in Wasserstein distance, to the training signal's.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from ffrun.util.errors import FfrunError
from ffrun.models.encodings import FourierEncoding
from ffrun.sigma.kernels import analytic_ntk, relu_ntk

# Gradient-descent time of the kernel fit, in units of the fastest mode's time constant (modes whose
# eigenvalue is below lambda_max / tau are not learnt): tau = TAU_PER_STEP * trainer.steps * trainer.lr / 1e-3,
# the run's own training length. Chosen on the tuning images (500 steps at lr 1e-3: tau 1000).
TAU_PER_STEP = 2.0
# The proxy problem is the real one with every distance multiplied by this (module docstring).
DENSITY_FACTOR = 2.0
# Trained networks (Adam, finite width) interpolate better than their kernel and peak at a lower sigma:
# on the tuning images the kernel fitted to the real split itself peaks at 2.3-2.8 (chelsea) and 2.8-3.1
# (coins) where the trained networks peak at 0.9-1.8 and 1.8. The kernel's choice is scaled by this.
NETWORK_FACTOR = 0.5
# Candidate sigmas: a log grid spanning these fractions of the training grid's Nyquist frequency.
NYQUIST_RANGE = (0.01, 1.0)
CANDIDATES = 25
# Candidates within this many dB of the best proxy score count as equally good (plateau_centre).
PLATEAU_DB = 0.3


@dataclass
class SigmaChoice:
    """The chosen sigma and how it was chosen (`record()` is what metrics.json keeps as `sigma_auto`)."""

    sigma: float
    method: str
    candidates: list[float]  # in the task's own sigma (mapped from the proxy's and the kernel's)
    scores: list[float]  # one per candidate, higher is better: the proxy's held-out PSNR
    score: str  # what the score is
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def unit_frequencies(in_dim: int, m: int, seed: int) -> Tensor:
    """The run's B divided by sigma: `build_field` draws B = sigma * randn(m, d) from a generator seeded
    with the run's seed, so the kernel here is that of the very network the run will train."""
    return torch.randn(m, in_dim, generator=torch.Generator().manual_seed(seed)).double()


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


def training_grid(task) -> tuple[Tensor, Tensor, Tensor]:
    """The training set of a point-regression task laid out as its regular lattice: values
    (n_1, ..., n_a, C), the step vectors (a, d) and the first point (d,). The image and 1D tasks store
    their training points in row-major grid order (ffrun.tasks.image / toy1d); anything else is refused."""
    coords, values = (t.detach().double() for t in task.train)
    d = coords.shape[1]
    side = round(coords.shape[0] ** (1.0 / d))
    shape = (side,) * d
    if side ** d != coords.shape[0]:
        raise FfrunError(f"sigma=auto: the {coords.shape[0]} training points of task={type(task).__name__} do not "
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


def log_candidates(lo: float, hi: float, count: int) -> list[float]:
    return [lo * (hi / lo) ** (i / (count - 1)) for i in range(count)]


def plateau_centre(candidates: list[float], scores: list[float], tolerance: float) -> float:
    """The geometric centre of the contiguous run of candidates around the best score whose scores are
    within `tolerance` of it. Held-out scores are flat near their optimum, so the best single candidate
    wanders within the plateau from one signal to the next; its centre is the stable choice."""
    best = max(range(len(scores)), key=lambda i: scores[i])
    lo = hi = best
    while lo > 0 and scores[lo - 1] >= scores[best] - tolerance:
        lo -= 1
    while hi < len(scores) - 1 and scores[hi + 1] >= scores[best] - tolerance:
        hi += 1
    return math.sqrt(candidates[lo] * candidates[hi])


def encoding_settings(cfg) -> dict:
    """The run's encoding settings as plain values: its own interpolations (a posenc scale that follows
    task.resolution) resolved against the whole config, and sigma, which may still be "auto", left out for
    the caller to set."""
    from omegaconf import OmegaConf

    keys = [k for k in cfg.encoding if k != "sigma"]
    return {k: OmegaConf.to_object(v) if OmegaConf.is_config(v := OmegaConf.select(cfg, f"encoding.{k}")) else v
            for k in keys}


def initial_outputs(task, cfg, positions: list[Tensor]):
    """f0(sigma): the untrained network of this run (its seed's B and weights, `build_field`) at each set
    of `positions` (..., d), with B scaled to sigma. The MLP's weights do not depend on sigma and B is
    sigma times one fixed draw, so the network is built once."""
    from omegaconf import OmegaConf

    from ffrun.models.field import build_field

    enc = encoding_settings(cfg)
    enc["sigma"] = 1.0
    field = build_field(OmegaConf.create(enc), cfg.model, task.in_dim, task.out_dim, task.out_activation, cfg.seed)
    field.eval().to(positions[0].device)
    unit = field.encoding.B.clone()
    flat = [p.float().reshape(-1, p.shape[-1]) for p in positions]

    def f0(sigma: float) -> list[Tensor]:
        field.encoding.B.copy_(sigma * unit)
        return [field.predict(x).double().reshape(*p.shape[:-1], -1) for x, p in zip(flat, positions)]

    return f0


def _grid_scores(task, cfg, candidates: list[float], tau: float) -> list[float]:
    """Held-out PSNR of the proxy problem (fit the training grid's even points, score its odd points) for
    each candidate sigma of the real problem, which is the proxy's sigma times DENSITY_FACTOR.

    The proxy's untrained network at sigma / DENSITY_FACTOR on the proxy lattice is the real network at
    sigma on the lattice shrunk by DENSITY_FACTOR about the first point (same phases), so f0 comes from
    the run's own network evaluated there."""
    values, steps, origin = training_grid(task)
    axes = values.dim() - 1
    even = tuple(slice(0, None, 2) for _ in range(axes))
    odd = tuple(slice(1, None, 2) for _ in range(axes))
    train, val = values[even], values[odd]
    idx = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64, device=train.device)
                                       for n in train.shape[:axes]], indexing="ij"), dim=-1)
    proxy_train = idx @ (DENSITY_FACTOR * steps)
    proxy_val = (idx @ (DENSITY_FACTOR * steps) + steps.sum(0))[tuple(slice(0, n) for n in val.shape[:axes])]
    f0 = initial_outputs(task, cfg, [origin + proxy_train / DENSITY_FACTOR, origin + proxy_val / DENSITY_FACTOR])
    clip = (0.0, 1.0) if task.out_activation == "sigmoid" else None
    return lattice_holdout(train, val, DENSITY_FACTOR * steps, steps.sum(0), None,
                           [s / DENSITY_FACTOR for s in candidates], cfg.model, tau, clip,
                           two_pi=cfg.encoding.two_pi, init=lambda sp: f0(sp * DENSITY_FACTOR))


def projection_matrix(projector, n: int) -> Tensor:
    """The CT projector (rotate, then average along rows) as a sparse (angles * n, n * n) matrix, built
    from its sampling grid: grid_sample's nearest rule (round half to even, align_corners=False, zero
    outside), each measurement the mean of n samples; bilinear sampling spreads each sample over its four
    neighbours with their weights."""
    grid = projector.grid.detach()  # (A, n, n, 2): (x, y) in [-1, 1] per output pixel
    a = grid.shape[0]
    # grid_sample's own unnormalisation, in the grid's dtype: at 45 degrees samples fall on half pixels,
    # where a float64 copy would round some of them the other way
    ix = (((grid[..., 0] + 1) * n - 1) / 2).double()
    iy = (((grid[..., 1] + 1) * n - 1) / 2).double()
    ar = torch.arange(max(a, n), device=grid.device)
    row = (ar[:a, None, None] * n + ar[None, None, :n]).expand(a, n, n)  # measurement index (angle, column)
    if projector.mode == "nearest":
        corners = [(torch.round(ix), torch.round(iy), torch.ones_like(ix))]
    else:
        x0, y0 = torch.floor(ix), torch.floor(iy)
        wx, wy = ix - x0, iy - y0
        corners = [(x0, y0, (1 - wx) * (1 - wy)), (x0 + 1, y0, wx * (1 - wy)), (x0, y0 + 1, (1 - wx) * wy),
                   (x0 + 1, y0 + 1, wx * wy)]
    rows, cols, vals = [], [], []
    for cx, cy, w in corners:
        inside = (cx >= 0) & (cx < n) & (cy >= 0) & (cy < n) & (w != 0)
        rows.append(row[inside])
        cols.append((cy[inside] * n + cx[inside]).long())
        vals.append(w[inside] / n)
    idx = torch.stack([torch.cat(rows), torch.cat(cols)])
    return torch.sparse_coo_tensor(idx, torch.cat(vals), (a * n, n * n), check_invariants=False,
                                   device=grid.device).coalesce()


# With fewer angles the held-out projections (one or two) score every sigma alike: no signal.
MIN_CT_ANGLES = 4
# Held-out projections from a handful of angles do not rank sigmas: at 128^2 with 5 angles (3 fitted, 2 held
# out) the proxy's picks trained to 0.60 and 3.03 dB below an 8-sigma grid's best on two phantoms, where the
# task's default was 0.32 and 0.33 dB below (scripts/bench_sigma.py --tasks ct). Below this many angles
# sigma=auto takes task.default_sigma (the paper's, scaled to the resolution) and records why.
MIN_CT_PROXY_ANGLES = 8
# The CT proxy keeps the FFT of every fitted measurement's back-projection (complex, zero-padded grid):
# refuse above this many values.
CT_MAX_ENTRIES = 60_000_000


def _ct_scores(task, cfg, candidates: list[float], tau: float) -> tuple[list[float], dict]:
    """CT: fit the projections of every other angle (the sinogram is the training data), score the
    projections of the angles between. The proxy has half the angles, so its sigma is scaled by the
    ratio of angle counts. Kernel gradient descent in function space: f = f0 + K A^T alpha with the
    linear projector A, solved in the measurement space (A K A^T, dense), K an FFT convolution on the
    pixel grid."""
    from ffrun.tasks.ct import ParallelProjector

    angles = task.project.angles.cpu()  # the geometry; the matrices are built on the task's device
    if len(angles) < MIN_CT_ANGLES:
        raise FfrunError(f"sigma=auto: task.num_angles={len(angles)} is too few to hold some projections out (at least "
                         f"{MIN_CT_ANGLES}); give sigma as a number (task.default_sigma is the paper's, scaled to the "
                         "resolution)")
    n = task.n
    fit_idx, held_idx = list(range(0, len(angles), 2)), list(range(1, len(angles), 2))
    entries = len(fit_idx) * n * (2 * n) ** 2
    if entries > CT_MAX_ENTRIES:
        raise FfrunError(f"sigma=auto: the CT proxy at {n}x{n} with {len(angles)} angles needs {entries:.2g} values "
                         f"(limit {CT_MAX_ENTRIES:.0e}); choose sigma at a smaller task.resolution (sigma scales with "
                         "it, task.default_sigma) and give it as a number")
    device = task.sinogram.device
    a_fit, a_held = (projection_matrix(ParallelProjector(n, angles[idx], device, task.project.mode), n)
                     for idx in (fit_idx, held_idx))
    sino = task.sinogram.detach().double()
    s_fit, s_held = sino[fit_idx].reshape(-1), sino[held_idx].reshape(-1)
    coords = task.coords.detach().double().reshape(n, n, 2)
    steps = torch.stack([coords[1, 0] - coords[0, 0], coords[0, 1] - coords[0, 0]])
    offsets = lattice_offsets((2 * n, 2 * n), steps)  # zero-padded: a linear convolution on the n x n grid
    factor = len(angles) / len(fit_idx)
    f0 = initial_outputs(task, cfg, [coords])
    back_hat = torch.fft.rfft2(a_fit.to_dense().reshape(-1, n, n), s=(2 * n, 2 * n))  # FFT of each A^T e_m
    scores = []
    for sigma in candidates:
        sp = sigma / factor
        kernel_hat = torch.fft.rfft2(kernel_on_offsets(None, sp, offsets, cfg.model, cfg.encoding.two_pi)
                                     .reshape(2 * n, 2 * n))
        ka = torch.fft.irfft2(back_hat * kernel_hat, s=(2 * n, 2 * n))[:, :n, :n].reshape(back_hat.shape[0], -1)
        gram = (a_fit @ ka.T)
        lam, vec = torch.linalg.eigh(0.5 * (gram + gram.T))
        init = f0(sp)[0].reshape(-1, 1)
        coef = vec @ (gd_filter(lam, tau)[:, None] * (vec.T @ (s_fit[:, None] - a_fit @ init)))
        pred = (a_held @ init + (a_held @ ka.T) @ coef)[:, 0].clamp(0.0, 1.0)
        mse = torch.mean((pred - s_held) ** 2).item()
        scores.append(-10.0 * math.log10(max(mse, 1e-30)))
    return scores, {"proxy": "fit every other projection angle, score the projections of the others",
                    "density_factor": factor, "angles_fit": len(fit_idx), "angles_held": len(held_idx)}


def negated_frequencies(values: Tensor) -> Tensor:
    """values[-k] at index k (modulo each axis) of an array in unshifted FFT layout."""
    dims = tuple(range(values.dim()))
    return values.flip(dims).roll(shifts=(1,) * len(dims), dims=dims)


def kspace_expected_error(lam: Tensor, mask: Tensor, observed: Tensor, f0: Tensor, tau: float) -> float:
    """Mean squared volume error of kernel gradient flow on the sampled k-space loss, after time tau in units
    of the fastest mode, less the truth's energy at the frequencies never sampled (a constant).

    `lam`: the kernel's eigenvalues (the FFT of its row on the periodic grid), `mask`: the sampled
    frequencies, `observed`: mask * FFT(truth), `f0`: the untrained output volume; all (n, n, n), unshifted
    FFT layout. The volume is real, so sampling k also fixes -k: a frequency pair is fitted at the rate
    lambda_k times the share of the pair that was sampled (1/2 or 1) and keeps the residual
    exp(-rate t) (y_k - f0_k); a pair never sampled keeps f0_k."""
    pair = 0.5 * (mask.double() + negated_frequencies(mask).double())
    observed = observed.to(torch.complex128)
    target = torch.where(mask, observed, negated_frequencies(observed).conj())
    init = torch.fft.fftn(f0.double())
    rate = pair * lam.double().clamp_min(0.0)
    seen = pair > 0
    remaining = torch.exp(-tau * rate[seen] / rate.max()) * (target[seen] - init[seen])
    error = (remaining.abs() ** 2).sum() + (init[~seen].abs() ** 2).sum()
    return (error / float(mask.numel()) ** 2).item()  # Parseval (unnormalised FFT), then the mean over voxels


def _kspace_scores(task, cfg, candidates: list[float], tau: float) -> tuple[list[float], dict]:
    """MRI (the field seen through sampled k-space): the expected volume error of the linearised network
    after gradient-descent time tau, up to a constant, from the training data alone.

    On the periodic voxel grid the stationary kernel is diagonal in the Fourier basis, so each sampled
    frequency is fitted on its own and an unsampled one is never corrected (`kspace_expected_error`). The
    volume error is then the slow sampled frequencies' residuals plus the untrained network's energy where
    k-space was not sampled, plus the truth's energy there, which does not depend on sigma and is left out.
    A held-out split of the samples would carry no signal here: in the diagonal picture a held-out
    frequency is predicted by f0 whatever sigma is. Small sigmas leave the sampled high frequencies
    unfitted; large ones leave the untrained network's noise in the unsampled ones."""
    n = task.n
    mask = task.mask.to(task.observed.device)
    offsets = lattice_offsets((n, n, n), torch.eye(3, dtype=torch.float64, device=mask.device) / n)
    f0 = initial_outputs(task, cfg, [task.coords.detach().double().reshape(n, n, n, 3)])
    scores = []
    for sigma in candidates:
        lam = torch.fft.fftn(kernel_on_offsets(None, sigma, offsets, cfg.model, cfg.encoding.two_pi)
                             .reshape(n, n, n)).real
        mse = kspace_expected_error(lam, mask, task.observed, f0(sigma)[0][..., 0], tau)
        scores.append(-10.0 * math.log10(max(mse, 1e-30)))
    return scores, {"proxy": "expected volume error of the linearised network: the sampled frequencies' "
                             "residuals after time tau plus the untrained network's energy at the unsampled ones "
                             "(the truth's energy there is a constant and left out)",
                    "kspace_fraction": float(mask.float().mean())}


def nyquist(task) -> float:
    """The training grid's Nyquist frequency (cycles per unit) along its first axis."""
    _, steps, _ = training_grid(task)
    return 1.0 / (2.0 * steps[0].norm().item())


def grid_nyquist(task) -> float:
    """The Nyquist frequency (cycles per unit) of the grid the task's field is learnt on: the training
    lattice of a point-regression task, else the n-point pixel or voxel grid on [0, 1) (CT, MRI). The
    candidate sigmas of the proxies and of FreSh span fractions of it."""
    if getattr(task, "train", None) is not None:
        return nyquist(task)
    return task.n / 2.0


def candidate_sigmas(task, count: int = CANDIDATES) -> tuple[float, list[float]]:
    """(the grid's Nyquist frequency, `count` sigmas log-spaced over NYQUIST_RANGE of it), in kernel units."""
    top = grid_nyquist(task)
    return top, log_candidates(NYQUIST_RANGE[0] * top, NYQUIST_RANGE[1] * top, count)


@contextmanager
def one_thread():
    """The proxy's tensors are small (one kernel row, one FFT per candidate): on a busy CPU, extra
    intra-op threads cost more in synchronisation than they gain (7 s against 0.07 s, measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def task_device(task) -> torch.device:
    """The device the task keeps its data on (the proxy computes there)."""
    for value in vars(task).values():
        for t in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(t, Tensor):
                return t.device
    return torch.device("cpu")


def training_time(cfg) -> float:
    """The proxy's gradient-descent time for this run's training length (TAU_PER_STEP)."""
    return TAU_PER_STEP * cfg.trainer.steps * float(cfg.trainer.lr) / 1e-3


def predict_sigma(task, cfg, tau: float | None = None, count: int = CANDIDATES) -> SigmaChoice:
    """sigma for `task` from its training data alone (see the module's docstring); `tau` overrides the
    gradient-descent time derived from the run's steps and learning rate."""
    tau = training_time(cfg) if tau is None else tau
    device = task_device(task)
    # build_field seeds the global generator: keep the caller's random state as it was
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        with one_thread() if device.type == "cpu" else nullcontext():
            return _predict_sigma(task, cfg, tau, count)


def _predict_sigma(task, cfg, tau: float, count: int) -> SigmaChoice:
    if cfg.encoding.name != "gauss":
        raise FfrunError(f"sigma=auto: encoding={cfg.encoding.name} has no sigma; use encoding=gauss")
    start = time.perf_counter()
    if getattr(task, "train", None) is not None:
        top, candidates = candidate_sigmas(task, count)
        scores = _grid_scores(task, cfg, candidates, tau)
        details = {"proxy": "fit the even points of the training grid, score its odd points",
                   "density_factor": DENSITY_FACTOR, "points": int(task.train[0].shape[0])}
        method = "held-out NTK (lattice)"
    elif getattr(task, "sinogram", None) is not None:
        angles = len(task.project.angles)
        if angles < MIN_CT_PROXY_ANGLES and cfg.task.get("default_sigma") is not None:
            default = float(cfg.task.default_sigma)
            return SigmaChoice(default, f"task default: {angles} projection angles are too few for the held-out "
                               f"proxy (it needs {MIN_CT_PROXY_ANGLES})", [default], [float("nan")],
                               "none (no proxy ran)", time.perf_counter() - start,
                               {"angles": angles, "min_proxy_angles": MIN_CT_PROXY_ANGLES})
        top, candidates = candidate_sigmas(task, count)
        scores, details = _ct_scores(task, cfg, candidates, tau)
        method = "held-out NTK (projections)"
    elif getattr(task, "observed", None) is not None and getattr(task, "mask", None) is not None:
        top, candidates = candidate_sigmas(task, count)
        scores, details = _kspace_scores(task, cfg, candidates, tau)
        method = "expected-error NTK (k-space)"
    else:
        default = cfg.task.get("default_sigma")
        hint = f" (task.default_sigma={float(default):.4g} is this task's default)" if default else ""
        raise FfrunError(f"sigma=auto: task={type(task).__name__} has no training-data proxy in ffrun.sigma.auto "
                         f"(image, toy1d, ct and mri have); give sigma as a number{hint}")
    # Scores are those of the kernel at each candidate; the network's sigma is NETWORK_FACTOR times it.
    candidates = [NETWORK_FACTOR * c for c in candidates]
    sigma = float(f"{plateau_centre(candidates, scores, PLATEAU_DB):.4g}")  # 4 digits: the same value everywhere
    details.update({"tau": tau, "plateau_db": PLATEAU_DB, "nyquist": top, "network_factor": NETWORK_FACTOR})
    score = ("PSNR (dB) of the linearised network's expected error, up to a constant" if method.startswith("expected")
             else "held-out PSNR (dB) of the kernel proxy")
    return SigmaChoice(sigma, method, candidates, scores, score,
                       time.perf_counter() - start, details)


def is_auto(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == "auto"


def resolve_auto_sigma(cfg, task) -> tuple[float | None, dict | None]:
    """For a config with `sigma=auto`: predict sigma from the task's training data, write it into the
    config (`sigma`, and so `encoding.sigma`, which interpolates it) and return (sigma, the record for
    metrics.json's `sigma_auto`). A config with a numeric sigma is returned unchanged as (None, None).

    Call it after the task is built and before the field is built and the resolved config is taken:
    until then `encoding.sigma` cannot be resolved."""
    from omegaconf import OmegaConf

    if not is_auto(cfg.sigma):
        return None, None
    if cfg.encoding.name != "gauss":
        OmegaConf.update(cfg, "sigma", float(cfg.task.get("default_sigma", 10.0)))
        return None, None
    choice = predict_sigma(task, cfg)
    OmegaConf.update(cfg, "sigma", float(choice.sigma))
    return choice.sigma, choice.record()


# ------------------------------------------------------------------------------------------ FreSh


def spectrum_bins(mag: Tensor, axes: int, bins: int) -> Tensor:
    """FreSh's spectrum: DFT magnitudes `mag` (first `axes` dims in FFT layout, any further dims summed),
    gathered by the L1 index |k_1| + ... + |k_a| of the (signed) integer frequency, without the DC term,
    first `bins` bins."""
    mag = mag.double().reshape(*mag.shape[:axes], -1).sum(-1)
    index = None
    for a, n in enumerate(mag.shape):
        k = torch.fft.fftfreq(n, d=1.0 / n, device=mag.device).abs().long()
        shape = [1] * axes
        shape[a] = n
        index = k.reshape(shape) if index is None else index + k.reshape(shape)
    index = index.expand(mag.shape).reshape(-1)
    spectrum = torch.zeros(int(index.max()) + 1, dtype=torch.float64, device=mag.device).index_add_(
        0, index, mag.reshape(-1))
    return spectrum[1 : bins + 1]


def radial_spectrum(values: Tensor, axes: int, bins: int) -> Tensor:
    """FreSh's spectrum of a signal on a grid: |DFT| summed over channels, in L1-index bins (spectrum_bins)."""
    return spectrum_bins(torch.fft.fftn(values.double(), dim=tuple(range(axes))).abs(), axes, bins)


def wasserstein_1d(u: Tensor, v: Tensor) -> float:
    """W1 between two histograms on the same equally spaced bins (normalised to unit mass)."""
    cu, cv = torch.cumsum(u / u.sum(), 0), torch.cumsum(v / v.sum(), 0)
    return (cu - cv).abs().sum().item()


def fresh_signal(task):
    """FreSh's two spectra for `task`, from its training data only: (the training signal's spectrum, a
    function giving an untrained network's spectrum). Point regression compares the values on the training
    grid; the tasks that see their field through a forward model compare in the measurement space, as the
    network's output would be measured: MRI the sampled k-space, CT each projection's 1D spectrum."""
    if getattr(task, "train", None) is not None:
        values, _, _ = training_grid(task)
        axes, coords = values.dim() - 1, task.train[0].detach()
        bins = max(values.shape[0] // 2, 1)
        return (radial_spectrum(values, axes, bins),
                lambda net: radial_spectrum(net.predict(coords).double().reshape(values.shape), axes, bins))
    n = task.n
    if getattr(task, "observed", None) is not None and getattr(task, "mask", None) is not None:
        mask = task.mask.to(task.observed.device)
        return (spectrum_bins(task.observed.abs(), 3, n // 2),
                lambda net: spectrum_bins((torch.fft.fftn(net.predict(task.coords).double().reshape(n, n, n))
                                           * mask).abs(), 3, n // 2))
    if getattr(task, "sinogram", None) is not None:
        def sino_spectrum(sino: Tensor) -> Tensor:  # (angles, n): 1D spectra along the detector, summed
            return spectrum_bins(torch.fft.fft(sino.double(), dim=1).abs().T, 1, n // 2)

        return (sino_spectrum(task.sinogram),
                lambda net: sino_spectrum(task.project(net.predict(task.coords).float().reshape(n, n))))
    raise FfrunError(f"FreSh: task={type(task).__name__} has no training signal on a grid")


def fresh_scores(task, cfg, candidates: list[float], seeds: int = 3) -> list[float]:
    """FreSh (Kania et al., ICLR 2025): for each candidate sigma, the Wasserstein distance between the
    spectrum of the untrained network's output and that of the training signal (`fresh_signal`), averaged
    over `seeds` initialisations (lower is better). Training data only."""
    from omegaconf import OmegaConf

    from ffrun.models.field import build_field

    target, network_spectrum = fresh_signal(task)
    enc = encoding_settings(cfg)
    device = task_device(task)
    out = []
    for s in candidates:
        enc["sigma"] = float(s)
        dists = []
        for k in range(seeds):
            net = build_field(OmegaConf.create(enc), cfg.model, task.in_dim, task.out_dim, task.out_activation,
                              cfg.seed + k).to(device)
            with torch.no_grad():
                dists.append(wasserstein_1d(target, network_spectrum(net)))
        out.append(sum(dists) / len(dists))
    return out
