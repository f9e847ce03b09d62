"""WIRE (Saragadam et al. 2023): complex Gabor wavelet activations.

    psi(z) = exp(i w0 z) exp(-|s0 z|^2)

applied to every layer's pre-activation z = W h + b. The first layer takes the real coordinates (in [-1, 1],
like SIREN) and gives complex activations; the hidden layers and the output layer are complex; the output is
the real part of the last layer, through the task's output activation. As in the reference code, the hidden
width is divided by sqrt(2) (complex weights hold two numbers each) and w0 = 20, s0 = 10; the layers keep
nn.Linear's initialisation. A complex parameter counts as two in the parameter budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ffrun.models.configs import ModelConfig
from ffrun.models.registry import Budget, FieldSpec, register_network


@dataclass
class WireConfig(ModelConfig):
    name: str = "wire"
    depth: int = 4  # Linear layers: the reference's 2 hidden layers + first + output
    width: int = 256  # before the division by sqrt(2)
    w0: float = 20.0  # frequency of the wavelet
    s0: float = 10.0  # inverse width of its Gaussian window


def gabor_reference(z: Tensor, w0: float, s0: float) -> Tensor:
    """exp(i w0 z - |s0 z|^2) for real or complex z, as the reference code writes it (autograd's graph)."""
    return torch.exp(1j * w0 * z - (s0 * z).abs().square())


class Gabor(torch.autograd.Function):
    """psi(z) = exp(i w0 z - |s0 z|^2) = E e^{i w0 a}, E = exp(-w0 b - s0^2 (a^2 + b^2)) for z = a + ib (b = 0 for
    a real z), with a hand-written backward.

    For a real loss L and the incoming gradient G = dL/dRe(psi) + i dL/dIm(psi), with c = G conj(psi):
        dL/da + i dL/db = -2 s0^2 z Re(c) - i w0 c          (complex z)
        dL/da           = -2 s0^2 a Re(c) + w0 Im(c)         (real z)
    It keeps z and psi (psi is the next layer's input, kept by its product anyway), where the reference's
    graph keeps four complex tensors a layer and makes six complex passes each way."""

    @staticmethod
    def forward(ctx, z: Tensor, w0: float, s0: float) -> Tensor:
        if z.is_complex():
            zr = torch.view_as_real(z)
            a, b = zr[..., 0], zr[..., 1]
            log_e = a.square().add_(b.square()).mul_(-s0 * s0).sub_(b, alpha=w0)
        else:
            a = z
            log_e = z.square().mul_(-s0 * s0)
        psi = torch.polar(log_e.exp_(), a * w0)
        ctx.save_for_backward(z, psi)
        ctx.w0, ctx.s0 = w0, s0
        return psi

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        z, psi = ctx.saved_tensors
        w0, s0 = ctx.w0, ctx.s0
        c = grad * psi.conj()
        if z.is_complex():
            gz = c.mul_(-1j * w0).add_(z * (c.imag * (2 * s0 * s0 / w0)))  # c.imag of -i w0 c is -w0 Re(c)
        else:
            gz = c.real.mul(-2 * s0 * s0).mul_(z).add_(c.imag, alpha=w0)
        return gz, None, None


def gabor(z: Tensor, w0: float, s0: float) -> Tensor:
    """exp(i w0 z - |s0 z|^2) for real or complex z (`Gabor`; the reference's composition under torch.func's
    transforms, which a hand-written backward does not follow)."""
    if torch._C._are_functorch_transforms_active():
        return gabor_reference(z, w0, s0)
    return Gabor.apply(z, w0, s0)


class Wire(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, depth: int = 4, width: int = 256, w0: float = 20.0,
                 s0: float = 10.0, out_activation: str = "none"):
        super().__init__()
        if depth < 2:
            raise ValueError("WIRE needs model.depth >= 2 (a wavelet layer and the output layer)")
        hidden = max(1, int(width / math.sqrt(2)))
        self.in_dim, self.out_dim, self.out_activation = in_dim, out_dim, out_activation
        self.w0, self.s0 = w0, s0
        self.first = nn.Linear(in_dim, hidden)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden, dtype=torch.cfloat) for _ in range(depth - 2))
        self.last = nn.Linear(hidden, out_dim, dtype=torch.cfloat)

    def forward(self, x: Tensor) -> Tensor:
        h = gabor(self.first(x), self.w0, self.s0)
        for layer in self.hidden:
            h = gabor(layer(h), self.w0, self.s0)
        y = self.last(h).real
        return torch.sigmoid(y) if self.out_activation == "sigmoid" else y


def _check(cfg) -> str | None:
    if cfg.depth < 2 or not cfg.w0 > 0 or not cfg.s0 > 0 or cfg.width < 2:
        return "WIRE needs model.depth >= 2, model.width >= 2, model.w0 > 0 and model.s0 > 0"
    return None


@register_network("wire", WireConfig, Budget("model.width", 2, 1 << 15), _check)
def build_wire(cfg, in_dim: int, spec: FieldSpec) -> nn.Module:
    return Wire(in_dim, spec.out_dim, cfg.depth, cfg.width, cfg.w0, cfg.s0, spec.out_activation)
