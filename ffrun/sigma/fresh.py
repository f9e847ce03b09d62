"""FreSh (Kania et al., ICLR 2025), the baseline sigma=auto is measured against (scripts/bench_sigma.py):
the sigma whose untrained network's output spectrum is closest, in Wasserstein distance, to the training
signal's. Training data only (`Task.sigma_proxy`)."""

from __future__ import annotations

import torch
from torch import Tensor

from ffrun.sigma.lattice import training_grid
from ffrun.sigma.proxies import encoding_settings
from ffrun.tasks.proxy import KSpaceSamples, PointSamples, Projections
from ffrun.util.errors import FfrunError


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


def fresh_signal(task, proxy):
    """FreSh's two spectra for `task`, from its training data only (`proxy`, its `sigma_proxy()`): (the
    training signal's spectrum, a function giving an untrained network's spectrum). Point regression compares
    the values on the training grid; the tasks that see their field through a forward model compare in the
    measurement space, as the network's output would be measured: MRI the sampled k-space, CT each
    projection's 1D spectrum."""
    if isinstance(proxy, PointSamples):
        values, _, _ = training_grid(proxy, type(task).__name__)
        axes, coords = values.dim() - 1, proxy.coords.detach()
        bins = max(values.shape[0] // 2, 1)
        return (radial_spectrum(values, axes, bins),
                lambda net: radial_spectrum(net.predict(coords).double().reshape(values.shape), axes, bins))
    if isinstance(proxy, KSpaceSamples):
        n, mask = proxy.n, proxy.mask
        return (spectrum_bins(proxy.observed.abs(), 3, n // 2),
                lambda net: spectrum_bins((torch.fft.fftn(net.predict(proxy.coords).double().reshape(n, n, n))
                                           * mask).abs(), 3, n // 2))
    if isinstance(proxy, Projections):
        n = proxy.n

        def sino_spectrum(sino: Tensor) -> Tensor:  # (angles, n): 1D spectra along the detector, summed
            return spectrum_bins(torch.fft.fft(sino.double(), dim=1).abs().T, 1, n // 2)

        return (sino_spectrum(proxy.sinogram),
                lambda net: sino_spectrum(proxy.project(net.predict(proxy.coords).float().reshape(n, n))))
    raise FfrunError(f"FreSh: task={type(task).__name__} has no training signal on a grid")


def fresh_scores(task, cfg, candidates: list[float], seeds: int = 3) -> list[float]:
    """FreSh (Kania et al., ICLR 2025): for each candidate sigma, the Wasserstein distance between the
    spectrum of the untrained network's output and that of the training signal (`fresh_signal`), averaged
    over `seeds` initialisations (lower is better). Training data only."""
    from omegaconf import OmegaConf

    from ffrun.models.field import build_field

    proxy = task.sigma_proxy()
    target, network_spectrum = fresh_signal(task, proxy)
    enc = encoding_settings(cfg)
    device = proxy.device
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
