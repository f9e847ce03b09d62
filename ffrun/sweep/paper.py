"""The paper's published numbers (its Table 1 and sigmas) and the tasks and encodings they cover."""

from __future__ import annotations

ENCODINGS = ("none", "basic", "posenc", "gauss")
TASKS = ("image", "text", "shape", "ct", "mri", "nerf")

# The authors' notebooks (the authors' notebooks; docs/protocol.md): metric, and per encoding (mean, std or None).
PAPER = {
    "image": ("test_psnr", {"none": (19.32, 2.48), "basic": (21.72, 2.72), "posenc": (24.95, 3.72),
                            "gauss": (25.57, 4.19)}),
    "text": ("test_psnr", {"none": (18.40, 2.34), "basic": (20.48, 1.96), "posenc": (27.57, 3.07),
                           "gauss": (30.47, 2.11)}),
    "shape": ("iou_surface", {"none": (0.864, None), "basic": (0.892, None), "posenc": (0.960, None),
                              "gauss": (0.973, None)}),
    "ct": ("psnr", {"none": (16.75, None), "basic": (23.31, None), "posenc": (26.89, None),
                    "gauss": (28.33, None), "grid": (24.99, None)}),
    "mri": ("psnr", {"none": (26.14, None), "basic": (28.58, None), "posenc": (32.23, None),
                     "gauss": (34.51, None), "grid": (32.71, None)}),
    "nerf": ("test_psnr", {"none": (22.41, 0.92), "basic": (23.16, 0.90), "posenc": (25.60, 0.76),
                           "gauss": (25.48, 0.89)}),
}
# The paper's data for each task, and what stands in for it when it is absent.
PAPER_DATA = {
    "image": "the authors' DIV2K crops ($FFRUN_DATA/images/div2k): stand-in = photographs shipped with "
             "scikit-image and matplotlib",
    "text": "the authors' text images ($FFRUN_DATA/images/text): stand-in = text rendered by ffrun with the "
            "DejaVu fonts",
    "shape": "Stanford meshes ($FFRUN_DATA/meshes/*.obj)",
    "ct": "modified Shepp-Logan phantoms with perturbed ellipses (generated, as the paper)",
    "mri": "ATLAS brain volumes (not redistributed): stand-in = the Colin27 T1 brain ($FFRUN_DATA/mri)",
    "nerf": "the Lego scene of the NeRF synthetic dataset ($FFRUN_DATA/nerf/lego_400)",
}
# How far below posenc gauss may land and still keep the paper's ordering (one seed's spread).
TOLERANCE = {"test_psnr": 0.5, "psnr": 0.5, "iou_surface": 0.005, "iou_uniform": 0.005}
# The Gaussian encoding's sigma in the paper at 512 px: natural images and text.
PAPER_SIGMA = {"image": 10.0, "text": 14.0}


def metric_of(task: str) -> str:
    """The held-out metric a task is scored by: Table 1's, else test_psnr (toy1d)."""
    return PAPER[task][0] if task in PAPER else "test_psnr"
