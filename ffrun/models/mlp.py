"""The coordinate MLP of the paper: (depth - 1) x [Linear(width) + ReLU], then Linear + output activation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

OUT_ACTIVATIONS = ("sigmoid", "none")


class MLP(nn.Module):
    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        depth: int = 4,
        width: int = 256,
        out_activation: str = "sigmoid",
        init: str = "glorot",
    ):
        super().__init__()
        if out_activation not in OUT_ACTIVATIONS:
            raise ValueError(f"unknown output activation {out_activation!r}; choose from {OUT_ACTIVATIONS}")
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth - 1):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        layers.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*layers)
        self.out_activation = out_activation
        self.in_dim, self.out_dim = in_dim, out_dim
        if init == "glorot":
            # jax.example_libraries.stax.Dense, which the authors' notebooks use: Glorot-normal weights
            # and N(0, 1e-6^2) biases. PyTorch's default init trains measurably differently.
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_normal_(layer.weight)
                    nn.init.normal_(layer.bias, std=1e-6)
        elif init != "torch":
            raise ValueError(f"unknown init {init!r}; choose glorot or torch")

    def forward(self, x: Tensor) -> Tensor:  # (..., in_dim) -> (..., out_dim)
        y = self.net(x)
        return torch.sigmoid(y) if self.out_activation == "sigmoid" else y
