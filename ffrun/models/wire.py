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


def gabor(z: Tensor, w0: float, s0: float) -> Tensor:
    """exp(i w0 z - |s0 z|^2) for real or complex z, as the reference code writes it (autograd's graph; the
    training path computes it on real planes, `PlanarGabor`)."""
    return torch.exp(1j * w0 * z - (s0 * z).abs().square())


def exp_floor(dtype: torch.dtype) -> float:
    """The exponent below which exp leaves the normal floating-point range (at float32 e^-86.8 = 1.9e-38). The
    window's exp(-s0^2 |z|^2) reaches it at |z| > 0.93 with s0 = 10, and exp slows ~50x on results below it
    (measured, torch 2.13 CPU); clamped there, an envelope of < 2e-38 stays at 2e-38, which changes no sum."""
    return math.log(torch.finfo(dtype).tiny) + 0.5


def envelope(a: Tensor, b: Tensor | None, w0: float, s0: float) -> Tensor:
    """|psi| = E = exp(-w0 b - s0^2 (a^2 + b^2)) for z = a + ib (b None: a real z), its exponent floored at
    `exp_floor`."""
    log_e = a.square()
    if b is not None:
        log_e.add_(b.square()).mul_(-s0 * s0).sub_(b, alpha=w0)
    else:
        log_e.mul_(-s0 * s0)
    return log_e.clamp_(min=exp_floor(log_e.dtype)).exp_()


class PlanarGabor(torch.autograd.Function):
    """psi(z) = exp(i w0 z - |s0 z|^2) = E e^{i w0 a}, E = exp(-w0 b - s0^2 (a^2 + b^2)) for z = a + ib, on complex
    numbers stored as planes: z = [a | b] (..., 2H) with a, b the real and imaginary parts
    (b absent, (..., H), for a real z), psi = [E cos(w0 a) | E sin(w0 a)] (..., 2H). Every pass reads and
    writes real, contiguous rows, and the layers around it are real matrix products (`Wire.forward`).

    Backward, with the incoming gradient [g_r | g_i], R = g_r p_r + g_i p_i and I = g_i p_r - g_r p_i:
        dL/da = -2 s0^2 a R + w0 I,     dL/db = -(2 s0^2 b + w0) R."""

    @staticmethod
    def forward(ctx, z: Tensor, w0: float, s0: float, complex_input: bool) -> Tensor:
        h = z.shape[-1] // 2 if complex_input else z.shape[-1]
        a = z[..., :h]
        e = envelope(a, z[..., h:] if complex_input else None, w0, s0)
        theta = a * w0
        psi = torch.cat([torch.cos(theta).mul_(e), theta.sin_().mul_(e)], dim=-1)
        ctx.save_for_backward(z, psi)
        ctx.w0, ctx.s0, ctx.complex_input = w0, s0, complex_input
        return psi

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        z, psi = ctx.saved_tensors
        w0, s0 = ctx.w0, ctx.s0
        h = psi.shape[-1] // 2
        gr, gi, pr, pi = grad[..., :h], grad[..., h:], psi[..., :h], psi[..., h:]
        r = gr * pr
        r.addcmul_(gi, pi)
        ga = gi * pr
        ga.addcmul_(gr, pi, value=-1.0).mul_(w0)  # w0 I
        a = z[..., :h]
        ga.addcmul_(a, r, value=-2 * s0 * s0)
        if not ctx.complex_input:
            return ga, None, None, None
        gb = z[..., h:].mul(-2 * s0 * s0).sub_(w0).mul_(r)
        return torch.cat([ga, gb], dim=-1), None, None, None


def planar_weight(layer: nn.Linear, last: bool = False) -> tuple[Tensor, Tensor]:
    """A complex Linear as one real product on planes: [z_r | z_i] = [h_r | h_i] M^T + [b_r | b_i] with
    M = [[W_r, -W_i], [W_i, W_r]]; the output layer keeps only the real row block [W_r, -W_i] and b_r."""
    wr, wi = layer.weight.real, layer.weight.imag
    top = torch.cat([wr, -wi], dim=1)
    if last:
        return top, layer.bias.real
    return torch.cat([top, torch.cat([wi, wr], dim=1)], dim=0), torch.cat([layer.bias.real, layer.bias.imag])


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
        if torch._C._are_functorch_transforms_active() or x.is_complex() or (x.requires_grad
                                                                             and torch.is_grad_enabled()):
            return self.forward_complex(x)  # autograd's own graph (transforms, a gradient in the points)
        # complex activations as real planes [Re | Im]: real products and contiguous elementwise passes
        h = PlanarGabor.apply(self.first(x), self.w0, self.s0, False)
        for layer in self.hidden:
            weight, bias = planar_weight(layer)
            h = PlanarGabor.apply(nn.functional.linear(h, weight.to(h.dtype), bias.to(h.dtype)), self.w0, self.s0,
                                  True)
        weight, bias = planar_weight(self.last, last=True)
        y = nn.functional.linear(h, weight.to(h.dtype), bias.to(h.dtype))
        return torch.sigmoid(y) if self.out_activation == "sigmoid" else y

    def forward_complex(self, x: Tensor) -> Tensor:
        """The same function in complex arithmetic, as the reference code computes it (and under torch.func's
    transforms, which PlanarGabor's hand-written backward does not follow)."""
        h = gabor(self.first(x), self.w0, self.s0)
        for layer in self.hidden:
            h = gabor(layer(h), self.w0, self.s0)
        y = self.last(h).real
        return torch.sigmoid(y) if self.out_activation == "sigmoid" else y


def _check(cfg) -> str | None:
    if cfg.linear_last_hidden:
        return "model.linear_last_hidden applies to model=mlp only; WIRE's layers are all Gabor wavelets"
    if cfg.depth < 2 or not cfg.w0 > 0 or not cfg.s0 > 0 or cfg.width < 2:
        return "WIRE needs model.depth >= 2, model.width >= 2, model.w0 > 0 and model.s0 > 0"
    return None


@register_network("wire", WireConfig, Budget("model.width", 2, 1 << 15), _check)
def build_wire(cfg, in_dim: int, spec: FieldSpec) -> nn.Module:
    return Wire(in_dim, spec.out_dim, cfg.depth, cfg.width, cfg.w0, cfg.s0, spec.out_activation)
