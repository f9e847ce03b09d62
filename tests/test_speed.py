"""The speed work must not change results: FLOP counting, the static-feature cache, ffrun's step against a
plain loop, and vectorized sweeps against separate runs."""

from __future__ import annotations

import json

import pytest
import torch

from ffrun.apps.bench import layer_shapes, plain_image_loop, step_flops

SMALL = ["task=image", "task.resolution=32", "encoding.m=16", "model.width=32", "trainer.steps=60",
         "trainer.eval_every=20", "trainer.ckpt_every=30", "trainer.progress=false", "device=cpu"]


def test_flop_count_matches_a_hand_count():
    shapes = layer_shapes(in_features=4, depth=3, width=8, out_dim=3)
    assert shapes == [(4, 8), (8, 8), (8, 3)]
    # N = 10 points. Forward: 2*10*(4*8 + 8*8 + 8*3) = 2400. Weight gradients: the same, 2400.
    # Input gradients for layers 2 and 3 only (the encoded input needs none): 2*10*(8*8 + 8*3) = 1760.
    assert step_flops(10, shapes) == 2400 + 2400 + 1760
    # the image protocol: 65,536 points, 512 -> 256 -> 256 -> 256 -> 3
    image = step_flops(65536, layer_shapes(512, 4, 256, 3))
    assert image == 2 * 65536 * (2 * 512 * 256 + 3 * (256 * 256 * 2 + 256 * 3))


def test_static_features_are_cached_and_equal_to_recomputing(compose):
    from ffrun.models.field import build_field

    cfg = compose("encoding=gauss", "encoding.m=8", "model.width=16")
    field = build_field(cfg.encoding, cfg.model, 2, 3, "sigmoid", 0)
    v = torch.rand(100, 2)
    assert torch.allclose(field.forward_static(v), field(v), atol=1e-6)  # bias folded into the product
    cached = field.__dict__["_static"][1]
    assert torch.equal(cached[:, -1], torch.ones(100)) and torch.equal(cached[:, :-1], field.encoding(v))
    field.forward_static(v)
    assert field.__dict__["_static"][1] is cached  # not recomputed
    with torch.no_grad():
        field.encoding.B.mul_(2.0)  # a changed B invalidates the cache
    assert torch.allclose(field.forward_static(v), field(v), atol=1e-6)
    # gradients reach the MLP exactly as through the plain forward
    g1 = torch.autograd.grad(field.forward_static(v).sum(), list(field.mlp.parameters()))
    g2 = torch.autograd.grad(field(v).sum(), list(field.mlp.parameters()))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g1, g2))


def test_ffrun_step_matches_a_plain_pytorch_loop(compose):
    """ffrun's optimised step (cached encoding, foreach Adam, in-place ReLU) against the loop a user writes."""
    from ffrun.apps.bench import build
    from ffrun.train.loop import train_step

    cfg = compose("experiment=paper_image", "task.resolution=32", "encoding.m=32", "model.width=64", "device=cpu")
    task, field, optimizer, schedule = build(cfg, torch.device("cpu"))
    plain_step, plain_predict = plain_image_loop(task, field, float(cfg.trainer.lr), torch.device("cpu"))
    for i in range(20):
        a = train_step(task, field, optimizer, schedule, i)
        b = plain_step()
        assert a.item() == pytest.approx(b.item(), rel=1e-4)
    field.eval()
    # float rounding differs (cached features, multi-tensor Adam) and Adam's normalisation amplifies it a
    # little where gradients are near zero; the functions stay equal to well under a grey level
    ours, plain = field.predict(task.test[0]), plain_predict()
    assert torch.allclose(ours, plain, atol=2e-3)
    from ffrun.util.metrics import psnr

    assert abs(psnr(ours, task.test[1]) - psnr(plain, task.test[1])) < 0.01


def test_vectorized_members_equal_separate_runs(run_cli, tmp_path):
    sweep = ["encoding=gauss", "sigma=1,4,16", "seed=0,1"]
    res = run_cli("-m", "hydra/launcher=vectorized", *SMALL, *sweep, "hydra.sweep.dir=vec", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "training 6 jobs as one batched network" in res.stderr + res.stdout
    res = run_cli("-m", *SMALL, *sweep, "hydra.sweep.dir=seq", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    for i in range(6):
        vec = json.loads((tmp_path / "vec" / str(i) / "metrics.json").read_text())
        seq = json.loads((tmp_path / "seq" / str(i) / "metrics.json").read_text())
        assert (vec["status"], vec["sigma"], vec["seed"]) == ("completed", seq["sigma"], seq["seed"])
        assert [h["step"] for h in vec["history"]] == [h["step"] for h in seq["history"]] == [20, 40, 60]
        for key in ("test_psnr", "train_psnr", "full_psnr"):
            assert abs(vec["metrics"][key] - seq["metrics"][key]) < 0.1, (i, key)
        wv = torch.load(tmp_path / "vec" / str(i) / "checkpoint.pt", weights_only=True)
        ws = torch.load(tmp_path / "seq" / str(i) / "checkpoint.pt", weights_only=True)
        assert torch.equal(wv["field"]["encoding.B"], ws["field"]["encoding.B"])  # its own B, as drawn alone
        for k in ws["field"]:
            assert torch.allclose(wv["field"][k], ws["field"][k], atol=1e-4), k
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.allclose(wv["optimizer"]["state"][0][k], ws["optimizer"]["state"][0][k], atol=1e-5)
        for name in ("reconstruction.png", "history.csv", "config.yaml", ".hydra/overrides.yaml"):
            assert (tmp_path / "vec" / str(i) / name).is_file()
    # a member's checkpoint resumes as a separate run
    res = run_cli(*SMALL, "encoding=gauss", "sigma=1", "trainer.steps=80", "trainer.resume=vec/0",
                  "hydra.run.dir=resumed")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((tmp_path / "resumed" / "metrics.json").read_text())["step"] == 80


def test_vectorized_launcher_groups_by_width_and_runs_the_rest_alone(run_cli, tmp_path):
    res = run_cli("-m", "hydra/launcher=vectorized", *SMALL, "encoding=none,posenc,gauss", "encoding.scale=4",
                  "hydra.sweep.dir=mixed", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    # posenc (m 16 -> 8 per axis -> 32 features) and gauss (m 16 -> 32 features) share a network; none runs alone
    # gauss at its default sigma: 10 at 512 pixels, per unit of resolution at 32
    assert "training 2 jobs as one batched network: image/posenc, image/gauss sigma=0.625" in res.stderr + res.stdout
    runs = [json.loads((tmp_path / "mixed" / str(i) / "metrics.json").read_text()) for i in range(3)]
    assert ([r["encoding"] for r in runs] == ["none", "posenc", "gauss"]
            and all(r["status"] == "completed" for r in runs))
    res = run_cli("-m", "hydra/launcher=vectorized", "task=ct", "task.resolution=16", "encoding.m=8", "model.width=16",
                  "trainer.steps=5", "trainer.progress=false", "device=cpu", "sigma=1,2", "hydra.sweep.dir=ct")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "not vectorized: task=ct" in res.stderr + res.stdout
    assert all(json.loads((tmp_path / "ct" / str(i) / "metrics.json").read_text())["status"] == "completed"
               for i in range(2))


def test_bench_reports_ratios_as_json(run_cli, tmp_path):
    res = run_cli("--repeats", "1", "--check-steps", "2", "--vectorized", "2", "--vectorized-steps", "2",
                  "--json", "bench.json", "task.resolution=16", "encoding.m=8", "model.width=16", name="ffrun-bench")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads((tmp_path / "bench.json").read_text())
    assert {"efficiency", "speedup_vs_plain", "vectorized_speedup"} <= set(out)
    image = out["tasks"][0]
    assert image["flops_per_step"] == step_flops(64, layer_shapes(16, 4, 16, 3))
    assert abs(image["ffrun_test_psnr"] - image["plain_test_psnr"]) < 0.05
