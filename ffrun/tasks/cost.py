"""What one training step costs: the matrix products of the MLP on the task's points per step
(`Task.points_per_step`). ffrun-bench sets its efficiency against this count; trainer.threads=auto gives
a small step one CPU thread (ffrun.run)."""

from __future__ import annotations


def layer_shapes(in_features: int, depth: int, width: int, out_dim: int) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of each Linear layer of the MLP."""
    dims = [in_features] + [width] * (depth - 1) + [out_dim]
    return list(zip(dims[:-1], dims[1:]))


def step_flops(n_points: int, shapes: list[tuple[int, int]]) -> int:
    """Floating-point operations of the matrix products of one training step on n_points points: 2 per
    multiply-add, forward N x in x out per layer, backward the same for the weight gradient and, except for
    the first layer whose input needs no gradient, for the input gradient."""
    total = 0
    for i, (fan_in, fan_out) in enumerate(shapes):
        products = 3 if i > 0 else 2  # forward, weight gradient, input gradient (not for the first layer)
        total += products * 2 * n_points * fan_in * fan_out
    return total
