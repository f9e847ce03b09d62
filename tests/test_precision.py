"""trainer.precision lowers the network, never the Fourier features: the projection 2 pi v B^T and its sines
and cosines are float32 under every precision, in the cached training features and at evaluation alike,
and autocast covers the network's forward only (not the backward pass or the optimizer step)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ffrun.models.encodings import fourier_features, gaussian_matrix, posenc_matrix
from ffrun.train.loop import SingleField, optimizer_for, precision_context


def reference(v: torch.Tensor, B: torch.Tensor, two_pi: bool = True) -> torch.Tensor:
    proj = v.double() @ B.double().T * (2 * math.pi if two_pi else 1.0)
    return torch.cat([proj.sin(), proj.cos()], -1)


@pytest.fixture
def gauss_2d():
    """The image protocol's mapping at sigma 10: phases up to ~350 radians."""
    B = gaussian_matrix(2, 256, 10.0, torch.Generator().manual_seed(0))
    v = torch.rand(4096, 2, generator=torch.Generator().manual_seed(1))
    return v, B


def under(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return precision_context(precision, torch.device("cpu"))


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
@pytest.mark.parametrize("d,two_pi", [(1, True), (2, True), (3, False), (5, True)])
def test_features_under_each_precision_equal_fp32(precision, d, two_pi):
    B = gaussian_matrix(d, 64, 10.0, torch.Generator().manual_seed(d)) if d != 3 else posenc_matrix(3, 48, 9, 10, 0.0)
    v = torch.rand(512, d, generator=torch.Generator().manual_seed(2))
    fp32 = fourier_features(v, B, two_pi)
    with under(precision):
        got = fourier_features(v, B, two_pi)
    assert got.dtype == torch.float32 and torch.equal(got, fp32)
    assert (fp32.double() - reference(v, B, two_pi)).abs().max() < 2e-4


def test_a_bf16_projection_would_move_the_features_by_more_than_half_their_range(gauss_2d):
    """What the float32 projection guards against: the same formula with the product under autocast."""
    v, B = gauss_2d
    with torch.autocast("cpu", dtype=torch.bfloat16):
        proj = (2 * math.pi) * (v @ B.T)
        lowered = torch.cat([proj.sin(), proj.cos()], -1)
        kept = fourier_features(v, B)
    assert proj.dtype == torch.bfloat16
    assert (lowered.double() - reference(v, B)).abs().max() > 0.5
    assert (kept.double() - reference(v, B)).abs().max() < 2e-4


def tiny_image(compose, precision: str):
    from ffrun.run.job import prepare

    cfg = compose("task=image", "task.resolution=16", "encoding=gauss", "sigma=10", "encoding.m=32", "model.depth=3",
                  "model.width=32", "device=cpu", f"trainer.precision={precision}")
    job = prepare(cfg, Path("."))
    optimizer, schedule = optimizer_for(job.field, job.lr, cfg.trainer)
    return job, optimizer, SingleField(job.task, job.field, optimizer, schedule, precision)


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_training_caches_the_fp32_features_and_evaluates_in_fp32(compose, precision):
    job, _, trainee = tiny_image(compose, precision)
    coords = job.task.train[0]
    with precision_context(precision, job.device):
        trainee.step(0)
    cached = job.field.__dict__["_static"][1][..., :-1]
    assert torch.equal(cached, fourier_features(coords, job.field.encoding.B))
    job.field.eval()
    at_eval = job.field.predict(coords)
    job.field.autocast_dtype = None
    assert at_eval.dtype == torch.float32 and torch.equal(at_eval, job.field.predict(coords))


def test_bf16_autocasts_the_network_forward_only(compose, monkeypatch):
    """Autocast on for the MLP's products, off for the loss's backward pass and for the optimizer step."""
    import ffrun.models.mlp as mlp

    job, optimizer, trainee = tiny_image(compose, "bf16")
    seen: dict[str, object] = {}

    def note(name: str, value: object) -> None:  # a hook that returns None leaves the tensor alone
        seen.setdefault(name, value)

    last = job.field.mlp.net[-1]
    fused = mlp.augmented_linear

    def noting(h, layer, *args, **kwargs):  # the fused layers (ffrun.models.fused) call no module's forward
        out = fused(h, layer, *args, **kwargs)
        if layer is last:
            note("forward", (out.dtype, torch.is_autocast_enabled("cpu")))
        return out

    monkeypatch.setattr(mlp, "augmented_linear", noting)
    last.weight.register_hook(lambda g: note("backward", (g.dtype, torch.is_autocast_enabled("cpu"))))
    optimizer.register_step_pre_hook(lambda *a: note("optimizer", torch.is_autocast_enabled("cpu")))
    loss = trainee.step(0)
    assert seen == {"forward": (torch.bfloat16, True), "backward": (torch.float32, False), "optimizer": False}
    assert loss.dtype == torch.float32 and all(p.dtype == torch.float32 for p in job.field.parameters())
    # and it is bf16 that ran: the same step in fp32 from the same weights gives another loss
    _, _, fp32 = tiny_image(compose, "fp32")
    assert fp32.step(0).item() != loss.item()
