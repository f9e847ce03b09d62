"""Images for the 2D regression task: built-in photographs, rendered text, or any PNG/JPEG file.

All loaders return float32 arrays of shape (H, W, 3) in [0, 1].

Image files may come from anyone, so their size is checked from the header before any decoding: an
image of more than MAX_IMAGE_PIXELS pixels (Pillow's own decompression-bomb threshold, about 89.5
million, 9459 x 9459) is refused with a one-line error. Below it, a JPEG is decoded directly at a
reduced scale (`Image.draft`) and any large image is box-reduced by an integer factor (`Image.reduce`)
right after decoding, so a 32 x 32 run of a 9000 x 9000 photo holds the decoded file once and never a
float copy of it. Float images with NaN or infinite pixels are refused.
"""

from __future__ import annotations

import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from ffrun.data.location import data_dir
from ffrun.util.errors import FfrunError
from ffrun.util.paths import shown, user_path

# Pixels an image file may have (Pillow's default Image.MAX_IMAGE_PIXELS, fixed here so another library
# changing Pillow's global cannot raise it): a 3-channel image this size is 256 MiB decoded.
MAX_IMAGE_PIXELS = 89_478_485
# A large image is first reduced to no less than this many times the run's resolution: the final resize
# still averages several pixels into one, and the edge pixels an integer reduction has to drop shift the
# picture by at most 1 / (2 * OVERSAMPLE) of an output pixel.
OVERSAMPLE = 4

# Photographs that ship inside scikit-image (no download) and matplotlib.
SAMPLE_IMAGES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "immunohistochemistry", "grace_hopper")

# Image sets in the data directory, named `<set>:<index>` (the set's `test` split: the images a table
# averages) or `<set>:<split>/<index>` (e.g. `div2k:tuning/5`, the images a sigma search may see), read
# from `$FFRUN_DATA/images/<set>/<split>/<NN>.png`: the folder layout, with `test` as the default split.
IMAGE_SET = re.compile(r"^(?P<set>[A-Za-z0-9_-]+):(?:(?P<split>[A-Za-z0-9_-]+)/)?(?P<index>[0-9]+)$")
DEFAULT_SPLIT = "test"
# Sets of text pages: reduced to a smaller resolution by a window of the page, never by averaging pixels
# (see `text_window`). Every other set is reduced by area averaging (a box filter).
TEXT_SETS = ("text",)


def image_set_path(spec: str) -> Path | None:
    """The file an image-set name (`div2k:3`, `text:tuning/5`) stands for, or None when `spec` is no such
    name. A name whose set, split or index is not in the data directory raises FfrunError: one line naming
    what is missing, where it was looked for, and how to fix it."""
    m = IMAGE_SET.match(spec)
    if m is None:
        return None
    name, split, index = m["set"], m["split"] or DEFAULT_SPLIT, int(m["index"])
    root = data_dir() / "images"
    where = f"task.image={spec!r}"
    if not (root / name).is_dir():
        sets = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        have = f"it holds: {', '.join(sets)}" if sets else "no image sets there"
        raise FfrunError(f"{where}: no image set {name!r} under {root} ({have}); set $FFRUN_DATA to the data "
                         f"directory holding images/{name}/{split}/NN.png, or give an image file or sample name")
    if not (root / name / split).is_dir():
        splits = sorted(p.name for p in (root / name).iterdir() if p.is_dir())
        raise FfrunError(f"{where}: image set {name!r} has no split {split!r} under {root / name} (it has: "
                         f"{', '.join(splits) or 'none'}); use {name}:<index> for {DEFAULT_SPLIT} or "
                         f"{name}:<split>/<index>")
    path = root / name / split / f"{index:02d}.png"
    if not path.is_file():
        found = _set_indices(path.parent)
        have = f"it holds {_listed(found, '02d')}" if found else "it holds no NN.png images"
        what = f"{path} is a folder, not an image" if path.exists() else f"no image {index:02d}.png in {path.parent}"
        raise FfrunError(f"{where}: {what} ({have}); use {_set_syntax(name, split, path.parent)}")
    return path


def _set_indices(folder: Path) -> list[int]:
    """The indices of a split's images: its NN.png files (folders so named are no images)."""
    return sorted(int(p.stem) for p in folder.glob("*.png") if p.stem.isdigit() and p.is_file())


def _set_syntax(name: str, split: str, folder: Path) -> str:
    """How to name an image of the set, with the indices it has: `div2k:N with N in 0..15`."""
    found = _set_indices(folder)
    prefix = f"{name}:" if split == DEFAULT_SPLIT else f"{name}:{split}/"
    if not found:
        return f"{prefix}N once {folder} holds NN.png images (it holds none)"
    return f"{prefix}N with N in {_listed(found, 'd')} (e.g. {prefix}{found[0]})"


def _listed(indices: list[int], form: str) -> str:
    """The indices present: `0..9` when they run without a gap, else each one (`0, 6, 7, 9`)."""
    if indices == list(range(indices[0], indices[-1] + 1)):
        return f"{indices[0]:{form}}..{indices[-1]:{form}}"
    return ", ".join(f"{i:{form}}" for i in indices)


def _not_a_set_name(spec: str) -> str | None:
    """Why `spec`, which is no file, is not an image-set name either (`div2k:-1`, `div2k:x`, or the bare set
    name `div2k`), naming the set syntax; None when it does not look like one (a mistyped file name)."""
    name, colon, rest = spec.partition(":")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return None
    root = data_dir() / "images"
    if not (root / name).is_dir():
        if not colon or not re.fullmatch(r"(?:[A-Za-z0-9_-]+/)?[-+]?[0-9]+", rest):
            return None
        return (f"task.image={spec!r}: not a file, and no image set {name!r} under {root} for the set syntax "
                f"<set>:N (N an image index, 0 or more); set $FFRUN_DATA to the data directory holding "
                f"images/{name}/{DEFAULT_SPLIT}/NN.png")
    m = re.fullmatch(r"(?P<split>[A-Za-z0-9_-]+)/.*", rest)
    split = m["split"] if m and (root / name / m["split"]).is_dir() else DEFAULT_SPLIT
    use = _set_syntax(name, split, root / name / split)
    if not colon:
        return f"task.image={spec!r}: no such file; {name!r} is an image set in {root}: use {use}"
    return f"task.image={spec!r}: not an image of the set {name!r}; use {use}"


def text_window(page: np.ndarray, resolution: int) -> np.ndarray:
    """A resolution x resolution window of a text page at its own pixel size, so glyphs keep their size in
    pixels (what makes text hard against the even/odd split; averaged down, they fall below the pixel).
    The authors' pages scatter words over white, and a fixed centre window can be blank (4 of their 16
    test pages at 128 px), so the window is the one whose share of text pixels (those differing from the
    page's median colour by more than 0.1) is nearest the whole page's, the nearest to the centre among
    equals: the reduced image is as full of text as the page it comes from."""
    h, w = page.shape[:2]
    r = resolution
    background = np.median(page.reshape(-1, page.shape[-1]), axis=0)
    ink = (np.abs(page - background).max(axis=-1) > 0.1).astype(np.int64)
    c = np.zeros((h + 1, w + 1), dtype=np.int64)
    c[1:, 1:] = ink.cumsum(0).cumsum(1)
    counts = c[r:, r:] - c[:-r, r:] - c[r:, :-r] + c[:-r, :-r]  # ink in the window at each top-left corner
    miss = np.abs(counts - round(ink.mean() * r * r))
    ys, xs = np.mgrid[: h - r + 1, : w - r + 1]
    centre = (ys - (h - r) / 2) ** 2 + (xs - (w - r) / 2) ** 2
    best = np.flatnonzero(miss.ravel() == miss.min())
    top, left = np.unravel_index(best[np.argmin(centre.ravel()[best])], miss.shape)
    return np.ascontiguousarray(page[top : top + r, left : left + r])


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


TEXT_RENDER_SIZE = 512  # the paper's text images are 512 x 512


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


def to_rgb(img: Image.Image, peak: float | None = None) -> np.ndarray:
    """Any PIL image -> float32 (H, W, 3) in [0, 1]: grayscale is repeated, palettes expanded, 16-bit
    and float data scaled by their range, alpha composited on white. `peak` overrides the full-scale
    value of integer images (what `shrink` knows of an image it converted from 16-bit)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        if peak is None:
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


def shrink(img: Image.Image, resolution: int) -> tuple[Image.Image, float | None]:
    """A decoded image box-reduced by the largest integer factor k that keeps its short side at least
    OVERSAMPLE * resolution, in a mode where averaging is right:
    palettes expanded, alpha premultiplied. The reduced area is the centred multiple of k, so every
    output pixel is a full k x k box. Returns the image and the peak for `to_rgb` (None: its own)."""
    k = min(img.size) // (OVERSAMPLE * resolution)
    if k < 2:
        return img, None
    w, h = img.size
    left, top = (w % k) // 2, (h % k) // 2
    box = (left, top, left + w - w % k, top + h - h % k)
    if img.mode.startswith("I;16"):
        return img.convert("I").reduce(k, box), 65535.0
    if img.mode == "I":
        return img.reduce(k, box), 65535.0 if img.getextrema()[1] > 255 else 255.0
    if img.mode in ("L", "RGB", "F"):
        return img.reduce(k, box), None
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        # Average premultiplied colours: compositing the mean on white equals the mean of the composites.
        return img.convert("RGBA").convert("RGBa").reduce(k, box).convert("RGBA"), None
    return img.convert("L" if img.mode == "1" else "RGB").reduce(k, box), None


def _decode(path: Path, spec: str, resolution: int | None) -> tuple[Image.Image, float | None]:
    """The image file at `path`, checked and reduced as the module docstring says (resolution None: decoded
    at its own size, never reduced)."""
    try:
        with warnings.catch_warnings():
            # Pillow warns from MAX_IMAGE_PIXELS and raises from twice that; ffrun's own limit below
            # applies after a JPEG's draft, so the warning is no verdict.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as f:
                w, h = f.size
                if f.format == "JPEG" and resolution is not None:
                    s = min(w, h)
                    f.draft(f.mode, (-(-w * OVERSAMPLE * resolution // s), -(-h * OVERSAMPLE * resolution // s)))
                if f.size[0] * f.size[1] > MAX_IMAGE_PIXELS:
                    raise FfrunError(
                        f"task.image={spec!r}: {w} x {h} pixels is above ffrun's limit of {MAX_IMAGE_PIXELS} "
                        "(a decompression-bomb guard); downscale it first, e.g. `convert in.png -resize 4096x4096 "
                        "out.png`")
                f.load()
                if f.mode == "F":
                    bad = int(np.count_nonzero(~np.isfinite(np.asarray(f))))
                    if bad:
                        raise FfrunError(f"task.image={spec!r}: {bad} pixels are NaN or infinite; replace them "
                                         "(e.g. with 0) or give an 8/16-bit image")
                # Reduced while the file's decoded pixels are the only full-size copy.
                img, peak = shrink(f, resolution) if resolution is not None else (f, None)
                return (f.copy() if img is f else img), peak
    except Image.DecompressionBombError as e:
        raise FfrunError(f"task.image={spec!r}: refused as a decompression bomb ({e}); ffrun's limit is "
                         f"{MAX_IMAGE_PIXELS} pixels, so downscale a real image first") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise FfrunError(f"task.image={spec!r}: cannot read it as an image ({e}); give a PNG or JPEG file") from None


NATIVE = "native"


def image_size(resolution: Any) -> int | tuple[int, int] | str:
    """`task.resolution` as a size: N (an N x N centre crop, resized), `native` (the image at its own size) or
    `WxH` / [W, H] (the whole image resized to W x H, no crop). Raises FfrunError naming the forms."""
    from omegaconf import ListConfig

    if isinstance(resolution, (list, tuple, ListConfig)) and len(resolution) == 2:
        w, h = resolution
    elif isinstance(resolution, int) and not isinstance(resolution, bool):
        return resolution
    elif isinstance(resolution, str) and resolution.strip().lower() == NATIVE:
        return NATIVE
    elif isinstance(resolution, str) and re.fullmatch(r"\s*\d+\s*[xX]\s*\d+\s*", resolution):
        w, h = re.split(r"[xX]", resolution)
    else:
        raise FfrunError(f"task.resolution={resolution!r}: give a side N (an N x N centre crop), `native` (the image "
                         "at its own size, no crop or resize) or WxH (e.g. 510x339: resized, no crop)")
    try:
        w, h = int(w), int(h)
    except (TypeError, ValueError):
        raise FfrunError(f"task.resolution={resolution!r}: W and H must be whole numbers, e.g. 510x339") from None
    if min(w, h) < 2:
        raise FfrunError(f"task.resolution={resolution!r}: use a width and height of at least 2 pixels")
    return (w, h)


def load_image(spec: str, resolution: Any, seed: int = 0) -> np.ndarray:
    """`spec` is a sample name, the word `text`, an image-set name or a path to an image file; `resolution`
    as `image_size` reads it: N (centre-cropped to a square, resized), `native` or (W, H) (resized, no crop).
    Returns float32 (H, W, 3) in [0, 1]."""
    size = image_size(resolution)
    if size == NATIVE:
        img = _load_native(spec, seed)
    elif isinstance(size, tuple):
        w, h = size
        if w * h > MAX_IMAGE_PIXELS:
            raise FfrunError(f"task.resolution={w}x{h}: above ffrun's image limit of {MAX_IMAGE_PIXELS} pixels")
        img = resize(_load_native(spec, seed, reduce_to=min(w, h)), w, h)
    else:
        return _load_square(spec, size, seed)
    if img.shape[0] * img.shape[1] > MAX_IMAGE_PIXELS:
        raise FfrunError(f"task.image={spec!r}: {img.shape[1]} x {img.shape[0]} pixels is above ffrun's limit of "
                         f"{MAX_IMAGE_PIXELS}; downscale it first or give task.resolution=WxH")
    return img


def resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """The whole image resized to w x h, no crop (Lanczos; box-filtered when shrinking)."""
    if img.shape[:2] == (h, w):
        return img
    shrinking = w * h < img.shape[0] * img.shape[1]
    channels = [np.asarray(Image.fromarray(img[..., c].astype(np.float32), mode="F").resize(
        (w, h), Image.Resampling.BOX if shrinking else Image.Resampling.LANCZOS)) for c in range(img.shape[2])]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)


def _load_native(spec: str, seed: int, reduce_to: int | None = None) -> np.ndarray:
    """The image `spec` names at its own size (the text page at the paper's 512 px); `reduce_to`: a large file
    may first be box-reduced while decoding, keeping its short side at least OVERSAMPLE x that."""
    if spec == "text":
        return render_text(TEXT_RENDER_SIZE, seed)
    peak = None
    if spec in SAMPLE_IMAGES:
        img = _sample_image(spec)
    else:
        img, peak = _decode(_image_file(spec), spec, reduce_to)
    return to_rgb(img, peak)


def _image_file(spec: str) -> Path:
    """The file an image-set name or a path names; FfrunError (one line) when there is none."""
    set_path = image_set_path(spec)
    if set_path is not None:
        return set_path
    path = user_path(spec, f"task.image={shown(spec)!r}")
    if not path.exists():
        raise FfrunError(_not_a_set_name(spec) or (
            f"task.image={spec!r}: no such file (and not a sample name); give a PNG/JPEG path, one of: text, "
            f"{', '.join(SAMPLE_IMAGES)}, or an image of a set in $FFRUN_DATA/images (e.g. div2k:0)"))
    if path.is_dir():
        raise FfrunError(f"task.image={spec!r}: a folder, not an image file; give a PNG or JPEG file")
    return path


def _load_square(spec: str, resolution: int, seed: int = 0) -> np.ndarray:
    """`spec` centre-cropped to a square and resized to resolution x resolution."""
    if resolution * resolution > MAX_IMAGE_PIXELS:
        raise FfrunError(f"task.resolution={resolution}: {resolution} x {resolution} is above ffrun's image limit "
                         f"of {MAX_IMAGE_PIXELS} pixels; use at most {int(MAX_IMAGE_PIXELS ** 0.5)}")
    peak = None
    if spec == "text":
        # The paper's type sizes at every resolution: a page rendered at 512 px (the paper's size) and, for a
        # smaller image, its centre window. What makes text hard is its size in pixels (strokes a pixel or
        # two wide against the even/odd split): rendered at 128 px the page was denser than the paper's, and
        # box-reduced from 512 px its glyphs fell below the pixel (posenc and gauss then scored below basic).
        page = render_text(max(resolution, TEXT_RENDER_SIZE), seed)
        top = (page.shape[0] - resolution) // 2
        return np.ascontiguousarray(page[top : top + resolution, top : top + resolution])
    if spec in SAMPLE_IMAGES:
        img = _sample_image(spec)
    elif (set_path := image_set_path(spec)) is not None:
        if IMAGE_SET.match(spec)["set"] in TEXT_SETS:
            # Decoded at the page's own size (no box reduction), then a window of it when smaller.
            page = to_rgb(*_decode(set_path, spec, max(resolution, TEXT_RENDER_SIZE)))
            if min(page.shape[:2]) > resolution:
                return text_window(page, resolution)
            return center_crop_resize(page, resolution)
        img, peak = _decode(set_path, spec, resolution)  # a natural image: area-averaged below
    else:
        img, peak = _decode(_image_file(spec), spec, resolution)
    return center_crop_resize(to_rgb(img, peak), resolution)


def pixel_coords(n: int, width: int | None = None) -> np.ndarray:
    """Coordinates of an n-row pixel grid (n x n, or n x width), shape (n, width, 2): linspace(0, 1, size + 1)[:-1]
    per axis, so each axis fills [0, 1) whatever its length.

    Entry [row, col] is (x, y) = (col / width, row / n), as np.meshgrid gives in the notebooks.
    """
    w = n if width is None else width
    cx = np.linspace(0.0, 1.0, w + 1, dtype=np.float64)[:-1]
    cy = np.linspace(0.0, 1.0, n + 1, dtype=np.float64)[:-1]
    return np.stack(np.meshgrid(cx, cy), axis=-1).astype(np.float32)
