"""sigma=auto: choose the Gaussian encoding's sigma from the training data alone, without training.

The method ("held-out NTK"): split the task's TRAINING measurements into a proxy-training part and a
held-out part, fit the proxy part with the network's own closed-form neural tangent kernel (the ReLU
MLP's infinite-width NTK composed with the Fourier features of the run's own B, `ffrun.ntk`) after a
finite gradient-descent time, score the prediction on the held-out part, and take the sigma whose
proxy scores best. Test pixels, views or points are never read.

Why a held-out split of the training data can stand in for the test split: the composed kernel is
stationary, k(x, x') = h(x - x'), and sigma only sets its scale. The image protocol trains on the even
pixels and tests on the odd ones between them; holding out the odd points of the training grid and
fitting its even points is the same problem with every distance doubled. A kernel of bandwidth sigma on
the real problem behaves as one of bandwidth sigma / 2 on the proxy, so the proxy's best sigma, doubled,
is the prediction (`density_factor`). For a signal whose statistics are the same at every scale (a
power-law spectrum, as natural images roughly have) the mapping is exact.

How it is computed: on a regular lattice a stationary kernel matrix is a convolution, so the proxy's
kernel regression is diagonal in the Fourier basis. The lattice is mirrored at its edges (a periodic
signal without jumps), the kernel's row is evaluated once per sigma on the lattice offsets, and
gradient descent for time t on 0.5 * ||f - y||^2 has the closed form f_t = (I - exp(-eta t K)) y, one FFT
per candidate. The whole training set is used at a cost of O(n log n) per sigma.

Tasks: image and toy1d (point regression on a regular grid). CT and MRI see the field only through a
linear forward model (projections, masked k-space); there the proxy holds out part of the measurements
(every other projection angle; a random half of the k-space samples) and runs kernel gradient descent
in function space, f <- f - eta K A^T (A f - y), with K applied as an FFT convolution on the grid.
Shape and NeRF have no such proxy here; `sigma=auto` stops with a message there.

`fresh_scores` implements FreSh (Kania et al., ICLR 2025) as a baseline: the sigma whose untrained
network's output spectrum is closest, in Wasserstein distance, to the training signal's.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ffrun.errors import FfrunError
from ffrun.models.encodings import FourierEncoding
from ffrun.ntk import analytic_ntk, relu_ntk

# Gradient-descent time of the kernel fit, in units of the fastest mode's time constant: modes whose
# eigenvalue is below lambda_max / TAU are not learnt. Calibrated on tuning images (docs/sigma_auto.md).
TAU = 1e4
# The proxy problem is the real one with every distance multiplied by this (module docstring).
DENSITY_FACTOR = 2.0
# Candidate sigmas: a log grid spanning these fractions of the training grid's Nyquist frequency.
NYQUIST_RANGE = (0.01, 1.0)
CANDIDATES = 25
# Candidates within this many dB of the best proxy score count as equally good (plateau_centre).
PLATEAU_DB = 0.1


@dataclass
class SigmaChoice:
    """The chosen sigma and how it was chosen (`record()` is what metrics.json keeps as `sigma_auto`)."""

    sigma: float
    method: str
    candidates: list[float]  # in the task's own sigma (already mapped from the proxy)
    scores: list[float]  # one per candidate, higher is better
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
        k = torch.arange(n, dtype=torch.float64)
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
        half = torch.full((1,), 0.5, dtype=torch.float64)
        return relu_ntk((k_in[None], half, torch.full_like(k_in, 0.5)), model_cfg.depth, model_cfg.w_std,
                        model_cfg.b_std)[0]
    enc = FourierEncoding(sigma * unit_b, two_pi=two_pi).double()
    enc.B = enc.B.double()
    origin = torch.zeros(1, offsets.shape[1], dtype=torch.float64)
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
    coords, values = (t.detach().cpu().double() for t in task.train)
    d = coords.shape[1]
    side = round(coords.shape[0] ** (1.0 / d))
    shape = (side,) * d
    if side ** d != coords.shape[0] or side < 4:
        raise FfrunError(f"sigma=auto: the {coords.shape[0]} training points of task={type(task).__name__} do not "
                         "form a square grid; give sigma as a number")
    grid = coords.reshape(*shape, d)
    steps = torch.stack([grid[tuple(1 if a == b else 0 for b in range(d))] - grid[(0,) * d] for a in range(d)])
    idx = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij"), -1)
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


def initial_outputs(task, cfg, positions: list[Tensor]):
    """f0(sigma): the untrained network of this run (its seed's B and weights, `build_field`) at each set
    of `positions` (..., d), with B scaled to sigma. The MLP's weights do not depend on sigma and B is
    sigma times one fixed draw, so the network is built once."""
    from omegaconf import OmegaConf

    from ffrun.models.field import build_field

    enc = OmegaConf.to_container(cfg.encoding, resolve=False)
    enc["sigma"] = 1.0
    field = build_field(OmegaConf.create(enc), cfg.model, task.in_dim, task.out_dim, task.out_activation, cfg.seed)
    field.eval()
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
    idx = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in train.shape[:axes]],
                                     indexing="ij"), dim=-1)
    proxy_train = idx @ (DENSITY_FACTOR * steps)
    proxy_val = (idx @ (DENSITY_FACTOR * steps) + steps.sum(0))[tuple(slice(0, n) for n in val.shape[:axes])]
    f0 = initial_outputs(task, cfg, [origin + proxy_train / DENSITY_FACTOR, origin + proxy_val / DENSITY_FACTOR])
    clip = (0.0, 1.0) if task.out_activation == "sigmoid" else None
    return lattice_holdout(train, val, DENSITY_FACTOR * steps, steps.sum(0), None,
                           [s / DENSITY_FACTOR for s in candidates], cfg.model, tau, clip,
                           two_pi=cfg.encoding.two_pi, init=lambda sp: f0(sp * DENSITY_FACTOR))


def nyquist(task) -> float:
    """The training grid's Nyquist frequency (cycles per unit) along its first axis."""
    _, steps, _ = training_grid(task)
    return 1.0 / (2.0 * steps[0].norm().item())


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


def predict_sigma(task, cfg, tau: float = TAU, count: int = CANDIDATES) -> SigmaChoice:
    """sigma for `task` from its training data alone (see the module's docstring)."""
    with one_thread():
        return _predict_sigma(task, cfg, tau, count)


def _predict_sigma(task, cfg, tau: float, count: int) -> SigmaChoice:
    if cfg.encoding.name != "gauss":
        raise FfrunError(f"sigma=auto: encoding={cfg.encoding.name} has no sigma; use encoding=gauss")
    start = time.perf_counter()
    if getattr(task, "train", None) is not None:
        top = nyquist(task)
        candidates = log_candidates(NYQUIST_RANGE[0] * top, NYQUIST_RANGE[1] * top, count)
        scores = _grid_scores(task, cfg, candidates, tau)
        sigma = plateau_centre(candidates, scores, PLATEAU_DB)
        details = {"proxy": "fit the even points of the training grid, score its odd points",
                   "density_factor": DENSITY_FACTOR, "tau": tau, "plateau_db": PLATEAU_DB,
                   "nyquist": top, "points": int(task.train[0].shape[0])}
        method = "held-out NTK (lattice)"
    else:
        raise FfrunError(f"sigma=auto: task={type(task).__name__} has no training-data proxy in ffrun.sigma_auto "
                         "(image and toy1d have); give sigma as a number")
    return SigmaChoice(sigma, method, candidates, scores, "held-out PSNR (dB) of the kernel proxy",
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


def radial_spectrum(values: Tensor, axes: int, bins: int) -> Tensor:
    """FreSh's spectrum of a signal on a grid: |DFT| summed over channels, gathered by the L1 index
    |k_1| + ... + |k_a| of the (signed) integer frequency, without the DC term, first `bins` bins."""
    mag = torch.fft.fftn(values.double(), dim=tuple(range(axes))).abs().sum(-1)
    index = None
    for a, n in enumerate(mag.shape):
        k = torch.fft.fftfreq(n, d=1.0 / n).abs().long()
        shape = [1] * axes
        shape[a] = n
        index = k.reshape(shape) if index is None else index + k.reshape(shape)
    index = index.expand(mag.shape).reshape(-1)
    spectrum = torch.zeros(int(index.max()) + 1, dtype=torch.float64).index_add_(0, index, mag.reshape(-1))
    return spectrum[1 : bins + 1]


def wasserstein_1d(u: Tensor, v: Tensor) -> float:
    """W1 between two histograms on the same equally spaced bins (normalised to unit mass)."""
    cu, cv = torch.cumsum(u / u.sum(), 0), torch.cumsum(v / v.sum(), 0)
    return (cu - cv).abs().sum().item()


def fresh_scores(task, cfg, candidates: list[float], seeds: int = 3) -> list[float]:
    """FreSh (Kania et al., ICLR 2025): for each candidate sigma, the Wasserstein distance between the
    spectrum of the untrained network's output on the training grid and that of the training values,
    averaged over `seeds` initialisations (lower is better). Training data only."""
    from ffrun.models.field import build_field

    values, _, _ = training_grid(task)
    axes = values.dim() - 1
    coords = task.train[0].detach().cpu()
    bins = max(values.shape[0] // 2, 1)
    target = radial_spectrum(values, axes, bins)
    enc_cfg = dict(cfg.encoding)
    out = []
    for s in candidates:
        enc_cfg["sigma"] = float(s)
        dists = []
        for k in range(seeds):
            field = build_field(_Namespace(enc_cfg), cfg.model, task.in_dim, task.out_dim, task.out_activation,
                                cfg.seed + k)
            pred = field.predict(coords).double().reshape(values.shape)
            dists.append(wasserstein_1d(target, radial_spectrum(pred, axes, bins)))
        out.append(sum(dists) / len(dists))
    return out


class _Namespace(dict):
    __getattr__ = dict.get
