"""Meshes for the occupancy task: loading (trimesh), the paper's normalisation, inside/outside labels
(generalised winding numbers from libigl), point samplers, a built-in shape, and cached test sets."""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import numpy as np
import trimesh

from ffrun.atomic import write_bytes
from ffrun.data.location import cache_dir
from ffrun.errors import FfrunError

log = logging.getLogger("ffrun.meshes")

MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")


def load_mesh(path: str | Path) -> trimesh.Trimesh:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FfrunError(f"task.mesh={path}: no such file; give an OBJ, PLY, STL, OFF or GLB mesh")
    if p.suffix.lower() not in MESH_SUFFIXES:
        raise FfrunError(f"task.mesh={path}: unsupported extension {p.suffix!r}; use one of {', '.join(MESH_SUFFIXES)}")
    try:
        mesh = trimesh.load(str(p), force="mesh", process=True)
    except Exception as e:
        raise FfrunError(f"task.mesh={path}: cannot read it as a mesh ({type(e).__name__}: {e})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise FfrunError(f"task.mesh={path}: the file holds no triangles (a point cloud?); occupancy needs a "
                         "surface mesh with faces")
    if not mesh.is_watertight:
        log.warning("task.mesh=%s is not watertight (%d faces); labelling with generalised winding numbers, "
                    "which stay meaningful for open or self-intersecting meshes", path, len(mesh.faces))
    return mesh


def normalise(mesh: trimesh.Trimesh) -> tuple[trimesh.Trimesh, np.ndarray, float]:
    """PAPER.md: centre on the vertex mean, divide by the largest absolute coordinate, map to [0, 1].
    Returns the normalised mesh, the centre and the scale (original = (v * 2 - 1) * scale + centre)."""
    v = np.asarray(mesh.vertices, dtype=np.float64)
    centre = v.mean(axis=0)
    scale = float(np.abs(v - centre).max())
    out = trimesh.Trimesh(((v - centre) / scale + 1.0) / 2.0, np.asarray(mesh.faces), process=False)
    return out, centre, scale


def occupancy(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Inside (True) / outside labels from the generalised winding number (> 0.5), libigl's fast
    hierarchical evaluation: exact for watertight meshes, robust for open ones."""
    import igl

    v = np.ascontiguousarray(mesh.vertices, dtype=np.float64)
    f = np.ascontiguousarray(mesh.faces, dtype=np.int64)
    return igl.fast_winding_number(v, f, np.ascontiguousarray(points, dtype=np.float64)) > 0.5


def uniform_points(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.random((n, 3))


def near_surface_points(mesh: trimesh.Trimesh, n: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """PAPER.md: a random face (uniformly, not area-weighted), a uniform barycentric point on it, plus
    N(0, std^2) noise per axis."""
    tri = np.asarray(mesh.triangles)[rng.integers(0, len(mesh.faces), n)]
    r1, r2 = rng.random((2, n, 1))
    s = np.sqrt(r1)
    on = (1 - s) * tri[:, 0] + s * (1 - r2) * tri[:, 1] + s * r2 * tri[:, 2]
    return on + rng.normal(0.0, std, size=on.shape)


def build_test_sets(mesh: trimesh.Trimesh, n: int, std: float, seed: int) -> dict[str, np.ndarray]:
    """The uniform and near-surface test points with labels, built once per (mesh, n, std, seed) and
    cached as .npz under cache_dir()/testsets."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(mesh.vertices, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(mesh.faces, dtype=np.int64).tobytes())
    h.update(f"{n}-{std}-{seed}".encode())
    path = cache_dir() / "testsets" / f"{h.hexdigest()[:24]}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        except Exception:
            log.warning("test-set cache %s is unreadable; rebuilding it", path)
    rng = np.random.default_rng(seed)
    uni = uniform_points(n, rng)
    surf = near_surface_points(mesh, n, std, rng)
    sets = {"uniform": uni.astype(np.float32), "uniform_labels": occupancy(mesh, uni),
            "surface": surf.astype(np.float32), "surface_labels": occupancy(mesh, surf)}
    buf = io.BytesIO()
    np.savez_compressed(buf, **sets)
    write_bytes(path, buf.getvalue())
    return sets


def builtin_shape() -> trimesh.Trimesh:
    """ffrun's default shape, made procedurally and cached: a sphere whose radius carries ridges at three
    scales (6, 14 and 30 bumps around), so low-frequency fits miss visible detail. Watertight by
    construction (a radial displacement of a subdivided icosphere, 81,920 faces)."""
    path = cache_dir() / "shapes" / "ridged_sphere_v1.ply"
    if path.is_file():
        try:
            return trimesh.load(str(path), force="mesh", process=False)
        except Exception:
            log.warning("cached built-in shape %s is unreadable; rebuilding it", path)
    sphere = trimesh.creation.icosphere(subdivisions=6)
    u = sphere.vertices / np.linalg.norm(sphere.vertices, axis=1, keepdims=True)
    x, y, z = u.T
    r = (1.0 + 0.12 * np.sin(6 * x) * np.sin(6 * y) * np.sin(6 * z)
         + 0.05 * np.sin(14 * x + 1.0) * np.sin(14 * y + 2.0)
         + 0.02 * np.sin(30 * z + 0.5) * np.cos(30 * x))
    mesh = trimesh.Trimesh(u * r[:, None], sphere.faces, process=False)
    write_bytes(path, mesh.export(file_type="ply"))
    return mesh


def iou(pred: np.ndarray, labels: np.ndarray) -> float:
    """|pred AND labels| / |pred OR labels| (1.0 when both are empty)."""
    union = np.logical_or(pred, labels).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, labels).sum() / union)
