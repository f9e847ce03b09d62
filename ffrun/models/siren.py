"""SIREN (Sitzmann et al. 2020): a network of sine layers on coordinates in [-1, 1] (`encoding=none` with
`encoding.center=true` maps the task's box there).

    h_1 = sin(w0 (W_1 x + b_1)),   h_k = sin(w0 (W_k h_{k-1} + b_k)),   y = act(W_L h_{L-1} + b_L)

Initialisation of the reference code: W_1 ~ U(-1/n, 1/n) for n inputs; every later W ~ U(-sqrt(6/n)/w0,
sqrt(6/n)/w0), so that w0 W h has unit-variance-scale arguments (the final linear layer too); biases keep
nn.Linear's default U(-1/sqrt(n), 1/sqrt(n)). `depth` counts the Linear layers (the reference's image fit:
3 hidden layers, depth 5), w0 = 30. `sine_output`: the output layer is a sine layer too (y = sin(w0 (W h + b)),
then the output activation), as the Grids benchmark's SIREN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ffrun.models.configs import ModelConfig
from ffrun.models.registry import Budget, FieldSpec, register_network


@dataclass
class SirenConfig(ModelConfig):
    name: str = "siren"
    depth: int = 5
    width: int = 256
    w0: float = 30.0  # the frequency factor of every sine layer (first and hidden, as the reference)
    # the output layer a sine layer too, sin(w0 (W h + b)) (the Grids benchmark's SIREN); false = linear
    sine_output: bool = False


class SineLinear(torch.autograd.Function):
    """y = sin(u), u = w0 (x W^T + b), as one product and one elementwise pass each way.

    The factor w0 rides in the product (addmm's alpha and beta), so the forward is one addmm and one sine; the
    backward keeps u alone (x is the previous layer's output, kept anyway) and makes one pass for
    g_u = cos(u) * g_y, then g_x = g_u (w0 W), g_W = w0 g_u^T x, g_b = w0 sum g_u: no activation-sized
    temporary beyond u, y and g_u, where the plain composition of Linear, a scaling and sin makes five."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, w0: float) -> Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        u = torch.addmm(bias, x2, weight.t(), beta=w0, alpha=w0)
        ctx.save_for_backward(x2, weight, u)
        ctx.w0, ctx.lead = w0, lead
        return torch.sin(u).view(*lead, weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x2, weight, u = ctx.saved_tensors
        w0 = ctx.w0
        # u is bfloat16 where the forward ran under autocast (trainer.precision=bf16): the backward's products
        # take u's dtype too, and autograd casts each gradient back to its parameter's dtype
        gu = torch.cos(u).mul_(grad.reshape(u.shape).to(u.dtype))
        gx = torch.mm(gu, (weight * w0).to(u.dtype)).view(*ctx.lead, weight.shape[1]) if ctx.needs_input_grad[0] \
            else None
        gw = torch.mm(gu.t(), x2.to(u.dtype)).mul_(w0) if ctx.needs_input_grad[1] else None
        gb = gu.sum(0).mul_(w0) if ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


def sine_linear(x: Tensor, linear: nn.Linear, w0: float) -> Tensor:
    """sin(w0 (W x + b)) through the fused layer (`SineLinear`); the plain composition under torch.func's
    transforms (vmap, jacrev: empirical kernels), which a hand-written backward does not follow."""
    if torch._C._are_functorch_transforms_active():
        return torch.sin(w0 * linear(x))
    return SineLinear.apply(x, linear.weight, linear.bias, w0)


class SineLayer(nn.Module):
    """sin(w0 (W x + b)) with SIREN's initialisation (first layer or later); fused (`SineLinear`)."""

    def __init__(self, in_dim: int, out_dim: int, w0: float, first: bool):
        super().__init__()
        self.w0 = w0
        self.linear = nn.Linear(in_dim, out_dim)
        bound = 1.0 / in_dim if first else math.sqrt(6.0 / in_dim) / w0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return sine_linear(x, self.linear, self.w0)


class Siren(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, depth: int = 5, width: int = 256, w0: float = 30.0,
                 out_activation: str = "none", sine_output: bool = False):
        super().__init__()
        if depth < 2:
            raise ValueError("SIREN needs model.depth >= 2 (a sine layer and the output layer)")
        self.in_dim, self.out_dim, self.out_activation = in_dim, out_dim, out_activation
        layers = [SineLayer(in_dim, width, w0, first=True)]
        layers += [SineLayer(width, width, w0, first=False) for _ in range(depth - 2)]
        self.layers = nn.Sequential(*layers)
        self.sine_output = sine_output
        last = SineLayer(width, out_dim, w0, first=False)  # the same initialisation, linear or sine
        self.last = last.linear
        self.w0 = w0

    def forward(self, x: Tensor) -> Tensor:
        h = self.layers(x)
        y = sine_linear(h, self.last, self.w0) if self.sine_output else self.last(h)
        return torch.sigmoid(y) if self.out_activation == "sigmoid" else y


def _check(cfg) -> str | None:
    return "SIREN needs model.depth >= 2 and model.w0 > 0" if cfg.depth < 2 or not cfg.w0 > 0 else None


@register_network("siren", SirenConfig, Budget("model.width", 1, 1 << 15), _check)
def build_siren(cfg, in_dim: int, spec: FieldSpec) -> nn.Module:
    return Siren(in_dim, spec.out_dim, cfg.depth, cfg.width, cfg.w0, spec.out_activation, cfg.sine_output)
