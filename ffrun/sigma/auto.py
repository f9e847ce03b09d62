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
real problem acts as one of sigma / 2 on the proxy (`ffrun.sigma.proxies.DENSITY_FACTOR`). The untrained
network's output enters as f0 + K-regression(y - f0): what f0 puts between the training points and the
kernel cannot remove is error, and it grows with sigma (the "noisy interpolation" of a too large sigma).

Trained networks (Adam, width 256) interpolate better than their kernel and peak at a lower sigma; the
kernel's choice is scaled by `NETWORK_FACTOR`, measured on tuning images (docs/sigma_auto.md).

How it is computed: ffrun.sigma.lattice (kernel regression on a lattice, one FFT per candidate).

Each task hands over its training data as a proxy (`Task.sigma_proxy`, ffrun.tasks.proxy), scored in
ffrun.sigma.proxies. Image and toy1d: point regression on a regular grid. CT (the field seen through
projections): the proxy fits every other projection angle and scores the others, the projector as a sparse matrix and
the kernel as an FFT convolution on the pixel grid, solved in the measurement space. MRI (the field seen
through sampled k-space): no held-out split carries signal there, so the score is the linearised network's
expected volume error up to a constant (`kspace_scores`). Shape and NeRF have no proxy here; `sigma=auto`
stops there with one line saying so.

ffrun.sigma.fresh implements FreSh (Kania et al., ICLR 2025) as a baseline.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ffrun.sigma.lattice import training_grid
from ffrun.sigma.proxies import MIN_CT_PROXY_ANGLES, ct_scores, grid_scores, kspace_scores
from ffrun.tasks.proxy import KSpaceSamples, PointSamples, Projections
from ffrun.util.errors import FfrunError

# Gradient-descent time of the kernel fit, in units of the fastest mode's time constant (modes whose
# eigenvalue is below lambda_max / tau are not learnt): tau = TAU_PER_STEP * trainer.steps * trainer.lr / 1e-3,
# the run's own training length. Chosen on the tuning images (500 steps at lr 1e-3: tau 1000).
TAU_PER_STEP = 2.0
# Trained networks (Adam, finite width) interpolate better than their kernel and peak at a lower sigma:
# on the tuning images the kernel fitted to the real split itself peaks at 2.3-2.8 (chelsea) and 2.8-3.1
# (coins) where the trained networks peak at 0.9-1.8 and 1.8. The kernel's choice is scaled by this.
NETWORK_FACTOR = 0.5
# Candidate sigmas: a log grid spanning these fractions of the training grid's Nyquist frequency.
NYQUIST_RANGE = (0.01, 1.0)
CANDIDATES = 25
# Candidates within this many dB of the best proxy score count as equally good (plateau_centre).
PLATEAU_DB = 0.3

# Each kind of proxy: its scorer (ffrun.sigma.proxies) and the method's name in the record.
SCORERS = {PointSamples: (grid_scores, "held-out NTK (lattice)"),
           Projections: (ct_scores, "held-out NTK (projections)"),
           KSpaceSamples: (kspace_scores, "expected-error NTK (k-space)")}


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


def grid_nyquist(task, proxy=None) -> float:
    """The Nyquist frequency (cycles per unit) of the grid the task's field is learnt on: the training
    lattice of a point-regression task (along its first axis), else the n-point pixel or voxel grid on
    [0, 1) (CT, MRI). The candidate sigmas of the proxies and of FreSh span fractions of it."""
    proxy = task.sigma_proxy() if proxy is None else proxy
    if isinstance(proxy, PointSamples):
        _, steps, _ = training_grid(proxy, type(task).__name__)
        return 1.0 / (2.0 * steps[0].norm().item())
    return proxy.n / 2.0


def candidate_sigmas(task, count: int = CANDIDATES, proxy=None) -> tuple[float, list[float]]:
    """(the grid's Nyquist frequency, `count` sigmas log-spaced over NYQUIST_RANGE of it), in kernel units."""
    top = grid_nyquist(task, proxy)
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


def training_time(cfg) -> float:
    """The proxy's gradient-descent time for this run's training length (TAU_PER_STEP)."""
    return TAU_PER_STEP * cfg.trainer.steps * float(cfg.trainer.lr) / 1e-3


def predict_sigma(task, cfg, tau: float | None = None, count: int = CANDIDATES) -> SigmaChoice:
    """sigma for `task` from its training data alone (see the module's docstring); `tau` overrides the
    gradient-descent time derived from the run's steps and learning rate."""
    tau = training_time(cfg) if tau is None else tau
    proxy = task.sigma_proxy()
    device = proxy.device if proxy is not None else torch.device("cpu")  # the proxy computes where its data is
    # build_field seeds the global generator: keep the caller's random state as it was
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        with one_thread() if device.type == "cpu" else nullcontext():
            return _predict_sigma(task, proxy, cfg, tau, count)


def _predict_sigma(task, proxy, cfg, tau: float, count: int) -> SigmaChoice:
    if cfg.encoding.name != "gauss":
        raise FfrunError(f"sigma=auto: encoding={cfg.encoding.name} has no sigma; use encoding=gauss")
    start = time.perf_counter()
    if proxy is None:
        default = cfg.task.get("default_sigma")
        hint = f" (task.default_sigma={float(default):.4g} is this task's default)" if default else ""
        raise FfrunError(f"sigma=auto: task={type(task).__name__} has no training-data proxy in ffrun.sigma.auto "
                         f"(image, toy1d, ct and mri have); give sigma as a number{hint}")
    few_angles = isinstance(proxy, Projections) and proxy.num_angles < MIN_CT_PROXY_ANGLES
    if few_angles and cfg.task.get("default_sigma") is not None:
        return too_few_angles(proxy, cfg, start)
    scorer, method = SCORERS[type(proxy)]
    top, candidates = candidate_sigmas(task, count, proxy)
    scores, details = scorer(proxy, task, cfg, candidates, tau)
    # Scores are those of the kernel at each candidate; the network's sigma is NETWORK_FACTOR times it.
    candidates = [NETWORK_FACTOR * c for c in candidates]
    sigma = float(f"{plateau_centre(candidates, scores, PLATEAU_DB):.4g}")  # 4 digits: the same value everywhere
    details.update({"tau": tau, "plateau_db": PLATEAU_DB, "nyquist": top, "network_factor": NETWORK_FACTOR})
    score = ("PSNR (dB) of the linearised network's expected error, up to a constant" if method.startswith("expected")
             else "held-out PSNR (dB) of the kernel proxy")
    return SigmaChoice(sigma, method, candidates, scores, score,
                       time.perf_counter() - start, details)


def too_few_angles(proj: Projections, cfg, start: float) -> SigmaChoice:
    """Fewer CT angles than MIN_CT_PROXY_ANGLES: no proxy ranks sigmas there; the task's default, and why."""
    angles = proj.num_angles
    default = float(cfg.task.default_sigma)
    return SigmaChoice(default, f"task default: {angles} projection angles are too few for the held-out "
                       f"proxy (it needs {MIN_CT_PROXY_ANGLES})", [default], [float("nan")],
                       "none (no proxy ran)", time.perf_counter() - start,
                       {"angles": angles, "min_proxy_angles": MIN_CT_PROXY_ANGLES})


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

