"""Meshes for the occupancy task: loading (trimesh), the paper's normalisation, inside/outside labels
(generalised winding numbers from libigl), point samplers, a built-in shape, and cached test sets."""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import numpy as np
import trimesh

from ffrun.data.location import cache_dir
from ffrun.util.atomic import write_bytes
from ffrun.util.errors import FfrunError
from ffrun.util.paths import shown, user_path

log = logging.getLogger("ffrun.meshes")

MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")


def load_mesh(path: str | Path) -> trimesh.Trimesh:
    p = user_path(path, f"task.mesh={shown(path)}")
    if not p.is_file():
        raise FfrunError(f"task.mesh={path}: no such file; give an OBJ, PLY, STL, OFF or GLB mesh")
    if p.suffix.lower() not in MESH_SUFFIXES:
        raise FfrunError(f"task.mesh={path}: unsupported extension {p.suffix!r}; use one of {', '.join(MESH_SUFFIXES)}")
    try:
        text = _as_utf8(p)
        # Unprocessed first: processing would silently drop the faces of non-finite vertices.
        def read(**force):
            source = str(p) if text is None else io.BytesIO(text)
            return trimesh.load(source, file_type=p.suffix.lower()[1:], process=False, **force)

        mesh = read(force="mesh")
        # Without faces, force="mesh" drops the vertices too: read again to tell points from garbage.
        points = len(getattr(mesh, "faces", ())) == 0 and len(getattr(read(), "vertices", ())) > 0
    except Exception as e:
        raise FfrunError(f"task.mesh={path}: cannot read it as a mesh ({type(e).__name__}: {e})") from None
    if len(getattr(mesh, "faces", ())) == 0 and not points:
        raise FfrunError(f"task.mesh={path}: no vertices or faces could be read from it, so it is not a readable "
                         f"{p.suffix.lower()[1:].upper()} mesh (damaged, empty, or another format); give a surface "
                         "mesh")
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise FfrunError(f"task.mesh={path}: the file holds no triangles (a point cloud?); occupancy needs a "
                         "surface mesh with faces")
    check_vertices(mesh.vertices, f"task.mesh={path}")
    mesh.process()  # merge duplicate vertices, as trimesh.load(process=True) does
    if not mesh.is_watertight:
        log.warning("task.mesh=%s is not watertight (%d faces); labelling with generalised winding numbers, "
                    "which stay meaningful for open or self-intersecting meshes", path, len(mesh.faces))
    return mesh


def _as_utf8(p: Path) -> bytes | None:
    """The file re-encoded so trimesh can parse it, or None when it already can: text formats (OBJ, OFF) and
    PLY headers in Latin-1 or another 8-bit encoding (a comment with an accent) fail trimesh's UTF-8
    decoding. Every byte is a Latin-1 character, so decoding as Latin-1 cannot fail and keeps the numbers."""
    suffix = p.suffix.lower()
    if suffix not in (".obj", ".off", ".ply"):
        return None
    data = p.read_bytes()
    if suffix == ".ply":  # only the header is text; the body may be binary
        end = data.find(b"end_header")
        head = data[:end] if end > 0 else b""
        if not any(b > 127 for b in head):
            return None
        return head.decode("latin-1").encode("ascii", "replace") + data[end:]
    try:
        data.decode("utf-8")
        return None
    except UnicodeDecodeError:
        return data.decode("latin-1").encode("utf-8")


def check_vertices(vertices: np.ndarray, where: str) -> None:
    """Refuse vertices that cannot bound a volume: non-finite coordinates, or no extent along an axis
    (one point, a line or a plane: nothing inside to learn; the winding-number code crashes on it)."""
    v = np.asarray(vertices, dtype=np.float64)
    bad = ~np.isfinite(v).all(axis=1)
    if bad.any():
        raise FfrunError(f"{where}: {int(bad.sum())} of {len(v)} vertices have NaN or infinite coordinates "
                         f"(the first is vertex {int(np.argmax(bad))}); fix or remove them in the mesh file")
    extent = np.ptp(v, axis=0) if len(v) else np.zeros(3)
    if not (extent > 0).all():
        axis = "xyz"[int(np.argmin(extent))]
        raise FfrunError(f"{where}: the mesh has no extent along {axis} (extent {extent.tolist()}), so it encloses "
                         "no volume and has no inside to learn; give a closed surface mesh")


def normalise(mesh: trimesh.Trimesh) -> tuple[trimesh.Trimesh, np.ndarray, float]:
    """The paper (docs/protocol.md): centre on the vertex mean, divide by the largest absolute coordinate, map
    to [0, 1]. Returns the normalised mesh, the centre and the scale (original = (v * 2 - 1) * scale + centre)."""
    check_vertices(mesh.vertices, "task.mesh")
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


BOXES = ("tight", "unit")
BOX_MARGIN = 1e-3


def sampling_box(mesh: trimesh.Trimesh, kind: str = "tight") -> tuple[np.ndarray, np.ndarray]:
    """The box (lo, hi) that training and uniform test points fill, for a normalised mesh: `tight`, the
    notebook's [vertex min - 1e-3, vertex max + 1e-3], or `unit`, [0, 1]^3."""
    if kind == "unit":
        return np.zeros(3), np.ones(3)
    v = np.asarray(mesh.vertices, dtype=np.float64)
    return v.min(axis=0) - BOX_MARGIN, v.max(axis=0) + BOX_MARGIN


def uniform_points(n: int, rng: np.random.Generator, box: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """n points uniform in the box (lo, hi); [0, 1]^3 when no box is given."""
    u = rng.random((n, 3))
    if box is None:
        return u
    lo, hi = box
    return lo + u * (hi - lo)


def near_surface_points(mesh: trimesh.Trimesh, n: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """The paper (docs/protocol.md): a random face (uniformly, not area-weighted), a uniform barycentric point
    on it, plus N(0, std^2) noise per axis."""
    tri = np.asarray(mesh.triangles)[rng.integers(0, len(mesh.faces), n)]
    r1, r2 = rng.random((2, n, 1))
    s = np.sqrt(r1)
    on = (1 - s) * tri[:, 0] + s * (1 - r2) * tri[:, 1] + s * r2 * tri[:, 2]
    return on + rng.normal(0.0, std, size=on.shape)


def build_test_sets(mesh: trimesh.Trimesh, n: int, std: float, seed: int,
                    box: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The uniform (in `box`, default [0, 1]^3) and near-surface test points with labels, built once per
    (mesh, n, std, seed, box) and cached as .npz under cache_dir()/testsets."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(mesh.vertices, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(mesh.faces, dtype=np.int64).tobytes())
    h.update(f"{n}-{std}-{seed}".encode())
    if box is not None:
        h.update(np.ascontiguousarray(box, dtype=np.float64).tobytes())
    path = cache_dir() / "testsets" / f"{h.hexdigest()[:24]}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        except Exception:
            log.warning("test-set cache %s is unreadable; rebuilding it", path)
    rng = np.random.default_rng(seed)
    uni = uniform_points(n, rng, box)
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
