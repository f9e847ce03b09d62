"""Writing a sweep's table: the same rows as markdown (to read) and CSV (to load), and how values are shown."""

from __future__ import annotations

import statistics
from pathlib import Path

from ffrun.util.atomic import csv_text, write_text


def format_metric(x: float | None, metric: str) -> str:
    """A metric as the tables show it: IoU to 3 decimals, PSNR to 2; `-` when absent."""
    if x is None:
        return "-"
    return f"{x:.3f}" if metric.startswith("iou") else f"{x:.2f}"


def hms(seconds: float) -> str:
    """A duration as h:mm:ss."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population std (0 for one value), as the authors' notebooks average."""
    return statistics.fmean(values), (statistics.pstdev(values) if len(values) > 1 else 0.0)


def clipped(text: object, limit: int = 160) -> str:
    """`text` on one line, cut at a word boundary to at most `limit` characters, with " ..." where it was cut:
    a cut mid-word can turn a figure into another one (model.params=100000 read as model.params=10000)."""
    line = " ".join(str(text).split())
    if len(line) <= limit:
        return line
    cut = line[:limit - 4]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + " ..."


def md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def write_table(out: Path, stem: str, header: list[str], csv_rows: list[list[str]], markdown: list[str]) -> str:
    """Write out/<stem>.csv (header + rows) and out/<stem>.md (the markdown lines); returns the markdown."""
    text = "\n".join(markdown) + "\n"
    write_text(out / f"{stem}.csv", csv_text(header, csv_rows))
    write_text(out / f"{stem}.md", text)
    return text
