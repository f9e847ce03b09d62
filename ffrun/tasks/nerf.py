"""The paper's simplified NeRF: 3D position -> (RGB, density), volume rendering along camera rays, loss
against photographs. One network, no view direction, no hierarchical sampling.

Forward model (`render_rays`): `n_samples` depths t_i between near and far (stratified, jittered while
training), raw = field(o + t_i d); density = ReLU(raw[3]) (`task.density_activation`: or softplus, or
Instant-NGP's truncated exponential), colour = sigmoid(raw[:3]);
alpha_i = 1 - exp(-density_i * delta_i |d|) with delta_i = t_{i+1} - t_i (1e10 for the last sample);
weights w_i = alpha_i * prod_{j<i}(1 - alpha_j); pixel = sum_i w_i c_i (+ (1 - sum_i w_i) on white).
Loss: MSE of rendered against true pixel colours over `trainer.batch_size` rays (null = 1024), drawn at
random from all training rays, or (`task.ray_order=shuffled_once`) walked in order through one shuffle.

Where the paper's notebook differs, a switch selects its choice (experiment=paper_nerf sets all four;
docs/protocol.md says why ffrun's defaults differ): `task.pixel_centers=false` (rays through pixel
corners), `task.world_distances=false` (delta_i without |d|), `task.white_background=false`,
`task.ray_order=shuffled_once`.

Metrics: `test_psnr` (mean over the test views, each rendered in full) and `test_psnr_std`.
Outputs: `test_views/<name>.png` (photograph | render | error | depth, labelled), `<name>_render.png`
(the render alone), `test_views/<name>_depth.png` (expected depth,
coloured from near to far), `test_views/depth.npz` (raw depth and opacity per view), `turntable.gif`
(novel views on a circle matching the training cameras).
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor
from tqdm.auto import tqdm

from ffrun.data.scenes import builtin_scene, camera_rays, load_blender, orbit_like, orbit_poses
from ffrun.tasks.base import Task, TaskConfig
from ffrun.tasks.registry import Limit, register_task
from ffrun.util.atomic import atomic_write, write_bytes, write_png
from ffrun.util.errors import FfrunError
from ffrun.util.metrics import psnr
from ffrun.util.pictures import error_map, labelled_row, metric_label

log = logging.getLogger("ffrun.nerf")

RAY_ORDERS = ("random", "shuffled_once")


class TruncExp(torch.autograd.Function):
    """Instant-NGP's truncated exponential (torch-ngp's trunc_exp): exp(x) forward; backward the
    derivative exp(x) with x clamped at 15, so one large raw density cannot blow up the gradient."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:
    return TruncExp.apply(x)


# task.density_activation: raw network output -> density >= 0
DENSITY_ACTIVATIONS = {
    "relu": F.relu,  # the paper's (and the NeRF paper's); no gradient where the raw density is below zero
    "softplus": F.softplus,  # log(1 + e^x): smooth, positive gradient everywhere
    "trunc_exp": trunc_exp,  # Instant-NGP's: exp(x), gradient clamped at exp(15)
}


@dataclass
class NeRFTaskConfig(TaskConfig):
    name: str = "nerf"
    data: Optional[str] = None  # a Blender-format scene folder; None = ffrun's built-in scene (rendered once, cached)
    downscale: int = 1  # integer factor; the images are area-averaged and the focal length divided by it
    builtin_resolution: int = 64  # image size of the built-in scene
    near: float = 2.0
    far: float = 6.0
    n_samples: int = 128  # stratified samples per ray (jittered while training, the grid at evaluation)
    white_background: bool = True  # photographs and renders on white; false = on black (the notebook)
    pixel_centers: bool = True  # rays through pixel centres; false = through their corners (the notebook)
    world_distances: bool = True  # alpha from the sample spacing times |d|; false = the spacing alone (the notebook)
    # raw output -> density: relu (the paper's) | softplus | trunc_exp (Instant-NGP's; method=hashgrid sets it)
    density_activation: str = "relu"
    # random (each batch drawn anew) | shuffled_once (one shuffle walked in order: the notebook)
    ray_order: str = "random"
    test_views: Optional[int] = None  # evaluate on the first N test views; None = all
    chunk: int = 131072  # points (rays x samples) per chunk when rendering whole views
    turntable_frames: int = 40  # frames of the turntable GIF of novel views; 0 = none


def sample_depths(n_rays: int, near: float, far: float, n_samples: int, generator: torch.Generator | None,
                  device: torch.device) -> Tensor:
    """(n_rays, n_samples) depths: linspace(near, far, n_samples), each jittered by U[0, (far - near) /
    n_samples) when a generator is given (stratified sampling for training), else exactly the grid."""
    t = torch.linspace(near, far, n_samples, device=device).expand(n_rays, n_samples)
    if generator is None:
        return t.contiguous()
    jitter = torch.rand(n_rays, n_samples, generator=generator, device=device)
    return t + jitter * ((far - near) / n_samples)


def composite(raw: Tensor, t: Tensor, directions: Tensor, white_background: bool = True,
              world_distances: bool = True, density_activation: str = "relu") -> tuple[Tensor, Tensor, Tensor]:
    """Alpha compositing of raw field outputs (R, S, 4) at depths t (R, S) along rays with directions (R, 3).

    `world_distances` multiplies the depth steps by |d|, so density is per unit of world distance and a
    ray crossing a slab obliquely absorbs more; false uses the steps in t alone, as the notebook.
    `density_activation` (DENSITY_ACTIVATIONS) turns raw[..., 3] into a density.
    Returns the pixel colours (R, 3), expected depths sum_i w_i t_i (R,) and opacities sum_i w_i (R,)."""
    rgb = torch.sigmoid(raw[..., :3])
    density = DENSITY_ACTIVATIONS[density_activation](raw[..., 3])
    deltas = torch.cat([t[..., 1:] - t[..., :-1], torch.full_like(t[..., :1], 1e10)], dim=-1)
    if world_distances:
        deltas = deltas * directions.norm(dim=-1, keepdim=True)
    alpha = 1.0 - torch.exp(-density * deltas)
    # transmittance before sample i: prod_{j<i} (1 - alpha_j); the 1e-10 keeps cumprod's gradient finite
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha + 1e-10], -1), -1)[..., :-1]
    weights = alpha * transmittance
    colour = torch.sum(weights[..., None] * rgb, dim=-2)
    depth = torch.sum(weights * t, dim=-1)
    opacity = torch.sum(weights, dim=-1)
    if white_background:
        colour = colour + (1.0 - opacity[..., None])
    return colour, depth, opacity


def render_rays(field, origins: Tensor, directions: Tensor, t: Tensor, white_background: bool = True,
                world_distances: bool = True, density_activation: str = "relu"):
    """Colour, depth and opacity of rays (R, 3) sampled at depths t (R, S) through `field`."""
    points = origins[:, None, :] + t[..., None] * directions[:, None, :]
    return composite(field(points), t, directions, white_background, world_distances, density_activation)


@register_task("nerf", NeRFTaskConfig, limits={"downscale": Limit(1, "an integer >= 1"),
                                               "builtin_resolution": Limit(8, "at least 8 pixels")})
class NeRFTask(Task):
    in_dim = 3
    out_dim = 4
    out_activation = "none"
    primary_metric = "test_psnr"
    bounds = (-1.5, 1.5)  # the Blender scenes' objects (and the built-in still life) lie inside [-1.5, 1.5]^3
    coordinates = ("world-space 3D points of the scene; outputs (r, g, b, density) before the sigmoid / density "
                   "activation (task.density_activation) that volume rendering applies")

    def __init__(self, cfg: DictConfig, device: torch.device, batch_size: int | None = None, seed: int = 0):
        if not 0 <= cfg.near < cfg.far:
            raise FfrunError(f"task.near={cfg.near}, task.far={cfg.far}: use 0 <= near < far")
        if cfg.n_samples < 2:
            raise FfrunError(f"task.n_samples={cfg.n_samples}: use at least 2 samples per ray")
        if cfg.chunk < cfg.n_samples:
            raise FfrunError(f"task.chunk={cfg.chunk}: a chunk must hold one ray's {cfg.n_samples} samples")
        if cfg.turntable_frames < 0 or (cfg.test_views is not None and cfg.test_views < 1):
            raise FfrunError("task.turntable_frames must be >= 0 and task.test_views >= 1 (or null for all)")
        if cfg.ray_order not in RAY_ORDERS:
            raise FfrunError(f"task.ray_order={cfg.ray_order}: use {' or '.join(RAY_ORDERS)}")
        if cfg.density_activation not in DENSITY_ACTIVATIONS:
            raise FfrunError(f"task.density_activation={cfg.density_activation}: not a density activation; use "
                             f"{', '.join(DENSITY_ACTIVATIONS)}")
        folder = builtin_scene(cfg.builtin_resolution) if cfg.data is None else cfg.data
        # One background for photographs and renders: white (ffrun), or black (the notebook's Lego)
        self.train_views = load_blender(folder, "train", cfg.downscale, white=cfg.white_background)
        self.test_views = load_blender(folder, "test", cfg.downscale, limit=cfg.test_views, white=cfg.white_background)
        self.device = device
        self.near, self.far, self.n_samples = float(cfg.near), float(cfg.far), int(cfg.n_samples)
        self.white = bool(cfg.white_background)
        self.centers, self.world_distances = bool(cfg.pixel_centers), bool(cfg.world_distances)
        self.ray_order = cfg.ray_order
        self.density_activation = cfg.density_activation
        self.rays_per_chunk = max(1, cfg.chunk // self.n_samples)
        self.turntable_frames = cfg.turntable_frames
        self.batch_size = batch_size or 1024
        self.generator = torch.Generator(device=device).manual_seed(seed)  # draws on the device: no host copy a step
        # Every training ray, once: origins, directions and the pixel colours they must render.
        o, d = zip(*(camera_rays(self.train_views.height, self.train_views.width, self.train_views.focal,
                                 torch.from_numpy(pose), self.centers) for pose in self.train_views.poses))
        rays = [torch.stack(o).reshape(-1, 3), torch.stack(d).reshape(-1, 3),
                torch.from_numpy(self.train_views.images).reshape(-1, 3)]
        if self.ray_order == "shuffled_once":  # the notebook shuffles its ray table once, then walks it
            order = torch.randperm(rays[0].shape[0], generator=self.generator, device=device).cpu()
            rays = [r[order] for r in rays]
        self.rays_o, self.rays_d, self.rays_rgb = (r.to(device) for r in rays)

    def points_per_step(self) -> int:
        return self.batch_size * self.n_samples  # rays x samples along each

    def sample(self, step: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if self.ray_order == "shuffled_once":
            # Batch k of an epoch is rays [k B, (k + 1) B) of the shuffled table, the last one shorter when B
            # does not divide the count; a function of the step alone, so a resumed run continues the walk.
            n = self.rays_o.shape[0]
            start = step % -(-n // self.batch_size) * self.batch_size
            rays = slice(start, min(start + self.batch_size, n))
            t = sample_depths(rays.stop - start, self.near, self.far, self.n_samples, self.generator, self.device)
            return self.rays_o[rays], self.rays_d[rays], self.rays_rgb[rays], t
        idx = torch.randint(0, self.rays_o.shape[0], (self.batch_size,), generator=self.generator, device=self.device)
        t = sample_depths(self.batch_size, self.near, self.far, self.n_samples, self.generator, self.device)
        return self.rays_o[idx], self.rays_d[idx], self.rays_rgb[idx], t

    def loss(self, field, batch) -> Tensor:
        origins, directions, target, t = batch
        colour, _, _ = render_rays(field, origins, directions, t, self.white, self.world_distances,
                                   self.density_activation)
        return torch.mean((colour - target) ** 2)

    def train_psnr_from_loss(self, loss: float) -> float | None:
        return -10.0 * math.log10(loss) if loss > 0 else math.inf

    @torch.no_grad()
    def render_view(self, field, pose: np.ndarray, height: int, width: int,
                    focal: float) -> tuple[Tensor, Tensor, Tensor]:
        """A whole image rendered in chunks of rays (bounded memory at any resolution): colour (H, W, 3),
        depth (H, W), opacity (H, W)."""
        o, d = camera_rays(height, width, focal, torch.from_numpy(pose).to(self.device), self.centers)
        o, d = o.reshape(-1, 3), d.reshape(-1, 3)
        parts = []
        for i in range(0, o.shape[0], self.rays_per_chunk):
            oc, dc = o[i : i + self.rays_per_chunk], d[i : i + self.rays_per_chunk]
            t = sample_depths(oc.shape[0], self.near, self.far, self.n_samples, None, self.device)
            parts.append(render_rays(field, oc, dc, t, self.white, self.world_distances, self.density_activation))
        colour, depth, opacity = (torch.cat(p) for p in zip(*parts))
        return colour.reshape(height, width, 3), depth.reshape(height, width), opacity.reshape(height, width)

    def _render_test_views(self, field) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Every test view, rendered once per state of the weights (evaluate, preview and save share it)."""
        v = self.test_views
        return self.memo(field, "test_views", lambda: [
            self.render_view(field, pose, v.height, v.width, v.focal)
            for pose in tqdm(v.poses, desc="render test views", leave=False, disable=None)])

    def view_sheet(self, i: int, colour: Tensor, depth: Tensor, opacity: Tensor) -> np.ndarray:
        """Test view i, labelled: photograph | render (with its PSNR) | |error| x 4 | expected depth."""
        truth, render = self.test_views.images[i], colour.clamp(0, 1).cpu().numpy()
        value = psnr(torch.from_numpy(render), torch.from_numpy(truth))
        name = self.test_views.names[i]
        return labelled_row([
            (f"photograph\n{name}", truth),
            (f"render\n{metric_label('psnr', value)}", render),
            ("|error| x 4", error_map(truth, render)),
            (f"expected depth\n{self.near:g} (yellow) to {self.far:g}", self.colour_depth(depth.cpu().numpy(),
                                                                                   opacity.cpu().numpy())),
        ])

    def preview(self, field) -> dict[str, np.ndarray]:
        return {"test_view": self.view_sheet(0, *self._render_test_views(field)[0])}

    def evaluate(self, field) -> dict[str, float]:
        renders = self._render_test_views(field)
        truth = torch.from_numpy(self.test_views.images)
        scores = np.array([psnr(colour.cpu(), truth[i]) for i, (colour, _, _) in enumerate(renders)])
        return {"test_psnr": float(scores.mean()), "test_psnr_std": float(scores.std())}

    def save(self, field, run_dir: Path) -> None:
        v = self.test_views
        renders = self._render_test_views(field)
        out = run_dir / "test_views"
        depths, opacities = [], []
        for i, (name, (colour, depth, opacity)) in enumerate(zip(v.names, renders)):
            write_png(out / f"{name}.png", self.view_sheet(i, colour, depth, opacity))
            write_png(out / f"{name}_render.png", colour.cpu().numpy())
            write_png(out / f"{name}_depth.png", self.colour_depth(depth.cpu().numpy(), opacity.cpu().numpy()))
            depths.append(depth.cpu().numpy())
            opacities.append(opacity.cpu().numpy())
        # The first test view alone, for galleries beside other runs.
        write_png(run_dir / "ground_truth.png", v.images[0])
        write_png(run_dir / "reconstruction.png", renders[0][0].cpu().numpy())
        atomic_write(out / "depth.npz", lambda f: np.savez_compressed(
            f, names=np.array(v.names), depth=np.stack(depths), opacity=np.stack(opacities), near=self.near,
            far=self.far))
        if self.turntable_frames:
            write_bytes(run_dir / "turntable.gif", self.turntable(field))

    def colour_depth(self, depth: np.ndarray, opacity: np.ndarray) -> np.ndarray:
        """Expected depth (normalised by opacity) coloured from near (yellow) to far (purple), white where
        the ray hits nothing."""
        from matplotlib import colormaps

        d = depth / np.maximum(opacity, 1e-6)
        rgb = colormaps["viridis_r"](np.clip((d - self.near) / (self.far - self.near), 0, 1))[..., :3]
        a = np.clip(opacity, 0, 1)[..., None]
        return rgb * a + (1 - a)

    def turntable(self, field) -> bytes:
        """An animated GIF of novel views on a circle at the training cameras' median radius and elevation."""
        from PIL import Image

        radius, elevation = orbit_like(self.train_views.poses)
        v = self.test_views
        frames = []
        for pose in tqdm(orbit_poses(self.turntable_frames, radius, elevation), desc="render turntable",
                         leave=False, disable=None):
            colour, _, _ = self.render_view(field, pose, v.height, v.width, v.focal)
            frames.append(Image.fromarray((colour.clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)))
        buf = io.BytesIO()
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
        return buf.getvalue()


__all__ = ["NeRFTask", "composite", "render_rays", "sample_depths"]
