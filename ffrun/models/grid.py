"""The `grid` baseline: the pixel or voxel values themselves are the parameters (no network).

The paper optimises such a grid through the same forward model (CT projections, masked FFT) to show
what the coordinate MLP adds. As in the notebooks (`train_gridopt`), the parameters are logits: the
image is act(values) with the task's output activation (sigmoid for CT and MRI), and the logits start
at zero, so the first image is sigmoid(0) = 0.5 everywhere. Coordinates in [0, 1)^d are mapped to the
nearest grid cell, so on the task's own pixel/voxel grid the field returns exactly act(stored values).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GridField(nn.Module):
    def __init__(self, shape: tuple[int, ...], out_dim: int = 1, out_activation: str = "none", init: float = 0.0):
        super().__init__()
        self.shape = tuple(shape)
        self.in_dim = len(shape)
        self.out_dim = out_dim
        self.out_activation = out_activation
        self.values = nn.Parameter(torch.full((*self.shape, out_dim), float(init)))
        self.register_buffer("strides", torch.tensor([int(torch.tensor(self.shape[i + 1:]).prod()) for i in
                                                       range(self.in_dim)], dtype=torch.long), persistent=False)

    def forward(self, v: Tensor) -> Tensor:  # (..., d) -> (..., out_dim)
        size = torch.tensor(self.shape, device=v.device)
        idx = torch.minimum(torch.floor(v * size + 1e-4).long().clamp_min(0), size - 1)
        flat = (idx * self.strides).sum(-1)
        out = self.values.reshape(-1, self.out_dim)[flat.reshape(-1)].reshape(*v.shape[:-1], self.out_dim)
        return torch.sigmoid(out) if self.out_activation == "sigmoid" else out

    def forward_static(self, v: Tensor) -> Tensor:  # no encoding to keep: the same as forward
        return self(v)

    @torch.no_grad()
    def predict(self, v: Tensor, chunk: int = 1 << 18) -> Tensor:
        return self(v)
