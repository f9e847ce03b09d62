"""A field: encoding + MLP, the coordinate network a task trains and `ffrun` saves."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn

from ffrun.models.encodings import build_encoding
from ffrun.models.mlp import MLP


class Field(nn.Module):
    """f(v) = MLP(gamma(v)) for coordinates v of shape (..., in_dim)."""

    def __init__(self, encoding: nn.Module, mlp: MLP):
        super().__init__()
        self.encoding = encoding
        self.mlp = mlp
        self.in_dim = encoding.in_dim
        self.out_dim = mlp.out_dim

    # Static features above this size are recomputed each step instead of kept (memory over speed).
    STATIC_CACHE_BYTES = 1 << 30
    # trainer.precision=bf16: the network (not the encoding) runs under autocast to this dtype while the
    # field is in training mode. Its output is cast back to the features' dtype (float32), so the loss, the
    # backward pass and the optimizer step run outside autocast (PyTorch's guidance), and evaluation (eval
    # mode) stays float32.
    autocast_dtype: torch.dtype | None = None

    def network_precision(self, device: torch.device):
        """The context the network's forward runs in: autocast while training at reduced precision."""
        return network_autocast(device, self.autocast_dtype if self.training else None)

    def forward(self, v: Tensor) -> Tensor:
        g = self.encoding(v)
        with self.network_precision(g.device):
            out = self.from_features(g)
        return out.to(g.dtype)

    def from_features(self, g: Tensor) -> Tensor:
        """The network applied to encoded coordinates gamma(v)."""
        return self.mlp(g)

    def forward_static(self, v: Tensor) -> Tensor:
        """f(v) for coordinates that stay the same from step to step (a full-batch training set).

        gamma(v) has no trainable parameters, so it is computed once and kept (outside autograd) while v
        and B are unchanged, instead of 2m sines and cosines per point at every step."""
        B = getattr(self.encoding, "B", None)
        key = (v.data_ptr(), tuple(v.shape), v.device, None if B is None else (B.data_ptr(), B._version))
        cached = self.__dict__.get("_static")
        if cached is None or cached[0] != key:
            if v.numel() // v.shape[-1] * (self.encoding.out_dim + 1) * 4 > self.STATIC_CACHE_BYTES:
                return self(v)
            with torch.no_grad():
                g = self.encoding(v)
                # kept as [gamma(v), 1] so the first layer's bias joins its matrix product
                cached = (key, torch.cat([g, torch.ones_like(g[..., :1])], dim=-1))
            self.__dict__["_static"] = cached
        with self.network_precision(v.device):
            if type(self).from_features is not Field.from_features:  # a subclass changes the head
                out = self.from_features(cached[1][..., :-1])
            else:
                out = self.mlp.forward_augmented(cached[1])
        return out.to(cached[1].dtype)

    @torch.no_grad()
    def predict(self, v: Tensor, chunk: int = 65536) -> Tensor:
        """Evaluate without gradients in chunks of points, so any resolution fits in bounded memory."""
        flat = v.reshape(-1, v.shape[-1])
        out = torch.cat([self(flat[i : i + chunk]) for i in range(0, flat.shape[0], chunk)])
        return out.reshape(*v.shape[:-1], self.out_dim)


def network_autocast(device: torch.device, dtype: torch.dtype | None):
    """autocast to `dtype` on `device`'s kind, or nothing when dtype is None."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def build_field(
    encoding_cfg,
    model_cfg,
    in_dim: int,
    out_dim: int,
    out_activation: str,
    seed: int,
    grid_shape: tuple[int, ...] | None = None,
) -> nn.Module:
    """Build encoding and MLP from their configs; B and the weights are drawn from `seed` on the CPU.

    `encoding.name == "grid"` gives the no-network baseline over the task's `grid_shape` instead."""
    if encoding_cfg.name == "grid":
        from ffrun.models.grid import GridField

        if grid_shape is None:
            from ffrun.errors import FfrunError

            raise FfrunError("encoding=grid is the pixel/voxel baseline of the ct and mri tasks; this task has no "
                             "grid to optimise, choose none, basic, posenc or gauss")
        return GridField(grid_shape, out_dim, out_activation if encoding_cfg.logits else "none")
    generator = torch.Generator().manual_seed(seed)
    encoding = build_encoding(
        encoding_cfg.name,
        in_dim,
        m=encoding_cfg.m,
        sigma=encoding_cfg.sigma,
        scale=encoding_cfg.scale,
        two_pi=encoding_cfg.two_pi,
        normalize=encoding_cfg.normalize,
        generator=generator,
        center=encoding_cfg.center,
        levels=encoding_cfg.levels,
        offset=encoding_cfg.offset,
    )
    torch.manual_seed(seed + 1)  # the MLP init uses the global generator; offset it from B's draw
    mlp = MLP(encoding.out_dim, out_dim, model_cfg.depth, model_cfg.width, out_activation, model_cfg.init,
              model_cfg.parametrization, model_cfg.w_std, model_cfg.b_std)
    return Field(encoding, mlp)
