"""The comparison's results: per task and budget, every method's held-out metric, size and speed
(compare.md, compare.csv), whether the Grids paper's conclusion holds, and the metric against the budget."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from ffrun.sweep.methods import METHODS
from ffrun.sweep.paper import metric_of
from ffrun.sweep.plans import TaskPlan
from ffrun.sweep.runs import Run, shown_status, unreachable
from ffrun.sweep.tables import clipped, format_metric, hms, write_table
from ffrun.util.atomic import save_figure

HEADER = ["task", "budget", "method", "metric", "ffrun", "n", "params", "s_per_step", "wall_s", "data"]


@dataclass
class Cell:
    metric: str
    values: list[float]
    params: int | None = None
    s_per_step: float | None = None
    wall_s: float = 0.0
    failed: str | None = None
    unreachable: bool = False  # the method cannot be sized to this budget on this task (not a failure)


Table = dict[tuple[str, int], dict[str, Cell]]


def collect(runs: list[Run]) -> Table:
    """(task, budget) -> method -> its metric over the data items, parameter count and speed."""
    table: Table = {}
    for run in runs:
        budget = int(run.item.rsplit("@", 1)[1])
        cell = table.setdefault((run.task, budget), {}).setdefault(run.encoding, Cell(metric_of(run.task), []))
        rec = run.record()
        if rec is not None and rec.succeeded(cell.metric):
            cell.values.append(rec.metric(cell.metric))
            cell.params = rec.params
            wall, steps = rec.wall_s, rec.step
            cell.wall_s += float(wall or 0.0)
            cell.s_per_step = float(wall) / steps if wall and steps else None
        else:
            cell.unreachable = unreachable(rec)
            reason = rec.get("reason") if rec is not None else None
            cell.failed = f"{shown_status(rec)}: {clipped(reason or '')}"
    return table


def grids_verdict(task: str, cells: dict[str, Cell]) -> str:
    """The Grids paper's conclusion at this budget: the dense grid at least as good as every network."""
    means = {m: statistics.fmean(c.values) for m, c in cells.items() if c.values}
    if "densegrid" not in means or len(means) < 2:
        return f"{task}: no verdict (no completed densegrid run or nothing to compare it with)"
    best = max((m for m in means if m != "densegrid"), key=lambda m: means[m])

    def fmt(m: str) -> str:
        return f"{m} {format_metric(means[m], cells[m].metric)}"

    if means["densegrid"] >= means[best]:
        return f"{task}: holds (the dense grid {fmt('densegrid')} >= the best network, {fmt(best)})"
    return f"{task}: does NOT hold (the dense grid {fmt('densegrid')} < {fmt(best)})"


def task_section(table: Table, task: str, data: str, csv_rows: list[list[str]]) -> list[str]:
    """One task's markdown: a row per method, a column per budget; its notes on failed or unreachable runs.
    Adds a CSV row per method and budget to `csv_rows`."""
    budgets = sorted(b for t, b in table if t == task)
    metric = metric_of(task)
    md = [f"## {task} ({metric}; data: {data})", "",
          "| method | " + " | ".join(f"{b:,} params" for b in budgets) + " | params | s/step | wall |",
          "| --- |" + " --- |" * (len(budgets) + 3)]
    for method in METHODS:
        cells = [table[(task, b)].get(method) for b in budgets]
        if not any(cells):
            continue
        shown = [format_metric(statistics.fmean(c.values), metric) if c and c.values else
                 ("n/a" if c and c.unreachable else "failed" if c else "-") for c in cells]
        last = next((c for c in reversed(cells) if c and c.values), None)
        speed = f"{last.s_per_step:.3f}" if last and last.s_per_step else "-"
        md.append(f"| {method} | " + " | ".join(shown) + f" | {last.params if last else '-'} | {speed} | "
                  f"{hms(sum(c.wall_s for c in cells if c))} |")
        for b, c in zip(budgets, cells):
            if c:
                csv_rows.append([task, str(b), method, metric,
                                 format_metric(statistics.fmean(c.values), metric) if c.values else "",
                                 str(len(c.values)), str(c.params or ""),
                                 f"{c.s_per_step:.4f}" if c.s_per_step else "", f"{c.wall_s:.1f}", data])
    md.append("")
    cells = [(b, m, c) for b in budgets for m, c in table[(task, b)].items() if c.failed]
    notes = [f"- {'n/a' if c.unreachable else 'failed'}: {m} @ {b}: {c.failed}" for b, m, c in cells]
    return md + notes + ([""] if notes else [])


def write_compare_table(out: Path, table: Table, scale: str, plans: dict[str, TaskPlan], wall_s: float) -> str:
    """compare.md and compare.csv; returns the markdown."""
    csv_rows: list[list[str]] = []
    md = [f"# Fourier features and their successors at equal budgets (scale `{scale}`)", "",
          "Each task on its Table 1 protocol and held-out metric; every method sized to the budget "
          "(`model.params`, within 5 %) and trained at its reference learning rate. s/step: the run's "
          "own wall time over its steps, evaluations included.", ""]
    verdicts = []
    for task in dict.fromkeys(t for t, _ in table):
        md += task_section(table, task, ", ".join(plans[task].items) or "-", csv_rows)
        verdicts += [grids_verdict(f"{task} at {b:,}", table[(task, b)]) for b in sorted(b for t, b in table
                                                                                        if t == task)]
    md += ["## Does a dense grid beat the networks? (the Grids paper's conclusion, on held-out metrics)", ""]
    md += [f"- {v}" for v in verdicts]
    total = sum(c.wall_s for cells in table.values() for c in cells.values())
    md += ["", f"Wall time of this invocation: {hms(wall_s)}; the runs' own wall times sum to {hms(total)}."]
    return write_table(out, "compare", HEADER, csv_rows, md)


def budget_plot(out: Path, task: str, cells: dict[int, dict[str, Cell]]) -> Path | None:
    """budget_<task>.png: the held-out metric against the parameter count, one line per method."""
    if len(cells) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for method in METHODS:
        pts = sorted((c.params, statistics.fmean(c.values)) for b in cells if (c := cells[b].get(method))
                     and c.values and c.params)
        if pts:
            ax.plot(*zip(*pts), marker="o", label=method, linestyle="--" if method == "densegrid" else "-")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(metric_of(task))
    ax.set_title(f"{task}: held-out {metric_of(task)} at equal budgets")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = save_figure(out / f"budget_{task}.png", fig)
    plt.close(fig)
    return path
