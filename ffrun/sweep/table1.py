"""The paper's Table 1 as a sweep: every task x encoding on its plan, then the table beside the authors'
numbers with an ordering verdict per task (table1.md, table1.csv)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ffrun.sweep.commands import multirun_command
from ffrun.sweep.execute import run_ffrun
from ffrun.sweep.paper import ENCODINGS, PAPER, TOLERANCE
from ffrun.sweep.plans import TaskPlan, data_label, job_overrides
from ffrun.sweep.runs import Run, shown_status
from ffrun.sweep.tables import format_metric, hms, md_row, mean_std, write_table


def table1_runs(plans: dict[str, TaskPlan], tasks: list[str], out: Path, extra: list[str]) -> list[Run]:
    """Every task x data item x encoding, each in out/runs/<task>/<item>/<encoding>."""
    runs: list[Run] = []
    for task in tasks:
        plan = plans[task]
        for item in plan.items:
            runs += [Run(task, item, enc, out / "runs" / task / item / enc, job_overrides(plan, item, enc, extra))
                     for enc in plan.encodings]
    return runs


def launch(task: str, plan: TaskPlan, item: str, encodings: list[str], sweep_dir: Path, launcher: str,
           extra: list[str]) -> int:
    """One Hydra multirun over `encodings` for one data item; each job in sweep_dir/<encoding>."""
    args = multirun_command(job_overrides(plan, item, ",".join(encodings), extra), sweep_dir, "${encoding.name}",
                            launcher)
    return run_ffrun(args, f"{task} [{item}]")


@dataclass
class Row:
    task: str
    encoding: str
    metric: str
    values: list[float] = field(default_factory=list)
    view_std: float | None = None  # a single scene: the spread over its test views, as the paper reports
    failed: list[str] = field(default_factory=list)
    wall_s: float = 0.0  # the runs' own wall time (metrics.json), summed: what the table cost, over reruns

    @property
    def mean(self) -> float | None:
        return mean_std(self.values)[0] if self.values else None

    @property
    def std(self) -> float | None:
        if not self.values:
            return None
        return self.view_std if len(self.values) == 1 and self.view_std is not None else mean_std(self.values)[1]


def collect(runs: list[Run]) -> dict[str, dict[str, Row]]:
    """task -> encoding -> its metric over the data items, and the runs without a result."""
    table: dict[str, dict[str, Row]] = {}
    for run in runs:
        metric = PAPER[run.task][0]
        row = table.setdefault(run.task, {}).setdefault(run.encoding, Row(run.task, run.encoding, metric))
        rec = run.record()
        wall = rec.wall_s if rec is not None else None
        if isinstance(wall, (int, float)) and math.isfinite(wall):
            row.wall_s += float(wall)
        if rec is not None and rec.succeeded(metric):
            row.values.append(rec.metric(metric))
            row.view_std = rec.metric(f"{metric}_std")
        else:
            row.failed.append(f"{run.item}: {shown_status(rec)}")
    return table


def _grid_check(paper: dict, m: dict[str, float], v) -> tuple[str, str, str, bool]:
    """The grid between the same neighbours as in the paper: (what the paper has, how it held, what came out
    instead, whether it held)."""
    below = [e for e in ENCODINGS if paper[e][0] < paper["grid"][0]]
    above = [e for e in ENCODINGS if paper[e][0] > paper["grid"][0]]
    lo = max(below, key=lambda e: paper[e][0]) if below else None
    hi = min(above, key=lambda e: paper[e][0]) if above else None
    where = " < ".join(x for x in (lo, "grid", hi) if x)
    under = lo is not None and m["grid"] <= m[lo]
    over = hi is not None and m["grid"] >= m[hi]
    came = (f"{v('grid')} <= {v(lo)}" if under else f"{v('grid')} >= {v(hi)}") if under or over else ""
    paper_order = " < ".join(f"{paper[x][0]:.4g}" for x in (lo, "grid", hi) if x)
    return f"{where} (the paper: {paper_order})", f"grid {m['grid']:.3g}", came, not (under or over)


def verdict(task: str, rows: dict[str, Row]) -> str:
    """The paper's ordering: none < basic < posenc, gauss >= posenc - tolerance; grid between the same
    neighbours as in the paper."""
    metric, paper = PAPER[task]
    tol = TOLERANCE.get(metric, 0.5)
    m = {e: r.mean for e, r in rows.items() if r.mean is not None}
    missing = [e for e in ENCODINGS if e not in m]
    if missing:
        return f"{task}: no verdict (no completed run for {', '.join(missing)})"

    def v(e: str) -> str:
        return f"{e} {m[e]:.4g}"

    # (what the paper has, how it held, what came out instead when it did not)
    checks = [("none < basic", f"{m['none']:.3g} < {m['basic']:.3g}", f"{v('none')} >= {v('basic')}",
               m["none"] < m["basic"]),
              ("basic < posenc", f"{m['basic']:.3g} < {m['posenc']:.3g}", f"{v('basic')} >= {v('posenc')}",
               m["basic"] < m["posenc"]),
              (f"gauss >= posenc - {tol:g}", f"{m['gauss']:.3g} >= {m['posenc'] - tol:.3g}",
               f"{v('gauss')} < {v('posenc')} - {tol:g} = {m['posenc'] - tol:.4g}", m["gauss"] >= m["posenc"] - tol)]
    if "grid" in paper and "grid" in m:
        checks.append(_grid_check(paper, m, v))
    failed = [(want, came) for want, _, came, ok in checks if not ok]
    if not failed:
        return f"{task}: the paper's ordering holds: " + "; ".join(f"{w} ({held})" for w, held, _, _ in checks)
    return f"{task}: the paper's ordering does NOT hold: " + "; ".join(
        f"expected {want}, got {came}" for want, came in failed)


def write_table1(out: Path, table: dict[str, dict[str, Row]], scale: str, plans: dict[str, TaskPlan],
                 data_notes: dict[str, str], wall_s: float) -> str:
    """table1.md and table1.csv: a row per task x encoding beside the paper's, the verdicts, the data, the
    runs without a result and what the table cost; returns the markdown."""
    header = ["task", "encoding", "metric", "ffrun", "ffrun_std", "n", "paper", "paper_std", "scale", "data"]
    csv_rows = []
    md = [f"# Table 1, regenerated by ffrun (scale `{scale}`)", "",
          "ffrun: mean over the data items (std: population std over items; for one NeRF scene, over its "
          "test views). paper: the authors' notebooks (tancik/fourier-feature-networks; "
          "protocol in docs/protocol.md).", "",
          md_row(header), "|" + " --- |" * len(header)]
    for task, rows in table.items():
        metric, paper = PAPER[task]
        for enc in (e for e in (*ENCODINGS, "grid") if e in rows):
            r = rows[enc]
            p_mean, p_std = paper.get(enc, (None, None))
            cells = [task, enc, metric, format_metric(r.mean, metric), format_metric(r.std, metric),
                     str(len(r.values)), format_metric(p_mean, metric), format_metric(p_std, metric), scale]
            csv_rows.append([*cells, data_notes[task]])
            md.append(md_row([*cells, data_label(plans[task])]))
    md += ["", "## Verdicts", ""] + [f"- {verdict(task, rows)}" for task, rows in table.items()]
    md += ["", "## Data", ""] + [f"- {t}: {data_notes[t]}" for t in table]
    failures = [f"{t}/{r.encoding} {f}" for t, rows in table.items() for r in rows.values() for f in r.failed]
    if failures:
        md += ["", "## Runs without a result", ""] + [f"- {f}" for f in failures]
    per_task = {t: sum(r.wall_s for r in rows.values()) for t, rows in table.items()}
    md += ["", f"Wall time of this invocation: {hms(wall_s)} (runs already complete were skipped). The runs' own "
           f"wall times (metrics.json `wall_s`, whichever invocation ran them) sum to {hms(sum(per_task.values()))}: "
           + ", ".join(f"{t} {hms(v)}" for t, v in per_task.items()) + "."]
    return write_table(out, "table1", header, csv_rows, md)
