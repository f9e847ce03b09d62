"""Shape occupancy: labels against analytic shapes, samplers, IoU, mesh export, a real run on the bunny."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh
from conftest import SHARED_DATA
from omegaconf import OmegaConf
from torch import nn

from ffrun.data.meshes import build_test_sets, builtin_shape, iou, near_surface_points, normalise, occupancy
from ffrun.tasks.shape import ShapeTask

BUNNY = SHARED_DATA / "meshes" / "bunny.obj"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FFRUN_CACHE", str(tmp_path / "cache"))


def test_labels_are_exact_for_a_box():
    box = trimesh.creation.box(extents=(0.5, 0.3, 0.7))  # centred at the origin
    pts = np.random.default_rng(0).uniform(-0.5, 0.5, (50_000, 3))
    inside = (np.abs(pts) < np.array([0.25, 0.15, 0.35])).all(axis=1)
    assert np.array_equal(occupancy(box, pts), inside)


def test_labels_match_a_sphere_away_from_its_facets():
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.4)
    pts = np.random.default_rng(1).uniform(-0.5, 0.5, (50_000, 3))
    r = np.linalg.norm(pts, axis=1)
    clear = np.abs(r - 0.4) > 2e-3  # the facets deviate from the sphere by < 0.4 * (1 - cos(edge / 2))
    assert np.array_equal(occupancy(sphere, pts)[clear], (r < 0.4)[clear])


def test_open_mesh_is_labelled_by_winding_number():
    box = trimesh.creation.box(extents=(0.5, 0.5, 0.5))
    holed = trimesh.Trimesh(box.vertices, box.faces[:-1], process=False)  # one triangle missing
    assert not holed.is_watertight
    pts = np.array([[0.0, 0.0, 0.0], [0.1, -0.1, 0.05], [0.4, 0.0, 0.0], [0.0, 0.0, -0.3]])
    assert occupancy(holed, pts).tolist() == [True, True, False, False]


def test_near_surface_sampler_distances():
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    std = 0.01
    pts = near_surface_points(box, 20_000, std, np.random.default_rng(0))
    # Distance to the surface of the unit box, analytically: outside, the norm of the excess over 0.5;
    # inside, the gap to the nearest face.
    a = np.abs(pts) - 0.5
    outside = np.linalg.norm(np.maximum(a, 0), axis=1)
    dist = np.where((a > 0).any(axis=1), outside, -a.max(axis=1))
    # Away from edges the distance is |noise . normal| ~ |N(0, std^2)|, mean std * sqrt(2 / pi).
    assert np.mean(dist) == pytest.approx(std * np.sqrt(2 / np.pi), rel=0.1)
    assert np.quantile(dist, 0.999) < 5 * std


def test_iou_by_hand():
    pred = np.array([1, 1, 0, 0, 1, 0], bool)
    labels = np.array([1, 0, 1, 0, 1, 0], bool)
    assert iou(pred, labels) == pytest.approx(2 / 4)
    assert iou(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_normalisation_follows_the_paper():
    mesh = trimesh.creation.box(extents=(2.0, 4.0, 1.0))
    mesh.apply_translation([10.0, -3.0, 2.0])
    out, centre, scale = normalise(mesh)
    v = np.asarray(out.vertices)
    assert v.min() >= 0 and v.max() <= 1
    np.testing.assert_allclose(v.mean(axis=0), 0.5)
    assert scale == pytest.approx(2.0) and np.allclose(centre, [10, -3, 2])
    assert np.ptp(v, axis=0).max() == pytest.approx(1.0)  # the largest |coordinate| maps to 0 or 1


def test_builtin_shape_is_watertight_detailed_and_cached(tmp_path):
    a = builtin_shape()
    assert a.is_watertight and len(a.faces) == 81920
    assert (tmp_path / "cache" / "shapes" / "ridged_sphere_v1.ply").is_file()
    b = builtin_shape()
    np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-6)


def test_test_sets_are_cached(tmp_path):
    mesh, _, _ = normalise(trimesh.creation.icosphere(subdivisions=3))
    a = build_test_sets(mesh, 1000, 0.01, seed=0)
    files = list((tmp_path / "cache" / "testsets").glob("*.npz"))
    assert len(files) == 1
    b = build_test_sets(mesh, 1000, 0.01, seed=0)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert abs(a["uniform_labels"].mean() - np.pi / 6) < 0.05  # a sphere of radius 1/2 fills pi/6 of the box


class SphereLogits(nn.Module):
    """An oracle field: logit = 0.4 - |p - 0.5| (inside a sphere of radius 0.4)."""

    in_dim, out_dim = 3, 1

    def forward(self, p):
        return (0.4 - (p - 0.5).norm(dim=-1, keepdim=True)) * 50

    def predict(self, p, chunk=65536):
        return self(p)


def test_extracted_mesh_is_watertight_and_on_the_surface(tmp_path):
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=3.0)
    mesh.apply_translation([1.0, 2.0, 3.0])
    path = tmp_path / "sphere.ply"
    mesh.export(path)
    cfg = OmegaConf.create({"name": "shape", "mesh": str(path), "test_points": 1000, "surface_std": 0.01,
                            "mesh_resolution": 64, "chunk": 10000, "data_seed": 0, "box": "tight"})
    task = ShapeTask(cfg, torch.device("cpu"))
    out = task.extract_mesh(SphereLogits(), 64)
    assert out.is_watertight
    # In the input's frame: centre (1, 2, 3), radius 0.4 * 2 * scale = 0.8 * 3 = 2.4, within a grid cell.
    r = np.linalg.norm(out.vertices - [1.0, 2.0, 3.0], axis=1)
    assert np.abs(r - 2.4).max() < 2 * 6.0 / 63


@pytest.mark.skipif(not BUNNY.exists(), reason=f"Stanford bunny not found at {BUNNY} (../shared/data is absent)")
def test_short_run_on_the_bunny(run_cli, tmp_path):
    # posenc without the 1/sqrt(m) feature scaling learns fastest in a short run (measured iou_uniform
    # ~0.88 after 150 steps; the paper's gauss/sqrt(m) setting needs thousands of steps).
    r = run_cli("experiment=paper_shape", f"task.mesh={BUNNY}", "model.depth=4", "model.width=64",
                "encoding=posenc", "encoding.scale=4", "encoding.normalize=false",
                "encoding.m=64", "trainer.steps=150", "trainer.batch_size=4096", "trainer.lr=3e-3",
                "trainer.lr_decay_steps=150", "trainer.eval_every=50", "task.test_points=20000",
                "task.mesh_resolution=48", "trainer.progress=false", "hydra.run.dir=bunny", timeout=600)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "bunny"
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["metrics"]) == {"iou_uniform", "iou_surface"}
    assert m["metrics"]["iou_uniform"] > 0.5
    pred = trimesh.load(out / "reconstruction.ply", force="mesh")
    truth = trimesh.load(out / "ground_truth.ply", force="mesh")
    assert pred.is_watertight
    # Near the ground truth: the predicted surface lies on average within 3% of the shape's size of the
    # true one (mean nearest-neighbour distance between 5,000 points sampled on each; measured 1.6%).
    from scipy.spatial import cKDTree

    size = np.ptp(truth.bounds, axis=0).max()
    p_pts, _ = trimesh.sample.sample_surface(pred, 5000, seed=0)
    t_pts, _ = trimesh.sample.sample_surface(truth, 5000, seed=0)
    pred_to_truth = cKDTree(t_pts).query(p_pts)[0].mean()
    print("mean distance / size:", pred_to_truth / size)
    assert pred_to_truth < 0.03 * size
    assert (out / "preview.png").stat().st_size > 10_000


def test_bad_meshes_exit_2(run_cli, tmp_path):
    cloud = tmp_path / "cloud.ply"
    trimesh.PointCloud(np.random.rand(50, 3)).export(cloud)
    r = run_cli("task=shape", f"task.mesh={cloud}", "trainer.steps=1")
    assert r.returncode == 2 and "holds no triangles" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("task=shape", f"task.mesh={tmp_path / 'nope.obj'}", "trainer.steps=1")
    assert r.returncode == 2 and "no such file" in r.stderr
