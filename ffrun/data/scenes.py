"""Scenes for the NeRF task in the NeRF "Blender" format, camera rays, and a built-in scene.

The format (Mildenhall et al. 2020, the synthetic datasets): a folder with `transforms_{train,val,test}.json`,
each `{"camera_angle_x": fov, "frames": [{"file_path": "./train/r_0", "transform_matrix": 4x4}, ...]}`,
and RGBA PNGs. `transform_matrix` is camera-to-world with the OpenGL/Blender camera: x right, y up,
looking down -z. Images are composited on white (as NeRF does for these scenes); focal length in pixels
is 0.5 * W / tan(0.5 * camera_angle_x).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ffrun.data.location import cache_dir
from ffrun.util.atomic import write_bytes, write_json
from ffrun.util.errors import FfrunError
from ffrun.util.paths import shown, user_path

log = logging.getLogger("ffrun.scenes")

SPLITS = ("train", "val", "test")


@dataclass
class Views:
    """Posed photographs of one split."""

    images: np.ndarray  # (N, H, W, 3) float32 in [0, 1], composited on white (or black)
    poses: np.ndarray  # (N, 4, 4) float32 camera-to-world
    focal: float  # pixels, after downscaling
    names: list[str]

    @property
    def height(self) -> int:
        return self.images.shape[1]

    @property
    def width(self) -> int:
        return self.images.shape[2]


def load_blender(folder: str | Path, split: str, downscale: int = 1, limit: int | None = None,
                 white: bool = True) -> Views:
    """Read one split of a Blender-format scene; images composited on white (or on black when not
    `white`) and area-averaged by the integer `downscale`. `limit` keeps the first N frames."""
    root = user_path(folder, f"task.data={shown(folder)}")
    where = f"task.data={folder}"
    if not root.is_dir():
        raise FfrunError(f"{where}: no such folder; give a NeRF Blender-format scene folder "
                         "(transforms_train.json, transforms_test.json and the images), or null for the built-in scene")
    meta_path = root / f"transforms_{split}.json"
    if not meta_path.is_file():
        raise FfrunError(f"{where}: {meta_path.name} is missing; a Blender-format scene has "
                         f"transforms_{{{','.join(SPLITS)}}}.json beside its image folders")
    try:
        meta = json.loads(meta_path.read_bytes())
        fov = float(meta["camera_angle_x"])
        frames = list(meta["frames"])
    except (ValueError, KeyError, TypeError) as e:
        raise FfrunError(f"{meta_path}: not a Blender transforms file ({type(e).__name__}: {e}); it needs "
                         "`camera_angle_x` and `frames` with `file_path` and `transform_matrix`") from None
    if not 0 < fov < math.pi:  # also false for NaN
        raise FfrunError(f"{meta_path}: camera_angle_x={meta['camera_angle_x']!r} is not a field of view; it must "
                         "be the horizontal angle in radians, between 0 and pi (the Lego scene has 0.6911)")
    if not frames:
        raise FfrunError(f"{meta_path}: `frames` is empty; the split needs at least one posed image")
    if limit is not None:
        frames = frames[:limit]
    images, poses, names = [], [], []
    for i, frame in enumerate(frames):
        try:
            rel = str(frame["file_path"])
            pose = np.asarray(frame["transform_matrix"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as e:
            raise FfrunError(f"{meta_path}: frame {i} lacks a file_path or a numeric transform_matrix ({e})") from None
        if pose.shape != (4, 4) or not np.isfinite(pose).all():
            raise FfrunError(f"{meta_path}: frame {i} ({rel}): transform_matrix must be a finite 4x4 matrix")
        path = _inside(root, rel, meta_path, i)
        images.append(_read_rgb(path, downscale, white))
        poses.append(pose)
        names.append(Path(rel).stem)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise FfrunError(f"{meta_path}: the images differ in size ({sorted(shapes)}); one camera per split is needed")
    width = images[0].shape[1]
    focal = 0.5 * width / math.tan(0.5 * fov)  # of the downscaled image
    return Views(np.stack(images), np.stack(poses).astype(np.float32), float(focal), names)


def _inside(root: Path, rel: str, meta_path: Path, i: int) -> Path:
    """The image file of a frame, which must lie inside the scene folder: a `file_path` like ../../x,
    /abs/path or a link leading out would read (and copy into the outputs) files the scene does not own."""
    path = root / rel
    if not path.suffix:
        path = path.with_suffix(".png")
    base = root.resolve()
    try:
        inside = path.resolve().is_relative_to(base)
    except (OSError, ValueError) as e:  # a NUL byte, a link loop
        raise FfrunError(f"{meta_path}: frame {i} has an unusable file_path {rel!r} ({e})") from None
    if not inside:
        raise FfrunError(f"{meta_path}: frame {i} has file_path {rel!r}, which leads outside the scene folder "
                         f"{base}; image paths must stay inside it (e.g. ./train/r_0)")
    return path


def _read_rgb(path: Path, downscale: int, white: bool = True) -> np.ndarray:
    if not path.is_file():
        raise FfrunError(f"{path}: image listed in the transforms file is missing")
    try:
        with Image.open(path) as f:
            f.load()
            img = f.convert("RGBA")
    except (UnidentifiedImageError, OSError) as e:
        raise FfrunError(f"{path}: cannot read it as an image ({e})") from None
    rgba = np.asarray(img, dtype=np.float32) / 255.0
    # Composite in linear 8-bit values, as NeRF's loader does: rgb * a + (1 - a) on white, rgb * a on
    # black (the Fourier-features notebook's Lego images have a black background).
    rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:]) * float(white)
    h, w = rgb.shape[:2]
    if downscale > 1:
        if h % downscale or w % downscale:
            raise FfrunError(f"{path}: task.downscale={downscale} does not divide the {w}x{h} image; "
                             f"use a divisor of {math.gcd(h, w)}")
        rgb = rgb.reshape(h // downscale, downscale, w // downscale, downscale, 3).mean(axis=(1, 3))
    return np.ascontiguousarray(rgb, dtype=np.float32)


def camera_rays(height: int, width: int, focal: float, c2w: Tensor, pixel_centers: bool = True
                ) -> tuple[Tensor, Tensor]:
    """Rays of a pinhole camera, one per pixel: origins and directions, each (H, W, 3).

    Pixel (row r, column c) looks along d_cam = ((c + o - W/2) / f, -(r + o - H/2) / f, -1) in camera
    coordinates, rotated to the world by c2w[:3, :3]; every ray starts at the camera centre c2w[:3, 3].
    o = 0.5 puts the ray through the pixel's centre, where the photograph's pixel value was integrated;
    `pixel_centers=False` gives o = 0, the pixel's corner, as the paper's notebooks (`get_rays`) do.
    Directions are not normalised: a ray's parameter t is depth along the optical axis."""
    dev, dt = c2w.device, c2w.dtype
    o = 0.5 if pixel_centers else 0.0
    rows = torch.arange(height, device=dev, dtype=dt) + o
    cols = torch.arange(width, device=dev, dtype=dt) + o
    r, c = torch.meshgrid(rows, cols, indexing="ij")
    d_cam = torch.stack([(c - 0.5 * width) / focal, -(r - 0.5 * height) / focal, -torch.ones_like(r)], -1)
    directions = d_cam @ c2w[:3, :3].T
    origins = c2w[:3, 3].expand_as(directions)
    return origins, directions


def look_at_pose(position: np.ndarray, target: np.ndarray | None = None, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world matrix of a camera at `position` looking at `target` (the origin), z up."""
    position = np.asarray(position, dtype=np.float64)
    target = np.zeros(3) if target is None else np.asarray(target, dtype=np.float64)
    z = position - target  # the camera looks down its -z axis
    z /= np.linalg.norm(z)
    x = np.cross(np.asarray(up, dtype=np.float64), z)
    if np.linalg.norm(x) < 1e-8:  # looking straight down/up: any horizontal x will do
        x = np.array([1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, position
    return pose


def orbit_poses(n: int, radius: float, elevation_deg: float) -> np.ndarray:
    """n cameras on a horizontal circle around the origin (a turntable), (n, 4, 4)."""
    el = math.radians(elevation_deg)
    poses = []
    for az in np.linspace(0.0, 2 * math.pi, n, endpoint=False):
        p = radius * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        poses.append(look_at_pose(p))
    return np.stack(poses).astype(np.float32)


def orbit_like(poses: np.ndarray) -> tuple[float, float]:
    """Radius and elevation (degrees) of a turntable that matches a set of cameras (their medians)."""
    centres = poses[:, :3, 3].astype(np.float64)
    radius = np.linalg.norm(centres, axis=1)
    elevation = np.degrees(np.arcsin(np.clip(centres[:, 2] / np.maximum(radius, 1e-9), -1, 1)))
    return float(np.median(radius)), float(np.median(elevation))


# ---------------------------------------------------------------------------------------------------------
# The built-in scene: a textured still life ray-traced analytically and written in the Blender format, so
# `ffrun task=nerf` runs anywhere without a download. Cameras sit at distance 4 (inside near 2 / far 6).

BUILTIN_VERSION = 1
BUILTIN_FOV = 0.6911112070083618  # the Lego scene's camera_angle_x
_LIGHT = np.array([0.3, 0.4, 0.85]) / np.linalg.norm([0.3, 0.4, 0.85])


def builtin_scene(resolution: int = 64) -> Path:
    """The folder of ffrun's built-in scene (rendered once, then cached under cache_dir()/scenes)."""
    folder = cache_dir() / "scenes" / f"still_life_v{BUILTIN_VERSION}_{resolution}"
    if (folder / "transforms_test.json").is_file():
        return folder
    log.info("rendering the built-in NeRF scene at %dx%d into %s (once)", resolution, resolution, folder)
    rng = np.random.default_rng(0)
    splits = {
        "train": [(rng.uniform(0, 360), rng.uniform(10, 60)) for _ in range(40)],
        "val": [(rng.uniform(0, 360), rng.uniform(10, 60)) for _ in range(4)],
        "test": [(az, 30.0) for az in np.linspace(0, 360, 8, endpoint=False) + 22.5],
    }
    focal = 0.5 * resolution / math.tan(0.5 * BUILTIN_FOV)
    for split, cams in splits.items():
        frames = []
        for i, (az, el) in enumerate(cams):
            a, e = math.radians(az), math.radians(el)
            pose = look_at_pose(4.0 * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)]))
            rgba = render_still_life(resolution, focal, pose)
            buf = _png_bytes(rgba)
            write_bytes(folder / split / f"r_{i}.png", buf)
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose.tolist()})
        # transforms_test.json is written last: its presence marks a complete cache entry
        write_json(folder / f"transforms_{split}.json", {"camera_angle_x": BUILTIN_FOV, "frames": frames})
    return folder


def _png_bytes(rgba: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray((np.clip(rgba, 0, 1) * 255 + 0.5).astype(np.uint8), "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def render_still_life(resolution: int, focal: float, pose: np.ndarray, supersample: int = 2) -> np.ndarray:
    """RGBA image (straight alpha) of the built-in scene: a striped sphere, a small sphere and a cube on a
    checkerboard slab, Lambertian shading, transparent background; supersampled for anti-aliasing."""
    s = supersample
    n = resolution * s
    origins, dirs = camera_rays(n, n, focal * s, torch.from_numpy(pose))
    o = origins.reshape(-1, 3).numpy()
    d = dirs.reshape(-1, 3).numpy()
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    best_t = np.full(len(d), np.inf)
    colour = np.zeros((len(d), 3))
    normal = np.zeros((len(d), 3))
    for hit_t, hit_n, shade in _still_life_hits(o, d):
        closer = hit_t < best_t
        best_t[closer] = hit_t[closer]
        normal[closer] = hit_n[closer]
        colour[closer] = shade(o[closer] + hit_t[closer, None] * d[closer])
    hit = np.isfinite(best_t)
    light = 0.3 + 0.7 * np.clip(normal @ _LIGHT, 0.0, 1.0)
    rgb = colour * light[:, None] * hit[:, None]
    alpha = hit.astype(np.float64)
    # box-filter down to the output resolution: premultiplied colour and alpha average linearly
    rgb = rgb.reshape(resolution, s, resolution, s, 3).mean(axis=(1, 3))
    alpha = alpha.reshape(resolution, s, resolution, s).mean(axis=(1, 3))
    straight = np.where(alpha[..., None] > 0, rgb / np.maximum(alpha[..., None], 1e-12), 0.0)
    return np.concatenate([straight, alpha[..., None]], axis=-1)


def _still_life_hits(o: np.ndarray, d: np.ndarray):
    """(t, normal, colour function) for each object of the built-in scene (t = inf where missed)."""

    def stripes(p):  # 8 red/cream meridian stripes and 3 bands
        ang = np.arctan2(p[:, 1], p[:, 0])
        red = (np.sin(8 * ang) > 0) ^ (np.sin(3 * math.pi * p[:, 2] / 0.55) > 0)
        return np.where(red[:, None], [0.85, 0.15, 0.1], [0.95, 0.9, 0.75])

    def checker(p):
        odd = (np.floor(4 * p[:, 0]) + np.floor(4 * p[:, 1])) % 2 == 1
        return np.where(odd[:, None], [0.2, 0.3, 0.6], [0.9, 0.85, 0.7])

    yield (*_sphere(o, d, np.array([0.0, 0.0, 0.0]), 0.55), stripes)
    yield (*_sphere(o, d, np.array([0.65, -0.55, -0.45]), 0.25), lambda p: np.tile([0.2, 0.7, 0.3], (len(p), 1)))
    yield (*_box(o, d, np.array([-0.8, 0.3, -0.7]), np.array([-0.4, 0.7, -0.3])),
           lambda p: np.tile([0.95, 0.75, 0.1], (len(p), 1)))
    yield (*_box(o, d, np.array([-1.2, -1.2, -0.9]), np.array([1.2, 1.2, -0.7])), checker)


def _sphere(o, d, centre, radius):
    oc = o - centre
    b = np.sum(oc * d, axis=1)
    disc = b * b - (np.sum(oc * oc, axis=1) - radius**2)
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    t = np.where((disc > 0) & (t > 0), t, np.inf)
    p = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    return t, (p - centre) / radius


def _box(o, d, lo, hi):
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t0, t1 = (lo - o) * inv, (hi - o) * inv
    tmin, tmax = np.minimum(t0, t1), np.maximum(t0, t1)
    t_enter, t_exit = tmin.max(axis=1), tmax.min(axis=1)
    t = np.where((t_enter < t_exit) & (t_enter > 0), t_enter, np.inf)
    axis = tmin.argmax(axis=1)
    normal = np.zeros_like(d)
    normal[np.arange(len(d)), axis] = -np.sign(d[np.arange(len(d)), axis])
    return t, normal
