"""A sweep's gallery: the ground truth beside every run's reconstruction of one data item, labelled."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ffrun.run.record import Status
from ffrun.sweep.paper import PAPER
from ffrun.sweep.runs import Run
from ffrun.util.atomic import write_png


def gallery(out: Path, task: str, runs: list[Run], metric: str | None = None) -> Path | None:
    """gallery_<task>.png: the ground truth, then each encoding's reconstruction of the task's first data
    item, each labelled with its encoding and metric. The task itself says which pictures those are."""
    from ffrun.tasks import task_class
    from ffrun.util.pictures import labelled_row, metric_label

    first_item = runs[0].item
    panels: list[tuple[str, np.ndarray]] = []
    truth = None
    for run in (r for r in runs if r.item == first_item):
        rec = run.record()
        if rec is None or rec.status != Status.COMPLETED:
            continue
        pair = task_class(rec.get("task", "image")).gallery_pictures(run.dir)
        if pair is None:
            continue
        t, pred = pair
        if truth is None and t is not None:
            truth = t
        metric = metric or PAPER[run.task][0]
        panels.append((f"{run.encoding}\n{metric_label(metric, rec.metric(metric))}", pred))
    if not panels:
        return None
    if truth is not None:
        panels.insert(0, ("ground truth", truth))
    path = out / f"gallery_{task}.png"
    write_png(path, labelled_row(panels, title=f"{task} [{first_item}]"))
    return path
