"""1D regression of a power-law signal (amplitude ~ 1/f^alpha, random phases): the paper's 1D setting,
where spectral bias is easiest to see. Train on the even grid points, test on the odd points between.

Metrics: `train_mse`, `test_mse` and `test_psnr` (the signal lies in [0, 1]). Loss 0.5 * MSE; the
output is linear (no activation), as in the notebooks' 1D experiments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig

from ffrun.data.signals import power_law_signal
from ffrun.models.field import Field
from ffrun.tasks.base import PointRegressionTask, TaskConfig
from ffrun.tasks.registry import Limit, register_task
from ffrun.util.atomic import save_figure, write_text
from ffrun.util.errors import FfrunError


@dataclass
class Toy1DTaskConfig(TaskConfig):
    name: str = "toy1d"
    n_points: int = 256  # grid size; even points train, odd points test
    alpha: float = 1.0  # amplitude ~ 1/f^alpha
    max_freq: Optional[int] = None  # highest frequency in cycles per unit; None = n_points // 4
    data_seed: int = 0  # seeds the phases (independent of the run seed)


# trains on the even points and tests on the odd ones
@register_task("toy1d", Toy1DTaskConfig, limits={"n_points": Limit(8, "an even number >= 8", even=True)})
class Toy1DTask(PointRegressionTask):
    in_dim = 1
    out_dim = 1
    out_activation = "none"
    primary_metric = "test_psnr"
    coordinates = "x in [0, 1); output the signal value"

    def __init__(self, cfg: DictConfig, device: torch.device, batch_size: int | None = None, seed: int = 0):
        n = cfg.n_points
        max_freq = cfg.max_freq if cfg.max_freq is not None else n // 4
        if not 1 <= max_freq <= n // 2:
            raise FfrunError(f"task.max_freq={max_freq}: use 1..{n // 2} (n_points / 2, the grid's Nyquist limit)")
        self.x, self.y = power_law_signal(n, cfg.alpha, max_freq, cfg.data_seed)
        self.alpha, self.max_freq = cfg.alpha, max_freq
        x = torch.tensor(self.x, dtype=torch.float32, device=device)[:, None]
        y = torch.tensor(self.y, dtype=torch.float32, device=device)[:, None]
        self.full = (x, y)
        self.train = (x[::2], y[::2])
        self.test = (x[1::2], y[1::2])
        self.device = device
        self._init_sampler(batch_size, seed)

    def evaluate(self, field: Field) -> dict[str, float]:
        pred = field.predict(self.full[0])
        train_mse = torch.mean((pred[::2] - self.full[1][::2]).double() ** 2).item()
        test_mse = torch.mean((pred[1::2] - self.full[1][1::2]).double() ** 2).item()
        return {"train_mse": train_mse, "test_mse": test_mse,
                "test_psnr": -10.0 * math.log10(test_mse) if test_mse > 0 else math.inf}

    def save(self, field: Field, run_dir: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        pred = field.predict(self.full[0]).cpu().numpy()[:, 0]
        lines = ["x,target,prediction,split"] + [
            f"{x:.8g},{y:.8g},{p:.8g},{'train' if i % 2 == 0 else 'test'}"
            for i, (x, y, p) in enumerate(zip(self.x, self.y, pred))]
        write_text(run_dir / "prediction.csv", "\n".join(lines) + "\n")
        fig, ax = plt.subplots(figsize=(9, 3.5))
        ax.plot(self.x, self.y, color="0.6", lw=2.5, label="target")
        ax.plot(self.x, pred, color="C3", lw=1.2, label="network")
        ax.scatter(self.x[::2], self.y[::2], s=6, color="k", zorder=3, label="training points")
        ax.set_xlabel("x")
        ax.set_title(f"1D power-law signal (alpha={self.alpha:g}, {self.max_freq} frequencies)")
        ax.legend(fontsize=8, ncol=3)
        save_figure(run_dir / "fit.png", fig)
        plt.close(fig)
