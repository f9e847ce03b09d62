"""The successors' fused layers compute what the plain compositions compute: SIREN's sine layer and WIRE's
Gabor wavelet, outputs and every gradient against a float64 reference; and every method resumes bit for bit."""

from __future__ import annotations

import pytest
import torch
from test_loop import assert_same_state, checkpoint

from ffrun.models.siren import Siren
from ffrun.models.wire import Wire


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.to(b.dtype) - b).norm() / b.norm()).item()


def plain_siren(m: Siren, x: torch.Tensor) -> torch.Tensor:
    return m.forward_plain(x)


def grads(model, fn, x, weights):
    model.zero_grad(set_to_none=True)
    y = fn(model, x)
    (y * weights.to(y.dtype)).sum().backward()
    return y.detach(), [p.grad.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("sine_output", [False, True])
def test_the_fused_sine_layer_matches_the_plain_one_against_float64(sine_output):
    torch.manual_seed(0)
    m64 = Siren(2, 3, depth=4, width=48, w0=30.0, sine_output=sine_output).double()
    m32 = Siren(2, 3, depth=4, width=48, w0=30.0, sine_output=sine_output)
    m32.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
    x = torch.rand(3, 700, 2, dtype=torch.float64) * 2 - 1  # leading batch dimensions are kept
    w = torch.randn(3, 700, 3, dtype=torch.float64)
    y_ref, g_ref = grads(m64, plain_siren, x, w)
    y_fused64, g_fused64 = grads(m64, lambda m, v: m(v), x, w)
    assert y_fused64.shape == (3, 700, 3)
    assert rel(y_fused64, y_ref) < 1e-12 and all(rel(a, b) < 1e-12 for a, b in zip(g_fused64, g_ref))  # same math
    y_plain, g_plain = grads(m32, plain_siren, x.float(), w)
    y_fused, g_fused = grads(m32, lambda m, v: m(v), x.float(), w)
    assert rel(y_fused, y_ref) < 1e-6
    # float32 itself is ~1e-6 from float64 in the first layer's gradients at w0 = 30 (plain: 1.06e-6 here, fused
    # 1.32e-6, w0 multiplying [W, b] before the product rather than after): within 2x of the plain one's error
    for fused, plain, ref in zip(g_fused, g_plain, g_ref):
        assert rel(fused, ref) < max(1e-6, 2 * rel(plain, ref)), (rel(fused, ref), rel(plain, ref))


def test_the_planar_wire_network_matches_the_complex_reference_against_float64():
    """Wire.forward (real planes, PlanarGabor) against the reference's complex forward, autograd's graph."""
    torch.manual_seed(2)
    m64 = Wire(2, 3, depth=4, width=40)
    m64.first.double()
    for layer in [*m64.hidden, m64.last]:  # complex layers in complex128
        layer.to(torch.cdouble)
    m32 = Wire(2, 3, depth=4, width=40)
    m32.load_state_dict({k: v.to(torch.cfloat if v.is_complex() else torch.float) for k, v in m64.state_dict().items()})
    x = torch.rand(900, 2, dtype=torch.float64) * 2 - 1
    w = torch.randn(900, 3, dtype=torch.float64)

    def plain(m, v):  # the reference's complex arithmetic
        return m.forward_complex(v)

    y_ref, g_ref = grads(m64, plain, x, w)
    y_plain, g_plain = grads(m32, plain, x.float(), w)
    y_fused, g_fused = grads(m32, lambda m, v: m(v), x.float(), w)
    # float32 WIRE is itself ~5e-6 from float64 here (exp(-s0^2 |z|^2) with s0 = 10): the fused network is no
    # further from float64 than the plain one, and the fused formula in float64 is the reference's
    assert rel(y_fused, y_ref) < max(1e-6, 1.25 * rel(y_plain, y_ref)), (rel(y_fused, y_ref), rel(y_plain, y_ref))
    y64, g64 = grads(m64, lambda m, v: m(v), x, w)
    assert rel(y64, y_ref) < 1e-12 and all(rel(a, b) < 1e-12 for a, b in zip(g64, g_ref))
    for fused, plain_g, ref in zip(g_fused, g_plain, g_ref):
        assert rel(fused, ref) < max(1e-6, 1.25 * rel(plain_g, ref)), (rel(fused, ref), rel(plain_g, ref))


def test_under_torch_func_the_layers_fall_back_to_the_plain_composition():
    from torch.func import functional_call, jacrev, vmap

    torch.manual_seed(3)
    m = Siren(2, 1, depth=3, width=16).double()
    params = dict(m.named_parameters())
    x = torch.rand(5, 2, dtype=torch.float64)
    jac = vmap(jacrev(lambda p, v: functional_call(m, p, (v[None],))[0, 0]), in_dims=(None, 0))(params, x)
    for name, p in m.named_parameters():  # the per-point gradient, one point at a time by plain autograd
        m.zero_grad()
        m(x[2:3]).sum().backward()
        assert torch.allclose(jac[name][2], p.grad, rtol=1e-10, atol=1e-12), name


@pytest.mark.parametrize("method", ["gauss", "siren", "wire", "hashgrid", "densegrid", "learned", "multiscale"])
def test_every_method_resumes_bit_for_bit(compose, tmp_path, method, monkeypatch):
    """An 8-step run stopped by SIGINT at step 4, then resumed, ends exactly where 8 straight steps end (fused
    layers and each method's lr schedule over trainer.steps included)."""
    import os
    import signal

    from ffrun.run.job import run
    from ffrun.train import loop

    cfg = compose("experiment=smoke", "task=image", f"method={method}", "trainer.eval_every=4",
                  "trainer.ckpt_every=4", "trainer.progress=false", "device=cpu", "trainer.steps=8")
    straight = run(cfg, tmp_path / "straight")
    evaluate = loop._Lockstep.evaluate

    def evaluate_then_stop(self, k):  # the signal a user sends, delivered right after step 4's evaluation
        evaluate(self, k)
        if self.step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(loop._Lockstep, "evaluate", evaluate_then_stop)
    first = run(cfg, tmp_path / "first")
    monkeypatch.setattr(loop._Lockstep, "evaluate", evaluate)
    assert first["status"] == "interrupted" and first["step"] == first["checkpoint_step"] == 4
    resumed = run(compose("experiment=smoke", "task=image", f"method={method}", "trainer.eval_every=4",
                          "trainer.ckpt_every=4", "trainer.progress=false", "device=cpu", "trainer.steps=8",
                          f"trainer.resume={tmp_path / 'first'}"), tmp_path / "resumed")
    assert resumed["resumed_from"] and resumed["history"] == straight["history"]
    assert resumed["metrics"] == straight["metrics"]
    assert_same_state(checkpoint(tmp_path / "resumed"), checkpoint(tmp_path / "straight"))


def test_the_fused_sine_layer_runs_under_bf16_autocast_near_float32():
    torch.manual_seed(4)
    m = Siren(2, 3, depth=4, width=32, w0=30.0)
    x, w = torch.rand(500, 2) * 2 - 1, torch.randn(500, 3)
    y32, g32 = grads(m, lambda m, v: m(v), x, w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16, g16 = grads(m, lambda m, v: m(v), x, w)
    assert y16.dtype == torch.bfloat16 and all(g.dtype == torch.float32 for g in g16)
    assert rel(y16.float(), y32) < 0.05 and all(rel(a, b) < 0.1 for a, b in zip(g16, g32))


@pytest.mark.parametrize("d, table_size", [(2, 2**8), (3, 2**10), (2, 1000)])  # hashed and dense levels, T not 2^k
def test_the_vectorized_hash_grid_matches_the_per_level_formula_against_float64(d, table_size):
    from ffrun.models.hashgrid import HashGridEncoding, HashLookup, corner_lookup, hash_encode

    torch.manual_seed(5)
    enc = HashGridEncoding(d, 6, 2, table_size, 4, 300, backend="torch")
    assert any(dense for *_, dense in enc.sizes) and not all(dense for *_, dense in enc.sizes)
    params = (torch.randn(enc.params.numel(), dtype=torch.float64) * 1e-2).requires_grad_()
    u = torch.rand(2000, d, dtype=torch.float64)
    u[:5] = torch.tensor([0.0, 1.0]).repeat(5, (d + 1) // 2)[:, :d]  # the box's faces and corners
    tables, start = [], 0
    for _, entries, _ in enc.sizes:
        tables.append(params[start:start + 2 * entries].view(entries, 2))
        start += 2 * entries
    g = torch.randn(2000, 12, dtype=torch.float64)
    ref = hash_encode(u, tables, enc.scales, enc.sizes)
    (ref * g).sum().backward()
    g_ref, params.grad = params.grad.clone(), None
    positions, weights = corner_lookup(u, enc.scales, enc.sizes, 2)
    out = HashLookup.apply(params, weights, 6, *positions)
    (out * g).sum().backward()
    assert rel(out, ref) < 1e-12 and rel(params.grad, g_ref) < 1e-12
    # and the module in float32 (its cached lookup) against the float64 formula
    # (float32 positions u * (N_l - 1) put both ~1e-5 from float64 at N_l = 300: no further than the plain one)
    enc.params.data.copy_(params.detach().float())
    v = u.float()
    enc.zero_grad()
    plain = hash_encode(enc.normalized(v), enc.tables, enc.scales, enc.sizes)
    (plain * g.float()).sum().backward()
    plain_grad = enc.params.grad.clone()
    for _ in range(2):  # the second call reads the cached lookup
        enc.zero_grad()
        y = enc(v)
        (y * g.float()).sum().backward()
        assert rel(y, plain.double()) < 1e-6
        assert rel(enc.params.grad, g_ref) < max(1e-6, 1.25 * rel(plain_grad, g_ref))
    assert enc.__dict__["_lookup"][0] is v  # the training set's lookup is kept
    v.mul_(0.5)  # points changed in place: the lookup is made again
    assert rel(enc(v), hash_encode(enc.normalized(v), enc.tables, enc.scales, enc.sizes).double()) < 1e-6


def test_benchmark_positions_follow_tiny_cuda_nns_index_arithmetic_worked_by_hand():
    """encoding.positions=benchmark, against tiny-cuda-nn's grid.h / common_device.h worked by hand: N_l - 1 =
    16 * 1.5^l - 1 (15, 23, 35, 53, 80), pos = fmaf(scale, x, 0.5) on x in [-1, 1) unclamped, a cell -k is
    2^32 - k, a dense index sum_i c_i R^i and a hash c_x ^ c_y * 2654435761 wrap modulo 2^32, then modulo the
    level's size (dense levels: R^2 rounded up to a multiple of 8; hashed: the table)."""
    from ffrun.models.hashgrid import HashGridEncoding, corner_lookup

    enc = HashGridEncoding(2, 5, 2, 4096, 16, backend="torch", positions="benchmark", per_level_scale=1.5)
    # float32 exp2f(l log2f(1.5)) * 16 - 1: 79.99999 at level 4 (a GPU's exp2f may round to 80; the same cells)
    assert enc.scales == pytest.approx([15.0, 23.0, 35.0, 53.0, 80.0], rel=1e-6)
    assert [(r, e, dense) for r, e, dense in enc.sizes] == [(16, 256, True), (24, 576, True), (36, 1296, True),
                                                          (54, 2920, True), (81, 4096, False)]
    x = torch.tensor([[0.5, 0.25], [-0.5, 0.25], [-0.5, -0.5]])  # the benchmark's coordinates
    v = (x + 1) / 2  # ffrun's [0, 1) pixel coordinates of the same points
    positions, weights = corner_lookup(enc.normalized(v), enc.scales, enc.sizes, 2, wrap=True)
    starts = [0, 256, 832, 2128, 5048]

    def index(level, corner, point):
        return positions[0][level * 4 + corner, point].item() // 2 - starts[level]

    # level 0 (dense, R = 16): (0.5, 0.25) -> pos (8.0, 4.25), cell (8, 4): 8 + 4 * 16 = 72, then 73, 88, 89
    assert [index(0, c, 0) for c in range(4)] == [72, 73, 88, 89]
    assert weights[0:4, 0].tolist() == [0.75, 0.0, 0.25, 0.0]
    # (-0.5, 0.25) -> pos_x = -7.0, cell 2^32 - 7: (2^32 - 7 + 64) mod 2^32 = 57
    assert [index(0, c, 1) for c in range(4)] == [57, 58, 73, 74]
    # (-0.5, -0.5): (2^32 - 7) + (2^32 - 7) * 16 = 2^32 - 119 -> mod 256 = 137
    assert index(0, 0, 2) == 137
    # level 3 (dense, 54^2 = 2916 -> 2920 entries): cell -26 on both axes, 2^32 - 26 * 55 = 4294965866 -> 2106
    assert index(3, 0, 2) == 2106
    # level 4 (hashed, 81^2 > 4096): cell (40, 20): 40 ^ (20 * 2654435761 mod 2^32 = 1549107668) -> 508
    assert index(4, 0, 0) == 508
    # (-0.5, 0.25): pos_x = -39.5, cell -40 -> (2^32 - 40) ^ 1549107668 = 3596 mod 4096; its upper-x corner 3597
    assert index(4, 0, 1) == 3596 and index(4, 1, 1) == 3597
    # ffrun's own positions (unit: [0, 1), clamped) put the same points elsewhere
    unit = HashGridEncoding(2, 5, 2, 4096, 16, backend="torch", per_level_scale=1.5)
    unit_positions, _ = corner_lookup(unit.normalized(v), unit.scales, unit.sizes, 2)
    assert not torch.equal(unit_positions[0], positions[0])


def test_the_hash_grid_lookup_is_kept_only_for_a_training_set():
    from ffrun.models.hashgrid import HashGridEncoding

    enc = HashGridEncoding(2, 4, 2, 2**8, 4, 64, backend="torch")
    v = torch.rand(300, 2)
    with torch.no_grad():  # an evaluation: made, not kept
        enc(v)
    assert "_lookup" not in enc.__dict__
    enc(v[:100])  # a chunk (a view): not kept
    assert "_lookup" not in enc.__dict__
    with torch.inference_mode():
        inferred = enc(v)
    assert "_lookup" not in enc.__dict__
    y = enc(v)
    assert enc.__dict__["_lookup"][0] is v and torch.equal(y.detach(), inferred)
    y.sum().backward()  # the kept lookup trains
    assert enc.params.grad is not None and enc.params.grad.abs().sum() > 0
    assert enc(torch.rand(0, 2)).shape == (0, 8)  # no points: no features


def test_a_gradient_in_the_points_takes_autograds_own_graph():
    """A loss on d output / d x (differentiated again, create_graph) needs the plain graph: SIREN, WIRE and the
    unit hash grid give it; the benchmark positions refuse in one line."""
    from ffrun.models.hashgrid import HashGridEncoding
    from ffrun.util.errors import FfrunError

    torch.manual_seed(6)
    for net in (Siren(2, 1, depth=3, width=16), Wire(2, 1, depth=3, width=16)):
        x = torch.rand(50, 2, requires_grad=True)
        (g,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
        assert g.requires_grad  # the eikonal-style term can be trained
        g.square().sum().backward()
        first = net.layers[0].linear.weight if isinstance(net, Siren) else net.first.weight
        assert first.grad is not None and first.grad.abs().sum() > 0
    x = torch.rand(50, 2, requires_grad=True)
    (g,) = torch.autograd.grad(HashGridEncoding(2, 2, 2, 2**6, 4, 16, backend="torch")(x).sum(), x)
    assert g.shape == (50, 2)
    with pytest.raises(FfrunError, match="positions=benchmark"):
        HashGridEncoding(2, 2, 2, 2**6, 4, 16, backend="torch", positions="benchmark")(x)


def test_fp32_layers_keep_the_mlps_end_products_in_float32_under_bf16(monkeypatch):
    import ffrun.models.mlp as mlp_module
    from ffrun.models.mlp import MLP

    seen = []
    fused = mlp_module.augmented_linear

    def noting(h, layer, *args, **kwargs):
        out = fused(h, layer, *args, **kwargs)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(mlp_module, "augmented_linear", noting)
    x1 = torch.cat([torch.rand(64, 8), torch.ones(64, 1)], 1)
    for layers, want in (((), [torch.bfloat16] * 3), (("first",), [torch.float32, torch.bfloat16, torch.bfloat16]),
                         (("last",), [torch.bfloat16, torch.bfloat16, torch.float32]),
                         (("first", "last"), [torch.float32, torch.bfloat16, torch.float32])):
        net = MLP(8, 3, depth=3, width=16)
        net.fp32_layers = layers
        seen.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            net.forward_augmented(x1)
        assert seen == want, layers
