"""The Grids benchmark's pictures: the budget plot of each protocol and the galleries; `report` writes the
tables and pictures of a plan's runs."""

from __future__ import annotations

from pathlib import Path

from ffrun.sweep.gallery import gallery
from ffrun.sweep.grids.plans import GridsPlan
from ffrun.sweep.grids.published import METRIC, NAMES, published, tag
from ffrun.sweep.grids.results import Earlier
from ffrun.sweep.grids.tables import Row, collect_grids, write_grids_tables
from ffrun.sweep.runs import Run
from ffrun.util.atomic import save_figure


def budget_plot(out: Path, protocol: str, rows: list[Row]) -> Path | None:
    """grids_budget_<protocol>.png: PSNR against the parameter budget (log x), a colour per method: ffrun's score
    solid with markers, the published mean dashed in the same colour (over the budgets run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({r.budget for r in rows})
    if not budgets:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = False
    for k, method in enumerate(dict.fromkeys(r.method for r in rows)):
        colour = colours[k % len(colours)]
        mine = sorted((r.budget, r.score) for r in rows if r.method == method and r.score is not None)
        theirs = sorted((b, v) for b in budgets if (v := published(protocol, method, b)) is not None)
        if mine:
            ax.plot(*zip(*mine), color=colour, marker="o", linestyle="-", label=f"{NAMES.get(method, method)} (ffrun)")
            drawn = True
        if theirs:
            ax.plot(*zip(*theirs), color=colour, marker="x", linestyle="--",
                    label=f"{NAMES.get(method, method)} (published)")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("parameters (model.params)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"Grids benchmark, DIV2K {protocol}: ffrun (solid) and published (dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = save_figure(out / f"grids_budget_{protocol}.png", fig)
    plt.close(fig)
    return path


def galleries(out: Path, plan: GridsPlan, runs: list[Run]) -> list[Path]:
    """gallery_grids_<protocol>.png: every method's reconstruction of the protocol's first image at the largest
    budget, beside the ground truth."""
    made = []
    top = max(plan.budgets)
    for protocol in plan.protocols:
        images = plan.images_of(protocol)
        if not images:
            continue
        item = f"{tag(images[0])}@{top}"
        chosen = [r for r in runs if r.task == f"grids/{protocol}" and r.item == item]
        path = gallery(out, f"grids_{protocol}", chosen, metric=METRIC) if chosen else None
        if path is not None:
            made.append(path)
    return made


def report(out: Path, plan: GridsPlan, runs: list[Run], wall_s: float | None = None,
           earlier: Earlier | None = None) -> str:
    """The tables, budget plots and galleries of the plan's runs (with the earlier results given, for the images
    not run in `out`); returns the tables' markdown."""
    table = collect_grids(runs, plan, out, earlier)
    text = write_grids_tables(out, table, plan, wall_s)
    for protocol in plan.protocols:
        budget_plot(out, protocol, table.get(protocol, []))
    galleries(out, plan, runs)
    return text
