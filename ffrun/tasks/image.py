"""2D image regression: pixel coordinates (x, y) in [0, 1)^2 -> RGB. Loss 0.5 * MSE.

Protocols (`task.protocol`); every score is PSNR of the prediction clipped to [0, 1], and `test_psnr` is the
one a sweep or table reads:
- `checkerboard` (the paper's, the default): train on the even pixels img[::2, ::2], score the held-out odd
  pixels img[1::2, 1::2] (`test_psnr`), the training pixels (`train_psnr`) and the whole image (`full_psnr`).
- `fit`: every pixel trained on and scored (`train_psnr` = `test_psnr`).
- `superres`: train on the image; score the field sampled at the pixels of `task.reference` (the same scene
  at a higher resolution) against it (`test_psnr`; `train_psnr` is the fit of the training image).
- `denoise`: Gaussian noise of std `task.noise_std` added once (seeded by task.data_seed) to the training
  target; `test_psnr` against the clean image, `train_psnr` against the noisy one.

The fit, superres and denoise protocols are those of "Grids Often Outperform Implicit Neural Representations"
(NeurIPS 2025); the benchmark picks an INR's evaluation by its fit of the training target, so for them the
run's `best` record is chosen by `train_psnr` (`selection_metric`).

Pixel (row r, col c) of an H x W image sits at (c / W, r / H): linspace(0, 1, n, endpoint=False) per axis,
which `encoding.center=true` (SIREN, WIRE) maps onto the benchmark's linspace(-1, 1, n, endpoint=False).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import DictConfig

from ffrun.data.images import load_image, pixel_coords
from ffrun.models.field import Field
from ffrun.tasks.base import PointRegressionTask, TaskConfig
from ffrun.tasks.registry import Limit, register_task
from ffrun.util.atomic import write_png
from ffrun.util.errors import FfrunError
from ffrun.util.metrics import psnr
from ffrun.util.pictures import error_map, labelled_row, metric_label

PROTOCOLS = ("checkerboard", "fit", "superres", "denoise")
# Where the reference's pixels sample the field (superres): at their centres, or the benchmark's layout.
SUPERRES_POINTS = ("centres", "benchmark")


@dataclass
class ImageTaskConfig(TaskConfig):
    name: str = "image"
    image: str = "astronaut"  # a sample name (see ffrun.data.images.SAMPLE_IMAGES), `text`, a set name or a path
    # N: an N x N centre crop, resized (even for the checkerboard); `native`: the image at its own size, no crop or
    # resize; WxH (e.g. 510x339): the whole image resized to W x H
    resolution: Any = 512
    data_seed: int = 0  # seeds the text image's words, fonts and colours, and the denoise noise
    protocol: str = "checkerboard"  # checkerboard | fit | superres | denoise (see the module docstring)
    reference: Optional[str] = None  # superres: the high-resolution image, read at its own size
    # superres: `centres` samples the field at the reference's pixel centres; `benchmark` at the Grids
    # benchmark's linspace(0, 1, n_ref, endpoint=False), 1.5 reference pixels off the centres at 4x
    superres_points: str = "centres"
    noise_std: float = 0.0  # denoise: std of the Gaussian noise added to the training target (images in [0, 1])


def _check(cfg) -> None:
    where = f"task.protocol={cfg.protocol!r}"
    if cfg.protocol not in PROTOCOLS:
        raise FfrunError(f"{where}: choose one of {', '.join(PROTOCOLS)}")
    if cfg.protocol == "superres" and not cfg.reference:
        raise FfrunError(f"{where} needs task.reference=IMAGE: the same scene at a higher resolution (e.g. "
                         "task.image=div2k_grids:x4/0 task.reference=div2k_grids:hr/0)")
    if cfg.superres_points not in SUPERRES_POINTS:
        raise FfrunError(f"task.superres_points={cfg.superres_points!r}: choose one of {', '.join(SUPERRES_POINTS)}")
    if cfg.protocol == "denoise" and not cfg.noise_std > 0:
        raise FfrunError(f"{where} needs task.noise_std > 0 (e.g. 0.05 or 0.1, the Grids benchmark's levels)")
    if not cfg.noise_std >= 0:
        raise FfrunError(f"task.noise_std={cfg.noise_std!r}: use a standard deviation >= 0")
    # a setting another protocol uses would be recorded with the run as if it had acted
    if cfg.noise_std and cfg.protocol != "denoise":
        raise FfrunError(f"task.noise_std={cfg.noise_std:g} acts under task.protocol=denoise only, not under {where}; "
                         "drop it, or use task.protocol=denoise")
    if cfg.reference and cfg.protocol != "superres":
        raise FfrunError(f"task.reference={cfg.reference!r} is scored under task.protocol=superres only, not under "
                         f"{where}; drop it, or use task.protocol=superres")


def reference_points(lr_shape: tuple[int, int], ref_shape: tuple[int, int], where: str = "centres") -> np.ndarray:
    """The coordinates (x, y) of the reference image's pixels in the field of a training image of `lr_shape`
    (H, W), shape (H_ref, W_ref, 2). Training pixel i of n sits at i / n, standing for its centre (i + 0.5) / n
    of the picture, so a point at fraction p of the picture is at p - 0.5 / n; reference pixel j of m has its
    centre at p = (j + 0.5) / m. `benchmark`: j / m, the Grids benchmark's linspace at the reference's size."""
    axes = []
    for n, m in zip(lr_shape, ref_shape):
        j = np.arange(m, dtype=np.float64)
        axes.append(j / m if where == "benchmark" else (j + 0.5) / m - 0.5 / n)
    ys, xs = axes
    return np.stack(np.meshgrid(xs, ys), axis=-1).astype(np.float32)


# the checkerboard splits even/odd pixels
@register_task("image", ImageTaskConfig, limits={"resolution": Limit(4, "an even size >= 4", even=True)})
class ImageTask(PointRegressionTask):
    in_dim = 2
    out_dim = 3
    out_activation = "sigmoid"
    primary_metric = "test_psnr"
    coordinates = ("(x, y) in [0, 1)^2: pixel (row r, col c) of an H x W image is (c / W, r / H); output RGB in "
                   "[0, 1]")

    def __init__(self, cfg: DictConfig, device: torch.device, batch_size: int | None = None, seed: int = 0):
        _check(cfg)
        self.device = device
        self.protocol = cfg.protocol
        self.selection_metric = "test_psnr" if cfg.protocol == "checkerboard" else "train_psnr"
        self.image = load_image(cfg.image, cfg.resolution, cfg.data_seed)  # (H, W, 3) float32, clean
        h, w = self.image.shape[:2]
        if cfg.protocol == "checkerboard" and min(h, w) < 2:
            raise FfrunError(f"task.image={cfg.image!r}: {w} x {h} pixels has no odd pixels to test on")
        img = torch.from_numpy(self.image).to(device)
        coords = torch.from_numpy(pixel_coords(h, w)).to(device)
        self.full = (coords, img)
        self.target = img  # what the field is trained on, (H, W, 3)
        if cfg.protocol == "denoise":
            noise = torch.randn(img.shape, generator=torch.Generator().manual_seed(cfg.data_seed))
            self.target = img + cfg.noise_std * noise.to(device)
        if cfg.protocol == "checkerboard":
            self.train = (coords[::2, ::2].reshape(-1, 2), img[::2, ::2].reshape(-1, 3))
            self.test = (coords[1::2, 1::2].reshape(-1, 2), img[1::2, 1::2].reshape(-1, 3))
        else:
            self.train = (coords.reshape(-1, 2), self.target.reshape(-1, 3))
        self.reference = None
        if cfg.protocol == "superres":
            try:
                ref = load_image(cfg.reference, "native", cfg.data_seed)
            except FfrunError as e:  # load_image speaks of task.image, the key it usually reads
                raise FfrunError(str(e).replace("task.image=", "task.reference=")) from None
            if ref.shape[0] < h or ref.shape[1] < w:
                raise FfrunError(f"task.reference={cfg.reference!r}: {ref.shape[1]} x {ref.shape[0]} pixels is smaller "
                                 f"than the training image's {w} x {h}; give the high-resolution image")
            if ref.shape[0] % h or ref.shape[1] % w:
                raise FfrunError(f"task.reference={cfg.reference!r}: {ref.shape[1]} x {ref.shape[0]} pixels is not an "
                                 f"integer multiple of the training image's {w} x {h} on both axes (4x: {4 * w} x "
                                 f"{4 * h}); give the same scene at a whole multiple of its size")
            points = reference_points((h, w), ref.shape[:2], cfg.superres_points)
            self.reference = (torch.from_numpy(points).to(device), torch.from_numpy(ref).to(device))
        self._init_sampler(batch_size, seed)

    def _predict(self, field: Field):
        return self.memo(field, "image", lambda: field.predict(self.full[0]).clamp(0.0, 1.0))

    def _predict_reference(self, field: Field):
        return self.memo(field, "reference", lambda: field.predict(self.reference[0]).clamp(0.0, 1.0))

    def preview(self, field: Field) -> dict[str, np.ndarray]:
        return {"reconstruction": self._predict(field).cpu().numpy()}

    def evaluate(self, field: Field) -> dict[str, float]:
        pred = self._predict(field)
        img = self.full[1]
        if self.protocol == "checkerboard":
            return {
                "train_psnr": psnr(pred[::2, ::2], img[::2, ::2]),
                "test_psnr": psnr(pred[1::2, 1::2], img[1::2, 1::2]),
                "full_psnr": psnr(pred, img),
            }
        fit = psnr(pred, self.target)
        if self.protocol == "fit":
            return {"train_psnr": fit, "test_psnr": fit}
        if self.protocol == "denoise":
            return {"train_psnr": fit, "test_psnr": psnr(pred, img)}
        return {"train_psnr": fit, "test_psnr": psnr(self._predict_reference(field), self.reference[1])}

    def save_progress(self, field: Field, run_dir: Path, previews: dict | None = None) -> None:
        """The whole output of an image run is its pictures, and at the training image's size they are cheap; a
        superres run's reference-size pictures (16 times the pixels at 4x) are written once, at the end, and its
        progress is the fit of the training image (fit.png)."""
        if self.protocol != "superres":
            self.save(field, run_dir)
            return
        write_png(run_dir / "fit.png", (previews or self.preview(field))["reconstruction"])

    def save(self, field: Field, run_dir: Path) -> None:
        """reconstruction.png and ground_truth.png are the scored picture and its truth (at the reference's size
        for superres, whose fit of the training image is fit.png); denoise adds the noisy target."""
        pred = self._predict(field).cpu().numpy()
        m = self.evaluate(field)
        truth, scored = self.image, pred
        if self.protocol == "superres":
            truth, scored = self.reference[1].cpu().numpy(), self._predict_reference(field).cpu().numpy()
            write_png(run_dir / "fit.png", pred)
        if self.protocol == "denoise":
            write_png(run_dir / "noisy_target.png", self.target.clamp(0, 1).cpu().numpy())
        write_png(run_dir / "reconstruction.png", scored)
        write_png(run_dir / "ground_truth.png", truth)
        label = {"checkerboard": "ground truth\n(even pixels train, odd test)", "fit": "ground truth\n(every pixel)",
                 "superres": "reference\n(scored at its pixels)", "denoise": "clean image\n(trained on it + noise)"}
        write_png(run_dir / "comparison.png", labelled_row([
            (label[self.protocol], truth),
            (f"reconstruction\n{metric_label('test_psnr', m['test_psnr'])}", scored),
            (f"|error| x 4\n{metric_label('train_psnr', m['train_psnr'])}", error_map(truth, scored)),
        ]))
