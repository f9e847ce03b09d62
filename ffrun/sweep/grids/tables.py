"""The Grids benchmark's tables: each run's result, a row per method and budget (means over the images, the
published mean and the difference), the markdown and CSV files."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ffrun.run.record import RunRecord, Status
from ffrun.sweep.grids.plans import GridsPlan, image_budget, protocol_of, run_of, superres_note, tags
from ffrun.sweep.grids.published import (
    DEFAULT_TOLERANCE,
    IMAGE_SET,
    IMAGES,
    METRIC,
    NAMES,
    SOURCE,
    published,
    scored_by,
    tag,
    tolerance,
)
from ffrun.sweep.grids.results import IMAGE_HEADER, Earlier, EarlierRow, ImageResult, image_lines
from ffrun.sweep.runs import Run, shown_status
from ffrun.sweep.tables import clipped, hms, md_row, write_table
from ffrun.util.atomic import csv_text, write_text


def _finite(x) -> float | None:
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def image_result(run: Run, rec: RunRecord | None, protocol: str) -> ImageResult | str:
    """One finished run's final and best PSNR, or why it holds none (a line for the table's notes)."""
    image = image_budget(run)[0]
    if rec is None or not rec.succeeded(METRIC):
        reason = rec.get("reason") if rec is not None else None
        return f"{shown_status(rec)}" + (f": {clipped(reason)}" if reason else "")
    recorded = rec.get("protocol")
    if recorded is not None and recorded != protocol:
        return f"recorded protocol {recorded!r}, not {protocol!r}"
    best = rec.get("best")
    sizes = rec.sizes if isinstance(rec.sizes, dict) else {}
    res = ImageResult(image, rec.metric(METRIC), _finite(best.get(METRIC)) if isinstance(best, dict) else None,
                      rec.params, sizes.get("benchmark_params"), _finite(rec.wall_s))
    if res.score(run.encoding) is None:
        return "completed without a best evaluation (`best` in metrics.json)"
    return res


@dataclass
class Row:
    """One method at one budget of one protocol: its images' results and how they compare."""

    protocol: str
    method: str
    budget: int
    results: list[ImageResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # runs that hold no score, and why
    fit_same: tuple[float | None, int] = (None, 0)  # superres: ffrun's fit score on the same images, how many
    carried: EarlierRow | None = None  # a whole row from an earlier table (--results), where no image was run

    @property
    def images(self) -> list[int]:
        if self.carried is not None:
            return list(self.carried.images)
        return [r.image for r in self.results]

    @property
    def final(self) -> float | None:
        if self.carried is not None:
            return self.carried.final
        return _mean([r.final for r in self.results if r.final is not None])

    @property
    def best(self) -> float | None:
        if self.carried is not None:
            return self.carried.best
        return _mean([r.best for r in self.results if r.best is not None])

    @property
    def score(self) -> float | None:
        if self.carried is not None:
            return self.carried.final if scored_by(self.method) == "final" else self.carried.best
        return _mean([s for r in self.results if (s := r.score(self.method)) is not None])

    @property
    def sources(self) -> list[str]:
        """Where the row's earlier results came from, `file: images` (empty: every image is a run in --out)."""
        if self.carried is not None:
            return [f"{self.carried.source}: the whole row ({tags(self.carried.images)}; its means, no "
                    "per-image results)"]
        by: dict[str, list[int]] = {}
        for r in self.results:
            if r.source is not None:
                by.setdefault(r.source, []).append(r.image)
        return [f"{src}: {tags(sorted(images))}" for src, images in by.items()]

    @property
    def published(self) -> float | None:
        return published(self.protocol, self.method, self.budget)

    @property
    def difference(self) -> float | None:
        return None if self.score is None or self.published is None else self.score - self.published

    @property
    def verdict(self) -> str:
        """yes / no: within the tolerance of the published mean; `-` without one, or on other than the ten."""
        if self.difference is None or set(self.images) != set(IMAGES):
            return "-"
        return "yes" if abs(self.difference) <= tolerance(self.method) else "no"

    @property
    def wall_s(self) -> float | None:
        """The row's training time: the sum of its images' run times (None when none is known)."""
        if self.carried is not None:
            return self.carried.wall_s
        known = [r.wall_s for r in self.results if r.wall_s is not None]
        return sum(known) if known else None

    @property
    def params(self) -> tuple[int | None, int | None]:
        if self.carried is not None:
            return self.carried.params, self.carried.benchmark_params
        first = self.results[0] if self.results else None
        return (first.params, first.benchmark_params) if first else (None, None)


Table = dict[str, list[Row]]  # protocol -> rows, method-major, budgets ascending


def fit_same_images(out: Path, plan: GridsPlan, method: str, budget: int, images: list[int]) -> tuple[float | None,
                                                                                                      int]:
    """ffrun's fit score (the benchmark's rule) of `method` at `budget` on `images`, from the fit runs in `out`
    done with this plan's overrides (absent ones are left out): (mean or None, how many images)."""
    scores = []
    for image in images:
        run = run_of(out, plan, "fit", image, budget, method)
        if run.status() != Status.COMPLETED:
            continue
        res = image_result(run, run.record(), "fit")
        if isinstance(res, ImageResult) and res.score(method) is not None:
            scores.append(res.score(method))
    return _mean(scores), len(scores)


def collect_grids(runs: list[Run], plan: GridsPlan, out: Path, earlier: Earlier | None = None) -> Table:
    """protocol -> a row per method and budget: the runs' results, their notes, and (superres) the fit score on
    the same images. An image with no result in --out takes its earlier result (--results) where there is one;
    a row with no image scored at all takes an earlier table's whole row."""
    earlier = earlier or Earlier.none()
    rows: dict[tuple[str, str, int], Row] = {}
    here: set[tuple[str, str, int]] = set()  # rows with a run in --out
    for p in plan.protocols:
        for m in plan.methods:
            for b in plan.budgets:
                rows[(p, m, b)] = Row(p, m, b)
    for run in runs:
        p = protocol_of(run)
        image, budget = image_budget(run)
        row = rows.setdefault((p, run.encoding, budget), Row(p, run.encoding, budget))
        rec = run.record()
        if rec is not None:
            here.add((p, run.encoding, budget))
        res = image_result(run, rec, p)
        old = earlier.images.get((p, run.encoding, budget, image))
        if rec is None and old is not None:  # not run here; a run here, even a failed one, wins
            res = old
        if isinstance(res, ImageResult):
            row.results.append(res)
        else:
            row.notes.append(f"{tag(image)}: {res}")
    for key, row in rows.items():
        old_row = earlier.whole_row(key, plan.images_of(key[0]), key in here)
        if old_row is not None:
            row.carried, row.notes = old_row, []
    for (p, m, b), row in rows.items():
        if p == "superres" and row.images:
            row.fit_same = fit_same_images(out, plan, m, b, row.images)
    table: Table = {}
    for (p, _, _), row in rows.items():
        table.setdefault(p, []).append(row)
    return table


def _db(x: float | None, signed: bool = False) -> str:
    return "-" if x is None else (f"{x:+.2f}" if signed else f"{x:.2f}")


# The CSV's columns (an empty cell: no value; within_tolerance empty: no verdict, the markdown's `-`).
HEADER = ["protocol", "method", "budget", "images", "ffrun_final", "ffrun_best", "ffrun_score", "scored_by",
          "published", "difference", "within_tolerance", "tolerance", "fit_score_same_images", "fit_images",
          "params", "benchmark_params", "image_list", "wall_s"]


def protocol_table(protocol: str, rows: list[Row], plan: GridsPlan, wall_s: float | None = None
                   ) -> tuple[list[str], list[list[str]]]:
    """One protocol's markdown and CSV rows."""
    superres = protocol == "superres"
    asked = plan.images_of(protocol)
    title = {"fit": "fitting", "superres": "4x super-resolution",
             "denoise": f"denoising (noise std {plan.noise:g})"}[protocol]
    md = [f"# Grids benchmark, DIV2K, {title}: ffrun beside the published numbers", "",
          f"Images {tags(asked) or 'none'} of the benchmark's ten ($FFRUN_DATA/images/{IMAGE_SET}/x4); PSNR (dB) on "
          "the protocol's scored pixels, mean over the images scored. final: the last iterate; best: the best "
          "evaluation (every 100 steps); score: the benchmark's rule (Grid by its final iterate, the INRs by "
          "their best evaluation), compared with the published mean over the ten images "
          f"({SOURCE}). Tolerance: Grid {tolerance('grid')} dB, the others {DEFAULT_TOLERANCE:g} dB; no verdict "
          "(`-`) without a published number or on other than the ten images. run time: the sum of the images' run "
          "times (metrics.json's wall_s).", ""]
    if superres:
        md += [f"Note: {superres_note(plan)} (`fit, same images`).", ""]
    if protocol == "denoise":
        md += ["No published denoising numbers are available here: ffrun alone.", ""]
    if plan.subset:
        md += [f"Images {tags(plan.images)}: a quick look at a subset, not the benchmark's mean.", ""]
    cols = ["method", "budget", "images", "ffrun final", "ffrun best", "ffrun score", "published", "difference",
            "within tolerance", *(["fit, same images"] if superres else []), "params (ffrun / benchmark)",
            "run time"]
    md += [md_row(cols), md_row(["---"] * len(cols))]
    csv_rows = []
    for row in rows:
        ours, theirs = row.params
        fit_mean, fit_n = row.fit_same
        fit_cell = "-" if fit_mean is None else (f"{fit_mean:.2f}" + ("" if fit_n == len(row.images) else
                                                                      f" ({fit_n} of {len(row.images)})"))
        score = "-" if row.score is None else f"{_db(row.score)} ({scored_by(row.method)})"
        md.append(md_row([NAMES.get(row.method, row.method), f"{row.budget:,}", f"{len(row.images)}/{len(asked)}",
                          _db(row.final), _db(row.best), score, _db(row.published), _db(row.difference, signed=True),
                          row.verdict, *([fit_cell] if superres else []), f"{ours or '-'} / {theirs or '-'}",
                          "-" if row.wall_s is None else hms(row.wall_s)]))
        fit = [_csv(fit_mean), str(fit_n)] if superres else ["", ""]
        csv_rows.append([protocol, row.method, str(row.budget), str(len(row.images)), _csv(row.final), _csv(row.best),
                         _csv(row.score), scored_by(row.method), _csv(row.published), _csv(row.difference),
                         "" if row.verdict == "-" else row.verdict, f"{tolerance(row.method):g}", *fit,
                         str(ours or ""), str(theirs or ""), " ".join(tag(i) for i in sorted(row.images)),
                         "" if row.wall_s is None else f"{row.wall_s:.1f}"])
    notes = [f"- {NAMES.get(r.method, r.method)} @ {r.budget:,}: {why}" for r in rows for why in grouped(r.notes)]
    if notes:
        md += ["", "Runs without a score:", *notes]
    sources = [f"- {NAMES.get(r.method, r.method)} @ {r.budget:,}: {src}" for r in rows for src in r.sources]
    if sources:
        md += ["", "Results of earlier runs (--results), not run in this folder:", *sources]
    if wall_s is not None:
        md += ["", f"Wall time of this invocation: {hms(wall_s)}."]
    return md + [""], csv_rows


def grouped(notes: list[str]) -> list[str]:
    """`NN: why` notes with the same reason as one line, `00, 06: why`."""
    by: dict[str, list[str]] = {}
    for note in notes:
        image, why = note.split(": ", 1)
        by.setdefault(why, []).append(image)
    return [f"{', '.join(images)}: {why}" for why, images in by.items()]


def _csv(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def write_grids_tables(out: Path, table: Table, plan: GridsPlan, wall_s: float | None = None) -> str:
    """grids_<protocol>.md and .csv, and grids_<protocol>_images.csv (every image's result, what --results reads
    back), for every protocol; returns the markdown of all of them."""
    texts = []
    for protocol in plan.protocols:
        rows = table.get(protocol, [])
        md, csv_rows = protocol_table(protocol, rows, plan, wall_s)
        texts.append(write_table(out, f"grids_{protocol}", HEADER, csv_rows, md))
        write_text(out / f"grids_{protocol}_images.csv",
                   csv_text(IMAGE_HEADER, image_lines({protocol: rows}, plan.noise, plan.extra)))
    return "\n".join(texts)


