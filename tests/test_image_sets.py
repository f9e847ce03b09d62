"""Image sets in the data directory: `task.image=div2k:3`, `text:0`, `div2k:tuning/5`
($FFRUN_DATA/images/<set>/<split>/NN.png), how each is reduced, and the one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA
from PIL import Image

from ffrun.data.images import center_crop_resize, image_set_path, load_image, text_window, to_rgb
from ffrun.util.errors import FfrunError

HAS_SETS = (SHARED_DATA / "images" / "div2k" / "test" / "03.png").is_file() and (
    SHARED_DATA / "images" / "text" / "tuning" / "05.png").is_file()


@pytest.fixture
def data(tmp_path, monkeypatch):
    """A data directory holding a 64 px natural set (test 00-01) and a 64 px text set (test 00), read
    through $FFRUN_DATA."""
    rng = np.random.default_rng(0)
    for i in range(2):
        (tmp_path / "images" / "div2k" / "test").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            tmp_path / "images" / "div2k" / "test" / f"{i:02d}.png")
    page = np.full((64, 64, 3), 255, np.uint8)
    page[4:12, 40:60] = (200, 0, 0)  # one red word, off centre: 160 of 4096 pixels
    (tmp_path / "images" / "text" / "test").mkdir(parents=True)
    Image.fromarray(page).save(tmp_path / "images" / "text" / "test" / "00.png")
    monkeypatch.setenv("FFRUN_DATA", str(tmp_path))
    return tmp_path


def test_set_names_map_to_the_folder_layout(data):
    assert image_set_path("div2k:1") == data / "images" / "div2k" / "test" / "01.png"
    assert image_set_path("div2k:test/1") == image_set_path("div2k:01")
    assert image_set_path("text") is None and image_set_path("astronaut") is None  # not set names
    assert image_set_path("photo.png") is None


def test_a_natural_set_image_is_area_averaged(data):
    img = load_image("div2k:0", 16)
    pixels = np.asarray(Image.open(data / "images" / "div2k" / "test" / "00.png"), np.float32) / 255.0
    np.testing.assert_allclose(img, pixels.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3)), atol=1e-5)


def test_a_text_set_image_is_a_window_at_the_pages_pixel_size(data):
    page = to_rgb(Image.open(data / "images" / "text" / "test" / "00.png"))
    win = load_image("text:0", 32)
    assert win.shape == (32, 32, 3)
    # a crop of the page, not an average of it: every value is one of the page's own
    assert set(np.unique(win)) <= set(np.unique(page))
    # the page has 160 / 4096 text pixels; the window holds the nearest share of its 1024 (40), not 0
    ink = (np.abs(win - 1.0).max(axis=-1) > 0.1).sum()
    assert ink == 40
    assert load_image("text:0", 64).tolist() == page.tolist()  # at the page's own size: the page


def test_an_even_page_keeps_the_centre_window():
    page = np.ones((64, 64, 3), np.float32)
    page[::4, :] = 0.0  # rules every fourth row: every window holds the same share of ink
    np.testing.assert_array_equal(text_window(page, 32), page[16:48, 16:48])


@pytest.mark.parametrize("spec, needles", [
    ("mri:0", ["no image set 'mri'", "images", "FFRUN_DATA"]),
    ("div2k:7", ["no image 07.png", "div2k/test", "it holds 00..01"]),
    ("div2k:tuning/0", ["has no split 'tuning'", "it has: test"]),
])
def test_a_missing_set_split_or_index_is_one_line(data, spec, needles):
    with pytest.raises(FfrunError) as e:
        load_image(spec, 32)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"task.image={spec!r}")
    for needle in needles:
        assert needle in msg


def test_the_cli_refuses_a_missing_index_with_one_line_and_exit_2(data, run_cli):
    r = run_cli("experiment=smoke", "task.image=div2k:9")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ffrun: error: task.image='div2k:9': no image 09.png")
    assert "Traceback" not in r.stderr + r.stdout


@pytest.mark.skipif(not HAS_SETS, reason=f"the authors' image sets are not under {SHARED_DATA}/images "
                                          "(set $FFRUN_DATA to the data directory)")
def test_the_authors_sets_resolve():
    root = SHARED_DATA / "images"
    div2k = load_image("div2k:3", 128)
    file = to_rgb(Image.open(root / "div2k" / "test" / "03.png"))
    np.testing.assert_allclose(div2k, center_crop_resize(file, 128), atol=1e-6)
    assert not np.array_equal(load_image("div2k:tuning/3", 128), div2k)  # the tuning split is other images
    text = load_image("text:tuning/5", 128)
    page = to_rgb(Image.open(root / "text" / "tuning" / "05.png"))
    np.testing.assert_array_equal(text, text_window(page, 128))
    assert (np.abs(text - 1.0).max(axis=-1) > 0.1).mean() > 0.02  # the window holds text
    assert load_image("text:1", 512).shape == (512, 512, 3)


def test_tune_searches_the_tuning_split_around_the_density_rule(data):
    from ffrun.sweep.plans import plans
    from ffrun.sweep.search import tune_plan

    (data / "images" / "div2k" / "tuning").mkdir()
    Image.new("RGB", (64, 64)).save(data / "images" / "div2k" / "tuning" / "04.png")
    plan, sigmas, rule = tune_plan("image", "cpu", data, plans("cpu", data)["image"], [])
    assert rule == "2.5" and sigmas == ["1.25", "2.5", "5.0", "auto"]  # 10 x 128/512 x 2^(k/2), k = -2, 0, 2
    assert plan.items == {"div2k_tuning_04": ["task.image=div2k:tuning/04"]}  # never a test image
    assert tune_plan("image", "cpu", data, plans("cpu", data)["image"], ["task.resolution=64"])[2] == "1.25"


def test_tune_without_tuning_images_is_one_line_and_exit_2(data, tmp_path, capsys):
    from ffrun.apps.reproduce import main

    assert main(["--tune", "--scale", "cpu", "--tasks", "text", "--out", str(tmp_path / "t"), "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no tuning images at" in err and "text/tuning" in err
    assert main(["--tune", "--tasks", "ct", "--out", str(tmp_path / "t")]) == 2
    assert "image and text" in capsys.readouterr().err


def test_the_table_names_the_authors_sets_or_says_stand_in(data, tmp_path):
    from ffrun.sweep.plans import data_label, plans

    cpu = plans("cpu", data)  # div2k has two test images here, text one
    assert cpu["image"].items == {"div2k_00": ["task.image=div2k:00"], "div2k_01": ["task.image=div2k:01"]}
    assert "the authors' DIV2K test crops" in cpu["image"].note and data_label(cpu["image"]) == "div2k_00, div2k_01"
    paper = plans("paper", data)
    assert list(paper["text"].items) == ["text_00"] and "all 1" in paper["text"].note
    bare = plans("cpu", tmp_path / "no-data")
    assert list(bare["image"].items) == ["camera", "coffee"] and bare["image"].note.startswith("stand-in:")
    assert data_label(bare["text"]) == "stand-in: text0"
