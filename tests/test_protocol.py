"""The paper_* presets run the authors' notebooks' protocol (docs/protocol.md): each departure that ffrun's
own defaults make is switched back by the preset, and each switch does what the notebook does."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from ffrun.config import per_sample, per_sample_count
from ffrun.data.phantoms import MODIFIED_SHEPP_LOGAN_2D, perturb_notebook, phantom_rng, shepp_logan_2d
from ffrun.data.scenes import camera_rays, load_blender
from ffrun.models.field import build_field
from ffrun.models.mlp import MLP, TRUNCATED_NORMAL_STD
from ffrun.tasks import build_task
from ffrun.tasks.nerf import composite

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FFRUN_CACHE", str(tmp_path / "cache"))


def task_and_field(cfg):
    task = build_task(cfg.task, CPU, cfg.trainer.batch_size, cfg.seed)
    field = build_field(cfg.encoding, cfg.model, task.in_dim, task.out_dim, task.out_activation, cfg.seed,
                        grid_shape=task.grid_shape)
    return task, field


# ---- grid baseline -------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset,size", [("paper_ct", 16), ("paper_mri", 8)])
def test_grid_baseline_starts_at_sigmoid_zero_and_uses_lr_0_1(compose, preset, size):
    cfg = compose(f"experiment={preset}", "encoding=grid", f"task.resolution={size}")
    assert cfg.trainer.lr == pytest.approx(0.1)  # the notebooks' gridopt_lr
    task, field = task_and_field(cfg)
    assert torch.equal(field.values, torch.zeros_like(field.values))  # the logits start at zero
    first = field(task.coords)
    assert torch.equal(first, torch.full_like(first, 0.5))  # the first image is sigmoid(0) everywhere
    # The first loss is the forward model's loss of that constant image, computed here directly.
    half = torch.full((size,) * len(task.grid_shape), 0.5)
    if preset == "paper_ct":
        expected = 0.5 * torch.mean((task.project(half) - task.sinogram) ** 2)
    else:
        expected = task.kspace_loss(half)
    assert task.loss(field, task.sample(0)).item() == pytest.approx(expected.item(), rel=1e-6)


def test_grid_of_an_older_run_keeps_raw_values(compose):
    """Runs saved before the grid became logits have no `encoding.logits`: read as plain values."""
    from omegaconf import OmegaConf

    from ffrun.config import EncodingConfig

    old = OmegaConf.merge(OmegaConf.structured(EncodingConfig), {"name": "grid"})
    field = build_field(old, compose().model, 2, 1, "sigmoid", 0, grid_shape=(4, 4))
    assert torch.equal(field(torch.rand(5, 2)), torch.zeros(5, 1))


# ---- shape -------------------------------------------------------------------------------------------


@pytest.fixture
def slab_mesh(tmp_path):
    """A box far from cubic after the paper's normalisation: [0, 1] x [0.35, 0.65] x [0.4, 0.6]."""
    mesh = trimesh.creation.box(extents=(2.0, 0.6, 0.4))
    mesh.apply_translation([5.0, -1.0, 3.0])
    path = tmp_path / "slab.ply"
    mesh.export(path)
    return path


def test_shape_points_fill_the_meshs_bounding_box(compose, slab_mesh):
    cfg = compose("experiment=paper_shape", f"task.mesh={slab_mesh}", "task.test_points=4000",
                  "trainer.batch_size=20000", "model.depth=2", "model.width=8")
    assert cfg.task.box == "tight" and cfg.task.surface_std == 0.01
    task, _ = task_and_field(cfg)
    v = np.asarray(task.mesh.vertices)
    lo, hi = v.min(0) - 1e-3, v.max(0) + 1e-3
    np.testing.assert_allclose(lo, [-1e-3, 0.35 - 1e-3, 0.4 - 1e-3], atol=1e-9)
    train, labels = task.sample(0)
    for name, pts in (("train", train.numpy()), ("uniform test", task.tests["uniform"][0].numpy())):
        assert (pts >= lo - 1e-6).all() and (pts <= hi + 1e-6).all(), name
        # uniform in the box: each axis' mean at the centre, its extremes near the faces
        np.testing.assert_allclose(pts.mean(0), (lo + hi) / 2, atol=0.02 * (hi - lo).max())
        assert (pts.min(0) - lo < 0.01 * (hi - lo)).all() and (hi - pts.max(0) < 0.01 * (hi - lo)).all(), name
    # the box is the slab itself (+1e-3), so nearly every point is inside: [0, 1]^3 would give ~6%
    assert labels.mean().item() > 0.97
    unit, _ = task_and_field(compose("experiment=paper_shape", f"task.mesh={slab_mesh}", "task.box=unit",
                                     "task.test_points=4000", "trainer.batch_size=20000", "model.depth=2",
                                     "model.width=8"))
    pts, labels = unit.sample(0)
    assert pts.min() < 0.01 and pts.max() > 0.99 and labels.mean().item() == pytest.approx(0.06, abs=0.01)


# ---- NeRF --------------------------------------------------------------------------------------------


def test_corner_ray_through_pixel_zero_zero():
    c2w = torch.eye(4, dtype=torch.float64)
    H, W, f = 6, 8, 5.0
    _, d = camera_rays(H, W, f, c2w, pixel_centers=False)
    # the notebook's get_rays: ((i - W/2) / f, -(j - H/2) / f, -1) at i = j = 0
    assert torch.equal(d[0, 0], torch.tensor([-W / 2 / f, H / 2 / f, -1.0], dtype=torch.float64))
    assert torch.equal(d[H - 1, W - 1], torch.tensor([(W - 1 - W / 2) / f, -(H - 1 - H / 2) / f, -1.0],
                                                     dtype=torch.float64))
    _, centre = camera_rays(H, W, f, c2w)
    assert torch.allclose(centre[0, 0] - d[0, 0], torch.tensor([0.5 / f, -0.5 / f, 0.0], dtype=torch.float64))


@pytest.fixture
def paper_nerf(compose):
    def make(*overrides):
        cfg = compose("experiment=paper_nerf", "task.builtin_resolution=8", "task.n_samples=4",
                      "task.turntable_frames=0", "model.width=8", "model.depth=2", "trainer.batch_size=96",
                      *overrides)
        return cfg, task_and_field(cfg)[0]

    return make


def test_paper_nerf_rays_are_the_notebooks(paper_nerf):
    cfg, task = paper_nerf()
    assert (cfg.task.pixel_centers, cfg.task.world_distances, cfg.task.white_background, cfg.task.ray_order) == (
        False, False, False, "shuffled_once")
    views = load_blender(task_folder(cfg), "train")
    corners = torch.cat([
        camera_rays(views.height, views.width, views.focal, torch.from_numpy(p), False)[1].reshape(-1, 3)
        for p in views.poses])
    # the task's ray table holds exactly the corner directions (shuffled)
    assert torch.equal(sorted_rows(task.rays_d), sorted_rows(corners))


def task_folder(cfg):
    from ffrun.data.scenes import builtin_scene

    return builtin_scene(cfg.task.builtin_resolution)


def sorted_rows(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    for col in reversed(range(x.shape[1])):
        x = x[torch.argsort(x[:, col], stable=True)]
    return x


def test_rays_are_walked_in_one_fixed_shuffled_order(paper_nerf):
    _, task = paper_nerf()
    _, again = paper_nerf()
    n, b = task.rays_o.shape[0], task.batch_size  # 40 views of 8 x 8 = 2560 rays, 96 a batch
    per_epoch = math.ceil(n / b)
    assert n % b != 0  # so the last batch of an epoch is the shorter remainder, as the notebook's slice
    batches = [task.sample(k) for k in range(per_epoch)]
    assert [len(bt[0]) for bt in batches] == [b] * (per_epoch - 1) + [n - (per_epoch - 1) * b]
    walked = torch.cat([bt[1] for bt in batches])
    assert torch.equal(walked, task.rays_d)  # every ray once, in the table's (shuffled) order
    assert torch.equal(task.sample(per_epoch)[1], batches[0][1])  # the next epoch walks the same order
    assert torch.equal(again.sample(3)[1], batches[3][1])  # the order is fixed by the seed
    _, unshuffled = paper_nerf("task.ray_order=random")
    assert not torch.equal(task.rays_d, unshuffled.rays_d)
    assert torch.equal(sorted_rows(task.rays_d), sorted_rows(unshuffled.rays_d))


@pytest.mark.parametrize("dir_norm", [1.0, 2.5])
def test_spacing_without_the_direction_norm(dir_norm):
    """Density sigma on [a, b): the notebook absorbs 1 - exp(-sigma (b - a)) whatever |d| is; ffrun's
    default 1 - exp(-sigma (b - a) |d|)."""
    sigma, a, b = 0.7, 2.0, 5.0
    t = torch.linspace(0.0, 10.0, 1001, dtype=torch.float64)[None]
    raw = torch.zeros(1, 1001, 4, dtype=torch.float64)
    raw[..., 3] = torch.where((t >= a - 1e-9) & (t < b - 1e-9), sigma, -1.0)
    d = torch.tensor([[0.0, 0.0, -dir_norm]], dtype=torch.float64)
    _, _, notebook = composite(raw, t, d, white_background=False, world_distances=False)
    _, _, world = composite(raw, t, d, white_background=False)
    assert notebook.item() == pytest.approx(1 - math.exp(-sigma * (b - a)), rel=1e-6)  # 1e-10 guard per step
    assert world.item() == pytest.approx(1 - math.exp(-sigma * (b - a) * dir_norm), rel=1e-6)
    # the last interval is 1e10: a ray that never met density before an opaque last sample ends there
    raw[..., 3] = -1.0
    raw[0, -1, 3] = 1e-3
    _, _, last = composite(raw, t, d, white_background=False, world_distances=False)
    assert last.item() == pytest.approx(1.0)


def test_no_white_background_in_the_preset(paper_nerf):
    """The notebook's Lego images have a black background and its renderer's white line is disabled:
    the preset puts both photographs and renders on black."""
    cfg, task = paper_nerf()
    assert task.white is False
    # the built-in scene's corner pixels are background in every view: black here, white by default
    assert task.train_views.images[:, 0, 0].max() == 0.0 and task.test_views.images[:, 0, 0].max() == 0.0
    _, white = paper_nerf("task.white_background=true")
    assert white.train_views.images[:, 0, 0].min() == 1.0
    empty = torch.full((1, 4, 4), -20.0)  # no density anywhere: the ray sees the background
    t = torch.linspace(2, 6, 4)[None]
    black, _, _ = composite(empty, t, torch.tensor([[0.0, 0.0, -1.0]]), white_background=task.white)
    assert torch.allclose(black, torch.zeros(1, 3))


def test_paper_nerf_sigma_follows_the_downscale(compose):
    assert compose("experiment=paper_nerf", "encoding=gauss").encoding.sigma == pytest.approx(26.0)
    assert compose("experiment=paper_nerf", "task.downscale=8").sigma == pytest.approx(26.0 / 8)
    default = compose("task=nerf", "task.downscale=8")
    # ffrun's mapping has 2*pi: the paper's scale 26 is 26 / (2 pi) there, and each downscale divides it
    assert default.sigma == pytest.approx(26.0 / (2 * math.pi) / 8, rel=1e-3)


@pytest.mark.parametrize("preset,scale,reference,side", [("paper_image", 6.0, 512, 128), ("paper_text", 5.0, 512, 64),
                                                        ("paper_ct", 3.0, 512, 128), ("paper_mri", 4.0, 96, 32)])
def test_posenc_top_band_follows_the_resolution(compose, preset, scale, reference, side):
    """posenc's top band 2^scale - 1 keeps its fraction of the Nyquist frequency (docs/protocol.md, rule 1)."""
    at_paper = compose(f"experiment={preset}", "encoding=posenc", f"task.resolution={reference}")
    assert at_paper.encoding.scale == pytest.approx(scale)
    small = compose(f"experiment={preset}", "encoding=posenc", f"task.resolution={side}")
    top = 2.0 ** small.encoding.scale - 1.0
    assert top == pytest.approx((2.0**scale - 1.0) * side / reference)
    # and the field built from it has exactly that top frequency
    from ffrun.models.encodings import posenc_matrix

    assert posenc_matrix(2, 256, small.encoding.scale).max().item() == pytest.approx(top, rel=1e-9)


# ---- CT phantoms -------------------------------------------------------------------------------------


def test_notebook_phantom_perturbation_has_the_right_spread():
    draws = np.stack([perturb_notebook(MODIFIED_SHEPP_LOGAN_2D, np.random.default_rng(i)) for i in range(4000)])
    delta = draws - MODIFIED_SHEPP_LOGAN_2D
    # every entry moves by N(0, 1)/20 independently; the angle (kept in degrees) by N(0, 1)/20 radians
    expected = np.array([1 / 20] * 5 + [math.degrees(1 / 20)])
    np.testing.assert_allclose(delta.std(axis=0), np.broadcast_to(expected, (10, 6)), rtol=0.07)
    np.testing.assert_allclose(delta.mean(axis=0) / expected, 0.0, atol=0.1)
    corr = np.corrcoef(delta[:, 0, :].T)  # no coupling between a row's entries (the ffrun variant ties some)
    assert np.abs(corr - np.eye(6)).max() < 0.1


def test_tuning_and_test_phantoms_are_disjoint(compose):
    cfg = compose("experiment=paper_ct")
    assert cfg.task.perturbation == "notebook" and cfg.task.split == "test"
    test = [shepp_logan_2d(32, seed=s, perturbation="notebook") for s in range(4)]
    tune = [shepp_logan_2d(32, seed=s, perturbation="notebook", split="tune") for s in range(4)]
    for a in test:
        assert not any(np.array_equal(a, b) for b in tune)
    assert np.array_equal(test[1], shepp_logan_2d(32, seed=1, perturbation="notebook"))  # seeded
    assert phantom_rng(0).random() != phantom_rng(0, "tune").random()


# ---- glorot = stax.Dense -----------------------------------------------------------------------------


def test_glorot_init_matches_stax_dense():
    torch.manual_seed(0)
    mlp = MLP(512, 1, depth=2, width=4096, init="glorot")
    w, b = mlp.net[0].weight.double(), mlp.net[0].bias.double()
    fan_in, fan_out = 512, 4096
    # float64 reference: N(0, 1) truncated to [-2, 2] has std 0.8796..., which JAX divides out
    from scipy.stats import truncnorm

    assert truncnorm(-2, 2).std() == pytest.approx(TRUNCATED_NORMAL_STD, rel=1e-12)
    target = math.sqrt(2.0 / (fan_in + fan_out))  # glorot: variance 1 / fan_avg
    assert w.std().item() == pytest.approx(target, rel=0.005)
    s = target / TRUNCATED_NORMAL_STD
    assert w.abs().max().item() <= 2 * s + 1e-12  # truncated at 2 s: a plain normal exceeds it 2.3% of the time
    assert (w.abs() > 1.9 * s).float().mean().item() > 0.002  # and fills its range up to the cut
    assert b.std().item() == pytest.approx(1e-2, rel=0.05) and abs(b.mean().item()) < 1e-3


# ---- reduced sizes -----------------------------------------------------------------------------------


def test_reduced_size_keeps_sigma_per_sample_and_the_papers_20_angles(compose):
    for size in (512, 256, 128):
        ct = compose("experiment=paper_ct", f"task.resolution={size}")
        assert ct.sigma == pytest.approx(4.0 * size / 512)
        assert ct.task.num_angles == 20  # the acquisition is the paper's at every grid size
        assert compose("task=ct", f"task.resolution={size}").task.num_angles == 20  # and the plain task's
    assert compose("task=ct", "task.resolution=128", "task.num_angles=5").task.num_angles == 5  # the user's choice
    mri = compose("experiment=paper_mri", "task.resolution=32")
    assert mri.sigma == pytest.approx(5.0 / 3)
    assert compose("experiment=paper_image", "task.resolution=256").sigma == 5.0
    assert compose("experiment=paper_text", "task.resolution=256").sigma == 7.0
    assert compose("experiment=paper_ct", "task.resolution=128", "sigma=3").sigma == 3.0  # an explicit sigma wins
    assert per_sample(10.0, 128, 512) == 2.5 and per_sample_count(20, 32, 512) == 1


def test_mri_kspace_fraction_is_kept_at_reduced_size():
    from ffrun.tasks.mri import gaussian_kspace_mask

    full = gaussian_kspace_mask(96, 200_000, 13.9, 0).float().mean().item()
    small = gaussian_kspace_mask(32, round(200_000 / 27), 13.9 / 3, 0).float().mean().item()
    assert full == pytest.approx(0.126, abs=0.002) and small == pytest.approx(full, abs=0.003)
