"""ffrun.util.pictures: labelled, upscaled panels that stay pixel-exact."""

from __future__ import annotations

import numpy as np
import pytest

from ffrun.util.pictures import GAP, error_map, labelled_row, metric_label, upscale


def test_upscale_is_nearest_by_the_smallest_integer_factor():
    img = np.arange(12, dtype=float).reshape(3, 4) / 12
    up = upscale(img, 256)
    assert up.shape == (3 * 86, 4 * 86)  # ceil(256 / 3) = 86
    assert np.array_equal(up[::86, ::86], img) and np.array_equal(up[85, 85], img[0, 0])
    big = np.zeros((300, 400))
    assert upscale(big, 256) is big


def test_labelled_row_keeps_every_panel_exact_and_at_least_min_side():
    rng = np.random.default_rng(0)
    a, b = rng.random((32, 32, 3)), rng.random((32, 32))
    sheet = labelled_row([("truth", a), ("reconstruction\npsnr 20.00 dB", b)], min_side=256)
    assert sheet.shape[1] == 2 * 256 + 3 * GAP and sheet.shape[0] > 256
    top = sheet.shape[0] - GAP - 256  # panels sit below the label strip, bottom gap of GAP
    panel_a = sheet[top:top + 256, GAP:GAP + 256]
    assert np.allclose(panel_a[::8, ::8], np.round(a * 255) / 255, atol=1 / 255 + 1e-9)
    panel_b = sheet[top:top + 256, 2 * GAP + 256:2 * GAP + 512, 0]
    assert np.allclose(panel_b[::8, ::8], np.round(b * 255) / 255, atol=1 / 255 + 1e-9)
    strip = sheet[:top, GAP:GAP + 256]
    assert strip.min() < 0.5  # the label is drawn (dark text on white)


def test_error_map_and_metric_label():
    t = np.zeros((2, 2, 3))
    p = np.full((2, 2, 3), 0.1)
    assert np.allclose(error_map(t, p, gain=4), 0.4) and np.allclose(error_map(t, t), 0)
    assert metric_label("test_psnr", 27.314) == "test_psnr 27.31 dB"
    assert metric_label("iou_surface", 0.91234) == "iou_surface 0.912"
    assert metric_label("psnr", float("nan")) == "psnr -"
    with pytest.raises(ValueError):
        labelled_row([])
