"""sigma=auto's proxies, one per way a task observes its field (`Task.sigma_proxy`, ffrun.tasks.proxy):
each scores candidate sigmas of the Gaussian encoding from the training data alone, higher is better,
and says how (`details`). The rule that picks sigma from the scores is in ffrun.sigma.auto.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ffrun.sigma.lattice import gd_filter, kernel_on_offsets, lattice_holdout, lattice_offsets, training_grid
from ffrun.tasks.proxy import KSpaceSamples, PointSamples, Projections
from ffrun.util.errors import FfrunError

# The proxy problem is the real one with every distance multiplied by this (ffrun.sigma.auto's docstring).
DENSITY_FACTOR = 2.0


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


def grid_scores(samples: PointSamples, task, cfg, candidates: list[float], tau: float) -> tuple[list[float], dict]:
    """Point regression: held-out PSNR of the proxy problem (fit the training grid's even points, score its
    odd points) for each candidate sigma of the real problem, which is the proxy's sigma times DENSITY_FACTOR.

    The proxy's untrained network at sigma / DENSITY_FACTOR on the proxy lattice is the real network at
    sigma on the lattice shrunk by DENSITY_FACTOR about the first point (same phases), so f0 comes from
    the run's own network evaluated there."""
    values, steps, origin = training_grid(samples, type(task).__name__)
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
    scores = lattice_holdout(train, val, DENSITY_FACTOR * steps, steps.sum(0), None,
                             [s / DENSITY_FACTOR for s in candidates], cfg.model, tau, clip,
                             two_pi=cfg.encoding.two_pi, init=lambda sp: f0(sp * DENSITY_FACTOR))
    return scores, {"proxy": "fit the even points of the training grid, score its odd points",
                    "density_factor": DENSITY_FACTOR, "points": int(samples.coords.shape[0])}


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


def ct_scores(proj: Projections, task, cfg, candidates: list[float], tau: float) -> tuple[list[float], dict]:
    """CT: fit the projections of every other angle (the sinogram is the training data), score the
    projections of the angles between. The proxy has half the angles, so its sigma is scaled by the
    ratio of angle counts. Kernel gradient descent in function space: f = f0 + K A^T alpha with the
    linear projector A (the task's own, as a matrix), solved in the measurement space (A K A^T, dense), K
    an FFT convolution on the pixel grid."""
    angles, n = proj.num_angles, proj.n
    if angles < MIN_CT_ANGLES:
        raise FfrunError(f"sigma=auto: task.num_angles={angles} is too few to hold some projections out (at least "
                         f"{MIN_CT_ANGLES}); give sigma as a number (task.default_sigma is the paper's, scaled to the "
                         "resolution)")
    fit_idx, held_idx = list(range(0, angles, 2)), list(range(1, angles, 2))
    entries = len(fit_idx) * n * (2 * n) ** 2
    if entries > CT_MAX_ENTRIES:
        raise FfrunError(f"sigma=auto: the CT proxy at {n}x{n} with {angles} angles needs {entries:.2g} values "
                         f"(limit {CT_MAX_ENTRIES:.0e}); choose sigma at a smaller task.resolution (sigma scales with "
                         "it, task.default_sigma) and give it as a number")
    a_fit, a_held = proj.matrix(fit_idx), proj.matrix(held_idx)
    sino = proj.sinogram.detach().double()
    s_fit, s_held = sino[fit_idx].reshape(-1), sino[held_idx].reshape(-1)
    coords = proj.coords.detach().double().reshape(n, n, 2)
    steps = torch.stack([coords[1, 0] - coords[0, 0], coords[0, 1] - coords[0, 0]])
    offsets = lattice_offsets((2 * n, 2 * n), steps)  # zero-padded: a linear convolution on the n x n grid
    factor = angles / len(fit_idx)
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


def kspace_scores(ks: KSpaceSamples, task, cfg, candidates: list[float], tau: float) -> tuple[list[float], dict]:
    """MRI (the field seen through sampled k-space): the expected volume error of the linearised network
    after gradient-descent time tau, up to a constant, from the training data alone.

    On the periodic voxel grid the stationary kernel is diagonal in the Fourier basis, so each sampled
    frequency is fitted on its own and an unsampled one is never corrected (`kspace_expected_error`). The
    volume error is then the slow sampled frequencies' residuals plus the untrained network's energy where
    k-space was not sampled, plus the truth's energy there, which does not depend on sigma and is left out.
    A held-out split of the samples would carry no signal here: in the diagonal picture a held-out
    frequency is predicted by f0 whatever sigma is. Small sigmas leave the sampled high frequencies
    unfitted; large ones leave the untrained network's noise in the unsampled ones."""
    n, mask = ks.n, ks.mask
    offsets = lattice_offsets((n, n, n), torch.eye(3, dtype=torch.float64, device=mask.device) / n)
    f0 = initial_outputs(task, cfg, [ks.coords.detach().double().reshape(n, n, n, 3)])
    scores = []
    for sigma in candidates:
        lam = torch.fft.fftn(kernel_on_offsets(None, sigma, offsets, cfg.model, cfg.encoding.two_pi)
                             .reshape(n, n, n)).real
        mse = kspace_expected_error(lam, mask, ks.observed, f0(sigma)[0][..., 0], tau)
        scores.append(-10.0 * math.log10(max(mse, 1e-30)))
    return scores, {"proxy": "expected volume error of the linearised network: the sampled frequencies' "
                             "residuals after time tau plus the untrained network's energy at the unsampled ones "
                             "(the truth's energy there is a constant and left out)",
                    "kspace_fraction": float(mask.float().mean())}
