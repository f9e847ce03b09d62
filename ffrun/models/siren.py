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
from ffrun.models.fused import augmented_linear, with_ones
from ffrun.models.registry import Budget, FieldSpec, register_network


@dataclass
class SirenConfig(ModelConfig):
    name: str = "siren"
    depth: int = 5
    width: int = 256
    w0: float = 30.0  # the frequency factor of every sine layer (first and hidden, as the reference)
    # the output layer a sine layer too, sin(w0 (W h + b)) (the Grids benchmark's SIREN); false = linear
    sine_output: bool = False


class SineLayer(nn.Module):
    """sin(w0 (W x + b)) with SIREN's initialisation (first layer or later); `Siren.forward` runs it fused
    (`ffrun.models.fused`), this forward is the plain composition."""

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
        # vmap/jacrev (empirical kernels), or points that need a gradient (a loss on d/dx, differentiated again):
        # autograd's own graph, which the fused layers' single backward pass does not give
        if torch._C._are_functorch_transforms_active() or (x.requires_grad and torch.is_grad_enabled()):
            return self.forward_plain(x)
        h = with_ones(x)  # [x, 1]: every bias rides in its product (ffrun.models.fused)
        for layer in self.layers:
            h = augmented_linear(h, layer.linear, "sin", ones_out=True, scale=layer.w0)
        y = augmented_linear(h, self.last, "sin" if self.sine_output else "linear", scale=self.w0 if self.sine_output
                             else 1.0)
        y = y.reshape(*x.shape[:-1], self.out_dim)
        return torch.sigmoid(y) if self.out_activation == "sigmoid" else y

    def forward_plain(self, x: Tensor) -> Tensor:
        """The same function as the reference code composes it (Linear, scaling, sin)."""
        y = self.last(self.layers(x))
        if self.sine_output:
            y = torch.sin(self.w0 * y)
        return torch.sigmoid(y) if self.out_activation == "sigmoid" else y


def _check(cfg) -> str | None:
    if cfg.linear_last_hidden:
        return "model.linear_last_hidden applies to model=mlp only; SIREN's layers are all sines"
    return "SIREN needs model.depth >= 2 and model.w0 > 0" if cfg.depth < 2 or not cfg.w0 > 0 else None


@register_network("siren", SirenConfig, Budget("model.width", 1, 1 << 15), _check)
def build_siren(cfg, in_dim: int, spec: FieldSpec) -> nn.Module:
    return Siren(in_dim, spec.out_dim, cfg.depth, cfg.width, cfg.w0, spec.out_activation, cfg.sine_output)
