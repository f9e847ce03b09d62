"""Modified Shepp-Logan phantoms in 2D and 3D, with random perturbations for the CT task.

Ellipse tables: Shepp & Logan (1974) geometry with the "modified" grey levels of Toft (1996, table B.1);
3D ellipsoids from Koay et al. (2007) with the same grey levels. Coordinates span [-1, 1] per axis; image
row 0 is the top (y = +1).

Two perturbations: `notebook`, the paper's CT data (`get_shepp_dataset` in 2d_CT.ipynb: every entry of
phantominator's table, angles in radians, plus N(0, 1)/20), and `ffrun`, bounded changes that keep the
skull a thin ring (`perturb_2d`). Two disjoint phantom sets: `test` and `tune` (for choosing sigma),
as the notebook draws its grid-search and test phantoms separately.
"""

from __future__ import annotations

import numpy as np

# grey, semi-axis a (x), semi-axis b (y), x0, y0, angle (degrees)
MODIFIED_SHEPP_LOGAN_2D = np.array([
    [1.0, 0.69, 0.92, 0.0, 0.0, 0.0],
    [-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0],
    [-0.2, 0.11, 0.31, 0.22, 0.0, -18.0],
    [-0.2, 0.16, 0.41, -0.22, 0.0, 18.0],
    [0.1, 0.21, 0.25, 0.0, 0.35, 0.0],
    [0.1, 0.046, 0.046, 0.0, 0.1, 0.0],
    [0.1, 0.046, 0.046, 0.0, -0.1, 0.0],
    [0.1, 0.046, 0.023, -0.08, -0.605, 0.0],
    [0.1, 0.023, 0.023, 0.0, -0.605, 0.0],
    [0.1, 0.023, 0.046, 0.06, -0.605, 0.0],
])

# grey, semi-axes a, b, c, centre x0, y0, z0, angle in the xy plane (degrees)
MODIFIED_SHEPP_LOGAN_3D = np.array([
    [1.0, 0.69, 0.92, 0.9, 0.0, 0.0, 0.0, 0.0],
    [-0.8, 0.6624, 0.874, 0.88, 0.0, 0.0, 0.0, 0.0],
    [-0.2, 0.41, 0.16, 0.21, -0.22, 0.0, -0.25, 108.0],
    [-0.2, 0.31, 0.11, 0.22, 0.22, 0.0, -0.25, 72.0],
    [0.1, 0.21, 0.25, 0.5, 0.0, 0.35, -0.25, 0.0],
    [0.1, 0.046, 0.046, 0.046, 0.0, 0.1, -0.25, 0.0],
    [0.1, 0.046, 0.023, 0.02, -0.08, -0.65, -0.25, 0.0],
    [0.1, 0.046, 0.023, 0.02, 0.06, -0.65, -0.25, 90.0],
    [0.1, 0.056, 0.04, 0.1, 0.06, -0.105, 0.625, 90.0],
    [0.1, 0.056, 0.056, 0.1, 0.0, 0.1, 0.625, 0.0],
])


PERTURBATIONS = ("ffrun", "notebook")
PHANTOM_SPLITS = ("test", "tune")


def phantom_rng(seed: int, split: str = "test") -> np.random.Generator:
    """The generator of phantom `seed` of a split; the splits are independent streams (spawn keys), so no
    tuning phantom is ever a test phantom."""
    key = () if split == "test" else (PHANTOM_SPLITS.index(split),)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def perturb_notebook(table: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The notebook's perturbation, `ct_params + random.normal(...) / 20.0`: every entry of the table
    (grey level, semi-axes, centre, angle) plus N(0, 1)/20, independently. The notebook's angles are in
    radians (phantominator), so the angle moves by N(0, 1)/20 rad; this table keeps degrees."""
    noise = rng.standard_normal(table.shape) / 20.0
    noise[:, 5] = np.rad2deg(noise[:, 5])
    return table + noise


def perturb_2d(table: np.ndarray, rng: np.random.Generator, amount: float = 1.0) -> np.ndarray:
    """Random phantom variations, as the paper's CT data: every ellipse's semi-axes scaled by
    U(1 - 0.1a, 1 + 0.1a), centre moved by U(-0.05a, 0.05a), angle turned by U(-10a, 10a) degrees, and the
    inner features' grey levels scaled by U(1 - 0.25a, 1 + 0.25a) (a = `amount`). The skull and brain
    ellipses move together (so the skull stays a thin ring) and keep their grey levels."""
    e = table.copy()
    k = len(e)
    scale = rng.uniform(1 - 0.1 * amount, 1 + 0.1 * amount, size=(k, 2))
    shift = rng.uniform(-0.05 * amount, 0.05 * amount, size=(k, 2))
    turn = rng.uniform(-10 * amount, 10 * amount, size=k)
    scale[1], shift[1], turn[1] = scale[0], shift[0], turn[0]
    e[:, 1:3] *= scale
    e[:, 3:5] += shift
    e[:, 5] += turn
    e[2:, 0] *= rng.uniform(1 - 0.25 * amount, 1 + 0.25 * amount, size=k - 2)
    return e


def rasterize_2d(table: np.ndarray, n: int) -> np.ndarray:
    """Point-sample the ellipses at the n x n pixel centres; float32 clipped to [0, 1]."""
    c = (np.arange(n) + 0.5) / n * 2 - 1
    x, y = np.meshgrid(c, -c)  # row 0 at the top
    img = np.zeros((n, n))
    for grey, a, b, x0, y0, deg in table:
        t = np.deg2rad(deg)
        xr = (x - x0) * np.cos(t) + (y - y0) * np.sin(t)
        yr = -(x - x0) * np.sin(t) + (y - y0) * np.cos(t)
        img[(xr / a) ** 2 + (yr / b) ** 2 <= 1] += grey
    return np.clip(img, 0, 1).astype(np.float32)


def shepp_logan_2d(n: int, seed: int | None = None, amount: float = 1.0, perturbation: str = "ffrun",
                   split: str = "test") -> np.ndarray:
    """The modified Shepp-Logan phantom, randomly perturbed (`perturbation`, phantom `seed` of `split`)
    when `seed` is given."""
    if seed is None:
        return rasterize_2d(MODIFIED_SHEPP_LOGAN_2D, n)
    rng = phantom_rng(seed, split)
    if perturbation == "notebook":
        return rasterize_2d(perturb_notebook(MODIFIED_SHEPP_LOGAN_2D, rng), n)
    return rasterize_2d(perturb_2d(MODIFIED_SHEPP_LOGAN_2D, rng, amount), n)


def shepp_logan_3d(n: int) -> np.ndarray:
    """The 3D modified Shepp-Logan phantom, (n, n, n) indexed [x, y, z], float32 in [0, 1]."""
    c = (np.arange(n) + 0.5) / n * 2 - 1
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    vol = np.zeros((n, n, n))
    for grey, a, b, cz, x0, y0, z0, deg in MODIFIED_SHEPP_LOGAN_3D:
        t = np.deg2rad(deg)
        xr = (x - x0) * np.cos(t) + (y - y0) * np.sin(t)
        yr = -(x - x0) * np.sin(t) + (y - y0) * np.cos(t)
        vol[(xr / a) ** 2 + (yr / b) ** 2 + ((z - z0) / cz) ** 2 <= 1] += grey
    return np.clip(vol, 0, 1).astype(np.float32)
