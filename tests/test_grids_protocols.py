"""The Grids benchmark's image protocols, sizes and interpolation (issue: each successor against its own published
numbers): images at their own size, fit / superres / denoise scoring, the benchmark's width rule, bicubic grids
against float64 references, the separable lattice path, SIREN's sine output."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SHARED_DATA
from omegaconf import OmegaConf
from PIL import Image

from ffrun.data.images import load_image, pixel_coords
from ffrun.models.densegrid import DenseGridEncoding, axis_matrix, image_lattice, interpolate
from ffrun.models.field import build_field
from ffrun.models.grids_budget import grid_side, hash_table_size, layer_width
from ffrun.run.record import best_evaluation
from ffrun.tasks.image import ImageTask, reference_points
from ffrun.util.errors import FfrunError


def write_png(path, array: np.ndarray) -> str:
    Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8)).save(path)
    return str(path)


def image_cfg(image: str, **kw):
    base = dict(name="image", image=image, resolution="native", data_seed=0, protocol="fit", reference=None,
                superres_points="centres", noise_std=0.0, default_sigma=10.0)
    return OmegaConf.create({**base, **kw})


class Stub(torch.nn.Module):
    """A field whose prediction is `fn(coords)`: scores computed by hand against it."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.p = torch.nn.Parameter(torch.zeros(1))

    def predict(self, v):
        return self.fn(v)


# ---- images at their own size --------------------------------------------------------------------------------
def test_a_non_square_image_loads_at_its_size_and_trains(tmp_path, run_cli):
    rng = np.random.default_rng(0)
    path = write_png(tmp_path / "wide.png", rng.random((18, 30, 3)))
    assert load_image(path, "native").shape == (18, 30, 3)
    assert load_image(path, "20x12").shape == (12, 20, 3)  # W x H, resized, no crop
    assert load_image(path, 16).shape == (16, 16, 3)  # the paper's square crop is still the default form
    r = run_cli(f"task.image={path}", "task.resolution=native", "task.protocol=fit", "trainer.steps=60",
                "trainer.eval_every=20", "trainer.progress=false", "model.width=64", "hydra.run.dir=run")
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert rec["protocol"] == "fit"
    first, last = rec["history"][0]["test_psnr"], rec["history"][-1]["test_psnr"]
    assert last > first + 1.0, (first, last)
    assert np.asarray(Image.open(tmp_path / "run" / "reconstruction.png")).shape[:2] == (18, 30)


def test_bad_resolution_forms_are_one_line(tmp_path):
    path = write_png(tmp_path / "a.png", np.zeros((8, 8, 3)))
    for bad in ("nativ", "10x", "0x4"):
        with pytest.raises(FfrunError, match="task.resolution"):
            load_image(path, bad)


def test_a_mistyped_resolution_on_the_command_line_is_one_line(run_cli):
    # the default sigma is derived from task.resolution: the resolver's refusal reaches the user as its own line
    r = run_cli("task.resolution=nativ", "trainer.steps=1", "hydra.run.dir=run")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == [lines[0]] and "task.resolution='nativ'" in lines[0] and "Traceback" not in r.stderr


# ---- protocols -----------------------------------------------------------------------------------------------
def test_fit_trains_on_and_scores_every_pixel(tmp_path):
    img = np.random.default_rng(1).random((6, 10, 3))
    task = ImageTask(image_cfg(write_png(tmp_path / "a.png", img)), torch.device("cpu"))
    truth = torch.from_numpy(load_image(str(tmp_path / "a.png"), "native"))
    assert task.train[0].shape == (60, 2) and torch.equal(task.train[1], truth.reshape(-1, 3))
    # a prediction off by 0.1 at one pixel only: MSE = 0.01 * 3 / (60 * 3) over every pixel
    wrong = truth.clone()
    wrong[2, 7] = (wrong[2, 7] + 0.1).clamp(max=1.0)
    expected = -10 * math.log10(float(((wrong.double() - truth.double()) ** 2).sum()) / 180)
    m = task.evaluate(Stub(lambda v: wrong))
    assert m["test_psnr"] == pytest.approx(expected, abs=1e-9) and m["train_psnr"] == m["test_psnr"]


def test_reference_points_map_high_resolution_pixel_centres_onto_the_field_2x():
    # training image 2 x 3: pixel i of n at i / n, its centre (i + 0.5) / n of the picture; the 4 x 6 reference's
    # pixel j has its centre at (j + 0.5) / 6, which is field coordinate (j + 0.5) / 6 - 0.5 / 3
    pts = reference_points((2, 3), (4, 6), "centres")
    assert pts.shape == (4, 6, 2)
    np.testing.assert_allclose(pts[0, :, 0], [-1 / 12, 1 / 12, 3 / 12, 5 / 12, 7 / 12, 9 / 12], atol=1e-7)
    np.testing.assert_allclose(pts[:, 0, 1], [-1 / 8, 1 / 8, 3 / 8, 5 / 8], atol=1e-7)
    bench = reference_points((2, 3), (4, 6), "benchmark")  # linspace(0, 1, 6, endpoint=False)
    np.testing.assert_allclose(bench[0, :, 0], np.arange(6) / 6, atol=1e-7)


def test_superres_scores_the_reference_at_its_pixel_centres(tmp_path):
    # A horizontal ramp, value = the picture fraction of the pixel centre, at 3 px and 12 px wide. The field that
    # fits the small one exactly (u + 0.5 / 3 at coordinate u) scores the large one exactly at its centres, and
    # not at the benchmark's layout (which samples 1.5 large pixels to the left).
    def ramp(h, w):
        return np.repeat(((np.arange(w) + 0.5) / w)[None, :, None], h, 0).repeat(3, 2)

    lo = write_png(tmp_path / "lo.png", ramp(2, 3))
    hi = write_png(tmp_path / "hi.png", ramp(8, 12))
    truth_hi = torch.from_numpy(load_image(hi, "native"))
    task = ImageTask(image_cfg(lo, protocol="superres", reference=hi), torch.device("cpu"))
    assert task.reference[0].shape == (8, 12, 2)
    stub = Stub(lambda v: (v[..., :1] + 0.5 / 3).expand(*v.shape[:-1], 3))
    m = task.evaluate(stub)
    # PNG quantisation only: both images are 8-bit
    assert m["test_psnr"] > 45
    assert -10 * math.log10(float(((stub.predict(task.reference[0]) - truth_hi) ** 2).mean())) == pytest.approx(
        m["test_psnr"], abs=1e-6)
    shifted = ImageTask(image_cfg(lo, protocol="superres", reference=hi, superres_points="benchmark"),
                        torch.device("cpu")).evaluate(stub)
    assert shifted["test_psnr"] < m["test_psnr"] - 10
    with pytest.raises(FfrunError, match="task.reference"):
        ImageTask(image_cfg(lo, protocol="superres"), torch.device("cpu"))


def test_denoise_is_seeded_and_scored_against_the_clean_image(tmp_path):
    path = write_png(tmp_path / "a.png", np.full((40, 50, 3), 0.5))
    a = ImageTask(image_cfg(path, protocol="denoise", noise_std=0.1), torch.device("cpu"))
    b = ImageTask(image_cfg(path, protocol="denoise", noise_std=0.1), torch.device("cpu"))
    c = ImageTask(image_cfg(path, protocol="denoise", noise_std=0.1, data_seed=1), torch.device("cpu"))
    assert torch.equal(a.train[1], b.train[1]) and not torch.equal(a.train[1], c.train[1])
    clean = a.full[1]
    noise = a.train[1] - clean.reshape(-1, 3)
    assert float(noise.std()) == pytest.approx(0.1, rel=0.05)
    m = a.evaluate(Stub(lambda v: clean))  # the clean image itself: perfect against the clean image
    assert m["test_psnr"] == math.inf
    # against the noisy target: the noise's MSE
    assert m["train_psnr"] == pytest.approx(-10 * math.log10(float((noise**2).mean())), abs=1e-6)
    with pytest.raises(FfrunError, match="noise_std"):
        ImageTask(image_cfg(path, protocol="denoise"), torch.device("cpu"))


def test_the_best_evaluation_is_picked_by_the_selection_metric():
    history = [{"step": 100, "train_psnr": 20.0, "test_psnr": 19.0},
               {"step": 200, "train_psnr": 22.0, "test_psnr": 18.5},
               {"step": 300, "train_psnr": 21.0, "test_psnr": 19.5}]
    assert best_evaluation(history, "test_psnr") == {"step": 300, "selected_by": "test_psnr", "test_psnr": 19.5}
    by_fit = best_evaluation(history, "test_psnr", "train_psnr")
    assert by_fit["step"] == 200 and by_fit["test_psnr"] == 18.5
    assert best_evaluation([{"step": 1, "test_psnr": float("nan")}], "test_psnr") is None


# ---- the benchmark's sizes -----------------------------------------------------------------------------------
def benchmark_width(n_in, n_out, hidden, budget):
    """INR-benchmark's calc_layer_width, written out: floor of the positive root of a w^2 + b w + c."""
    a, b, c = hidden, n_in + n_out + hidden, n_in + n_out - budget
    return int(np.floor((-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)))


@pytest.mark.parametrize("budget", [1e4, 3e4, 1e5])
def test_the_benchmarks_width_rule(budget, compose):
    assert layer_width(2, 3, 3, budget) == benchmark_width(2, 3, 3, budget)  # SIREN
    assert layer_width(2000, 3, 2, budget) == benchmark_width(2000, 3, 2, budget)  # FFN: B not counted
    assert grid_side(budget, 3, 2) == int(math.floor(math.sqrt(budget / 3)))
    assert hash_table_size(budget, 16, 2, 64, 3) == 2 ** int(math.floor(math.log2((budget - 2307) / 32)))
    sizes = {}
    for method in ("grid", "siren", "wire", "ffn", "ingp"):
        cfg = compose("experiment=grids_div2k", f"method=grids/{method}", f"model.params={budget}")
        field = build_field(cfg.encoding, cfg.model, 2, 3, "sigmoid", 0, bounds=(0.0, 1.0))
        sizes[method] = field.sizes
        assert field.sizes["benchmark_params"] <= budget
    assert sizes["grid"]["encoding.resolution"] == grid_side(budget, 3, 2)
    assert sizes["siren"]["model.width"] == benchmark_width(2, 3, 3, budget)
    assert sizes["ffn"]["model.width"] == benchmark_width(2000, 3, 2, budget)
    wire_width = benchmark_width(2, 3, 2, budget // 2)  # WIRE: half the budget, complex layers of that width
    assert int(sizes["wire"]["model.width"] / math.sqrt(2)) == wire_width
    w = wire_width  # the benchmark counts a complex weight once; ffrun's own count twice
    assert sizes["wire"]["benchmark_params"] == (2 * w + w) + 2 * (w * w + w) + (3 * w + 3)
    assert sizes["wire"]["params"] == (2 * w + w) + 2 * 2 * (w * w + w) + 2 * (3 * w + 3)
    assert sizes["siren"]["params"] == sizes["siren"]["benchmark_params"]


def test_the_benchmarks_fourfeat_layout_against_a_float64_composition(compose):
    """INR-benchmark's FourFeat at depth 4: Linear, ReLU, Linear, ReLU, Linear, Linear (no ReLU after the last
    hidden layer), checked against its layers composed by hand in float64."""
    from ffrun.models.mlp import MLP

    torch.manual_seed(0)
    net = MLP(6, 3, depth=4, width=5, out_activation="none", init="torch", linear_last_hidden=True).double()
    kinds = [type(m).__name__ for m in net.net]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Linear", "Linear"]
    x = torch.randn(40, 6, dtype=torch.float64)
    lin = [m for m in net.net if isinstance(m, torch.nn.Linear)]
    ref = x
    for k, layer in enumerate(lin):
        ref = ref @ layer.weight.T + layer.bias
        if k < 2:
            ref = ref.clamp_min(0)
    assert torch.allclose(net(x), ref, rtol=0, atol=1e-12)
    ones = torch.cat([x, torch.ones(40, 1, dtype=torch.float64)], -1)
    assert torch.allclose(net.forward_augmented(ones), ref, rtol=0, atol=1e-12)
    plain = MLP(6, 3, depth=4, width=5, out_activation="none", init="torch").double()
    plain.load_state_dict({k.replace("net.5", "net.6"): v for k, v in net.state_dict().items()})
    assert not torch.allclose(plain(x), ref)  # the ReLU it leaves out matters
    cfg = compose("experiment=grids_div2k", "method=grids/siren", "model.linear_last_hidden=true")
    from ffrun.config import validate

    with pytest.raises(Exception, match="applies to model=mlp only"):
        validate(cfg)


def test_the_benchmarks_draw_of_B(compose):
    """encoding.draw=numpy: the B of INR-benchmark's FourFeat (set_seed(1234), then
    np.random.normal(size=(1000, 2)) * 20 on x in [-1, 1)), which on ffrun's [0, 1) is twice that."""
    np.random.seed(1234)
    theirs = np.random.normal(size=(1000, 2)) * 20
    cfg = compose("experiment=grids_div2k", "method=grids/ffn", "model.params=1e4")  # the preset's draw and seed
    field = build_field(cfg.encoding, cfg.model, 2, 3, "none", cfg.seed, bounds=(0.0, 1.0))
    assert np.allclose(field.encoding.B.numpy(), 2 * theirs, rtol=1e-6, atol=0)
    ours = build_field(cfg.encoding, cfg.model, 2, 3, "none", 0, bounds=(0.0, 1.0)).encoding.B  # seed 0
    assert ours.shape == (1000, 2) and not np.allclose(ours.numpy(), 2 * theirs)  # another seed, another B
    from ffrun.config import validate

    for bad, says in (("encoding.draw=jax", "choose torch"), ("encoding=posenc", "applies to encoding=gauss")):
        with pytest.raises(Exception, match=says):
            validate(compose("experiment=grids_div2k", "method=grids/ffn", "encoding.draw=numpy", bad)
                     if "posenc" in bad else compose("experiment=grids_div2k", "method=grids/ffn", bad))


def test_the_grids_rule_refuses_a_method_the_benchmark_does_not_have(compose):
    cfg = compose("experiment=grids_div2k", "method=learned")
    with pytest.raises(FfrunError, match="budget_rule=grids"):
        build_field(cfg.encoding, cfg.model, 2, 3, "sigmoid", 0)


def test_the_presets_carry_the_benchmarks_settings(compose):
    grid = compose("experiment=grids_div2k", "method=grids/grid")
    assert (grid.encoding.interpolation, grid.encoding.init, grid.trainer.lr, grid.model.name) == (
        "bicubic", 0.1, 0.1, "direct")
    siren = compose("experiment=grids_div2k", "method=grids/siren")
    assert (siren.model.w0, siren.model.depth, siren.model.sine_output, siren.trainer.lr) == (90.0, 5, True, 1e-4)
    wire = compose("experiment=grids_div2k", "method=grids/wire")
    assert (wire.model.w0, wire.model.s0, wire.model.depth, wire.trainer.lr) == (15.0, 10.0, 4, 5e-4)
    ffn = compose("experiment=grids_div2k", "method=grids/ffn")
    assert (ffn.encoding.m, ffn.encoding.sigma, ffn.model.depth, ffn.trainer.lr) == (1000, 40.0, 4, 1e-3)
    assert ffn.model.linear_last_hidden and ffn.model.init == "torch"
    assert (ffn.encoding.draw, ffn.seed) == ("numpy", 1234)  # the benchmark's B
    ingp = compose("experiment=grids_div2k", "method=grids/ingp")
    assert (ingp.encoding.levels, ingp.model.depth, ingp.model.width, ingp.trainer.lr) == (16, 2, 64, 1e-2)
    for cfg in (grid, siren, wire, ffn, ingp):
        assert cfg.task.resolution == "native" and cfg.task.protocol == "fit" and cfg.trainer.eval_every == 100
        assert cfg.model.out_activation == "none" and cfg.trainer.steps == 1000


# ---- interpolation -------------------------------------------------------------------------------------------
def keys_cubic(x: float, a: float = -0.75) -> float:
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def bicubic_reference(values: np.ndarray, u: np.ndarray) -> np.ndarray:
    """float64, point by point: Keys' kernel over the 4 x 4 vertices around each point, taps clamped to the grid."""
    rx, ry = values.shape[:2]
    out = np.zeros((len(u), values.shape[2]))
    for n, (x, y) in enumerate(u):
        px, py = x * (rx - 1), y * (ry - 1)
        bx, by = math.floor(px), math.floor(py)
        for i in range(bx - 1, bx + 3):
            for j in range(by - 1, by + 3):
                w = keys_cubic(px - i) * keys_cubic(py - j)
                out[n] += w * values[min(max(i, 0), rx - 1), min(max(j, 0), ry - 1)]
    return out


def test_bicubic_against_float64_references():
    rng = np.random.default_rng(3)
    values = rng.standard_normal((7, 5, 3))
    u = np.concatenate([rng.random((200, 2)), [[0, 0], [1, 1], [1, 0], [0.5, 1]]])
    ours = interpolate(torch.from_numpy(values), torch.from_numpy(u), "bicubic").numpy()
    np.testing.assert_allclose(ours, bicubic_reference(values, u), atol=1e-12)
    # PyTorch's grid_sample(bicubic, align_corners, border): grid (1, C, R_y, R_x), x along the last axis
    g = torch.from_numpy(values).permute(2, 1, 0)[None]
    ref = F.grid_sample(g, torch.from_numpy(u * 2 - 1)[None, None], mode="bicubic", align_corners=True,
                        padding_mode="border")[0, :, 0].T
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-12)
    # the weights sum to 1 (a = -0.75 reproduces constants, not lines: only a = -0.5 does), edges included
    const = np.full((7, 5, 1), 0.37)
    np.testing.assert_allclose(interpolate(torch.from_numpy(const), torch.from_numpy(u), "bicubic").numpy(), 0.37,
                               atol=1e-14)


@pytest.mark.parametrize("mode", ["linear", "bicubic"])
def test_the_lattice_path_equals_the_point_path_forward_and_backward(mode):
    torch.manual_seed(0)
    enc = DenseGridEncoding(2, [9, 6], 3, interpolation=mode).double()
    with torch.no_grad():
        enc.values.normal_()
    v = torch.from_numpy(pixel_coords(11, 17)).double().reshape(-1, 2)
    assert image_lattice(v) is not None
    swapped = v.clone()
    swapped[[3, 40]] = v[[40, 3]]
    assert image_lattice(swapped) is None and image_lattice(torch.rand(187, 2)) is None
    target = torch.rand(v.shape[0], 3, dtype=torch.float64)
    out = enc(v)
    assert enc._lattice(v) is not None
    ((out - target) ** 2).sum().backward()
    g_lattice = enc.values.grad.clone()
    enc.values.grad = None
    ref = interpolate(enc.values, v, mode)
    ((ref - target) ** 2).sum().backward()
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(g_lattice, enc.values.grad, atol=1e-10, rtol=1e-10)
    # each row of an axis matrix is one point's weights: they sum to 1
    torch.testing.assert_close(axis_matrix(torch.rand(50), 8, mode).sum(1), torch.ones(50))


def test_siren_sine_output_and_a_linear_output_activation(compose):
    cfg = compose("experiment=grids_div2k", "method=grids/siren", "model.params=1e4")
    field = build_field(cfg.encoding, cfg.model, 2, 3, "sigmoid", 0)
    assert field.mlp.out_activation == "none" and field.mlp.sine_output
    v = torch.rand(500, 2)
    out = field(v)
    assert out.abs().max() <= 1 and out.min() < 0  # sin(90 (W h + b)): no sigmoid, so negative values occur
    import copy

    with torch.no_grad():  # the composition sin(90 (W h + b)) of the reference code, in float32 and float64
        plain = field.mlp.forward_plain(field.encoding(v))
        ref = copy.deepcopy(field.mlp).double().forward_plain(field.encoding(v).double())
    # w0 = 90: float32's rounding of arguments near 100 moves a sine by ~1e-5, in the fused layers or the plain ones
    assert (out.double() - ref).abs().max() < 5e-5 and (plain.double() - ref).abs().max() < 5e-5


@pytest.mark.skipif(not (SHARED_DATA / "images" / "div2k_grids" / "x4" / "00.png").is_file(),
                    reason="the Grids benchmark's DIV2K images are not in the data directory")
def test_the_benchmark_images_load_at_their_size():
    lo = load_image("div2k_grids:x4/0", "native")
    hi = load_image("div2k_grids:hr/0", "native")
    assert lo.shape[1] == 510 and hi.shape[0] == 4 * lo.shape[0] and hi.shape[1] == 4 * lo.shape[1]
