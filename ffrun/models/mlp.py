"""The coordinate MLP of the paper: (depth - 1) x [Linear(width) + ReLU], then Linear + output activation.

Two parametrizations of the same function family:
- standard: nn.Linear, y = W x + b, initialised as the notebooks' stax.Dense (`glorot`) or as PyTorch does;
- ntk:      y = (w_std / sqrt(fan_in)) W x + b_std b with W, b ~ N(0, 1) (Jacot et al. 2018; the
            default of neural_tangents' stax, which the paper's NTK notebooks use). Its empirical NTK
            converges to the closed-form kernel in `ffrun.sigma.kernels` as the width grows.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ffrun.models.fused import augmented_linear

OUT_ACTIVATIONS = ("sigmoid", "none")


# Standard deviation of N(0, 1) truncated to [-2, 2]; JAX's variance_scaling divides by it so that the
# truncated draw keeps the requested variance.
TRUNCATED_NORMAL_STD = 0.87962566103423978


@torch.no_grad()
def stax_dense_init_(layer: nn.Linear) -> None:
    """The init of jax.example_libraries.stax.Dense: weights glorot_normal, i.e. variance_scaling(1.0,
    "fan_avg", "truncated_normal"): N(0, s^2) truncated to [-2 s, 2 s] with s = sqrt(2 / (fan_in + fan_out))
    / 0.8796..., so the weights' variance is 2 / (fan_in + fan_out); biases normal() = N(0, 1e-2^2)."""
    fan_out, fan_in = layer.weight.shape
    s = math.sqrt(2.0 / (fan_in + fan_out)) / TRUNCATED_NORMAL_STD
    nn.init.trunc_normal_(layer.weight, mean=0.0, std=s, a=-2.0 * s, b=2.0 * s)
    nn.init.normal_(layer.bias, mean=0.0, std=1e-2)


class NTKLinear(nn.Module):
    """y = (w_std / sqrt(fan_in)) x W^T + b_std b, with W and b drawn from N(0, 1)."""

    def __init__(self, fan_in: int, fan_out: int, w_std: float = math.sqrt(2.0), b_std: float = 0.1):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fan_out, fan_in))
        self.bias = nn.Parameter(torch.randn(fan_out))
        self.w_scale = w_std / math.sqrt(fan_in)
        self.b_std = b_std
        self.in_features, self.out_features = fan_in, fan_out

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.w_scale, self.bias * self.b_std)


class MLP(nn.Module):
    """h_0 = x; h_k = ReLU(W_k h_{k-1} + b_k) for k = 1..depth-1; y = act(W_depth h_{depth-1} + b_depth),
    act = sigmoid or identity. Shapes: (..., in_dim) -> (..., out_dim). linear_last_hidden: h_{depth-1} without
    its ReLU (the Grids benchmark's FourFeat)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        depth: int = 4,
        width: int = 256,
        out_activation: str = "sigmoid",
        init: str = "glorot",
        parametrization: str = "standard",
        w_std: float = math.sqrt(2.0),
        b_std: float = 0.1,
        linear_last_hidden: bool = False,
    ):
        super().__init__()
        if out_activation not in OUT_ACTIVATIONS:
            raise ValueError(f"unknown output activation {out_activation!r}; choose from {OUT_ACTIVATIONS}")
        if parametrization == "ntk":
            linear = lambda i, o: NTKLinear(i, o, w_std, b_std)  # noqa: E731
        elif parametrization == "standard":
            linear = nn.Linear
        else:
            raise ValueError(f"unknown parametrization {parametrization!r}; choose standard or ntk")
        layers: list[nn.Module] = []
        d = in_dim
        for k in range(depth - 1):
            layers.append(linear(d, width))
            if not (linear_last_hidden and k == depth - 2):
                layers.append(nn.ReLU(inplace=True))  # in place: one activation buffer less per layer
            d = width
        layers.append(linear(d, out_dim))
        self.net = nn.Sequential(*layers)
        self.out_activation = out_activation
        self.in_dim, self.out_dim = in_dim, out_dim
        if parametrization == "ntk":
            pass  # N(0, 1) weights and biases, scaled in forward
        elif init == "glorot":
            # stax.Dense, which the authors' notebooks use; PyTorch's default init trains measurably differently.
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    stax_dense_init_(layer)
        elif init != "torch":
            raise ValueError(f"unknown init {init!r}; choose glorot or torch")

    # trainer.fp32_layers: under bf16 autocast, these Linear layers ("first", "last") still multiply in float32
    fp32_layers: tuple[str, ...] = ()

    def _full_precision(self, which: str, y: Tensor) -> bool:
        return which in self.fp32_layers and torch.is_autocast_enabled(y.device.type)

    def _layer(self, layer: nn.Module, y: Tensor, which: str) -> Tensor:
        if self._full_precision(which, y):
            with torch.autocast(y.device.type, enabled=False):
                return layer(y.float())
        return layer(y)

    def _rest(self, y: Tensor, start: int) -> Tensor:
        last = len(self.net) - 1
        for i in range(start, len(self.net)):
            which = "last" if i == last and not (i == 0 and self._full_precision("first", y)) else \
                "first" if i == 0 else ""
            y = self._layer(self.net[i], y, which)
        return torch.sigmoid(y) if self.out_activation == "sigmoid" else y

    def forward(self, x: Tensor) -> Tensor:  # (..., in_dim) -> (..., out_dim)
        if not self.fp32_layers:
            y = self.net(x)
            return torch.sigmoid(y) if self.out_activation == "sigmoid" else y
        return self._rest(x, 0)

    def forward_augmented(self, x1: Tensor) -> Tensor:  # (..., in_dim + 1) -> (..., out_dim)
        """The same function of x given x1 = [x, 1]: every layer's bias rides inside its matrix product
        (W x + b = [W, b] [x, 1]) and each hidden layer hands the next [ReLU(u), 1] (`ffrun.models.fused`), which
        saves a pass broadcasting each bias into its output and a pass summing each bias gradient over the
        points (measured in docs/performance.md)."""
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        if not linears or len(self.net) != 2 * len(linears) - 1:  # NTK layers, or a linear last hidden layer
            return self._rest(x1[..., :-1], 0) if self.fp32_layers else self(x1[..., :-1])
        lead = x1.shape[:-1]
        h = x1.reshape(-1, x1.shape[-1])
        for i, layer in enumerate(linears):
            last = i == len(linears) - 1
            full = self._full_precision("last", h) if last else False
            full = full or (i == 0 and self._full_precision("first", h))
            with torch.autocast(h.device.type, enabled=False) if full else nullcontext():
                h = augmented_linear(h.float() if full else h, layer, "linear" if last else "relu", ones_out=not last)
        y = h.reshape(*lead, self.out_dim)
        return torch.sigmoid(y) if self.out_activation == "sigmoid" else y


class Direct(nn.Module):
    """No network: the encoding's features are the outputs, through the task's output activation (a dense
    grid storing the signal itself, as in the Grids paper)."""

    def __init__(self, in_dim: int, out_dim: int, out_activation: str = "none"):
        super().__init__()
        if in_dim != out_dim:
            raise ValueError(f"model=direct needs the encoding to give the task's {out_dim} outputs, not {in_dim} "
                             "features; use a network (model=mlp) or encoding.features=null")
        self.in_dim, self.out_dim, self.out_activation = in_dim, out_dim, out_activation

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x) if self.out_activation == "sigmoid" else x


def _check(cfg) -> str | None:
    """The NTK parametrization's scales are standard deviations: w_std > 0 (0 would be a constant network),
    b_std >= 0. Refused under either parametrization: a negative one is a typo whatever it currently drives."""
    if cfg.linear_last_hidden and cfg.depth < 2:
        return (f"model.linear_last_hidden=true needs a hidden layer (model.depth >= 2, not {cfg.depth}); "
                "leave it false")
    if not cfg.w_std > 0:
        return f"model.w_std={cfg.w_std!r} is out of range: use w_std > 0 (a standard deviation; default sqrt(2))"
    if not cfg.b_std >= 0:
        return f"model.b_std={cfg.b_std!r} is out of range: use b_std >= 0 (a standard deviation; default 0.1)"
    return None


def _register() -> None:
    from ffrun.models.configs import ModelConfig
    from ffrun.models.registry import Budget, register_network

    @register_network("mlp", ModelConfig, Budget("model.width", 1, 1 << 15), _check)
    def build_mlp(cfg, in_dim: int, spec) -> nn.Module:
        return MLP(in_dim, spec.out_dim, cfg.depth, cfg.width, spec.out_activation, cfg.init, cfg.parametrization,
                   cfg.w_std, cfg.b_std, cfg.linear_last_hidden)

    @register_network("direct", ModelConfig)
    def build_direct(cfg, in_dim: int, spec) -> nn.Module:
        return Direct(in_dim, spec.out_dim, spec.out_activation)


_register()
