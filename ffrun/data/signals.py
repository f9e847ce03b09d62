"""1D signals with a power-law spectrum, the paper's 1D regression setting.

f(x) = sum_{k=1}^{K} k^(-alpha) sin(2 pi k x + phi_k), phi_k ~ U[0, 2 pi), on the grid
x_i = i / n (i = 0..n-1), rescaled to [0, 1]. Training takes the even grid points, testing the odd
ones in between, so K up to n / 4 keeps every frequency below the training grid's Nyquist limit.
"""

from __future__ import annotations

import numpy as np


def power_law_signal(n_points: int, alpha: float, max_freq: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (x, y): x of shape (n,) = linspace(0, 1, n + 1)[:-1] and y in [0, 1], float64."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 1.0, n_points + 1)[:-1]
    k = np.arange(1, max_freq + 1, dtype=np.float64)
    phases = rng.uniform(0.0, 2.0 * np.pi, size=k.shape)
    y = (k ** -alpha)[None, :] * np.sin(2.0 * np.pi * k[None, :] * x[:, None] + phases[None, :])
    y = y.sum(axis=1)
    y = (y - y.min()) / (y.max() - y.min())
    return x, y
