"""3D shape occupancy: points -> inside (1) / outside (0) of a mesh normalised into [0, 1]^3, the paper's
3D shape experiment. The field outputs a logit; loss sigmoid cross-entropy on `trainer.batch_size` points
drawn uniformly in the sampling box every step (labelled on the fly by winding numbers). The box is the
notebook's: the mesh's tight bounding box plus 1e-3 (`task.box=tight`), or [0, 1]^3 (`task.box=unit`).
Metrics `iou_uniform` (points uniform in the box) and `iou_surface` (near-surface points) of (logit > 0)
on cached test sets.

Outputs: `reconstruction.ply` (marching cubes on the predicted occupancy at `task.mesh_resolution`,
evaluated in chunks, in the input mesh's own coordinates), `ground_truth.ply` (the normalised input
mapped back likewise) and `preview.png` (truth and reconstruction side by side, labelled with the IoUs),
and each alone as `ground_truth.png` and `reconstruction.png`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from ffrun.tasks.base import Task, TaskConfig
from ffrun.tasks.registry import Limit, register_task
from ffrun.util.atomic import write_bytes, write_png
from ffrun.util.errors import FfrunError
from ffrun.util.pictures import labelled_row, metric_label

# trimesh (through ffrun.data.meshes) takes over a second to import: it is imported where a mesh is used,
# so registering the task (every ffrun start) does not pay for it.
if TYPE_CHECKING:
    import trimesh

log = logging.getLogger("ffrun.shape")


@dataclass
class ShapeTaskConfig(TaskConfig):
    name: str = "shape"
    mesh: Optional[str] = None  # OBJ/PLY/STL/OFF/GLB; None = ffrun's built-in ridged sphere
    test_points: int = 262144  # 2^18 uniform + 2^18 near-surface test points, cached per mesh
    surface_std: float = 0.01  # noise of the near-surface samples (normalised units)
    box: str = "tight"  # training and uniform test points: tight (bounding box + 1e-3, the paper) | unit ([0, 1]^3)
    mesh_resolution: int = 128  # marching-cubes grid for the exported surface
    chunk: int = 65536  # points per evaluation chunk
    data_seed: int = 0  # seeds the test sets


@register_task("shape", ShapeTaskConfig, limits={"chunk": Limit(1, "a positive number of points"),
                                                 "surface_std": Limit(1e-300, "a positive spread")})
class ShapeTask(Task):
    in_dim = 3
    out_dim = 1
    out_activation = "none"
    primary_metric = "iou_surface"
    coordinates = ("points in [0, 1]^3 of the normalised mesh (centre on the vertex mean, divide by the largest "
                   "absolute coordinate, map [-1, 1] to [0, 1]); output the occupancy logit")

    def __init__(self, cfg: DictConfig, device: torch.device, batch_size: int | None = None, seed: int = 0):
        from ffrun.data.meshes import BOXES, build_test_sets, builtin_shape, load_mesh, normalise, sampling_box

        if cfg.mesh_resolution < 8:
            raise FfrunError(f"task.mesh_resolution={cfg.mesh_resolution}: use at least 8")
        if cfg.test_points < 1:
            raise FfrunError(f"task.test_points={cfg.test_points}: use at least 1")
        if cfg.box not in BOXES:
            raise FfrunError(f"task.box={cfg.box}: use tight (the mesh's bounding box + 1e-3, the paper) or unit")
        if cfg.mesh is None:
            log.info("task.mesh is not set: using ffrun's built-in ridged sphere (give task.mesh=PATH for a mesh, "
                     "e.g. one of $FFRUN_DATA/meshes/*.obj)")
        raw = builtin_shape() if cfg.mesh is None else load_mesh(cfg.mesh)
        self.mesh, self.centre, self.scale = normalise(raw)
        self.box = sampling_box(self.mesh, cfg.box)
        self.device = device
        self.batch_size = batch_size or 32768
        self.rng = np.random.default_rng(seed)
        sets = build_test_sets(self.mesh, cfg.test_points, cfg.surface_std, cfg.data_seed, self.box)
        self.tests = {name: (torch.from_numpy(sets[name]).to(device), sets[f"{name}_labels"])
                      for name in ("uniform", "surface")}
        self.resolution = cfg.mesh_resolution
        self.chunk = cfg.chunk

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]

    def points_per_step(self) -> int:
        return self.batch_size

    def sample(self, step: int) -> tuple[Tensor, Tensor]:
        from ffrun.data.meshes import occupancy, uniform_points

        pts = uniform_points(self.batch_size, self.rng, self.box)
        labels = occupancy(self.mesh, pts)
        return (torch.from_numpy(pts.astype(np.float32)).to(self.device),
                torch.from_numpy(labels.astype(np.float32)).to(self.device)[:, None])

    def loss(self, field, batch) -> Tensor:
        pts, labels = batch
        return F.binary_cross_entropy_with_logits(field(pts), labels)

    def evaluate(self, field) -> dict[str, float]:
        from ffrun.data.meshes import iou

        def compute() -> dict[str, float]:
            out = {}
            for name, (pts, labels) in self.tests.items():
                pred = (field.predict(pts, chunk=self.chunk)[:, 0] > 0).cpu().numpy()
                out[f"iou_{name}"] = iou(pred, labels)
            return out

        return self.memo(field, "metrics", compute)  # save() labels its pictures with the same numbers

    def preview(self, field) -> dict[str, np.ndarray]:
        """Occupancy on the middle slice of the sampling box (x at its centre): truth | predicted probability."""
        from ffrun.data.meshes import occupancy

        n = 128
        lo, hi = self.box
        y, z = np.linspace(lo[1], hi[1], n), np.linspace(lo[2], hi[2], n)
        yz = np.stack(np.meshgrid(y, z, indexing="ij"), -1).reshape(-1, 2)
        pts = np.concatenate([np.full((n * n, 1), 0.5 * (lo[0] + hi[0])), yz], 1)
        truth = occupancy(self.mesh, pts).reshape(n, n).astype(np.float32)
        logits = field.predict(torch.from_numpy(pts.astype(np.float32)).to(self.device), chunk=self.chunk)
        pred = torch.sigmoid(logits[:, 0]).reshape(n, n).cpu().numpy()
        return {"occupancy_slice": np.rot90(np.concatenate([truth, np.ones((4, n), np.float32), pred], 0))}

    @torch.no_grad()
    def occupancy_grid(self, field, n: int) -> np.ndarray:
        """Predicted logits on an n^3 grid spanning the sampling box (inclusive), where the field was
        trained, evaluated slab by slab."""
        x, y, z = (torch.linspace(float(a), float(b), n, device=self.device) for a, b in zip(*self.box))
        grid = np.empty((n, n, n), dtype=np.float32)
        yz = torch.stack(torch.meshgrid(y, z, indexing="ij"), -1).reshape(-1, 2)
        for i in range(n):
            pts = torch.cat([x[i].expand(yz.shape[0], 1), yz], dim=1)
            grid[i] = field.predict(pts, chunk=self.chunk)[:, 0].reshape(n, n).cpu().numpy()
        return grid

    def extract_mesh(self, field, n: int) -> trimesh.Trimesh:
        import trimesh
        from skimage.measure import marching_cubes

        logits = self.occupancy_grid(field, n)
        if logits.max() <= 0 or logits.min() > 0:
            log.warning("the predicted occupancy has no surface (all %s); the exported mesh is empty",
                        "outside" if logits.max() <= 0 else "inside")
            return trimesh.Trimesh()
        padded = np.pad(logits, 1, constant_values=-1.0)  # closed at the box's faces: watertight output
        verts, faces, _, _ = marching_cubes(padded, level=0.0)
        lo, hi = self.box
        verts = lo + (verts - 1.0) / (n - 1) * (hi - lo)  # grid indices back to the box
        return trimesh.Trimesh(self.to_input_frame(verts), faces[:, ::-1], process=True)

    def to_input_frame(self, v: np.ndarray) -> np.ndarray:
        return (np.asarray(v) * 2.0 - 1.0) * self.scale + self.centre

    def save(self, field, run_dir: Path) -> None:
        import trimesh

        pred = self.extract_mesh(field, self.resolution)
        truth = trimesh.Trimesh(self.to_input_frame(self.mesh.vertices), self.mesh.faces, process=False)
        for name, mesh in (("reconstruction.ply", pred), ("ground_truth.ply", truth)):
            write_bytes(run_dir / name, mesh.export(file_type="ply"))
        truth_img, pred_img = render_meshes([truth, pred])
        write_png(run_dir / "ground_truth.png", truth_img)
        write_png(run_dir / "reconstruction.png", pred_img)
        m = self.evaluate(field)
        write_png(run_dir / "preview.png", labelled_row([
            ("ground truth", truth_img),
            (f"reconstruction (marching cubes at {self.resolution}^3)\n"
             f"{metric_label('iou_uniform', m['iou_uniform'])}, {metric_label('iou_surface', m['iou_surface'])}",
             pred_img)]))


def render_meshes(meshes: list[trimesh.Trimesh], size: int = 400, max_faces: int = 250_000) -> list[np.ndarray]:
    """Flat-shaded views of each mesh from the same camera and bounds (matplotlib, no display or GPU
    needed), as (size, size, 3) float images in [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    bounds = np.concatenate([m.bounds for m in meshes if len(m.faces)] or [np.zeros((2, 3))])
    lo, hi = bounds.min(0), bounds.max(0)
    light = np.array([0.4, -0.5, 0.8]) / np.linalg.norm([0.4, -0.5, 0.8])
    images = []
    for mesh in meshes:
        fig = plt.figure(figsize=(size / 100, size / 100), dpi=100)
        ax = fig.add_axes((0, 0, 1, 1), projection="3d")
        if len(mesh.faces):
            faces = np.arange(len(mesh.faces))
            if len(faces) > max_faces:  # keep rendering time bounded; every kept face is drawn exactly
                faces = np.random.default_rng(0).choice(faces, max_faces, replace=False)
            shade = 0.25 + 0.75 * np.clip(mesh.face_normals[faces] @ light, 0, 1)
            coll = Poly3DCollection(mesh.triangles[faces], facecolors=plt.cm.bone(0.2 + 0.7 * shade),
                                    edgecolor="none")
            ax.add_collection3d(coll)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_zlim(lo[2], hi[2])
        ax.set_box_aspect(hi - lo + 1e-9)
        ax.view_init(elev=20, azim=-60)
        ax.set_axis_off()
        fig.canvas.draw()
        images.append(np.asarray(fig.canvas.buffer_rgba(), dtype=np.float64)[..., :3] / 255.0)
        plt.close(fig)
    return images
