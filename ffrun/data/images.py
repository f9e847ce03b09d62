"""Images for the 2D regression task: built-in photographs, rendered text, or any PNG/JPEG file.

All loaders return float32 arrays of shape (H, W, 3) in [0, 1].
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from ffrun.errors import FfrunError

# Photographs that ship inside scikit-image (no download) and matplotlib.
SAMPLE_IMAGES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "immunohistochemistry", "grace_hopper")


def _sample_image(name: str) -> Image.Image:
    if name == "grace_hopper":
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            return Image.open(f).copy()
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


def _font_files() -> list[Path]:
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = sorted(p for p in ttf.glob("DejaVu*.ttf") if "Display" not in p.name)
    if not fonts:
        raise FfrunError(f"text image: no TrueType fonts found under {ttf}; reinstall matplotlib")
    return fonts


_WORDS = (
    "fourier features let networks learn high frequency functions in low dimensional domains "
    "coordinate based multilayer perceptron spectral bias neural tangent kernel stationary "
    "random gaussian projection positional encoding sigma bandwidth regression occupancy volume "
    "tomography magnetic resonance radiance field rendering interpolation generalization"
).split()


def render_text(resolution: int = 512, seed: int = 0) -> np.ndarray:
    """A text image in the spirit of the paper's text dataset: lines of words in random TrueType fonts,
    sizes and colours on a white background. Deterministic for a given seed."""
    rng = random.Random(seed)
    fonts = _font_files()
    canvas = Image.new("RGB", (resolution, resolution), "white")
    draw = ImageDraw.Draw(canvas)
    y = rng.randint(0, resolution // 32)
    while y < resolution:
        size = rng.randint(max(8, resolution // 40), max(12, resolution // 12))
        font = ImageFont.truetype(str(rng.choice(fonts)), size)
        words = " ".join(rng.choice(_WORDS) for _ in range(8))
        colour = tuple(rng.randint(0, 180) for _ in range(3))
        draw.text((rng.randint(-resolution // 8, resolution // 16), y), words, fill=colour, font=font)
        y += int(size * rng.uniform(1.0, 1.4))
    return np.asarray(canvas, dtype=np.float32) / 255.0


def to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL image -> float32 (H, W, 3) in [0, 1]: grayscale is repeated, palettes expanded, 16-bit
    and float data scaled by their range, alpha composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / peak, 0, 1)
        return np.repeat(a[..., None], 3, axis=-1).astype(np.float32)
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        return np.repeat(a[..., None], 3, axis=-1).astype(np.float32)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3:]
        return rgba[..., :3] * alpha + (1.0 - alpha)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def center_crop_resize(img: np.ndarray, resolution: int) -> np.ndarray:
    """Centre-crop to a square, then resize to resolution x resolution (Lanczos; box-filtered when shrinking)."""
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    img = img[top : top + s, left : left + s]
    if s == resolution:
        return img
    channels = [
        np.asarray(Image.fromarray(img[..., c].astype(np.float32), mode="F").resize(
            (resolution, resolution), Image.Resampling.LANCZOS if s < resolution else Image.Resampling.BOX))
        for c in range(img.shape[2])
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)


def load_image(spec: str, resolution: int, seed: int = 0) -> np.ndarray:
    """`spec` is a sample name, the word `text`, or a path to an image file."""
    if spec == "text":
        return render_text(resolution, seed)
    if spec in SAMPLE_IMAGES:
        img = _sample_image(spec)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise FfrunError(
                f"task.image={spec!r}: no such file (and not a sample name); give a PNG/JPEG path or one "
                f"of: text, {', '.join(SAMPLE_IMAGES)}"
            )
        try:
            with Image.open(path) as f:
                f.load()
                img = f.copy()
        except (UnidentifiedImageError, OSError) as e:
            raise FfrunError(f"task.image={spec!r}: cannot read it as an image ({e}); give a PNG or JPEG file")
    return center_crop_resize(to_rgb(img), resolution)


def pixel_coords(n: int) -> np.ndarray:
    """Coordinates of an n x n pixel grid, shape (n, n, 2): linspace(0, 1, n + 1)[:-1] per axis.

    Entry [row, col] is (x, y) = (col / n, row / n), as np.meshgrid gives in the notebooks.
    """
    c = np.linspace(0.0, 1.0, n + 1, dtype=np.float64)[:-1]
    return np.stack(np.meshgrid(c, c), axis=-1).astype(np.float32)
