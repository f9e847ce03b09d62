"""The NTK analysis: empirical kernel properties, the closed form, kernel regression, ffrun-ntk end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ffrun.models import Field, build_encoding
from ffrun.models.mlp import MLP
from ffrun.sigma.kernels import (
    analytic_ntk,
    empirical_ntk,
    fourier_eigenvalues,
    gd_kernel_regression,
    kernel_regression,
    relu_ntk,
    stationarity_error,
)

W, B = math.sqrt(2.0), 0.1


def ntk_field(enc, width, depth, seed):
    torch.manual_seed(seed)
    return Field(enc, MLP(enc.out_dim, 1, depth, width, "none", parametrization="ntk", w_std=W, b_std=B))


def gauss(m=32, sigma=4.0):
    return build_encoding("gauss", 1, m=m, sigma=sigma, generator=torch.Generator().manual_seed(0))


def test_empirical_ntk_is_symmetric_positive_semidefinite():
    x = torch.rand(24, 1, generator=torch.Generator().manual_seed(1))
    k = empirical_ntk(ntk_field(gauss(), 64, 3, 0), x)
    assert torch.allclose(k, k.T, rtol=1e-10, atol=1e-10 * k.abs().max())
    assert torch.linalg.eigvalsh(k).min() > -1e-9 * k.abs().max()
    # Cross-kernels agree with the square one.
    k12 = empirical_ntk(ntk_field(gauss(), 64, 3, 0), x[:10], x[10:])
    torch.testing.assert_close(k12, k[:10, 10:])


def test_closed_form_depth_1_and_2_by_hand():
    x = torch.tensor([[0.1], [0.4], [0.7]])
    enc = build_encoding("none", 1)
    # depth 1 is a linear model: Theta = w^2 x x' + b^2 (gradients wrt W and b).
    k1 = analytic_ntk(enc, x, x, 1, W, B)
    torch.testing.assert_close(k1, W**2 * (x @ x.T).double() + B**2)
    # depth 2 at x = x': Sigma_1 = q, Sigma_2 = w^2 q / 2 + b^2, Theta_2 = Sigma_2 + w^2 * (1/2) * Theta_1.
    q = W**2 * 0.4**2 + B**2
    assert analytic_ntk(enc, x, x, 2, W, B)[1, 1].item() == pytest.approx(W**2 * q / 2 + B**2 + W**2 * 0.5 * q)


def test_wide_two_layer_network_matches_the_closed_form():
    x = torch.linspace(0, 1, 9)[:, None]
    enc = gauss(m=16, sigma=2.0)
    k_an = analytic_ntk(enc, x, x, 2, W, B)
    k_emp = empirical_ntk(ntk_field(enc, 40_000, 2, 0), x)
    assert ((k_emp - k_an).norm() / k_an.norm()).item() < 0.02


def test_empirical_ntk_approaches_the_closed_form_as_width_grows():
    x = torch.linspace(0, 1, 17)[:-1, None]
    enc = gauss()
    k_an = analytic_ntk(enc, x, x, 3, W, B)
    err = {w: np.mean([((empirical_ntk(ntk_field(enc, w, 3, s), x) - k_an).norm() / k_an.norm()).item()
                       for s in range(3)]) for w in (32, 128, 512)}
    # Finite-width fluctuations shrink like 1/sqrt(width): measured ~0.45, 0.22, 0.12.
    assert err[512] < err[128] < err[32]
    assert err[512] < 0.5 * err[32]


def test_gaussian_mapping_makes_the_kernel_stationary():
    x = torch.linspace(0, 1, 33)[:-1, None]
    k_gauss = analytic_ntk(gauss(m=64), x, x, 4, W, B)
    k_none = analytic_ntk(build_encoding("none", 1), x, x, 4, W, B)
    # k(x, x + d) = h(d) exactly for the closed form with a Fourier mapping; far from it without one.
    assert stationarity_error(k_gauss) < 1e-6
    assert stationarity_error(k_none) > 0.1
    # The real network's kernel at finite width is approximately stationary too.
    k_emp = empirical_ntk(ntk_field(gauss(m=64), 512, 4, 0), x)
    assert stationarity_error(k_emp) < 0.5 * stationarity_error(empirical_ntk(
        ntk_field(build_encoding("none", 1), 512, 4, 0), x))


def test_kernel_regression_and_its_gradient_descent_path():
    x = torch.linspace(0, 1, 20)[:, None]
    y = torch.sin(6 * x).double()
    k = analytic_ntk(gauss(m=16, sigma=1.0), x, x, 3, W, B)
    tr, te = slice(0, None, 2), slice(1, None, 2)
    inf = kernel_regression(k[tr, tr], k[te, tr], y[tr])
    # Interpolates the training points.
    torch.testing.assert_close(kernel_regression(k[tr, tr], k[tr, tr], y[tr]), y[tr], atol=1e-5, rtol=0)
    # One GD step from f = 0 with step lr on 0.5 * mean((f - y)^2): f_1(x) = lr / n * k(x, X) y.
    lr, n = 0.3, 10
    torch.testing.assert_close(gd_kernel_regression(k[tr, tr], k[te, tr], y[tr], lr, 1), lr / n * k[te, tr] @ y[tr])
    # And the path ends at kernel regression.
    lr = n / torch.linalg.eigvalsh(k[tr, tr]).max().item()
    torch.testing.assert_close(gd_kernel_regression(k[tr, tr], k[te, tr], y[tr], lr, 10**9), inf, atol=1e-4, rtol=0)


def test_fourier_eigenvalues_of_a_circulant_kernel():
    n = 16
    x = (torch.arange(n) / n)[:, None].double()
    k = torch.cos(2 * math.pi * 3 * (x - x.T))  # a stationary kernel with one frequency
    freqs, lam = fourier_eigenvalues(k, x)
    assert lam[3].item() == pytest.approx(n / 2)
    assert torch.cat([lam[:3], lam[4:]]).abs().max() < 1e-9


def test_relu_ntk_is_symmetric_in_its_arguments():
    g = torch.randn(5, 8, dtype=torch.float64)
    K, d = g @ g.T / 8, (g * g).sum(-1) / 8
    t = relu_ntk((K, d, d), 4, W, B)
    torch.testing.assert_close(t, t.T)


def spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return np.corrcoef(ra, rb)[0, 1]


def test_ffrun_ntk_end_to_end_ranks_encodings_as_the_trained_networks(run_cli, tmp_path):
    r = run_cli("task.n_points=64", "trainer.steps=300", "model.width=128", "ntk.widths=[32,64]", "ntk.seeds=1",
                "ntk.sigmas=[1,10]", "hydra.run.dir=ntk", name="ffrun-ntk", timeout=900)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "ntk"
    for name in ("ntk.json", "ntk_table.md", "kernel_rows.png", "spectrum.png", "frequency_speed.png",
                 "ntk_convergence.png"):
        assert (out / name).stat().st_size > 0, name
    res = json.loads((out / "ntk.json").read_text())["results"]
    assert [(r["encoding"], r["sigma"]) for r in res] == [("none", None), ("basic", None), ("posenc", None),
                                                          ("gauss", 1.0), ("gauss", 10.0)]
    theory = [r["ntk_gd_test_mse"] for r in res]
    practice = [r["trained_gd_test_mse"] for r in res]
    assert spearman(theory, practice) >= 0.7, (theory, practice)
    assert np.argmax(theory) == np.argmax(practice) == 0  # no mapping is worst in both
