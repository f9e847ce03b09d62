"""Files from someone else are safe to open, and bad data is one clear error: crafted checkpoints do not
run code, names from metrics.json do not become paths outside the output folder, image and volume
headers are checked before decoding, non-finite values are refused or written as JSON null, and a full
disk is one line."""

from __future__ import annotations

import errno
import json
import math
import os
import random
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ffrun_cmd
from PIL import Image

import ffrun
from ffrun.data import images
from ffrun.train.checkpoint import CHECKPOINT, load_checkpoint, rng_state, set_rng_state
from ffrun.util.atomic import atomic_write, save_torch, write_json
from ffrun.util.errors import FfrunError

SMOKE = ["experiment=smoke", "trainer.steps=2", "trainer.eval_every=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One real run directory, shared by the tests that need a genuine checkpoint."""
    root = tmp_path_factory.mktemp("trained")
    r = subprocess.run([ffrun_cmd(), *SMOKE, "hydra.run.dir=run"], cwd=root, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return root / "run"


class Payload:
    """Unpickling this calls exec, which creates `marker`: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def crafted_run(tmp_path: Path, trained: Path) -> tuple[Path, Path]:
    """A copy of a real run directory whose checkpoint carries a code payload; returns (dir, marker)."""
    run = tmp_path / "crafted"
    shutil.copytree(trained, run)
    marker = tmp_path / "payload_ran"
    state = torch.load(run / CHECKPOINT, weights_only=True)
    state["history"] = [Payload(marker)]
    torch.save(state, run / CHECKPOINT)
    # The payload is live: an unsafe load runs it (this is what every ffrun entry point used to do).
    torch.load(run / CHECKPOINT, weights_only=False)
    assert marker.exists()
    marker.unlink()
    return run, marker


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    return stderr.strip().splitlines()[-1]


# --- checkpoints ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["load", "load_task", "export", "load_checkpoint"])
def test_a_crafted_checkpoint_runs_no_code_in_the_python_api(tmp_path, trained, entry):
    from ffrun.apps.export import export

    run, marker = crafted_run(tmp_path, trained)
    call = {"load": lambda: ffrun.load(run), "load_task": lambda: ffrun.load_task(run),
            "export": lambda: export(run, tmp_path / "out"),
            "load_checkpoint": lambda: load_checkpoint(run / CHECKPOINT)}
    with pytest.raises(FfrunError) as e:
        call[entry]()
    assert not marker.exists()
    msg = str(e.value)
    assert "\n" not in msg and str(run / CHECKPOINT) in msg and "refused" in msg and "GLOBAL exec" in msg


def test_a_crafted_checkpoint_runs_no_code_from_the_command_line(tmp_path, trained):
    run, marker = crafted_run(tmp_path, trained)
    export = subprocess.run([ffrun_cmd("ffrun-export"), str(run)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    resume = subprocess.run([ffrun_cmd(), *SMOKE, "trainer.steps=4", f"trainer.resume={run}", "hydra.run.dir=again"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert not marker.exists()
    for r, prefix in ((export, "ffrun-export: error: "), (resume, "ffrun: error: ")):
        assert r.returncode == 2, r.stderr[-2000:]
        line = one_line(r.stderr)
        assert line.startswith(prefix) and f"{run / CHECKPOINT}: not a loadable ffrun checkpoint" in line


def test_damaged_and_foreign_files_are_one_line_naming_the_file(tmp_path, trained):
    good = (trained / CHECKPOINT).read_bytes()
    cases = {"truncated.pt": good[: len(good) // 2], "text.pt": b"hello, not a checkpoint\n", "empty.pt": b""}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    for name, expect in [("truncated.pt", "cannot be read"), ("text.pt", "cannot be read"),
                         ("empty.pt", "cannot be read"), ("foreign.pt", "not an ffrun checkpoint (it lacks field")]:
        with pytest.raises(FfrunError) as e:
            load_checkpoint(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) and expect in str(e.value) and "\n" not in str(e.value)


def test_a_real_checkpoint_holds_only_tensors_and_plain_values(trained):
    # No allowlist at all: what ffrun writes today needs none.
    state = torch.load(trained / CHECKPOINT, weights_only=True)
    assert state["rng"]["numpy"]["bit_generator"] == "MT19937" and len(state["rng"]["numpy"]["keys"]) == 624
    field = ffrun.load(trained)
    assert torch.equal(field.state_dict()["encoding.B"], state["field"]["encoding.B"])


def test_random_states_round_trip_exactly_through_a_safe_load(tmp_path):
    random.gauss(0, 1)  # leaves a cached second normal in Python's and in NumPy's state
    np.random.randn()
    saved = rng_state()
    assert saved["numpy"]["has_gauss"] == 1 and saved["python"]["gauss_next"] is not None
    expected = (random.gauss(0, 1), random.random(), np.random.randn(), np.random.rand(3), torch.rand(3))
    save_torch(tmp_path / "rng.pt", saved)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (random.gauss(0, 1), random.random(), np.random.randn(), np.random.rand(3), torch.rand(3))
    assert expected[:3] == again[:3]
    assert np.array_equal(expected[3], again[3]) and torch.equal(expected[4], again[4])


def test_a_checkpoint_from_an_earlier_ffrun_still_loads_and_resumes_its_random_state(tmp_path, trained):
    state = torch.load(trained / CHECKPOINT, weights_only=True)
    np.random.seed(7)
    random.seed(7)
    # Earlier ffrun: random.getstate()'s tuple and NumPy's tuple with its uint32 array, pickled as such.
    state["rng"] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    expected = (random.random(), np.random.rand())
    torch.save(state, tmp_path / CHECKPOINT)
    set_rng_state(load_checkpoint(tmp_path / CHECKPOINT)["rng"])
    assert (random.random(), np.random.rand()) == expected


def test_a_checkpoint_whose_config_does_not_fit_is_one_line(tmp_path, trained):
    state = torch.load(trained / CHECKPOINT, weights_only=True)
    for name, change in [("wide", lambda c: c["model"].update(width=33)),
                         ("env", lambda c: c["task"].update(image="${oc.env:HOME}")),
                         ("nomodel", lambda c: c.pop("model"))]:
        run = tmp_path / name
        run.mkdir()
        bad = {**state, "config": json.loads(json.dumps(state["config"]))}
        change(bad["config"])
        torch.save(bad, run / CHECKPOINT)
        with pytest.raises(FfrunError) as e:
            ffrun.load(run)
        assert str(run / CHECKPOINT) in str(e.value) and "\n" not in str(e.value)


def test_a_damaged_export_is_one_line(tmp_path, trained):
    from ffrun.apps.export import export

    out = export(trained, tmp_path / "export")
    assert ffrun.load_exported(out) is not None
    (out / "field.safetensors").write_bytes(b"junk")
    with pytest.raises(FfrunError, match="not a loadable ffrun export"):
        ffrun.load_exported(out)
    (out / "field.json").write_text("[1, 2]")
    with pytest.raises(FfrunError, match="not an ffrun-export file"):
        ffrun.load_exported(out)


# --- ffrun-summary ---------------------------------------------------------------------------------------


def run_record(metrics: dict, seed: int = 0) -> dict:
    return {"status": "completed", "task": "image", "encoding": "gauss", "sigma": 10.0, "seed": seed,
            "metrics": metrics, "config": {"seed": seed}}


def test_summary_names_from_metrics_json_stay_inside_the_output_folder(tmp_path):
    from ffrun.apps.summary import main

    hostile = ["x/../../escaped", str(tmp_path / "absolute"), "nul\x00name", "L" * 5000, "..", "a$b^{"]
    runs = tmp_path / "runs"
    (runs / "r").mkdir(parents=True)
    write_json(runs / "r" / "metrics.json", run_record({name: float(i) for i, name in enumerate(hostile)}))
    out = tmp_path / "out"
    assert main([str(runs), "--out", str(out)]) == 0
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file() and p.parent != runs / "r")
    assert all(p.parent == out for p in written), written
    plots = [p for p in written if p.suffix == ".png"]
    assert len(plots) == len(hostile)  # one plot per metric, no two names sharing a file
    assert all(len(p.name) < 120 and p.name.startswith("summary_") for p in plots)


def test_summary_skips_records_that_are_not_runs_and_averages_around_nulls(tmp_path, capsys):
    from ffrun.apps.summary import main

    for i, rec in enumerate([run_record({"test_psnr": 20.0}, 0), run_record({"test_psnr": float("nan")}, 1),
                             [1, 2], run_record({"test_psnr": "high"}, 3), {**run_record({}), "sigma": "ten"}]):
        (tmp_path / str(i)).mkdir()
        write_json(tmp_path / str(i) / "metrics.json", rec)
    (tmp_path / "5").mkdir()  # as written before ffrun wrote null: a bare NaN, which Python's json reads
    (tmp_path / "5" / "metrics.json").write_text(json.dumps(run_record({"test_psnr": float("nan")}, 5)))
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert out.err.count("not an ffrun run record") == 3
    row = next(csv_rows(tmp_path / "summary.csv"))
    # nan, written as null or read as NaN, is left out of the mean: one value among the setting's 3 runs.
    assert row["n"] == "3" and float(row["test_psnr_mean"]) == 20.0 and float(row["test_psnr_std"]) == 0.0


def csv_rows(path: Path):
    import csv

    with open(path) as f:
        yield from csv.DictReader(f)


# --- non-finite values -------------------------------------------------------------------------------------


def test_write_json_writes_strict_json_with_null_for_non_finite(tmp_path):
    write_json(tmp_path / "m.json", {"a": float("nan"), "b": [float("inf"), 1.5], "c": {"d": -math.inf}, "e": 2})

    def refuse(name):
        raise AssertionError(f"{name} is not JSON")

    assert json.loads((tmp_path / "m.json").read_text(), parse_constant=refuse) == {
        "a": None, "b": [None, 1.5], "c": {"d": None}, "e": 2}


@pytest.mark.parametrize("override,key", [("task.alpha=nan", "task.alpha"), ("sigma=inf", "sigma"),
                                          ("trainer.lr=-inf", "trainer.lr"), ("encoding.scale=nan", "encoding.scale"),
                                          ("trainer.lr_decay=nan", "trainer.lr_decay")])
def test_non_finite_settings_are_refused_by_validation(compose, override, key):
    from ffrun.config import validate

    with pytest.raises(FfrunError, match=rf"^config: {key}=[-a-z]+ is not a finite number"):
        validate(compose("task=toy1d", "trainer.steps=5", override))


def test_non_finite_list_entries_and_ntk_settings_are_refused():
    from hydra import compose, initialize_config_module

    from ffrun.apps.ntk import check_settings
    from ffrun.config import register_configs, validate

    register_configs()
    with initialize_config_module(config_module="ffrun.configs", version_base="1.3"):
        nan = compose(config_name="ntk", overrides=["ntk.sigmas=[1,nan]"])
        zero = compose(config_name="ntk", overrides=["ntk.widths=[64,0]"])
    with pytest.raises(FfrunError, match=r"ntk.sigmas\[1\]=nan is not a finite number"):
        validate(nan)
    with pytest.raises(FfrunError, match=r"ntk.widths=\[64, 0\] is out of range"):
        check_settings(zero.ntk)


def test_nan_alpha_on_the_command_line_is_one_line_and_exit_2(run_cli):
    r = run_cli("task=toy1d", "trainer.steps=3", "trainer.progress=false", "task.alpha=nan")
    assert r.returncode == 2
    assert one_line(r.stderr) == "ffrun: error: config: task.alpha=nan is not a finite number; give a finite value"


# --- a full disk -------------------------------------------------------------------------------------------


def full_disk(f):
    raise OSError(errno.ENOSPC, "No space left on device")


def wrapped_full_disk(f):  # torch.save reports a failed write as a RuntimeError caused by the OSError
    try:
        full_disk(f)
    except OSError as e:
        raise RuntimeError("[enforce fail] unexpected pos") from e


@pytest.mark.parametrize("write", [full_disk, wrapped_full_disk])
def test_a_full_disk_is_one_line_and_keeps_the_previous_file(tmp_path, write):
    target = tmp_path / "metrics.json"
    target.write_text("previous")
    with pytest.raises(FfrunError) as e:
        atomic_write(target, write)
    assert str(e.value).startswith(f"no space left on device: {target}")
    assert target.read_text() == "previous" and os.listdir(tmp_path) == ["metrics.json"]


def test_other_write_errors_are_not_called_a_full_disk(tmp_path):
    def denied(f):
        raise PermissionError(errno.EACCES, "Permission denied")

    with pytest.raises(FfrunError) as e:  # one line naming the folder to make writable, not a full disk
        atomic_write(tmp_path / "x", denied)
    assert "permission denied" in str(e.value) and "no space" not in str(e.value)
    assert f"make {tmp_path} writable" in str(e.value)
    assert os.listdir(tmp_path) == []


# --- images ---------------------------------------------------------------------------------------------


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height, with no pixel data: all a decompression bomb needs."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side,message", [(100_000, "refused as a decompression bomb"),
                                          (13_000, "13000 x 13000 pixels is above ffrun's limit of 89478485")])
def test_image_headers_claiming_too_many_pixels_are_refused_before_decoding(tmp_path, side, message):
    path = png_header_only(tmp_path / "bomb.png", side, side)
    with pytest.raises(FfrunError, match=message) as e:
        images.load_image(str(path), 32)
    assert str(path) in str(e.value)


def test_nan_pixels_are_an_error_naming_the_file(tmp_path):
    a = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    a[3, 4] = np.nan
    a[5, 6] = np.inf
    Image.fromarray(a, mode="F").save(path := tmp_path / "float.tiff")
    with pytest.raises(FfrunError, match="2 pixels are NaN or infinite") as e:
        images.load_image(str(path), 8)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_large_image_is_reduced_before_any_float_copy(tmp_path, monkeypatch, fmt):
    side = 1200
    x = np.linspace(0, 255, side)
    rgb = np.stack(np.broadcast_arrays(x[None, :], x[:, None], np.full((side, side), 90.0)), -1).astype(np.uint8)
    Image.fromarray(rgb).save(path := tmp_path / f"big.{fmt.lower()}", format=fmt, quality=95)
    seen = []
    real = images.to_rgb
    monkeypatch.setattr(images, "to_rgb", lambda img, peak=None: seen.append(img.size) or real(img, peak))
    got = images.load_image(str(path), 16)
    # The float conversion saw a reduced image (k = floor(side / (OVERSAMPLE * 16)) keeps it under twice
    # that), not 1200 x 1200.
    assert max(seen[0]) < 2 * images.OVERSAMPLE * 16
    # The same picture as decoding the whole file and averaging it down, up to the documented shift of
    # 1 / (2 * OVERSAMPLE) output pixel on ramps rising 255 / 1200 a pixel, plus a grey level of rounding.
    with Image.open(path) as f:
        full = images.center_crop_resize(images.to_rgb(f.convert("RGB")), 16)
    slope = (255 / side) * (side / 16)  # grey levels per output pixel
    assert np.abs(got - full).max() * 255 < slope / (2 * images.OVERSAMPLE) + 1


def test_reduction_keeps_alpha_and_16_bit_scales(tmp_path):
    # Columns alternate opaque red and fully transparent blue: on white, every area is (1, 0.5, 0.5);
    # averaging unpremultiplied colours would give (0.75, 0.5, 0.75).
    rgba = np.zeros((400, 400, 4), np.uint8)
    rgba[:, 0::2] = (255, 0, 0, 255)
    rgba[:, 1::2] = (0, 0, 255, 0)
    deep = np.full((400, 400), 200, np.uint16)  # a dark 16-bit image: 200 of 65535, not of 255
    for name, arr in (("alpha.png", rgba), ("deep.png", deep)):
        Image.fromarray(arr).save(tmp_path / name)
        reduced = images.load_image(str(tmp_path / name), 8)  # 400 // (4 * 8): reduced by 12
        direct = images.center_crop_resize(images.to_rgb(Image.open(tmp_path / name)), 8)
        assert np.abs(reduced - direct).max() < 1 / 255, name
    assert np.allclose(reduced, 200 / 65535, atol=1e-6)
    assert np.abs(images.load_image(str(tmp_path / "alpha.png"), 8) - [1, 0.5, 0.5]).max() < 1 / 255


def test_resolution_above_the_image_limit_is_refused():
    with pytest.raises(FfrunError, match="task.resolution=10000: .* use at most 9459"):
        images.load_image("astronaut", 10_000)


# --- volumes ------------------------------------------------------------------------------------------------


def test_a_nifti_header_claiming_a_huge_volume_is_refused_before_reading(tmp_path):
    import nibabel as nib

    from ffrun.data.volumes import load_nifti

    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    img.header.set_data_shape((2048, 2048, 2048))
    (path := tmp_path / "huge.nii").write_bytes(img.header.binaryblock + b"\0" * 4 + b"\0" * 32)
    with pytest.raises(FfrunError, match="2048 x 2048 x 2048 voxels, above ffrun's limit"):
        load_nifti(path)


def test_mri_sampling_settings_out_of_range_are_refused():
    from omegaconf import OmegaConf

    from ffrun.tasks.mri import MRITask, MRITaskConfig

    for key, value, message in [("sample_std", -1.0, "task.sample_std=-1.0"), ("samples", 0, "task.samples=0"),
                                ("resolution", 600, "task.resolution=600")]:
        cfg = OmegaConf.structured(MRITaskConfig(**{key: value}))
        with pytest.raises(FfrunError, match=message):
            MRITask(cfg, torch.device("cpu"))


def test_csv_cells_never_act_as_spreadsheet_formulas():
    """A run someone sent can name a metric or a path "=HYPERLINK(...)": every CSV ffrun writes quotes it."""
    import csv
    import io

    from ffrun.apps.summary import runs_csv
    from ffrun.util.atomic import csv_text

    text = csv_text(["a", "b", "c"], [["=1+2", -1.5, "-3"], ["@SUM(A1)", "+x", "plain"]])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1] == ["'=1+2", "-1.5", "-3"] and rows[2] == ["'@SUM(A1)", "'+x", "plain"]
    run = {"run_dir": "=cmd|' /C calc'!A0", "status": "completed", "task": "image", "encoding": "gauss",
           "sigma": 10.0, "seed": 0, "steps": 1, "wall_s": 1.0, "metrics": {"=evil": 3.0}}
    header, body = list(csv.reader(io.StringIO(runs_csv([run]))))
    assert "'=evil" in header and body[0].startswith("'=cmd")


def test_atomic_outputs_get_the_permissions_of_any_new_file(tmp_path):
    """Results written through a temporary file (mkstemp: 0600) are readable by whoever the umask allows, as a
    plain open() would make them: a run directory shared with a group must not hold owner-only files."""
    import os

    from ffrun.util.atomic import _UMASK, write_text

    path = write_text(tmp_path / "metrics.json", "{}")
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_UMASK
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert os.stat(path).st_mode & 0o777 == os.stat(plain).st_mode & 0o777
