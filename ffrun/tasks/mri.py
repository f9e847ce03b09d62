"""3D MRI: reconstruct a volume from sparse samples of its Fourier transform (k-space).

Forward model (docs/protocol.md): the unnormalised 3D FFT of the volume, multiplied by a mask of k-space
samples drawn from a Gaussian centred on DC (at 96^3: 200,000 draws, std 13.9 voxels, ~12.6% of
k-space once duplicates merge). Loss 0.5 * mean |mask * FFT(pred) - mask * FFT(truth)|^2 over all of
k-space. Metrics: `psnr` of the reconstruction clipped to [0, 1], and `kspace_loss`.

The network is evaluated on the whole volume each step. Instead of keeping one autograd graph for all
96^3 points (about 8 GB for a 4x256 MLP, which is why the authors' notebook runs out of memory on a
16 GB GPU), `backward` runs in two passes: the volume is predicted chunk by chunk without a graph, the
loss's gradient with respect to every voxel is taken through the FFT, and each chunk is then recomputed
with a graph and back-propagated with its slice of that gradient. The gradients are exactly those of
the full-batch loss; memory is bounded by `task.chunk`, at the cost of one more forward pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from ffrun.data.phantoms import shepp_logan_3d
from ffrun.data.volumes import MAX_VOXELS, load_nifti, resample_cube, save_nifti
from ffrun.tasks.base import Task, TaskConfig
from ffrun.tasks.proxy import KSpaceSamples
from ffrun.tasks.registry import Limit, register_task
from ffrun.util.atomic import write_png
from ffrun.util.errors import FfrunError
from ffrun.util.metrics import psnr
from ffrun.util.pictures import labelled_grid, metric_label

log = logging.getLogger("ffrun.mri")


@dataclass
class MRITaskConfig(TaskConfig):
    name: str = "mri"
    volume: Optional[str] = None  # a NIfTI file; None = the 3D modified Shepp-Logan phantom
    resolution: int = 96  # the volume is padded to a cube and area-averaged to resolution^3
    samples: int = 200_000  # k-space draws at 96^3 (scaled by (resolution / 96)^3), before duplicates merge
    sample_std: float = 13.9  # std of the Gaussian k-space sampling around DC, in voxels at 96^3 (scaled)
    chunk: Optional[int] = 131072  # points per MLP chunk (exact gradients, bounded memory); None = all at once
    data_seed: int = 0  # seeds the k-space mask


def gaussian_kspace_mask(n: int, samples: int, std: float, seed: int) -> Tensor:
    """Boolean (n, n, n) mask in unshifted FFT layout (DC at index 0): `samples` integer points drawn
    from N(0, std^2) per axis, wrapped modulo n. Duplicate draws merge, so the mask holds fewer."""
    rng = np.random.default_rng(seed)
    pts = np.round(rng.normal(0.0, std, size=(samples, 3))).astype(np.int64) % n
    mask = np.zeros((n, n, n), dtype=bool)
    mask[pts[:, 0], pts[:, 1], pts[:, 2]] = True
    return torch.from_numpy(mask)


def kspace_samples(vol: Tensor, mask: Tensor) -> Tensor:
    """The MRI forward model: mask * FFT(vol), the unnormalised 3D FFT in unshifted layout."""
    return torch.fft.fftn(vol) * mask


def volume_coords(n: int) -> Tensor:
    """(n^3, 3) coordinates linspace(0, 1, n + 1)[:-1] per axis, in C order of an (n, n, n) volume."""
    c = torch.linspace(0, 1, n + 1)[:-1]
    return torch.stack(torch.meshgrid(c, c, c, indexing="ij"), dim=-1).reshape(-1, 3)


@register_task("mri", MRITaskConfig, limits={"resolution": Limit(8, "at least 8 voxels per axis")})
class MRITask(Task):
    in_dim = 3
    out_dim = 1
    out_activation = "sigmoid"
    primary_metric = "psnr"
    coordinates = "(i, j, k) / N in [0, 1)^3 on the resampled N^3 volume (see the run's reconstruction.nii.gz affine)"

    def __init__(self, cfg: DictConfig, device: torch.device, batch_size: int | None = None, seed: int = 0):
        n = cfg.resolution
        if batch_size is not None:
            raise FfrunError("trainer.batch_size: the Fourier transform needs the whole volume, so MRI trains full "
                             "batch (memory is bounded by task.chunk instead); use trainer.batch_size=null")
        if cfg.chunk is not None and cfg.chunk < 1:
            raise FfrunError(f"task.chunk={cfg.chunk}: use a positive number of points, or null for no chunking")
        if n**3 > MAX_VOXELS:
            raise FfrunError(f"task.resolution={n}: {n}^3 voxels is above ffrun's volume limit of 512^3; "
                             "use at most 512")
        if cfg.samples < 1:
            raise FfrunError(f"task.samples={cfg.samples}: use at least 1 k-space draw")
        if not cfg.sample_std > 0:
            raise FfrunError(f"task.sample_std={cfg.sample_std}: use a positive spread (voxels at 96^3)")
        if cfg.volume is None:
            log.info("task.volume is not set: using the built-in 3D Shepp-Logan phantom (give task.volume=PATH for "
                     "a NIfTI volume, e.g. $FFRUN_DATA/mri/colin27_t1_brain.nii.gz)")
            vol, self.affine = shepp_logan_3d(n), np.diag([2.0 * 96 / n] * 3 + [1.0])  # ~19 cm field of view
        else:
            data, affine = load_nifti(cfg.volume)
            vol, self.affine = resample_cube(data, affine, n)
        self.volume = vol
        self.n = n
        scale = (n / 96) ** 3
        self.mask = gaussian_kspace_mask(n, max(1, round(cfg.samples * scale)), cfg.sample_std * n / 96,
                                         cfg.data_seed).to(device)
        self.truth = torch.from_numpy(vol).to(device)
        self.observed = kspace_samples(self.truth, self.mask)  # all the network ever sees
        self.coords = volume_coords(n).to(device)
        self.chunk = cfg.chunk
        self.grid_shape = (n, n, n)

    def points_per_step(self) -> int:
        return self.coords.shape[0]

    def sigma_proxy(self) -> KSpaceSamples:
        return KSpaceSamples(self.observed, self.mask.to(self.observed.device), self.coords, self.n)

    def kspace_loss(self, vol: Tensor) -> Tensor:
        diff = kspace_samples(vol, self.mask) - self.observed
        return 0.5 * torch.mean(diff.real**2 + diff.imag**2)

    def sample(self, step: int) -> None:
        return None

    def loss(self, field, batch) -> Tensor:
        return self.kspace_loss(field(self.coords).reshape(self.n, self.n, self.n))

    def backward(self, field, batch) -> Tensor:
        total = self.coords.shape[0]
        if self.chunk is None or self.chunk >= total:
            return super().backward(field, batch)
        with torch.no_grad():
            vol = torch.cat([field(self.coords[i : i + self.chunk]) for i in range(0, total, self.chunk)])
        vol = vol.reshape(self.n, self.n, self.n).requires_grad_(True)
        loss = self.kspace_loss(vol)
        (grad,) = torch.autograd.grad(loss, vol)
        grad = grad.reshape(-1, 1)
        for i in range(0, total, self.chunk):
            field(self.coords[i : i + self.chunk]).backward(grad[i : i + self.chunk])
        return loss.detach()

    def _volume(self, field) -> Tensor:
        return self.memo(field, "volume", lambda: field.predict(
            self.coords, chunk=self.chunk or self.coords.shape[0]).reshape(self.n, self.n, self.n))

    def slices(self, rec: np.ndarray) -> np.ndarray:
        """Rows: truth, reconstruction (with its PSNR), |error| x 4; columns: the three central slices;
        every panel labelled and enlarged to at least 256 pixels."""
        c = self.n // 2
        value = psnr(torch.from_numpy(np.clip(rec, 0, 1)), torch.from_numpy(self.volume))
        err = np.clip(np.abs(rec - self.volume) * 4, 0, 1)  # error_map's |error| x 4, kept 3D for slicing
        names = ("x (sagittal)", "y (coronal)", "z (axial)")
        rows = []
        for label, v in (("ground truth", self.volume), (f"reconstruction, {metric_label('psnr', value)}", rec),
                         ("|error| x 4", err)):
            cuts = [np.rot90(v[c, :, :]), np.rot90(v[:, c, :]), np.rot90(v[:, :, c])]
            rows.append([(f"{label}\n{name} = {c}", cut) for name, cut in zip(names, cuts)])
        return labelled_grid(rows)

    def preview(self, field) -> dict[str, np.ndarray]:
        return {"slices": self.slices(self._volume(field).clamp(0, 1).cpu().numpy())}

    def evaluate(self, field) -> dict[str, float]:
        vol = self._volume(field)
        return {"psnr": psnr(vol.clamp(0, 1), self.truth), "kspace_loss": self.kspace_loss(vol).item()}

    def save(self, field, run_dir: Path) -> None:
        rec = self._volume(field).clamp(0, 1).cpu().numpy()
        save_nifti(run_dir / "reconstruction.nii.gz", rec, self.affine)
        save_nifti(run_dir / "ground_truth.nii.gz", self.volume, self.affine)
        write_png(run_dir / "slices.png", self.slices(rec))
        # The central axial slice alone, for galleries beside other runs.
        write_png(run_dir / "ground_truth.png", np.rot90(self.volume[:, :, self.n // 2]))
        write_png(run_dir / "reconstruction.png", np.rot90(rec[:, :, self.n // 2]))
