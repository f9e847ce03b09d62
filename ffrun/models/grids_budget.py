"""The Grids benchmark's sizing rule (`model.budget_rule=grids`): the sizes "Grids Often Outperform Implicit Neural
Representations" (NeurIPS 2025, code voilalab/INR-benchmark) gives each method for a parameter budget P, so a
run has the benchmark's sizes and its published numbers can be compared with ffrun's.

- ReLU MLP on Fourier features (its FFN), SIREN and WIRE: the hidden width is the benchmark's
  `calc_layer_width`: the largest w with L w^2 + b w + (n_in + n_out) <= P, b = n_in + n_out + L, for L hidden
  layers, n_in the network's input (2m for m Fourier features: B is not counted) and n_out the outputs.
  WIRE solves it for P / 2 (a complex weight holds two numbers; `max_params //= 2` in its code), and its width
  is the complex layers' width.
- Grid: floor(sqrt(P / 3)) vertices per axis for the three colour channels. The benchmark repository's grid.py
  sizes floor(sqrt(P)) per channel, which does not give its published table; this rule does (57 x 57 x 3 at
  1e4 gives the published 21.92 dB, 100 x 100 x 3 at 3e4 gives 24.04 against 24.06). For d dimensions and C
  channels: floor((P / C)^(1/d)).
- Instant-NGP: 2^floor(log2((P - D) / (L F))) table entries per level, D = (L F + 1 + n_out) w + n_out the
  decoder the benchmark counts, L F the encoding's outputs (its tiny-cuda-nn config: 16 levels x 2 features,
  a 64-wide decoder).

`benchmark_params` is the count the benchmark's `count_parameters` prints for that model: every trainable
tensor's number of elements, so a complex WIRE weight counts once (ffrun's own count, `params`, counts it twice).
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

RULES = ("ffrun", "grids")


def layer_width(n_in: int, n_out: int, hidden_layers: int, budget: float) -> int:
    """The benchmark's calc_layer_width: floor of the positive root of L w^2 + (n_in + n_out + L) w + (n_in +
    n_out - P) = 0."""
    a = hidden_layers
    b = n_in + n_out + hidden_layers
    c = n_in + n_out - budget
    if a == 0:  # no hidden layer: the equation is linear (its limit as L -> 0)
        return int(math.floor(-c / b))
    disc = b * b - 4 * a * c
    return int(math.floor((-b + math.sqrt(disc)) / (2 * a))) if disc >= 0 else 0


def smallest_network_budget(n_in: int, n_out: int, hidden_layers: int) -> int:
    """The smallest model.params for which `layer_width` gives a width of 1."""
    return 2 * (hidden_layers + n_in + n_out)


def grid_side(budget: float, channels: int, d: int) -> int:
    """Vertices per axis of the benchmark's grid: floor((P / C)^(1/d)), exact for perfect powers."""
    r = int((budget / channels) ** (1.0 / d))
    while (r + 1) ** d * channels <= budget:
        r += 1
    while r > 1 and r**d * channels > budget:
        r -= 1
    return r


def hash_table_size(budget: float, levels: int, features: int, width: int, n_out: int) -> int:
    """Entries per level of the benchmark's Instant-NGP: 2^floor(log2((P - decoder) / (L F)))."""
    decoder = (levels * features + 1 + n_out) * width + n_out
    if budget <= decoder:
        raise ValueError(f"model.params={budget:g} is below the benchmark's Instant-NGP decoder of {decoder} "
                         "parameters; raise model.params")
    return 1 << int(math.floor(math.log2((budget - decoder) / (levels * features))))


def method_of(encoding: str, network: str) -> str | None:
    """The benchmark's name for an ffrun field, or None when the benchmark has no such method."""
    return {("densegrid", "direct"): "grid", ("none", "siren"): "siren", ("none", "wire"): "wire",
            ("gauss", "mlp"): "ffn", ("hashgrid", "mlp"): "ingp"}.get((encoding, network))


def grids_sizes(encoding_cfg, model_cfg, in_dim: int, out_dim: int) -> dict[str, Any]:
    """{config key: value} that give the benchmark's sizes for `model.params` (hidden layers = depth - 2 for the
    networks: a first layer, the hidden ones, an output layer). ValueError when the method is not the benchmark's."""
    budget = float(model_cfg.params)
    name = method_of(encoding_cfg.name, getattr(model_cfg, "name", "mlp"))
    if name is None:
        raise ValueError(f"model.budget_rule=grids sizes the Grids benchmark's methods (densegrid+direct, siren, wire, "
                         f"gauss+mlp, hashgrid+mlp), not {encoding_cfg.name}+{getattr(model_cfg, 'name', 'mlp')}; "
                         "use model.budget_rule=ffrun")
    if name == "grid":
        channels = out_dim if encoding_cfg.features is None else int(encoding_cfg.features)
        if budget < channels * 2**in_dim:
            raise ValueError(f"model.params={budget:g} is too small for the Grids benchmark's grid: 2 vertices a side "
                             f"take {channels * 2**in_dim} parameters here; raise model.params")
        return {"encoding.resolution": grid_side(budget, channels, in_dim)}
    if name == "ingp":
        return {"encoding.table_size": hash_table_size(budget, encoding_cfg.levels, encoding_cfg.features,
                                                       model_cfg.width, out_dim)}
    hidden = model_cfg.depth - 2
    if hidden < 0:
        raise ValueError(f"model.depth={model_cfg.depth}: the Grids benchmark's networks have a first and an output "
                         "layer (depth >= 2); use model.depth >= 2")
    n_in = 2 * encoding_cfg.m if name == "ffn" else in_dim
    least = smallest_network_budget(n_in, out_dim, hidden) * (2 if name == "wire" else 1)
    if budget < least:
        raise ValueError(f"model.params={budget:g} is too small for the Grids benchmark's {name} with "
                         f"{hidden} hidden layer(s) (width 1 takes about {least} parameters); raise model.params "
                         "or lower model.depth")
    if name == "wire":
        # the complex layers' width w; ffrun's WIRE divides model.width by sqrt(2), so model.width is the
        # smallest value that gives w
        w = layer_width(in_dim, out_dim, hidden, budget // 2)
        width = math.ceil(w * math.sqrt(2))
        while int(width / math.sqrt(2)) < w:
            width += 1
        return {"model.width": width}
    return {"model.width": layer_width(n_in, out_dim, hidden, budget)}


def benchmark_count(module: nn.Module) -> int:
    """The benchmark's count_parameters: elements of every trainable tensor (complex ones once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
