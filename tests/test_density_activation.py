"""NeRF's density activation (task.density_activation): Instant-NGP's truncated exponential against its float64
definition, the dead-ReLU case it fixes, and method=hashgrid choosing it for task=nerf only."""

from __future__ import annotations

import pytest
import torch

from ffrun.tasks.nerf import DENSITY_ACTIVATIONS, composite, trunc_exp

X = [-40.0, -15.0, -1.5, 0.0, 0.7, 3.0, 14.9, 15.0, 15.1, 20.0, 40.0]


def test_trunc_exp_is_exp_forward_and_the_clamped_exp_backward_against_float64():
    x64 = torch.tensor(X, dtype=torch.float64)
    grad64 = torch.linspace(-2.0, 3.0, len(X), dtype=torch.float64)
    forward64 = torch.exp(x64)  # the definition: exp(x) forward, grad * exp(min(x, 15)) backward
    backward64 = grad64 * torch.exp(torch.clamp(x64, max=15.0))
    for dtype, rel in ((torch.float64, 1e-15), (torch.float32, 1e-6)):
        x = x64.to(dtype).detach().clone().requires_grad_()
        y = trunc_exp(x)
        y.backward(grad64.to(dtype))
        assert y.dtype == x.grad.dtype == dtype
        assert torch.allclose(y.double(), forward64, rtol=rel, atol=0), dtype
        assert torch.allclose(x.grad.double(), backward64, rtol=rel, atol=0), dtype
    # below the clamp it is exp's own gradient; above it the gradient stays at exp(15)
    below = torch.tensor([-3.0, 0.5, 10.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(trunc_exp, (below,))
    big = torch.tensor([15.0, 30.0, 80.0], requires_grad=True)
    trunc_exp(big).sum().backward()
    assert torch.equal(big.grad, torch.full_like(big, torch.exp(torch.tensor(15.0)).item()))


@pytest.mark.parametrize("activation,alive", [("relu", False), ("softplus", True), ("trunc_exp", True)])
def test_a_dead_relu_density_gets_no_gradient_and_the_others_do(activation, alive):
    """Every raw density below zero (a hash grid's early outputs): ReLU's density is 0 with no gradient, so
    the scene renders as the background forever; softplus and trunc_exp keep a gradient at every sample."""
    gen = torch.Generator().manual_seed(0)
    raw = torch.randn(6, 16, 4, generator=gen)
    raw[..., 3] = -torch.rand(6, 16, generator=gen) - 0.1  # all pre-activations negative
    raw.requires_grad_()
    t = torch.linspace(2.0, 6.0, 16).expand(6, 16)
    directions = torch.randn(6, 3, generator=gen)
    target = torch.full((6, 3), 0.2)
    colour, _, opacity = composite(raw, t, directions, white_background=True, density_activation=activation)
    ((colour - target) ** 2).mean().backward()
    density_grad = raw.grad[..., 3]
    if alive:  # (the last sample's 1e10 interval makes it opaque whatever its density: no gradient there)
        assert (density_grad[:, :-1] != 0).all() and (opacity > 0).all()
    else:
        assert torch.equal(density_grad, torch.zeros_like(density_grad))
        assert torch.equal(opacity, torch.zeros_like(opacity))  # every ray renders as the background
    assert set(DENSITY_ACTIVATIONS) == {"relu", "softplus", "trunc_exp"}


def test_method_hashgrid_sets_trunc_exp_for_nerf_only(compose):
    assert compose("task=nerf").task.density_activation == "relu"  # the paper's, unchanged
    assert compose("task=nerf", "method=hashgrid").task.density_activation == "trunc_exp"
    assert compose("task=nerf", "method=siren").task.density_activation == "relu"
    assert compose("task=nerf", "method=hashgrid", "task.density_activation=softplus").task.density_activation \
        == "softplus"  # the command line still wins
    assert "density_activation" not in compose("task=image", "method=hashgrid").task


def test_an_unknown_density_activation_is_refused_in_one_line(run_cli):
    r = run_cli("experiment=smoke", "task=nerf", "task.density_activation=exp")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == ("ffrun: error: task.density_activation=exp: not a density "
                                                 "activation; use relu, softplus, trunc_exp")
