"""2D image regression: pixel coordinates (x, y) in [0, 1)^2 -> RGB.

Paper protocol: train on the even pixels img[::2, ::2], report PSNR on the held-out odd pixels
img[1::2, 1::2] (`test_psnr`), on the training pixels (`train_psnr`) and on the whole image (`full_psnr`).
Loss 0.5 * MSE.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from ffrun.data.images import load_image, pixel_coords
from ffrun.models.field import Field
from ffrun.tasks.base import PointRegressionTask, TaskConfig
from ffrun.tasks.registry import Limit, register_task
from ffrun.util.atomic import write_png
from ffrun.util.metrics import psnr
from ffrun.util.pictures import error_map, labelled_row, metric_label


@dataclass
class ImageTaskConfig(TaskConfig):
    name: str = "image"
    image: str = "astronaut"  # a sample name (see ffrun.data.images.SAMPLE_IMAGES), `text`, or a path
    resolution: int = 512  # side of the square image; must be even (even pixels train, odd pixels test)
    data_seed: int = 0  # seeds the text image's words, fonts and colours (independent of the run seed)


# the protocol splits even/odd pixels
@register_task("image", ImageTaskConfig, limits={"resolution": Limit(4, "an even size >= 4", even=True)})
class ImageTask(PointRegressionTask):
    in_dim = 2
    out_dim = 3
    out_activation = "sigmoid"
    primary_metric = "test_psnr"
    coordinates = "(x, y) in [0, 1)^2: pixel (row r, col c) of an N x N image is (c / N, r / N); output RGB in [0, 1]"

    def __init__(self, cfg: DictConfig, device: torch.device, batch_size: int | None = None, seed: int = 0):
        n = cfg.resolution
        self.device = device
        self.image = load_image(cfg.image, n, cfg.data_seed)  # (n, n, 3) float32
        img = torch.from_numpy(self.image).to(device)
        coords = torch.from_numpy(pixel_coords(n)).to(device)
        self.full = (coords, img)
        self.train = (coords[::2, ::2].reshape(-1, 2), img[::2, ::2].reshape(-1, 3))
        self.test = (coords[1::2, 1::2].reshape(-1, 2), img[1::2, 1::2].reshape(-1, 3))
        self._init_sampler(batch_size, seed)

    def _predict(self, field: Field):
        return self.memo(field, "image", lambda: field.predict(self.full[0]))

    def preview(self, field: Field) -> dict[str, np.ndarray]:
        return {"reconstruction": self._predict(field).cpu().numpy()}

    def evaluate(self, field: Field) -> dict[str, float]:
        pred = self._predict(field)
        img = self.full[1]
        return {
            "train_psnr": psnr(pred[::2, ::2], img[::2, ::2]),
            "test_psnr": psnr(pred[1::2, 1::2], img[1::2, 1::2]),
            "full_psnr": psnr(pred, img),
        }

    def save_progress(self, field: Field, run_dir: Path, previews: dict | None = None) -> None:
        self.save(field, run_dir)  # the whole output of an image run is its pictures, and they are cheap

    def save(self, field: Field, run_dir: Path) -> None:
        pred = self._predict(field).cpu().numpy()
        write_png(run_dir / "reconstruction.png", pred)
        write_png(run_dir / "ground_truth.png", self.image)
        m = self.evaluate(field)
        write_png(run_dir / "comparison.png", labelled_row([
            ("ground truth\n(even pixels train, odd test)", self.image),
            (f"reconstruction\n{metric_label('test_psnr', m['test_psnr'])}", pred),
            (f"|error| x 4\n{metric_label('full_psnr', m['full_psnr'])}", error_map(self.image, pred)),
        ]))
