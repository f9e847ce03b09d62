"""sigma=auto (ffrun.sigma.auto): the lattice kernel fit against a dense float64 reference, determinism,
training data only, the band-limit response, the config value and the `ffrun-sigma` app."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ffrun.config import validate
from ffrun.sigma.auto import plateau_centre, predict_sigma, resolve_auto_sigma
from ffrun.sigma.fresh import fresh_scores
from ffrun.sigma.kernels import relu_ntk
from ffrun.sigma.lattice import gd_filter, kernel_on_offsets, lattice_holdout, lattice_offsets, mirror
from ffrun.sigma.proxies import ct_scores, kspace_expected_error, negated_frequencies
from ffrun.tasks import build_task
from ffrun.tasks.base import PointRegressionTask
from ffrun.util.errors import FfrunError

MODEL = SimpleNamespace(depth=4, w_std=math.sqrt(2.0), b_std=0.1)


def test_lattice_fit_matches_dense_kernel_regression():
    """The FFT path equals gradient descent on the dense kernel matrix of the mirrored periodic lattice,
    written out entry by entry in float64."""
    gen = torch.Generator().manual_seed(0)
    n, h, shift, sigma, tau = 12, 0.05, 0.025, 3.0, 300.0
    train = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    val = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    steps = torch.tensor([[h]], dtype=torch.float64)
    got = lattice_holdout(train, val, steps, torch.tensor([shift], dtype=torch.float64), None, [sigma], MODEL, tau,
                          clip=None)[0]

    y = mirror(train - train.mean(0), 1)
    p = y.shape[0]
    assert p == 2 * n - 2

    def theta(d: float) -> float:  # the composed NTK at displacement d: RBF input kernel through relu_ntk
        k_in = torch.tensor([[0.5 * math.exp(-2 * math.pi**2 * sigma**2 * d**2)]], dtype=torch.float64)
        half = torch.tensor([0.5], dtype=torch.float64)
        return relu_ntk((k_in, half, half), 4, math.sqrt(2.0), 0.1).item()

    wrap = lambda k: (k % p) - p if (k % p) > p // 2 else (k % p)  # noqa: E731
    K = torch.tensor([[theta(wrap(i - j) * h) for j in range(p)] for i in range(p)], dtype=torch.float64)
    lam, v = torch.linalg.eigh(K)
    lam = lam.clamp_min(0)
    gain = -torch.expm1(-tau * lam / lam.max()) / lam
    coef = v @ (gain[:, None] * (v.T @ y))
    cross = torch.tensor([[theta(wrap(i - j) * h + shift) for j in range(p)] for i in range(n)], dtype=torch.float64)
    pred = cross @ coef + train.mean(0)
    want = -10 * math.log10(torch.mean((pred - val) ** 2).item())
    assert got == pytest.approx(want, abs=1e-8)


def test_gd_filter_limits():
    lam = torch.tensor([0.0, 1e-20, 0.5, 1.0], dtype=torch.float64)
    g = gd_filter(lam, 10.0)
    assert g[0].item() == pytest.approx(10.0) and g[1].item() == pytest.approx(10.0)  # tau / lam_max as lam -> 0
    assert g[3].item() == pytest.approx(1 - math.exp(-10.0))
    assert torch.equal(gd_filter(lam, math.inf)[:2], torch.zeros(2, dtype=torch.float64))


def test_kernel_rows_are_those_of_the_closed_form_ntk():
    """With the run's own B the lattice kernel is ffrun.sigma.kernels's analytic NTK between the origin and each
    offset."""
    from ffrun.models.encodings import FourierEncoding
    from ffrun.sigma.kernels import analytic_ntk

    unit = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    offsets = lattice_offsets((4, 4), torch.tensor([[0.1, 0.0], [0.0, 0.1]], dtype=torch.float64))
    got = kernel_on_offsets(unit, 2.0, offsets, MODEL)
    enc = FourierEncoding(2.0 * unit)
    want = analytic_ntk(enc, torch.zeros(1, 2), offsets.float(), 4, math.sqrt(2.0), 0.1)[0]
    assert torch.allclose(got, want, rtol=1e-5)
    # nearest periodic image: index 3 of 4 is one step back
    assert offsets[3].tolist() == pytest.approx([0.0, -0.1])


def image_task(compose, *extra):
    cfg = compose("task.resolution=32", "sigma=auto", "device=cpu", *extra)
    return cfg, build_task(cfg.task, torch.device("cpu"), None, cfg.seed)


def test_prediction_is_deterministic_for_a_seed(compose):
    cfg, task = image_task(compose)
    a, b = predict_sigma(task, cfg), predict_sigma(task, cfg)
    assert a.sigma == b.sigma and a.scores == b.scores
    other = predict_sigma(task, compose("task.resolution=32", "sigma=auto", "device=cpu", "seed=5"))
    assert other.scores != a.scores  # the run's own initial network enters the score


def test_prediction_reads_no_test_data(compose):
    """Garbage in the held-out pixels (and in the stored full image) leaves the prediction unchanged; the
    same garbage in the training pixels changes it, so the check can fail."""
    cfg, task = image_task(compose, "task.image=coffee")
    before = predict_sigma(task, cfg)
    task.test[1].fill_(float("nan"))
    task.full[1][1::2, 1::2] = float("nan")
    task.image[1::2, 1::2] = np.nan
    after = predict_sigma(task, cfg)
    assert after.sigma == before.sigma and after.scores == before.scores
    task.train[1][::3] = torch.rand_like(task.train[1][::3], generator=None)
    assert predict_sigma(task, cfg).scores != before.scores


def test_toy1d_prediction_reads_no_test_points(compose):
    cfg = compose("task=toy1d", "task.n_points=128", "sigma=auto", "device=cpu")
    task = build_task(cfg.task, torch.device("cpu"), None, 0)
    before = predict_sigma(task, cfg)
    task.test[1].fill_(float("nan"))
    task.full[1][1::2] = float("nan")
    assert predict_sigma(task, cfg).scores == before.scores


def test_sigma_follows_the_band_limit_1d(compose):
    """A 1D signal with all its frequencies up to K (flat spectrum): the predicted sigma grows with K."""
    sigmas = []
    for k in (4, 16, 64):
        cfg = compose("task=toy1d", "task.n_points=512", "task.alpha=0", f"task.max_freq={k}", "sigma=auto",
                      "device=cpu")
        sigmas.append(predict_sigma(build_task(cfg.task, torch.device("cpu"), None, 0), cfg).sigma)
    assert sigmas[0] < sigmas[1] < sigmas[2], sigmas


class BandLimitedImage:
    """A stand-in point-regression task: a random 2D field with every frequency |k|_inf <= k_max (cycles
    per unit), sampled on the even pixels of an n x n grid, values in [0, 1]."""

    in_dim, out_dim, out_activation, primary_metric = 2, 1, "sigmoid", "test_psnr"

    def __init__(self, n: int, k_max: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        spec = np.zeros((n, n), complex)
        k = np.fft.fftfreq(n, 1 / n)
        band = (np.abs(k)[:, None] <= k_max) & (np.abs(k)[None, :] <= k_max)
        spec[band] = rng.normal(size=band.sum()) + 1j * rng.normal(size=band.sum())
        img = np.fft.ifft2(spec).real
        img = (img - img.min()) / (img.max() - img.min())
        c = np.linspace(0, 1, n + 1)[:-1]
        coords = np.stack(np.meshgrid(c, c), -1)
        self.train = (torch.tensor(coords[::2, ::2].reshape(-1, 2), dtype=torch.float32),
                      torch.tensor(img[::2, ::2].reshape(-1, 1), dtype=torch.float32))

    sigma_proxy = PointRegressionTask.sigma_proxy  # its training points, as a point-regression task hands them over


def test_sigma_follows_the_band_limit_2d(compose):
    cfg = compose("task.resolution=32", "sigma=auto", "device=cpu", "encoding.m=64", "model.width=64")
    sigmas = [predict_sigma(BandLimitedImage(96, k), cfg).sigma for k in (2, 5, 10)]
    assert sigmas[0] < sigmas[1] < sigmas[2], sigmas


def test_plateau_centre_takes_the_middle_of_the_near_best_run():
    cands = [1.0, 2.0, 4.0, 8.0, 16.0]
    assert plateau_centre(cands, [0.0, 5.0, 5.05, 4.98, 1.0], 0.1) == pytest.approx(math.sqrt(2.0 * 8.0))
    assert plateau_centre(cands, [0.0, 5.0, 3.0, 4.99, 1.0], 0.1) == pytest.approx(2.0)  # contiguous only


def test_fresh_prefers_the_sigma_whose_initial_spectrum_matches(compose):
    """FreSh's distance is smallest where the untrained network's spectrum is closest to the signal's:
    a smooth signal is matched by a small sigma rather than a huge one."""
    cfg = compose("task.resolution=32", "device=cpu", "encoding.m=64", "model.width=64")
    smooth = BandLimitedImage(32, 1)
    d = fresh_scores(smooth, cfg, [0.3, 30.0], seeds=2)
    assert d[0] < d[1]


def test_sigma_auto_in_the_config(compose):
    cfg = compose("sigma=auto", "task.resolution=32", "device=cpu")
    validate(cfg)  # auto is a valid value; everything else is still checked
    with pytest.raises(FfrunError, match="model.depth="):
        validate(compose("sigma=auto", "model.depth=0"))
    with pytest.raises(FfrunError, match="sigma='abc' is not a number"):
        validate(compose("sigma=abc"))
    task = build_task(cfg.task, torch.device("cpu"), None, 0)
    sigma, record = resolve_auto_sigma(cfg, task)
    assert cfg.sigma == sigma and cfg.encoding.sigma == pytest.approx(sigma)
    assert record["method"] and len(record["candidates"]) == len(record["scores"]) and record["seconds"] >= 0
    assert record["sigma"] == pytest.approx(sigma)
    assert resolve_auto_sigma(compose("sigma=3"), task) == (None, None)


def test_ffrun_sigma_app(run_cli, tmp_path, compose):
    r = run_cli("task.resolution=32", "device=cpu", "hydra.run.dir=s", name="ffrun-sigma", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "sigma=auto:" in r.stdout
    log = (tmp_path / "s" / "sigma.log").read_text()  # the result is kept in the run's log too
    assert "sigma=auto:" in log and "ffrun-sigma: wrote the curve" in log
    rec = json.loads((tmp_path / "s" / "sigma_auto.json").read_text())
    assert rec["sigma"] > 0 and len(rec["candidates"]) == len(rec["scores"])
    assert (tmp_path / "s" / "sigma_curve.png").stat().st_size > 0
    from ffrun.apps.sigma import predict  # the app's bad-input path, in process (exit 2 via FfrunError)

    with pytest.raises(FfrunError, match="encoding=posenc has no sigma"):
        predict(compose("encoding=posenc", "task.resolution=32", "device=cpu"), tmp_path / "b")


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_ct_projection_matrix_is_the_projector(compose, mode):
    cfg = compose("experiment=paper_ct", "task.resolution=32", "device=cpu", f"task.interpolation={mode}")
    task = build_task(cfg.task, torch.device("cpu"), None, 0)
    img = torch.rand(32, 32, generator=torch.Generator().manual_seed(0))
    got = (task.project.matrix() @ img.double().reshape(-1, 1)).reshape(-1, 32)
    assert torch.allclose(got, task.project(img).double(), atol=1e-6)
    # what sigma=auto is handed: the same projector, for any subset of the angles
    odd = list(range(1, cfg.task.num_angles, 2))
    got = (task.sigma_proxy().matrix(odd) @ img.double().reshape(-1, 1)).reshape(-1, 32)
    assert torch.allclose(got, task.project(img).double()[odd], atol=1e-6)


def test_ct_sigma_auto_uses_the_sinogram_only(compose):
    cfg = compose("experiment=paper_ct", "task.resolution=32", "task.num_angles=8", "device=cpu", "sigma=auto",
                  "trainer.steps=100")
    task = build_task(cfg.task, torch.device("cpu"), None, 0)
    before = predict_sigma(task, cfg, count=7)
    task.truth.fill_(float("nan"))  # the phantom itself is test data
    task.image[:] = np.nan
    assert predict_sigma(task, cfg, count=7).scores == before.scores
    assert before.details["density_factor"] == pytest.approx(2.0)  # 8 angles, 4 fitted
    # 5 angles (the paper's ratio at 128^2): too few for the proxy, the task's default and the reason
    five = compose("experiment=paper_ct", "task.resolution=32", "task.num_angles=5", "device=cpu", "sigma=auto")
    choice = predict_sigma(build_task(five.task, torch.device("cpu"), None, 0), five)
    assert choice.sigma == pytest.approx(float(five.task.default_sigma)) and "too few" in choice.method
    with pytest.raises(FfrunError, match="num_angles=3 is too few"):  # the proxy itself, called directly
        few = compose("experiment=paper_ct", "task.resolution=32", "task.num_angles=3", "device=cpu", "sigma=auto")
        task = build_task(few.task, torch.device("cpu"), None, 0)
        ct_scores(task.sigma_proxy(), task, few, [1.0], 100.0)


def test_prediction_leaves_the_global_random_state_alone(compose):
    cfg, task = image_task(compose)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    predict_sigma(task, cfg)
    assert torch.equal(torch.rand(3), expected)


def test_kspace_expected_error_is_the_kernel_gradient_flow():
    """The MRI proxy's closed form against the dense flow df/dt = -K grad L(f), L = 0.5 sum over sampled k of
    |FFT(f)_k - y_k|^2, integrated exactly (matrix exponential), for a truth with no energy at the never-sampled
    frequencies (so the constant the proxy leaves out is zero) and a mask that samples k without -k."""
    n, tau = 6, 30.0
    g = torch.Generator().manual_seed(0)
    offsets = lattice_offsets((n, n, n), torch.eye(3, dtype=torch.float64) / n)
    row = torch.exp(-20.0 * (offsets**2).sum(-1)).reshape(n, n, n)
    lam = torch.fft.fftn(row).real
    idx = torch.stack(torch.meshgrid(*[torch.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    diff = (idx[:, None, :] - idx[None, :, :]) % n
    kernel = row[diff[..., 0], diff[..., 1], diff[..., 2]]  # the circulant kernel matrix (n^3, n^3)
    mask = torch.rand(n, n, n, generator=g) < 0.3
    mask[0, 0, 0] = True
    assert (mask & ~negated_frequencies(mask)).any()  # some k sampled without its pair -k
    seen = mask | negated_frequencies(mask)
    truth = torch.fft.ifftn(torch.fft.fftn(torch.rand(n, n, n, generator=g, dtype=torch.float64)) * seen).real
    observed = torch.fft.fftn(truth) * mask
    f0 = 0.3 * torch.randn(n, n, n, generator=g, dtype=torch.float64)

    def grad(f):  # dL/df for a real volume f
        return n**3 * torch.fft.ifftn(mask * (torch.fft.fftn(f) - observed)).real

    zero = torch.zeros(n, n, n, dtype=torch.float64)
    b = -grad(zero).reshape(-1)
    hessian = torch.stack([grad(e.reshape(n, n, n)).reshape(-1) + b for e in torch.eye(n**3, dtype=torch.float64)], 1)
    flow = kernel @ hessian
    t = tau / torch.linalg.eigvals(flow).real.max()
    augmented = torch.zeros(n**3 + 1, n**3 + 1, dtype=torch.float64)
    augmented[:-1, :-1] = -flow
    augmented[:-1, -1] = kernel @ b
    state = torch.linalg.matrix_exp(augmented * t) @ torch.cat([f0.reshape(-1), torch.ones(1, dtype=torch.float64)])
    exact = torch.mean((state[:-1] - truth.reshape(-1)) ** 2).item()
    assert kspace_expected_error(lam, mask, observed, f0, tau) == pytest.approx(exact, rel=1e-6)
    assert exact < torch.mean((f0 - truth) ** 2).item()  # the flow did fit something


def test_mri_sigma_auto_uses_the_kspace_samples_only(compose):
    cfg = compose("experiment=paper_mri", "task.resolution=12", "device=cpu", "sigma=auto", "trainer.steps=100",
                  "encoding.m=32", "model.width=32")
    task = build_task(cfg.task, torch.device("cpu"), None, 0)
    before = predict_sigma(task, cfg, count=7)
    assert predict_sigma(task, cfg, count=7).scores == before.scores  # deterministic for a seed
    task.truth.fill_(float("nan"))  # the volume itself is test data
    task.volume[:] = np.nan
    after = predict_sigma(task, cfg, count=7)
    assert after.scores == before.scores and after.sigma == before.sigma
    assert all(math.isfinite(s) for s in before.scores) and before.method.startswith("expected-error")
    # small sigmas leave the sampled high frequencies unfitted, large ones leave f0's noise: an inner optimum
    best = max(range(7), key=lambda i: before.scores[i])
    assert 0 < best < 6
