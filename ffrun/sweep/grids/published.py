"""The Grids benchmark's DIV2K table as published: its methods, protocols, images, budgets and means, the
tolerance each row is held to, and which iterate scores each method."""

from __future__ import annotations

BENCHMARKS = ("grids",)
EXPERIMENT = "grids_div2k"
IMAGE_SET = "div2k_grids"  # $FFRUN_DATA/images/div2k_grids/{x4,hr}/NN.png
METHODS = ("grid", "siren", "wire", "ffn", "ingp")  # configs/method/grids/<method>.yaml
NAMES = {"grid": "Grid", "siren": "SIREN", "wire": "WIRE", "ffn": "FFN", "ingp": "Instant-NGP"}
PROTOCOLS = ("fit", "superres", "denoise")
IMAGES = tuple(range(10))
# The four images whose 2040x1356 originals (hr/NN.png) the benchmark's repository carries: 4x super-resolution
# is scored against them, so it runs on these alone.
ORIGINALS = (0, 6, 7, 9)
DEFAULT_BUDGETS = (10_000, 30_000, 100_000)
DEFAULT_NOISE = 0.05  # the benchmark's denoising levels are 0.05 and 0.1
METRIC = "test_psnr"
# How the benchmark scores a run: Grid by its final iterate, every INR by its best evaluation.
FINAL_SCORED = ("grid",)
# How far ffrun's mean over the ten images may land from the published one: Grid has no randomness.
TOLERANCE = {"grid": 0.15}
DEFAULT_TOLERANCE = 1.0

# The published numbers: PSNR (dB), mean over the ten images, at each parameter budget. Source: the paper's
# DIV2K table, as listed in the data README ($FFRUN_DATA/README.md, images/div2k_grids). No denoising
# numbers are available here: that table shows ffrun alone.
PUBLISHED_BUDGETS = (10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000)
_FIT = {"grid": (21.92, 24.06, 27.29, 33.01, 149.73, 156.53),
        "siren": (21.98, 23.93, 22.05, 20.35, 15.87, 11.22),
        "wire": (21.58, 24.08, 27.67, 31.62, 36.09, 39.06),
        "ffn": (15.99, 22.00, 28.88, 35.95, 44.08, 48.26),
        "ingp": (15.71, 20.18, 24.73, 32.42, 39.21, 63.21)}
_SUPERRES = {"grid": (19.70, 20.85, 21.85, 22.37, 22.46, 22.05),
             "siren": (19.74, 20.78, 18.75, 16.97, 13.92, 9.95),
             "wire": (19.45, 20.76, 21.89, 22.41, 22.54, 22.61),
             "ffn": (15.16, 19.51, 21.98, 22.51, 22.72, 22.78),
             "ingp": (14.39, 17.77, 17.71, 14.03, 12.91, 12.29)}
PUBLISHED: dict[str, dict[str, dict[int, float]]] = {
    protocol: {m: dict(zip(PUBLISHED_BUDGETS, values)) for m, values in table.items()}
    for protocol, table in (("fit", _FIT), ("superres", _SUPERRES), ("denoise", {}))}
SOURCE = ("the DIV2K table of \"Grids Often Outperform Implicit Neural Representations\" (NeurIPS 2025, "
          "voilalab/INR-benchmark), as listed in the data README")


def published(protocol: str, method: str, budget: int) -> float | None:
    return PUBLISHED.get(protocol, {}).get(method, {}).get(budget)


def tolerance(method: str) -> float:
    return TOLERANCE.get(method, DEFAULT_TOLERANCE)


def scored_by(method: str) -> str:
    """`final` (the last iterate: Grid) or `best` (the best evaluation: the INRs), as the benchmark scores."""
    return "final" if method in FINAL_SCORED else "best"


def tag(image: int) -> str:
    return f"{image:02d}"
