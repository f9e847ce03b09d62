"""Neural tangent kernels of coordinate MLPs: empirical (from the network's Jacobians) and closed form.

For a ReLU MLP in NTK parametrization (see `ffrun.models.mlp`), with L Linear layers applied to the
mapped input gamma(x) of width d0, the infinite-width NTK follows the arc-cosine recursion
(Jacot et al. 2018; Cho & Saul 2009):

    Sigma_1(x, x') = w^2 / d0 * <gamma(x), gamma(x')> + b^2                  Theta_1 = Sigma_1
    Sigma_l = w^2 * E[relu(u) relu(u')] + b^2,  Sigma_dot_l = w^2 * E[relu'(u) relu'(u')]
    Theta_l = Sigma_l + Sigma_dot_l * Theta_{l-1},   (u, u') ~ N(0, Sigma_{l-1})

with E[relu(u) relu(u')] = sqrt(q q') / (2 pi) * (sin t + (pi - t) cos t), E[relu' relu'] = (pi - t) / (2 pi),
t = arccos(Sigma(x, x') / sqrt(q q')). For a Fourier mapping <gamma(x), gamma(x')> =
sum_j cos(2 pi b_j . (x - x')), so the whole kernel depends on x - x' only: it is stationary, and the
scale of B (sigma) sets its bandwidth (the paper's section 4).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap


def relu_ntk(input_kernel: tuple[Tensor, Tensor, Tensor], depth: int, w_std: float, b_std: float) -> Tensor:
    """Closed-form NTK of an L-layer ReLU MLP (NTK parametrization), for one scalar output.

    `input_kernel` = (K12, k1, k2): the normalised input inner products between the two point sets,
    (n1, n2), and each set's own diagonal, (n1,) and (n2,). Returns Theta_L, (n1, n2), float64.
    """
    K12, k1, k2 = (t.double() for t in input_kernel)
    w2, b2 = w_std**2, b_std**2
    sigma, q1, q2 = w2 * K12 + b2, w2 * k1 + b2, w2 * k2 + b2
    theta = sigma.clone()
    for _ in range(depth - 1):
        norm = torch.sqrt(q1[:, None] * q2[None, :])
        t = torch.arccos(torch.clamp(sigma / norm, -1.0, 1.0))
        e_relu = norm / (2 * math.pi) * (torch.sin(t) + (math.pi - t) * torch.cos(t))
        e_drelu = (math.pi - t) / (2 * math.pi)
        sigma = w2 * e_relu + b2
        theta = sigma + w2 * e_drelu * theta
        q1, q2 = w2 * q1 / 2 + b2, w2 * q2 / 2 + b2  # E[relu(u)^2] = q / 2
    return theta


def analytic_ntk(encoding: nn.Module, x1: Tensor, x2: Tensor, depth: int, w_std: float, b_std: float) -> Tensor:
    """The infinite-width NTK of encoding + ReLU MLP between point sets x1 (n1, d) and x2 (n2, d)."""
    g1, g2 = encoding(x1).double(), encoding(x2).double()
    d0 = g1.shape[-1]
    return relu_ntk((g1 @ g2.T / d0, (g1 * g1).sum(-1) / d0, (g2 * g2).sum(-1) / d0), depth, w_std, b_std)


def empirical_ntk(model: nn.Module, x1: Tensor, x2: Tensor | None = None, chunk: int = 64) -> Tensor:
    """Theta(x1_i, x2_j) = <d f(x1_i) / d theta, d f(x2_j) / d theta> over all trainable parameters, for a
    model with one scalar output, computed from per-point Jacobians (torch.func). Float64, (n1, n2)."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def f(p: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(model, (p, buffers), (x[None],))[0, 0]

    per_point = vmap(jacrev(f), in_dims=(None, 0))

    def jac(x: Tensor) -> Tensor:
        rows = []
        for i in range(0, x.shape[0], chunk):
            j = per_point(params, x[i : i + chunk])
            rows.append(torch.cat([v.reshape(v.shape[0], -1) for v in j.values()], dim=1).double())
        return torch.cat(rows)

    j1 = jac(x1)
    j2 = j1 if x2 is None else jac(x2)
    return j1 @ j2.T


def kernel_regression(k_train: Tensor, k_test_train: Tensor, y_train: Tensor, ridge: float = 1e-8) -> Tensor:
    """f(x) = sum_i (K^-1 y)_i k(x_i, x): the function gradient descent on the kernel's linear model
    converges to from zero. A ridge of `ridge * mean(diag K)` keeps the solve stable."""
    k = k_train.double()
    jitter = ridge * torch.diagonal(k).mean()
    coef = torch.linalg.solve(k + jitter * torch.eye(k.shape[0], dtype=k.dtype), y_train.double())
    return k_test_train.double() @ coef


def gd_kernel_regression(k_train: Tensor, k_test_train: Tensor, y_train: Tensor, lr: float, steps: int) -> Tensor:
    """The linearised network after `steps` of gradient descent (step size `lr`) on 0.5 * mean((f - y)^2),
    from f = 0: f_t(x) = k(x, X) K^-1 (I - (I - lr K / n)^t) y. As t -> inf it is `kernel_regression`;
    at finite t the directions with small eigenvalues (high frequencies) are not learnt yet."""
    n = k_train.shape[0]
    lam, v = torch.linalg.eigh(k_train.double())
    lam = lam.clamp_min(0.0)
    a = lr * lam / n
    # (1 - (1 - a)^t) / lam, written to stay exact as lam -> 0 (where it tends to lr * t / n).
    gain = torch.where(a > 1e-12, -torch.expm1(steps * torch.log1p(-a.clamp(max=1 - 1e-15))) / lam.clamp_min(1e-300),
                       torch.full_like(lam, lr * steps / n))
    y = y_train.double()
    coef = v @ (gain.reshape(-1, *([1] * (y.dim() - 1))) * (v.T @ y))
    return k_test_train.double() @ coef


def fourier_eigenvalues(k: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """For points x (n, 1) on a regular 1D grid: frequencies f = 0..n/2 and the kernel's Rayleigh quotients
    lambda_f = e_f^H K e_f with unit Fourier vectors e_f (exact eigenvalues when K is stationary/circulant).

    Gradient descent on the loss 0.5 * mean((f - y)^2) with step size eta shrinks the residual along a
    frequency with eigenvalue lambda by (1 - eta * lambda / n) per step: it takes about n / (eta * lambda)
    steps to learn that frequency."""
    n = x.shape[0]
    freqs = torch.arange(0, n // 2 + 1, dtype=torch.float64)
    phase = 2 * math.pi * freqs[:, None] * x[:, 0].double()[None, :] * (n * (x[1, 0] - x[0, 0]).double())
    e = torch.exp(1j * phase) / math.sqrt(n)  # (F, n)
    lam = torch.einsum("fi,ij,fj->f", e.conj(), k.to(torch.complex128), e).real
    return freqs, lam


def stationarity_error(k: Tensor) -> float:
    """How far a kernel on a regular grid is from k(x, x + d) = h(d): the spread of each diagonal
    (fixed offset d) around its mean, RMS over offsets, relative to the kernel's mean magnitude.
    0 for a stationary kernel."""
    k = k.double()
    n = k.shape[0]
    spread = [torch.diagonal(k, d).var(unbiased=False) for d in range(n - 1)]
    return (torch.stack(spread).mean().sqrt() / k.abs().mean()).item()
