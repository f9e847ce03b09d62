"""3D volumes: NIfTI in and out (nibabel), area-averaged resampling that keeps the world placement."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ffrun.util.atomic import write_bytes
from ffrun.util.errors import FfrunError
from ffrun.util.paths import shown, user_path

# Voxels a NIfTI volume may have (512^3, 1 GiB as float64), checked from its header before any data is read.
MAX_VOXELS = 512**3


def load_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(volume float64 (X, Y, Z), affine 4x4) of a NIfTI file, with clear errors for what cannot be used."""
    import nibabel as nib

    p = user_path(path, f"task.volume={shown(path)}")
    if not p.is_file():
        raise FfrunError(f"task.volume={path}: no such file; give a NIfTI volume (.nii or .nii.gz)")
    try:
        img = nib.load(str(p))
        shape = tuple(int(n) for n in img.shape)
    except Exception as e:
        raise FfrunError(f"task.volume={path}: cannot read it as NIfTI ({e}); give a .nii or .nii.gz file")
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise FfrunError(f"task.volume={path}: a {len(shape)}D image of shape {shape}; the MRI task needs "
                         "one 3D volume (extract a single volume first, e.g. with fslroi or nibabel)")
    if int(np.prod(shape)) > MAX_VOXELS:
        raise FfrunError(f"task.volume={path}: its header claims {' x '.join(map(str, shape))} voxels, above "
                         f"ffrun's limit of {MAX_VOXELS} (512^3); crop or downsample it first")
    try:
        data = np.asarray(img.dataobj, dtype=np.float64).reshape(shape)
    except Exception as e:
        raise FfrunError(f"task.volume={path}: cannot read its voxels ({e}); the file is damaged or truncated")
    if not np.isfinite(data).all():
        raise FfrunError(f"task.volume={path}: holds {int((~np.isfinite(data)).sum())} NaN/Inf voxels; "
                         "replace them (e.g. with 0) before reconstructing")
    if data.max() == data.min():
        raise FfrunError(f"task.volume={path}: every voxel is {data.max():g}; a constant volume has nothing to "
                         "reconstruct")
    affine = np.asarray(img.affine, dtype=np.float64) if img.affine is not None else None
    if affine is None or affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise FfrunError(f"task.volume={path}: its header's voxel-to-world affine is missing or not finite; "
                         "fix the sform/qform (e.g. with fslorient or nibabel)")
    return data, affine


def resample_cube(vol: np.ndarray, affine: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad to a cube (centred, keeping the aspect ratio), then area-average to n^3; scale to [0, 1].

    Returns the volume (float32) and the affine that places each new voxel where its footprint was."""
    size = max(vol.shape)
    pad = [((size - s) // 2, size - s - (size - s) // 2) for s in vol.shape]
    cube = np.pad(vol, pad)
    out = F.adaptive_avg_pool3d(torch.from_numpy(cube)[None, None], n)[0, 0].numpy()
    lo, hi = out.min(), out.max()
    out = ((out - lo) / (hi - lo)).astype(np.float32)
    # New voxel i covers padded voxels [i * f, (i + 1) * f), centre (i + 0.5) * f - 0.5, minus the padding.
    f = size / n
    shift = np.array([0.5 * f - 0.5 - p[0] for p in pad])
    new = affine.copy()
    new[:3, :3] = affine[:3, :3] * f
    new[:3, 3] = affine[:3, :3] @ shift + affine[:3, 3]
    return out, new


def save_nifti(path: str | Path, vol: np.ndarray, affine: np.ndarray) -> Path:
    """Write a float32 NIfTI (gzip-compressed when the name ends in .gz), atomically."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(vol, dtype=np.float32), affine)
    img.header.set_xyzt_units("mm")
    data = img.to_bytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=6)
    return write_bytes(path, data)
