"""The schemas of the Fourier-family encodings and of the ReLU MLP, as plain dataclasses: ffrun.config
registers them with Hydra, and the models import them without Hydra or OmegaConf (an exported field loads
with torch alone). The other methods' schemas extend these beside their code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

MISSING = "???"  # OmegaConf's mark for a value that must be given


@dataclass
class EncodingConfig:
    """The Fourier family (none | basic | posenc | gauss | learned | multiscale) and the per-pixel `grid`;
    the other encodings (hashgrid, densegrid, ...) have their schemas beside their code in ffrun/models."""

    name: str = MISSING  # none | basic | posenc | gauss | learned | multiscale | grid (no network: the pixel values)
    m: int = 256  # number of frequencies (rows of B) for posenc and gauss; features = 2m
    sigma: float = 10.0  # gauss, learned: B ~ N(0, sigma^2); the yaml ties it to the top-level `sigma`
    sigmas: Optional[List[float]] = None  # multiscale: one Gaussian block of B per sigma
    # gauss, learned: who draws B's normals from the run's seed: torch (a CPU generator) or numpy
    # (np.random.seed(seed); np.random.normal(size=(m, d)), as the Grids benchmark's FourFeat draws its B)
    draw: str = "torch"
    scale: float = 6.0  # posenc: per-axis frequencies 2**linspace(0, scale, levels) - offset
    levels: Optional[int] = None  # posenc: frequencies per axis; None = m // d
    offset: float = 1.0  # posenc: 1 = the notebooks' posenc_new (includes frequency 0); 0 = NeRF's 2^0..2^scale
    two_pi: bool = True  # the 2*pi factor inside sin/cos (the paper's NeRF mapping has none)
    normalize: bool = False  # divide the features by sqrt(m) (the paper's shape task)
    center: bool = False  # none only: feed the task's box mapped onto [-1, 1] (2v - 1: the paper's shape task; SIREN)
    # grid only: the values are logits through the task's output activation (sigmoid for CT and MRI) and
    # start at 0, as the notebooks' train_gridopt (grid.yaml sets true); false = the values are the image.
    logits: bool = False


@dataclass
class ModelConfig:
    """The ReLU MLP (`mlp`) and `direct` (no network); SIREN and WIRE extend it beside their code."""

    name: str = "mlp"  # the network: mlp | siren | wire | direct (see ffrun.models.registry)
    # A parameter budget: the method's size knob (the network's width, a hash table's size, a dense grid's
    # resolution) is chosen so the trainable parameters land within 5 % of it; null = the sizes as given.
    # A float so that budgets can be written as researchers write them (model.params=1e4); a whole number.
    params: Optional[float] = None
    # How model.params sizes the method: `ffrun` (the trainable count within 5 % of the budget) or `grids`, the
    # rule of the Grids benchmark (voilalab/INR-benchmark), whose sizes its published tables hold
    # (ffrun.models.grids_budget).
    budget_rule: str = "ffrun"
    # The network's output activation: null = the task's (sigmoid for images); `none` = linear, as the Grids
    # benchmark's methods, or `sigmoid`.
    out_activation: Optional[str] = None
    depth: int = 4  # number of Linear layers: (depth - 1) x [Linear(width) + ReLU], then Linear
    # model=mlp: the last hidden Linear without its ReLU, straight into the output Linear, as the Grids
    # benchmark's FourFeat (models/fourfeat.py: Linear, ReLU, Linear, ReLU, Linear, Linear at depth 4)
    linear_last_hidden: bool = False
    width: int = 256
    # glorot = the notebooks' stax.Dense: truncated-normal Glorot W (variance 2 / (fan_in + fan_out)),
    # b ~ N(0, 1e-2^2); torch = nn.Linear's default
    init: str = "glorot"
    parametrization: str = "standard"  # standard | ntk (W, b ~ N(0,1), scaled by w_std/sqrt(fan_in) and b_std)
    w_std: float = 1.4142135623730951  # ntk parametrization only
    b_std: float = 0.1  # ntk parametrization only
