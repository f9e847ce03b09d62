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
    """y = sin(u), u = w0 (x W^T + b), on inputs that carry a column of ones, x1 = [x, 1]: u = x1 (w0 [W, b])^T
    is one matrix product with the bias inside it (no pass broadcasting it into u), and with `ones_out` the
    output is [sin(u), 1], ready for the next layer.

    The backward keeps u alone (x1 is the previous layer's output, kept anyway) and makes one elementwise pass,
    g_u = cos(u) * g_y; then g_x1 = g_u (w0 [W, b]) and [g_W, g_b] = w0 g_u^T x1, the bias gradient inside the
    weight-gradient product (no reduction pass over the points). The plain composition of Linear, a scaling
    and sin makes five activation-sized passes a layer each way."""

    @staticmethod
    def forward(ctx, x1: Tensor, weight: Tensor, bias: Tensor, w0: float, ones_out: bool) -> Tensor:
        wb = torch.cat([weight, bias[:, None]], dim=1).mul_(w0)  # (out, in + 1)
        u = torch.mm(x1, wb.t())  # under autocast (trainer.precision=bf16): bfloat16
        if ones_out:
            y = torch.empty(u.shape[0], u.shape[1] + 1, dtype=u.dtype, device=u.device)
            y[:, -1] = 1
            torch.sin(u, out=y[:, :-1])
        else:
            y = torch.sin(u)
        ctx.save_for_backward(x1, wb, u)
        ctx.w0, ctx.ones_out = w0, ones_out
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x1, wb, u = ctx.saved_tensors
        # u's dtype for every product (bfloat16 under autocast); autograd casts each gradient back to its
        # parameter's dtype
        g = grad[:, :-1] if ctx.ones_out else grad
        gu = torch.cos(u).mul_(g.to(u.dtype))
        gx1 = torch.mm(gu, wb.to(u.dtype)) if ctx.needs_input_grad[0] else None
        gw = gb = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            gwb = torch.mm(gu.t(), x1.to(u.dtype)).mul_(ctx.w0)
            gw, gb = gwb[:, :-1].contiguous(), gwb[:, -1].contiguous()
        return gx1, gw, gb, None, None


class SineLayer(nn.Module):
    """sin(w0 (W x + b)) with SIREN's initialisation (first layer or later); `Siren.forward` runs it fused
    (`SineLinear`), this forward is the plain composition."""

    def __init__(self, in_dim: int, out_dim: int, w0: float, first: bool):
        super().__init__()
        self.w0 = w0
        self.linear = nn.Linear(in_dim, out_dim)
        bound = 1.0 / in_dim if first else math.sqrt(6.0 / in_dim) / w0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.w0 * self.linear(x))


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
        if torch._C._are_functorch_transforms_active():  # vmap/jacrev (empirical kernels): autograd's own graph
            return self.forward_plain(x)
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_dim)
        h = torch.cat([flat, torch.ones_like(flat[:, :1])], dim=1)  # [x, 1]: every bias rides in its product
        for layer in self.layers:
            h = SineLinear.apply(h, layer.linear.weight, layer.linear.bias, layer.w0, True)
        if self.sine_output:
            y = SineLinear.apply(h, self.last.weight, self.last.bias, self.w0, False)
        else:
            y = torch.mm(h, torch.cat([self.last.weight, self.last.bias[:, None]], dim=1).t())
        y = y.reshape(*lead, self.out_dim)
        return torch.sigmoid(y) if self.out_activation == "sigmoid" else y

    def forward_plain(self, x: Tensor) -> Tensor:
        """The same function as the reference code composes it (Linear, scaling, sin)."""
        y = self.last(self.layers(x))
        if self.sine_output:
            y = torch.sin(self.w0 * y)
        return torch.sigmoid(y) if self.out_activation == "sigmoid" else y


def _check(cfg) -> str | None:
    return "SIREN needs model.depth >= 2 and model.w0 > 0" if cfg.depth < 2 or not cfg.w0 > 0 else None


@register_network("siren", SirenConfig, Budget("model.width", 1, 1 << 15), _check)
def build_siren(cfg, in_dim: int, spec: FieldSpec) -> nn.Module:
    return Siren(in_dim, spec.out_dim, cfg.depth, cfg.width, cfg.w0, spec.out_activation, cfg.sine_output)
