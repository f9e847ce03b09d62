"""A field: network(encoding(v)), the coordinate network a task trains and `ffrun` saves."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn

from ffrun.models.mlp import MLP
from ffrun.models.registry import FieldSpec, encoding_entry, network_entry


class Field(nn.Module):
    """f(v) = network(gamma(v)) for coordinates v of shape (..., in_dim). The network (a ReLU MLP, SIREN,
    WIRE, or none) is the attribute `mlp`, the name its weights carry in checkpoints and exports."""

    sizes: dict = {}  # the sizes model.params chose (build_field), e.g. {"model.width": 181}

    def __init__(self, encoding: nn.Module, mlp: nn.Module):
        super().__init__()
        self.encoding = encoding
        self.mlp = mlp
        self.in_dim = encoding.in_dim
        self.out_dim = mlp.out_dim
        # Features can be kept between steps only when nothing in the encoding trains (not hash or dense
        # grids, not learned Fourier features).
        self.static_encoding = not any(p.requires_grad for p in encoding.parameters())

    # Static features above this size are recomputed each step instead of kept (memory over speed).
    STATIC_CACHE_BYTES = 2 << 30
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

        When gamma(v) has no trainable parameters, it is computed once and kept (outside autograd) while v
        and B are unchanged, instead of 2m sines and cosines per point at every step."""
        if not self.static_encoding:
            return self(v)
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
            if type(self).from_features is not Field.from_features or not isinstance(self.mlp, MLP):
                out = self.from_features(cached[1][..., :-1])
            else:
                out = self.mlp.forward_augmented(cached[1])
        return out.to(cached[1].dtype)

    @torch.no_grad()
    def predict(self, v: Tensor, chunk: int = 65536) -> Tensor:
        """Evaluate without gradients in chunks of points, so any resolution fits in bounded memory."""
        flat = v.reshape(-1, v.shape[-1])
        if getattr(self.encoding, "separable", False) and not any(True for _ in self.mlp.parameters()):
            # a grid read straight out (model=direct): one pass keeps a pixel lattice whole for the separable
            # path (ffrun.models.densegrid), and the outputs are all it holds
            return self(flat).reshape(*v.shape[:-1], self.out_dim)
        out = torch.cat([self(flat[i : i + chunk]) for i in range(0, flat.shape[0], chunk)])
        return out.reshape(*v.shape[:-1], self.out_dim)


def network_autocast(device: torch.device, dtype: torch.dtype | None):
    """autocast to `dtype` on `device`'s kind, or nothing when dtype is None."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def field_spec(task_cls, seed: int) -> FieldSpec:
    """The task's sizes, output activation and coordinate box (class attributes: no data needed)."""
    return FieldSpec(task_cls.in_dim, task_cls.out_dim, task_cls.out_activation,
                     tuple(getattr(task_cls, "bounds", (0.0, 1.0))), seed)


def build_field(
    encoding_cfg,
    model_cfg,
    in_dim: int,
    out_dim: int,
    out_activation: str,
    seed: int,
    grid_shape: tuple[int, ...] | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> nn.Module:
    """Build the encoding and the network named by their configs (ffrun.models.registry); B, tables and
    weights are drawn from `seed` on the CPU. With `model.params` set, the method's size knob is chosen to
    meet that budget first (ffrun.models.budget); the sizes chosen are in `field.sizes`.

    `encoding.name == "grid"` gives the no-network baseline over the task's `grid_shape` instead."""
    if encoding_cfg.name == "grid":
        from ffrun.models.grid import GridField

        if grid_shape is None:
            from ffrun.util.errors import FfrunError

            raise FfrunError("encoding=grid is the pixel/voxel baseline of the ct and mri tasks; this task has no "
                             "grid to optimise: choose another encoding (encoding=densegrid is a grid at any "
                             "resolution for every task)")
        if getattr(model_cfg, "params", None) is not None:
            from ffrun.util.errors import FfrunError

            raise FfrunError("encoding=grid has one value per pixel of the task, so model.params cannot size it; "
                             "use encoding=densegrid model=direct for a grid sized by the budget")
        if getattr(model_cfg, "out_activation", None) is not None:
            from ffrun.util.errors import FfrunError

            raise FfrunError(f"model.out_activation={model_cfg.out_activation} has no effect with encoding=grid (no "
                             "network): encoding.logits=true passes its values through the task's output activation, "
                             "false takes them as they are; drop model.out_activation")
        return GridField(grid_shape, out_dim, out_activation if encoding_cfg.logits else "none")
    if getattr(model_cfg, "out_activation", None) is not None:
        out_activation = model_cfg.out_activation
    spec = FieldSpec(in_dim, out_dim, out_activation, tuple(bounds), seed)
    sizes: dict = {}
    if getattr(model_cfg, "params", None) is not None:
        from ffrun.models.budget import meet_budget

        encoding_cfg, model_cfg, sizes = meet_budget(encoding_cfg, model_cfg, spec, assemble)
    field = assemble(encoding_cfg, model_cfg, spec)
    field.sizes = sizes
    return field


def assemble(encoding_cfg, model_cfg, spec: FieldSpec) -> "Field":
    """Field(network(encoding)) from their configs as given (no budget)."""
    from ffrun.util.errors import FfrunError

    build_encoding = encoding_entry(encoding_cfg.name).build  # unknown names: one line (FfrunError)
    build_network = network_entry(getattr(model_cfg, "name", "mlp")).build
    try:
        encoding = build_encoding(encoding_cfg, spec)
        torch.manual_seed(spec.seed + 1)  # network inits use the global generator; offset it from B's draw
        network = build_network(model_cfg, encoding.out_dim, spec)
    except ValueError as e:
        raise FfrunError(f"config: {e}") from None
    return Field(encoding, network)
