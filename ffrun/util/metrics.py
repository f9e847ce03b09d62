"""Metrics shared by the tasks."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def psnr(pred: Tensor, target: Tensor) -> float:
    """PSNR = -10 log10(MSE) for values in [0, 1], in dB (infinite for a perfect match)."""
    mse = torch.mean((pred.double() - target.double()) ** 2).item()
    return math.inf if mse == 0 else -10.0 * math.log10(mse)
