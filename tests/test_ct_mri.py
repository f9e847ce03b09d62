"""CT and MRI: the forward models against references, the mask, chunked gradients, real-data runs."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from omegaconf import OmegaConf

from ffrun.config import EncodingConfig, ModelConfig
from ffrun.data.volumes import load_nifti, resample_cube
from ffrun.models import build_field
from ffrun.tasks.ct import ParallelProjector
from ffrun.tasks.mri import MRITask, gaussian_kspace_mask, kspace_samples
from ffrun.util.errors import FfrunError

COLIN = SHARED_DATA / "mri" / "colin27_t1.nii.gz"


@pytest.mark.parametrize("centre", [(0.0, 0.0), (0.3, -0.2)])
def test_projector_matches_the_analytic_projection_of_a_disc(centre):
    n, r = 256, 0.4
    c = (torch.arange(n, dtype=torch.float64) + 0.5) / n * 2 - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    disc = (((x - centre[0]) ** 2 + (y - centre[1]) ** 2) <= r**2).float()
    angles = torch.linspace(0, math.pi, 9)[:-1]
    sino = ParallelProjector(n, angles, torch.device("cpu"))(disc).double()
    for a, theta in enumerate(angles.double()):
        # Rotating by theta moves the centre to R(theta) c; averaging a column over the n rows of the
        # [-1, 1] image gives half the chord length: sqrt(r^2 - (x - x_c)^2).
        xc = math.cos(theta) * centre[0] - math.sin(theta) * centre[1]
        expected = torch.sqrt(torch.clamp(r**2 - (c - xc) ** 2, min=0))
        err = (sino[a] - expected).abs()
        assert err.mean() < 0.004 and err.max() < 0.06, (a, err.mean().item(), err.max().item())


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_sparse_projector_and_its_gradient_equal_grid_sample(mode):
    """The training projector (one sparse product each way) against grid_sample's rotate-and-average (both in
    float32: grid_sample rounds its samples in the grid's dtype, which the matrix follows)."""
    n = 48
    proj = ParallelProjector(n, torch.linspace(0, math.pi, 21)[:-1], torch.device("cpu"), mode=mode)
    img = torch.rand(n, n, generator=torch.Generator().manual_seed(1))
    a, b = img.clone().requires_grad_(True), img.clone().requires_grad_(True)
    weights = torch.rand(20, n, generator=torch.Generator().manual_seed(2))
    (proj(a) * weights).sum().backward()
    ref = proj.reference(b)
    (ref * weights).sum().backward()
    torch.testing.assert_close(proj(img), ref.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-6)


def test_projector_is_differentiable_and_linear():
    n = 32
    proj = ParallelProjector(n, torch.linspace(0, math.pi, 5)[:-1], torch.device("cpu"), mode="bilinear")
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.testing.assert_close(proj(2 * a + b), 2 * proj(a) + proj(b), rtol=1e-5, atol=1e-6)
    img = a.clone().requires_grad_(True)
    proj(img).sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0


def test_mri_forward_model_matches_numpy_fft_in_float64():
    rng = np.random.default_rng(0)
    vol = rng.random((12, 10, 8))
    mask = rng.random(vol.shape) < 0.2
    ours = kspace_samples(torch.from_numpy(vol), torch.from_numpy(mask)).numpy()
    ref = np.fft.fftn(vol) * mask
    assert ours.dtype == np.complex128
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-10)


def test_kspace_mask_sparsity_and_seeding():
    m = gaussian_kspace_mask(96, 200_000, 13.9, seed=0)
    assert 0.12 < m.float().mean().item() < 0.132  # the paper's protocol (docs/protocol.md): ~12.6% of k-space at 96^3
    assert m[0, 0, 0]  # DC is sampled
    assert torch.equal(m, gaussian_kspace_mask(96, 200_000, 13.9, seed=0))
    assert not torch.equal(m, gaussian_kspace_mask(96, 200_000, 13.9, seed=1))
    # Centred on DC in the unshifted layout: low frequencies dense, the highest (n/2) almost empty.
    assert m[:3, :3, :3].float().mean() > 0.9 and m[40:56, 40:56, 40:56].float().mean() < 0.01


def _mri_task(chunk):
    cfg = OmegaConf.create({"name": "mri", "volume": None, "resolution": 12, "samples": 200_000,
                            "sample_std": 13.9, "chunk": chunk, "data_seed": 0})
    return MRITask(cfg, torch.device("cpu"))


def test_chunked_backward_gives_the_full_batch_gradient():
    enc = OmegaConf.structured(EncodingConfig(name="gauss", m=16, sigma=3.0))
    model = OmegaConf.structured(ModelConfig(depth=3, width=32))
    grads = []
    for chunk in (None, 100):
        task = _mri_task(chunk)
        field = build_field(enc, model, 3, 1, "sigmoid", seed=0).double()
        task.coords = task.coords.double()
        loss = task.backward(field, None)
        grads.append((loss.item(), [p.grad.clone() for p in field.parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-12)
    for g_full, g_chunk in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(g_chunk, g_full, rtol=1e-9, atol=1e-12)


def test_bad_volumes_are_refused_with_a_reason(tmp_path):
    def save(name, data):
        nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / name)
        return tmp_path / name

    with pytest.raises(FfrunError, match="a 4D image"):
        load_nifti(save("4d.nii.gz", np.random.rand(4, 4, 4, 3).astype(np.float32)))
    nan = np.random.rand(4, 4, 4).astype(np.float32)
    nan[1, 1, 1] = np.nan
    with pytest.raises(FfrunError, match="NaN"):
        load_nifti(save("nan.nii.gz", nan))
    with pytest.raises(FfrunError, match="constant|every voxel"):
        load_nifti(save("flat.nii.gz", np.ones((4, 4, 4), np.float32)))
    with pytest.raises(FfrunError, match="no such file"):
        load_nifti(tmp_path / "missing.nii.gz")
    # A 4D file with a single volume is accepted.
    assert load_nifti(save("one.nii.gz", np.random.rand(4, 4, 4, 1).astype(np.float32)))[0].shape == (4, 4, 4)


def test_resampling_keeps_the_world_position():
    vol = np.zeros((30, 40, 20))
    vol[10:14, 24:28, 4:8] = 1.0  # a bright block, off centre
    affine = np.array([[1.0, 0, 0, -15], [0, 1.5, 0, -30], [0, 0, 2.0, 5], [0, 0, 0, 1]])
    out, new = resample_cube(vol, affine, 20)
    assert out.shape == (20, 20, 20) and out.min() == 0 and out.max() == 1

    def centroid_world(v, a):
        idx = np.array(np.nonzero(v > 0)).T
        w = v[v > 0]
        return a[:3, :3] @ (idx * w[:, None]).sum(0) / w.sum() + a[:3, 3]

    np.testing.assert_allclose(centroid_world(out, new), centroid_world(vol, affine), atol=0.6)


def test_short_ct_run_writes_its_outputs(run_cli, tmp_path):
    r = run_cli("task=ct", "task.resolution=48", "task.num_angles=8", "encoding=gauss", "sigma=4",
                "encoding.m=32", "model.width=64", "trainer.steps=60", "trainer.eval_every=30",
                "trainer.lr=5e-3", "trainer.progress=false", "device=cpu", "hydra.run.dir=ct")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "ct" / "metrics.json").read_text())
    assert set(m["metrics"]) == {"psnr", "projection_loss"} and m["peak_memory_mb"] > 0
    assert m["history"][-1]["projection_loss"] < m["history"][0]["projection_loss"]
    for name in ("reconstruction.png", "comparison.png", "sinogram.png", "checkpoint.pt"):
        assert (tmp_path / "ct" / name).is_file()


def test_ct_reads_a_dicom_slice(run_cli, tmp_path):
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    r = run_cli("task=ct", f"task.image={path}", "task.resolution=32", "encoding=grid", "trainer.steps=5",
                "trainer.progress=false", "hydra.run.dir=dcm")
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not COLIN.exists(), reason=f"real MRI data not found at {COLIN} (../shared/data is absent)")
def test_short_mri_run_on_colin27_writes_a_placed_nifti(run_cli, tmp_path):
    r = run_cli("task=mri", f"task.volume={COLIN}", "task.resolution=24", "task.chunk=5000", "encoding=gauss",
                "sigma=5", "encoding.m=32", "model.width=64", "trainer.steps=30", "trainer.eval_every=15",
                "trainer.lr=2e-3", "trainer.progress=false", "hydra.run.dir=mri")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "mri"
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["metrics"]) == {"psnr", "kspace_loss"}
    assert m["history"][-1]["kspace_loss"] < m["history"][0]["kspace_loss"]
    img = nib.load(out / "reconstruction.nii.gz")
    assert img.shape == (24, 24, 24)
    data, affine = load_nifti(COLIN)
    _, expected = resample_cube(data, affine, 24)
    np.testing.assert_allclose(img.affine, expected, atol=1e-4)
    # The reconstruction's centre voxel lands at the input volume's centre in world space.
    centre_in = affine @ np.r_[(np.array(data.shape) - 1) / 2, 1]
    centre_out = img.affine @ np.r_[[11.5, 11.5, 11.5], 1]
    np.testing.assert_allclose(centre_out[:3], centre_in[:3], atol=affine[0, 0] * 2)
    assert (out / "slices.png").is_file() and (out / "ground_truth.nii.gz").is_file()
