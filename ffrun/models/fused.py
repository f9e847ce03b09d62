"""One Linear layer and its activation as one matrix product and one elementwise pass each way.

    y = act(u),  u = s (x W^T + b) = x1 (s [W, b])^T   on inputs that carry a column of ones, x1 = [x, 1]

The bias rides inside the product (no pass broadcasting it into u) and with `ones_out` the output is [act(u), 1],
ready for the next layer, so a network is a chain of products. The backward makes one elementwise pass,
g_u = act'(u) * g_y, then g_x1 = g_u (s [W, b]) and [g_W, g_b] = s g_u^T x1: the bias gradient is inside the
weight-gradient product (no reduction over the points). It keeps one activation-sized tensor of its own: u for
sin, y for ReLU (whose sign is the derivative; y is the next layer's input, kept anyway).

act: "relu" (the paper's MLP, s = 1), "sin" (SIREN, s = w0) or "linear" (an output layer). Under autocast
(trainer.precision=bf16) the products run in the autocast dtype, as autocast would run them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _mm(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    """a @ b for matrices (mm) or stacks of them (bmm: K members of a vectorized sweep)."""
    return (torch.mm if a.dim() == 2 else torch.bmm)(a, b, out=out)


def _t(x: Tensor) -> Tensor:
    return x.transpose(-1, -2)


def _compute_dtype(x: Tensor) -> torch.dtype:
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


class AugmentedLinear(torch.autograd.Function):
    """The layer of the module docstring; x1 (N, in + 1) with weight (out, in) and bias (out,), or a stack of K
    (K, N, in + 1) with weights (K, out, in) and biases (K, out)."""

    @staticmethod
    def forward(ctx, x1: Tensor, weight: Tensor, bias: Tensor, scale: float, act: str, ones_out: bool) -> Tensor:
        dtype = _compute_dtype(x1)
        with torch.autocast(x1.device.type, enabled=False):  # out= products: the dtype is chosen here
            wb = torch.cat([weight, bias[..., None]], dim=-1).to(dtype)
            if scale != 1.0:
                wb.mul_(scale)
            xc = x1.to(dtype)
            out_dim = wb.shape[-2]
            y = torch.empty(*xc.shape[:-1], out_dim + 1 if ones_out else out_dim, dtype=dtype, device=x1.device)
            body = y[..., :out_dim] if ones_out else y
            if ones_out:
                y[..., out_dim] = 1
            if act == "sin":
                u = _mm(xc, _t(wb))
                torch.sin(u, out=body)
                kept = u
            else:
                _mm(xc, _t(wb), out=body)
                if act == "relu":
                    body.clamp_min_(0)
                kept = y
        ctx.save_for_backward(xc, wb, kept)
        ctx.scale, ctx.act, ctx.ones_out, ctx.out_dim = scale, act, ones_out, out_dim
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        xc, wb, kept = ctx.saved_tensors
        g = (grad[..., :ctx.out_dim] if ctx.ones_out else grad).to(wb.dtype)
        if ctx.act == "sin":
            gu = torch.cos(kept).mul_(g)
        elif ctx.act == "relu":
            gu = torch.ops.aten.threshold_backward(g, kept[..., :ctx.out_dim] if ctx.ones_out else kept, 0)
        else:
            gu = g
        gx1 = _mm(gu, wb) if ctx.needs_input_grad[0] else None
        gw = gb = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            gwb = _mm(_t(gu), xc)
            if ctx.scale != 1.0:
                gwb.mul_(ctx.scale)
            gw, gb = gwb[..., :-1].contiguous(), gwb[..., -1].contiguous()
        return gx1, gw, gb, None, None, None


def augmented_linear(x1: Tensor, layer: nn.Linear | tuple[Tensor, Tensor], act: str = "linear", ones_out: bool = False,
                     scale: float = 1.0) -> Tensor:
    """act(scale (W x + b)) of x1 = [x, 1] (N, in + 1) -> (N, out) or, with ones_out, [act(...), 1] (N, out + 1);
    `layer` an nn.Linear or its (weight, bias), stacked for K members."""
    weight, bias = (layer.weight, layer.bias) if isinstance(layer, nn.Module) else layer
    return AugmentedLinear.apply(x1, weight, bias, float(scale), act, ones_out)


def with_ones(x: Tensor) -> Tensor:
    """[x, 1] of (..., d) points as (N, d + 1)."""
    flat = x.reshape(-1, x.shape[-1])
    return torch.cat([flat, torch.ones_like(flat[:, :1])], dim=1)
