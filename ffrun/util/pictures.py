"""Pictures a person can read on their own: panels side by side, each labelled, small images upscaled.

Every task writes its comparison pictures through `labelled_row`, and `ffrun-reproduce` builds its
galleries with it, so a 32x32 reconstruction is as legible as a 512x512 one: panels are enlarged by an
integer factor (nearest neighbour, so pixels stay pixels) until their shorter side is at least
`min_side`, and each carries its label (what it is, and the metric) in a strip above it.
"""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache

import numpy as np

MIN_SIDE = 256  # pixels: the shorter side of a panel after upscaling
GAP = 6  # white pixels between panels


@lru_cache(maxsize=4)
def _font(size: int):
    from PIL import ImageFont

    # matplotlib ships DejaVu Sans, so every install has a real TrueType font; found without importing it
    # (0.2 s a run)
    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            return ImageFont.truetype(f"{folder}/mpl-data/fonts/ttf/DejaVuSans.ttf", size)
        except OSError:
            continue
    return ImageFont.load_default()


def as_rgb(img: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) floats in [0, 1] -> (H, W, 3) float64 in [0, 1]."""
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"a picture panel must be (H, W) or (H, W, 1|3|4), got {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    arr = arr[..., :3]
    return np.clip(np.nan_to_num(arr, nan=0.0), 0.0, 1.0)


def read_png(path) -> np.ndarray:
    """An 8-bit picture ffrun wrote -> float array in [0, 1], (H, W) or (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("L" if img.mode in ("L", "I", "I;16", "1") else "RGB")
        return np.asarray(img, dtype=np.float64) / 255.0


def upscale(img: np.ndarray, min_side: int = MIN_SIDE) -> np.ndarray:
    """Enlarge by the smallest integer factor that makes the shorter side >= min_side (nearest)."""
    factor = max(1, math.ceil(min_side / max(1, min(img.shape[:2]))))
    return img if factor == 1 else np.repeat(np.repeat(img, factor, axis=0), factor, axis=1)


def error_map(truth: np.ndarray, pred: np.ndarray, gain: float = 4.0) -> np.ndarray:
    """|pred - truth| * gain, averaged over colour channels, clipped to [0, 1] (black = exact, white =
    an error of 1/gain or more)."""
    diff = np.abs(as_rgb(pred) - as_rgb(truth)).mean(axis=2)
    return np.clip(diff * gain, 0.0, 1.0)


def labelled_row(panels: list[tuple[str, np.ndarray]], min_side: int = MIN_SIDE,
                 title: str | None = None) -> np.ndarray:
    """Panels (label, image in [0, 1]) side by side on white, each upscaled and labelled above (a label
    may have several lines, split at "\\n"); an optional title line above the row. Panels of different
    heights are top-aligned. Returns (H, W, 3) floats in [0, 1], ready for `ffrun.util.atomic.write_png`."""
    from PIL import Image, ImageDraw

    if not panels:
        raise ValueError("labelled_row needs at least one panel")
    imgs = [upscale(as_rgb(img), min_side) for _, img in panels]
    side = min(min(i.shape[:2]) for i in imgs)
    font = _font(max(12, min(28, side // 16)))
    line = font.getbbox("Ag")[3] + 6
    title_h = line + 4 if title else 0
    label_h = line * max(len(label.split("\n")) for label, _ in panels) + 4
    width = sum(i.shape[1] for i in imgs) + GAP * (len(imgs) + 1)
    height = title_h + label_h + max(i.shape[0] for i in imgs) + GAP
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((GAP, 4), _fit(title, font, width - 2 * GAP), fill="black", font=font)
    x = GAP
    for (label, _), img in zip(panels, imgs):
        for i, text in enumerate(label.split("\n")):  # a label may hold a second line (the metric)
            draw.text((x, title_h + 2 + i * line), _fit(text, font, img.shape[1]), fill="black", font=font)
        top = title_h + label_h
        sheet.paste(Image.fromarray((img * 255.0 + 0.5).astype(np.uint8)), (x, top))
        # a grey frame in the gap: white pictures (text, NeRF on white) stay apart from the sheet and each other
        draw.rectangle((x - 1, top - 1, x + img.shape[1], top + img.shape[0]), outline=(160, 160, 160))
        x += img.shape[1] + GAP
    return np.asarray(sheet, dtype=np.float64) / 255.0


def labelled_grid(rows: list[list[tuple[str, np.ndarray]]], min_side: int = MIN_SIDE,
                  title: str | None = None) -> np.ndarray:
    """Several labelled rows stacked (e.g. one row per slice axis), left-aligned on white."""
    sheets = [labelled_row(r, min_side, title if i == 0 else None) for i, r in enumerate(rows)]
    width = max(s.shape[1] for s in sheets)
    padded = [np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0)), constant_values=1.0) for s in sheets]
    return np.concatenate(padded, axis=0)


def _fit(label: str, font, width: int) -> str:
    """Shorten a label with an ellipsis so it never runs into the next panel."""
    if font.getlength(label) <= width:
        return label
    while label and font.getlength(label + "...") > width:
        label = label[:-1]
    return label + "..."


def metric_label(name: str, value: float | None) -> str:
    """`psnr 27.31 dB`, `iou_surface 0.912`; `-` when the value is missing or not finite."""
    if value is None or not math.isfinite(value):
        return f"{name} -"
    if "psnr" in name:
        return f"{name} {value:.2f} dB"
    return f"{name} {value:.3f}"
