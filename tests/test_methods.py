"""Fourier features' successors behind one field interface: each method against its formula on hand-made
inputs, parameter budgets met within 5 %, every method trained on every task, resumed, loaded and exported."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ffrun.config import EncodingConfig, ModelConfig
from ffrun.models.densegrid import DenseGridConfig, DenseGridEncoding, interpolate
from ffrun.models.encodings import FourierEncoding, build_encoding, fourier_features
from ffrun.models.field import build_field
from ffrun.models.hashgrid import PRIMES, HashGridConfig, HashGridEncoding, hash_encode, spatial_hash
from ffrun.models.registry import ENCODINGS, NETWORKS, count_parameters, load_builtins
from ffrun.models.siren import SineLayer, Siren, SirenConfig
from ffrun.models.wire import Wire, WireConfig, gabor

S = OmegaConf.structured


# --- SIREN ---------------------------------------------------------------------------------------------

def test_a_sine_layer_is_sin_of_w0_times_its_affine_map():
    layer = SineLayer(2, 3, w0=30.0, first=False).double()
    with torch.no_grad():
        layer.linear.weight.copy_(torch.tensor([[0.01, -0.02], [0.03, 0.0], [0.0, 0.05]], dtype=torch.float64))
        layer.linear.bias.copy_(torch.tensor([0.1, -0.2, 0.0], dtype=torch.float64))
    x = torch.tensor([[0.5, -1.0], [1.0, 1.0]], dtype=torch.float64)
    W = np.array([[0.01, -0.02], [0.03, 0.0], [0.0, 0.05]])
    b = np.array([0.1, -0.2, 0.0])
    expected = np.sin(30.0 * (x.numpy() @ W.T + b))
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, atol=1e-12)


def test_siren_initialisation_has_the_papers_bounds_and_variances():
    torch.manual_seed(0)
    n, w0 = 512, 30.0
    net = Siren(2, 1, depth=3, width=n, w0=w0)
    first = net.layers[0].linear.weight
    hidden = net.layers[1].linear.weight
    assert first.abs().max() <= 1.0 / 2 and first.abs().max() > 0.49  # U(-1/d, 1/d), d = 2 inputs
    bound = math.sqrt(6.0 / n) / w0
    assert hidden.abs().max() <= bound and hidden.abs().max() > 0.99 * bound
    # uniform on [-a, a]: variance a^2 / 3 (262,144 draws: within 2 %)
    assert hidden.var().item() == pytest.approx(bound**2 / 3, rel=0.02)
    assert net.last.weight.abs().max() <= bound
    # the point of the init: for arcsine-distributed inputs h (E h^2 = 1/2) the pre-activations w0 W h have
    # variance w0^2 n (a^2 / 3) / 2 = 1 at any width (the SIREN paper's argument)
    h = torch.sin(torch.rand(4096, n) * 2 * math.pi)
    z = w0 * (h @ hidden.T)
    assert z.var().item() == pytest.approx(1.0, rel=0.05)


# --- WIRE ----------------------------------------------------------------------------------------------

def test_the_gabor_wavelet_is_exp_of_i_w0_z_minus_the_squared_window():
    z = torch.tensor([0.0, 0.1, -0.3, 0.05 + 0.02j], dtype=torch.complex128)
    expected = np.exp(1j * 20.0 * z.numpy() - np.abs(10.0 * z.numpy()) ** 2)
    np.testing.assert_allclose(gabor(z, 20.0, 10.0).numpy(), expected, atol=1e-12)


def test_wire_divides_its_width_by_sqrt2_and_outputs_real_numbers():
    net = Wire(2, 3, depth=4, width=256)
    assert net.first.out_features == int(256 / math.sqrt(2))
    assert net.hidden[0].weight.dtype == torch.cfloat
    out = net(torch.rand(5, 2) * 2 - 1)
    assert out.dtype == torch.float32 and out.shape == (5, 3)
    # a complex parameter counts as two real ones in the budget
    assert count_parameters(net.last) == 2 * (net.last.weight.numel() + net.last.bias.numel())


# --- hash grid -----------------------------------------------------------------------------------------

def test_the_spatial_hash_is_the_xor_of_coordinates_times_the_primes_in_32_bits():
    corners = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [3, 5, 7], [1000, 2000, 3000]])
    expected = [(a * PRIMES[0] ^ b * PRIMES[1] ^ c * PRIMES[2]) & 0xFFFFFFFF for a, b, c in corners.tolist()]
    assert spatial_hash(corners).tolist() == expected
    assert expected[1:4] == [1, 2654435761, 805459861]


def test_hash_interpolation_weights_sum_to_one():
    # every table entry the same vector: any point, any level, gets exactly that vector back
    enc = HashGridEncoding(3, levels=4, features=2, table_size=64, min_resolution=2, max_resolution=40)
    with torch.no_grad():
        enc.params.copy_(torch.tensor([0.3, -0.7]).repeat(enc.params.numel() // 2))
    out = enc(torch.rand(1000, 3, generator=torch.Generator().manual_seed(0)))
    np.testing.assert_allclose(out.reshape(1000, 4, 2).detach().numpy(), np.broadcast_to([0.3, -0.7], (1000, 4, 2)),
                               atol=1e-6)


def test_a_table_larger_than_the_grid_has_no_collisions_and_returns_the_vertex_values():
    enc = HashGridEncoding(2, levels=1, features=1, table_size=4096, min_resolution=9, max_resolution=9)
    res, entries, dense = enc.sizes[0]
    assert dense and res == 9 and entries >= res * res
    with torch.no_grad():
        enc.params.copy_(torch.arange(enc.params.numel(), dtype=torch.float32))
    # vertex (i, j) sits at u = (k - 1/2) / scale with scale = N - 1 = 8 (tiny-cuda-nn's half-cell offset)
    i, j = torch.meshgrid(torch.arange(1, 9), torch.arange(1, 9), indexing="ij")
    u = (torch.stack([i, j], -1).reshape(-1, 2).float() - 0.5) / 8.0
    got = enc(u)[:, 0].round().long()
    expected = (i + j * res).reshape(-1)
    assert torch.equal(got, expected)
    assert got.unique().numel() == got.numel()  # distinct vertices, distinct entries


def test_a_hashed_level_matches_a_float64_reference_of_the_formula():
    g = torch.Generator().manual_seed(1)
    table = torch.randn(97, 2, generator=g, dtype=torch.float64)  # 97 entries: the 65^2 grid must hash
    u = torch.rand(50, 2, generator=g, dtype=torch.float64)
    scale = 64.0
    out = hash_encode(u, [table], [scale], [(65, 97, False)])
    for p in range(50):
        pos = u[p].numpy() * scale + 0.5
        base = np.floor(pos).astype(np.int64)
        frac = pos - base
        ref = np.zeros(2)
        for dx in (0, 1):
            for dy in (0, 1):
                c = base + [dx, dy]
                idx = ((int(c[0]) * PRIMES[0]) ^ (int(c[1]) * PRIMES[1])) & 0xFFFFFFFF
                w = (frac[0] if dx else 1 - frac[0]) * (frac[1] if dy else 1 - frac[1])
                ref += w * table[idx % 97].numpy()
        np.testing.assert_allclose(out[p].numpy(), ref, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="tiny-cuda-nn's fused encoding needs a CUDA device")
def test_tiny_cuda_nn_agrees_with_the_pytorch_hash_grid():
    pytest.importorskip("tinycudann", reason="tiny-cuda-nn's PyTorch bindings are not installed")
    enc = HashGridEncoding(3, table_size=1 << 14, generator=torch.Generator().manual_seed(0)).cuda()
    u = torch.rand(4096, 3, device="cuda")
    fused = enc(u)
    enc.backend = "torch"
    assert torch.allclose(fused, enc(u), atol=1e-5)


# --- dense grid ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("d", [1, 2, 3])
def test_the_dense_grid_reproduces_a_linear_function_exactly(d):
    res = [5, 7, 4][:d]
    coeff = torch.tensor([0.3, -1.2, 2.0][:d], dtype=torch.float64)
    axes = [torch.linspace(0, 1, r, dtype=torch.float64) for r in res]
    vertices = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    values = (0.5 + vertices @ coeff)[..., None]
    u = torch.rand(500, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u[:3] = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)[:, None]  # the faces and a vertex
    np.testing.assert_allclose(interpolate(values, u)[:, 0].numpy(), (0.5 + u @ coeff).numpy(), atol=1e-12)


def test_the_dense_grid_maps_its_box_and_clamps_outside_it():
    enc = DenseGridEncoding(1, 3, 1, bounds=(-2.0, 2.0))
    with torch.no_grad():
        enc.values.copy_(torch.tensor([[1.0], [2.0], [4.0]]))
    got = enc(torch.tensor([[-2.0], [0.0], [1.0], [2.0], [9.0], [-9.0]]))[:, 0]
    assert got.tolist() == [1.0, 2.0, 3.0, 4.0, 4.0, 1.0]


# --- learned and multi-scale Fourier features ------------------------------------------------------------

def test_learned_fourier_features_start_as_gauss_and_train_b():
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    learned = build_encoding("learned", 2, m=16, sigma=5.0, generator=g())
    gauss = build_encoding("gauss", 2, m=16, sigma=5.0, generator=g())
    assert isinstance(learned.B, torch.nn.Parameter) and torch.equal(learned.B, gauss.B)
    v = torch.rand(8, 2)
    assert torch.equal(learned(v), gauss(v))
    learned(v).sum().backward()
    assert learned.B.grad is not None and learned.B.grad.abs().sum() > 0
    assert "B" in dict(learned.named_parameters()) and "B" not in dict(gauss.named_parameters())


def test_multiscale_features_stack_one_gaussian_block_per_sigma():
    enc = build_encoding("multiscale", 2, m=20000, sigmas=[1.0, 30.0], generator=torch.Generator().manual_seed(0))
    B = enc.B.double()
    assert B.shape == (20000, 2)
    assert B[:10000].std().item() == pytest.approx(1.0, rel=0.03)
    assert B[10000:].std().item() == pytest.approx(30.0, rel=0.03)
    v = torch.rand(4, 2, dtype=torch.float64)
    np.testing.assert_allclose(enc(v).numpy(), fourier_features(v, B).numpy(), atol=1e-12)
    assert isinstance(enc, FourierEncoding)


# --- budgets -------------------------------------------------------------------------------------------

METHODS = {  # (encoding config, model config) as the method presets set them
    "gauss": (EncodingConfig(name="gauss", sigma=10.0), ModelConfig()),
    "learned": (EncodingConfig(name="learned", sigma=10.0), ModelConfig()),
    "multiscale": (EncodingConfig(name="multiscale", sigmas=[1.0, 10.0]), ModelConfig()),
    "siren": (EncodingConfig(name="none", center=True), SirenConfig()),
    "wire": (EncodingConfig(name="none", center=True), WireConfig()),
    "hashgrid": (HashGridConfig(), ModelConfig(depth=3, width=64)),
    "densegrid": (DenseGridConfig(), ModelConfig(name="direct")),
}


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("budget", [10_000, 100_000, 1_000_000])
@pytest.mark.parametrize("dims", [(2, 3), (3, 1), (3, 4)])
def test_a_parameter_budget_sizes_every_method_within_5_percent(method, budget, dims):
    enc, model = METHODS[method]
    model = S(model)
    model.params = budget
    with torch.device("meta"):  # the counted field is the one built; no memory needed for that
        field = build_field(S(enc), model, dims[0], dims[1], "none", 0)
    got = count_parameters(field)
    assert abs(got - budget) <= 0.05 * budget, (method, budget, got, field.sizes)
    assert field.sizes["params"] == got


def test_every_registered_method_is_covered_here():
    load_builtins()
    assert set(ENCODINGS) == {"none", "basic", "posenc", "gauss", "learned", "multiscale", "grid", "hashgrid",
                              "densegrid"}
    assert set(NETWORKS) == {"mlp", "direct", "siren", "wire"}


# --- every method on every task ------------------------------------------------------------------------

TASKS = {  # tiny versions of every task's preset
    "image": ["experiment=paper_image", "task.resolution=16"],
    "text": ["experiment=paper_text", "task.resolution=16"],
    "toy1d": ["task=toy1d", "task.n_points=64"],
    "ct": ["experiment=paper_ct", "task.resolution=16"],
    "mri": ["experiment=paper_mri", "task.resolution=8"],
    "shape": ["experiment=paper_shape", "model.depth=3", "trainer.batch_size=512", "task.test_points=512",
              "task.mesh_resolution=8"],
    "nerf": ["experiment=paper_nerf", "task.builtin_resolution=8", "task.n_samples=8", "trainer.batch_size=64",
             "task.test_views=1", "task.turntable_frames=0"],
}
TINY = {"hashgrid": ["encoding.levels=4", "encoding.table_size=256"], "densegrid": ["encoding.resolution=8"]}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_method_trains_on_every_task_through_the_same_interface(task, compose):
    from ffrun.models.field import field_spec
    from ffrun.tasks import build_task, task_class

    base = [*TASKS[task], "trainer.progress=false", "device=cpu"]
    plain = compose(*base)
    built = build_task(plain.task, torch.device("cpu"), plain.trainer.batch_size, 0)
    for method in sorted(METHODS):
        cfg = compose(*base, f"method={method}", "model.width=16", "encoding.m=16", *TINY.get(method, []))
        spec = field_spec(task_class(cfg.task.name), cfg.seed)
        field = build_field(cfg.encoding, cfg.model, spec.in_dim, spec.out_dim, spec.out_activation, cfg.seed,
                            bounds=spec.bounds)
        opt = torch.optim.Adam(field.parameters(), lr=float(cfg.trainer.lr))
        batch = built.sample(0)  # one batch throughout: on it the loss must fall, noise-free
        losses = []
        for _ in range(12):
            opt.zero_grad()
            losses.append(float(built.backward(field, batch)))
            opt.step()
        assert all(math.isfinite(v) for v in losses), (task, method, losses)
        assert losses[-1] < losses[0], (task, method, losses)
        metrics = built.evaluate(field.eval())
        assert metrics and all(math.isfinite(v) for v in metrics.values()), (task, method, metrics)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_resumes_loads_and_exports(method, compose, tmp_path):
    import ffrun
    from ffrun.apps.export import export, load_exported
    from ffrun.run.job import run

    base = ["task=image", "task.resolution=16", "trainer.progress=false", "device=cpu", f"method={method}",
            "model.params=8000", "trainer.eval_every=5", "trainer.ckpt_every=5"] + (
        ["encoding.levels=4"] if method == "hashgrid" else []) + (
        # WIRE's schedule spans trainer.steps, so a 5-step run is another schedule than the first half of a 10-step
        # one; its resume is tested bit-exactly on an interrupted run (test_optimizer_settings.py)
        ["trainer.lr_schedule=constant"] if method == "wire" else [])
    straight = run(compose(*base, "trainer.steps=10"), tmp_path / "straight")
    run(compose(*base, "trainer.steps=5"), tmp_path / "first")
    resumed = run(compose(*base, "trainer.steps=10", f"trainer.resume={tmp_path / 'first'}"), tmp_path / "resumed")
    assert resumed["status"] == "completed" and resumed["step"] == 10
    assert resumed["metrics"] == straight["metrics"], method  # bit-equal on the CPU
    rec = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert rec["method"] == method and abs(rec["params"] - 8000) <= 400 and rec["sizes"]["params"] == rec["params"]
    field = ffrun.load(tmp_path / "resumed")
    exported = load_exported(export(tmp_path / "resumed", tmp_path / "export"))
    v = torch.rand(64, 2)
    assert torch.equal(field(v), exported(v))


@pytest.mark.parametrize("overrides, says", [
    (["method=hashgrid", "encoding.levels=0"], "encoding=hashgrid: use encoding.levels >= 1"),
    (["method=densegrid", "encoding.resolution=1"], "encoding=densegrid: use encoding.resolution >= 2"),
    (["method=siren", "model.w0=0"], "model=siren: SIREN needs"),
    (["method=wire", "model.depth=1"], "model=wire: WIRE needs"),
    (["encoding=multiscale", "encoding.sigmas=[]"], "encoding.sigmas=[]"),
])
def test_a_method_setting_out_of_range_is_one_config_error(overrides, says, compose):
    from ffrun.config import validate
    from ffrun.util.errors import FfrunError

    with pytest.raises(FfrunError, match=re.escape(says)):
        validate(compose("experiment=smoke", *overrides))


def test_an_unknown_method_preset_is_refused_not_skipped(run_cli):
    res = run_cli("experiment=smoke", "method=bar", "hydra.run.dir=run")
    assert res.returncode == 2 and "method=bar is not a preset" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("method", ["siren", "wire", "hashgrid", "densegrid", "learned"])
def test_the_vectorized_launcher_batches_only_fixed_features_under_a_relu_mlp(method, compose):
    from ffrun.train.vectorized import why_not_vectorizable

    assert why_not_vectorizable(compose("experiment=smoke", f"method={method}")) is not None
    assert why_not_vectorizable(compose("experiment=smoke", "method=gauss")) is None


@pytest.mark.parametrize("encoding", ["learned", "multiscale"])
def test_sigma_auto_is_refused_for_the_sigma_using_encodings_it_does_not_predict(encoding, compose):
    from ffrun.config import check_settings
    from ffrun.util.errors import FfrunError

    with pytest.raises(FfrunError, match=f"encoding={encoding} needs a number"):
        check_settings(compose("experiment=smoke", f"encoding={encoding}", "sigma=auto"))


def test_ffrun_compare_writes_the_table_and_the_budget_plot_and_resumes(run_cli, tmp_path):
    args = ["--scale", "smoke", "--tasks", "image", "--methods", "gauss,densegrid", "--budgets", "20000,40000",
            "--out", "cmp", "device=cpu"]
    first = run_cli(*args, name="ffrun-compare", timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    out = tmp_path / "cmp"
    table = (out / "compare.md").read_text()
    assert "| gauss |" in table and "| densegrid |" in table and "20,000 params" in table
    assert "image at 40,000:" in table  # the Grids paper's question, answered per budget
    assert (out / "budget_image.png").stat().st_size > 0 and (out / "gallery_image.png").is_file()
    rec = json.loads((out / "runs" / "image" / "astronaut@40000" / "densegrid" / "metrics.json").read_text())
    assert rec["status"] == "completed" and abs(rec["params"] - 40000) <= 2000 and rec["lr"] == 0.1
    again = run_cli(*args, name="ffrun-compare", timeout=600)
    assert again.returncode == 0 and "(4 already done)" in again.stdout
    refused = run_cli(*args[:-1], "method=siren", name="ffrun-compare")
    assert refused.returncode == 2 and "--methods and --budgets" in refused.stderr
