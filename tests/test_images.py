"""Image loading (every PIL mode a user's file may have), the pixel grid, the split, and PSNR."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ffrun.data.images import SAMPLE_IMAGES, center_crop_resize, load_image, pixel_coords, render_text, to_rgb
from ffrun.util.errors import FfrunError
from ffrun.util.metrics import psnr


def test_psnr_against_hand_computed_values():
    a = torch.zeros(4, 4)
    assert psnr(a + 0.1, a) == pytest.approx(20.0)  # MSE 0.01 -> 20 dB
    b = torch.tensor([0.0, 0.0, 0.0, 0.5])  # MSE = 0.25 / 4 = 0.0625 -> 12.0412 dB
    assert psnr(b, torch.zeros(4)) == pytest.approx(-10 * math.log10(0.0625))
    assert psnr(a, a) == math.inf


def test_pixel_coords_follow_the_notebooks():
    c = pixel_coords(4)
    assert c.shape == (4, 4, 2)
    np.testing.assert_allclose(c[0, :, 0], [0, 0.25, 0.5, 0.75])  # x runs along columns
    np.testing.assert_allclose(c[:, 0, 1], [0, 0.25, 0.5, 0.75])  # y along rows
    assert c.max() < 1.0  # endpoint excluded


def test_grayscale_palette_16bit_and_alpha_are_handled():
    gray = Image.fromarray(np.full((3, 3), 51, np.uint8), mode="L")
    np.testing.assert_allclose(to_rgb(gray), 0.2, atol=1e-6)
    assert to_rgb(gray).shape == (3, 3, 3)

    deep = Image.fromarray(np.full((3, 3), 65535 // 5, np.uint16))
    assert deep.mode.startswith("I")
    np.testing.assert_allclose(to_rgb(deep), 0.2, atol=1e-4)

    pal = Image.new("P", (2, 2))
    pal.putpalette([255, 0, 0] + [0, 0, 0] * 255)
    np.testing.assert_allclose(to_rgb(pal)[0, 0], [1, 0, 0])

    # Alpha is composited on white: 50% black over white is mid grey.
    rgba = Image.fromarray(np.dstack([np.zeros((2, 2, 3), np.uint8), np.full((2, 2), 128, np.uint8)]), "RGBA")
    np.testing.assert_allclose(to_rgb(rgba), 1 - 128 / 255, atol=1e-6)


def test_files_are_center_cropped_and_resized(tmp_path):
    arr = np.zeros((60, 100, 3), np.uint8)
    arr[:, 20:80] = 255  # the centre 60x60 square is white, the side bands black
    path = tmp_path / "wide.png"
    Image.fromarray(arr).save(path)
    img = load_image(str(path), 30)
    assert img.shape == (30, 30, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img, 1.0, atol=1e-5)
    jpg = tmp_path / "gray.jpg"
    Image.fromarray(np.full((40, 40), 128, np.uint8)).save(jpg)
    assert load_image(str(jpg), 40).shape == (40, 40, 3)


def test_bad_paths_give_a_clear_error(tmp_path):
    with pytest.raises(FfrunError, match="no such file"):
        load_image(str(tmp_path / "missing.png"), 32)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(FfrunError, match="cannot read it as an image"):
        load_image(str(junk), 32)


def test_builtin_samples():
    img = load_image("astronaut", 512)
    assert img.shape == (512, 512, 3) and 0 <= img.min() and img.max() <= 1
    assert "camera" in SAMPLE_IMAGES
    assert load_image("camera", 64).shape == (64, 64, 3)  # grayscale photo -> RGB, downsized


def test_text_image_is_deterministic_text():
    a, b = render_text(256, seed=0), render_text(256, seed=0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, render_text(256, seed=1))
    # Mostly white background with dark, coloured glyphs: real text, not noise.
    assert 0.5 < (a.min(-1) > 0.95).mean() < 0.97
    assert (a.max(-1) < 0.75).mean() > 0.02


def test_text_image_keeps_the_papers_type_sizes_at_every_resolution():
    """task.image=text at 128 px is the centre window of the 512 px page (the paper's size), not a denser page
    or a reduced one: glyphs keep their size in pixels."""
    big, small = load_image("text", 512, seed=3), load_image("text", 128, seed=3)
    np.testing.assert_array_equal(big, render_text(512, seed=3))
    np.testing.assert_array_equal(small, big[192:320, 192:320])
    assert (small.max(-1) < 0.75).mean() > 0.01  # the window holds text, not only margin


def test_downscale_is_area_averaging():
    img = np.zeros((4, 4, 3), np.float32)
    img[::2, ::2] = 1.0  # one bright pixel per 2x2 block
    np.testing.assert_allclose(center_crop_resize(img, 2), 0.25, atol=1e-6)
