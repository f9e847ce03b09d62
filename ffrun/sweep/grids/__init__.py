"""The DIV2K table of "Grids Often Outperform Implicit Neural Representations" (NeurIPS 2025, benchmark code
voilalab/INR-benchmark) as a sweep (`ffrun-compare --benchmark grids`): the published numbers (published), the
plan of runs, their overrides and folders and launching them (plans), the table of ffrun beside the published
numbers (tables), and the budget plots and galleries (plots).

Every run is one ffrun job of the `grids_div2k` experiment with a `grids/<method>` preset, on one of the
benchmark's ten DIV2K x4 images, at one parameter budget and one protocol (fit, 4x super-resolution or
denoising). The benchmark scores Grid by its final iterate and every INR by its best evaluation (every 100
steps); the table's score column follows that rule and shows both.
"""

from ffrun.sweep.grids.plans import (  # noqa: F401
    OWN_KEYS,
    GridsPlan,
    check_composes,
    grids_runs,
    image_budget,
    launch_grids,
    missing_data,
    own_key,
    plan_summary,
    protocol_of,
    run_of,
    run_overrides,
    superres_note,
    sweep_dir,
)
from ffrun.sweep.grids.plots import budget_plot, galleries, report  # noqa: F401
from ffrun.sweep.grids.published import (  # noqa: F401
    BENCHMARKS,
    DEFAULT_BUDGETS,
    DEFAULT_NOISE,
    DEFAULT_TOLERANCE,
    EXPERIMENT,
    FINAL_SCORED,
    IMAGE_SET,
    IMAGES,
    METHODS,
    METRIC,
    NAMES,
    ORIGINALS,
    PROTOCOLS,
    PUBLISHED,
    PUBLISHED_BUDGETS,
    SOURCE,
    TOLERANCE,
    published,
    scored_by,
    tag,
    tolerance,
)
from ffrun.sweep.grids.results import IMAGE_HEADER, Earlier, load_earlier, to_run  # noqa: F401
from ffrun.sweep.grids.tables import (  # noqa: F401
    HEADER,
    ImageResult,
    Row,
    collect_grids,
    fit_same_images,
    grouped,
    image_result,
    protocol_table,
    write_grids_tables,
)
