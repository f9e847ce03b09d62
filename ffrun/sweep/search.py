"""The authors' sigma search (`ffrun-reproduce --tune`), on the tuning images of the image and text sets.

The authors chose sigma by a grid search on separate tuning images (their notebook, the paper's protocol
(docs/protocol.md): the Gaussian encoding trained on the even pixels of each tuning image, scored on its odd pixels,
averaged over the images; the best mean wins). `--tune` runs that search with the preset's protocol at the
scale: sigma = the density rule's (the paper's sigma x resolution / 512) x 2^(k/2), k in TUNE_STEPS,
on the first TUNE_IMAGES[scale] tuning images of the set (all at the paper scale), plus one sigma=auto
run per tuning image, scored against the same search. It never trains on or scores a test image.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from ffrun.sweep.commands import multirun_command
from ffrun.sweep.execute import run_ffrun
from ffrun.sweep.paper import PAPER_SIGMA
from ffrun.sweep.plans import IMAGE_SETS, TaskPlan, job_overrides, resolution, set_indices, set_items
from ffrun.sweep.runs import Run
from ffrun.sweep.tables import format_metric, mean_std, write_table

TUNE_STEPS = {"smoke": (-2, 2), "cpu": (-2, 0, 2), "paper": (-2, -1, 0, 1, 2)}  # cpu: an octave apart (2-core budget)
TUNE_IMAGES = {"smoke": 1, "cpu": 2, "paper": None}
# A sigma whose mean is within this of the search's best ties with it: a second seed moves one run by about
# 0.2 dB (docs/sigma_auto.md), so a smaller difference does not tell two sigmas apart.
TUNE_TIE_DB = 0.3


def tune_plan(task: str, scale: str, data: Path, plan: TaskPlan, extra: list[str]) -> tuple[TaskPlan, list[str], str]:
    """The tuning runs of one task: (a plan over the tuning images, the sigma labels, the rule's label)."""
    name = IMAGE_SETS[task]
    indices = set_indices(data, name, "tuning")[: TUNE_IMAGES[scale]]
    rule = PAPER_SIGMA[task] * resolution([*plan.overrides, *extra]) / 512
    sigmas = [f"{float(f'{rule * 2 ** (k / 2):.3g}')}" for k in TUNE_STEPS[scale]]
    return (TaskPlan(plan.preset, plan.overrides, set_items(name, indices, "tuning"), ("gauss",)),
            [*sigmas, "auto"], f"{float(f'{rule:.3g}')}")


def tune_note(task: str, plan: TaskPlan, extra: list[str]) -> str:
    """The report's data line for a task: which tuning images, at what size."""
    name = IMAGE_SETS[task]
    return (f"{name} tuning images {', '.join(f'{name}:tuning/{i[-2:]}' for i in plan.items)} at "
            f"{resolution([*plan.overrides, *extra])} px")


def tune_runs(task: str, plan: TaskPlan, sigmas: list[str], out: Path, extra: list[str]) -> list[Run]:
    """One run per tuning image and sigma, in out/tune/<task>/<item>/sigma_<sigma>."""
    return [Run(task, item, s, out / "tune" / task / item / f"sigma_{s}",
                [*job_overrides(plan, item, "gauss", extra), f"sigma={s}"]) for item in plan.items for s in sigmas]


def launch_tune(task: str, plan: TaskPlan, item: str, sigmas: list[str], sweep_dir: Path, launcher: str,
                extra: list[str]) -> int:
    """One Hydra multirun of the Gaussian encoding over `sigmas` for one tuning image; each in sigma_<value>."""
    overrides = [f"experiment={plan.preset}", "encoding=gauss", f"sigma={','.join(sigmas)}",
                 *plan.overrides, *plan.items[item], *extra]
    return run_ffrun(multirun_command(overrides, sweep_dir, "sigma_${sigma}", launcher), f"tuning {task} [{item}]")


def tuning_psnr(run: Run) -> float | None:
    rec = run.record()
    return rec.metric("test_psnr") if rec is not None and rec.succeeded("test_psnr") else None


@dataclass
class TaskSearch:
    """One task's search, read back: the grid, the tuning images, every run's test PSNR and the grid means."""

    task: str
    runs: list[Run]
    items: list[str]
    grid: list[str]
    psnr: dict[tuple[str, str], float | None]
    means: dict[str, tuple[float, float]]

    @classmethod
    def read(cls, task: str, runs: list[Run]) -> "TaskSearch":
        mine = [r for r in runs if r.task == task]
        items = list(dict.fromkeys(r.item for r in mine))
        grid = [r.encoding for r in mine if r.encoding != "auto" and r.item == items[0]]
        psnr = {(r.item, r.encoding): tuning_psnr(r) for r in mine}
        means = {}
        for s in grid:
            vals = [psnr[(i, s)] for i in items if psnr[(i, s)] is not None]
            if vals:
                means[s] = mean_std(vals)
        return cls(task, mine, items, grid, psnr, means)

    def n(self, sigma: str) -> int:
        return sum(self.psnr[(i, sigma)] is not None for i in self.items)


def grid_section(s: TaskSearch, rule: str, note: str, csv_rows: list[list[str]]) -> list[str]:
    """The mean test PSNR of every sigma over the tuning images (a CSV row each, added to `csv_rows`)."""
    md = [f"## {s.task}: {note}", "", "| sigma | mean test_psnr | std | n |", "| --- | --- | --- | --- |"]
    for sigma in s.grid:
        mean, std = s.means.get(sigma, (None, None))
        rule_mark = " (the density rule)" if sigma == rule else ""
        md.append(f"| {sigma}{rule_mark} | {format_metric(mean, 'psnr')} | {format_metric(std, 'psnr')} | "
                  f"{s.n(sigma)} |")
        csv_rows.append([s.task, sigma, format_metric(mean, "psnr"), format_metric(std, "psnr"), str(s.n(sigma)),
                         note])
    return md


def agreement(s: TaskSearch, chosen: str, rule: str) -> str:
    """Whether the search's sigma is the density rule's, and when not, how far and how much better."""
    if chosen == rule:
        return f"the search chose {chosen}, the density rule's sigma: they agree"
    steps = round(2 * math.log2(float(chosen) / float(rule)))
    gap = s.means[chosen][0] - s.means[rule][0] if rule in s.means else None
    agree = (f"the search chose {chosen}, {abs(steps) / 2:g} octave{'' if abs(steps) == 2 else 's'} "
             f"{'above' if steps > 0 else 'below'} the density rule's {rule}")
    if gap is None:
        return agree + ", which is not on this grid"
    return agree + (f", whose mean is {gap:.2f} dB lower: " + (
        f"a tie within {TUNE_TIE_DB} dB (the rule's sigma is as good as the search's)"
        if gap < TUNE_TIE_DB else "they disagree"))


def auto_rows(s: TaskSearch, chosen: str) -> list[tuple]:
    """Per tuning image with a sigma=auto result: (image, auto's sigma, its PSNR, the image's grid best and
    its sigma, the PSNR at the search's sigma)."""
    rows = []
    for i in s.items:
        run = next((r for r in s.runs if r.item == i and r.encoding == "auto"), None)
        got = s.psnr.get((i, "auto"))
        row_best = [(s.psnr[(i, g)], g) for g in s.grid if s.psnr.get((i, g)) is not None]
        if run is None or got is None or not row_best:
            continue
        best, best_s = max(row_best)
        rec = run.record()
        rows.append((i, rec.sigma if rec is not None else None, got, best, best_s, s.psnr.get((i, chosen))))
    return rows


def auto_section(task: str, rows: list[tuple], chosen: str, note: str, csv_rows: list[list[str]]) -> list[str]:
    """sigma=auto against each image's grid best and against the search's sigma."""
    md = ["", "sigma=auto on the same tuning images (chosen from each image's training pixels alone):", "",
          "| tuning image | auto's sigma | auto | the image's grid best (sigma) | the search's sigma | "
          "auto - grid best | auto - search |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for i, picked, got, best, best_s, at_chosen in rows:
        vs_search = f"{got - at_chosen:+.2f}" if at_chosen is not None else "-"
        md.append(f"| {i} | {picked:.3g} | {got:.2f} | {best:.2f} ({best_s}) | "
                  f"{format_metric(at_chosen, 'psnr')} ({chosen}) | {got - best:+.2f} | {vs_search} |")
    gaps = [got - best for _, _, got, best, _, _ in rows]
    vs = [got - c for _, _, got, _, _, c in rows if c is not None]
    md += ["", f"- {task}: sigma=auto is {statistics.fmean(gaps):+.2f} dB from each image's grid best on "
           f"average (worst {min(gaps):+.2f}) and {statistics.fmean(vs):+.2f} dB from the search's sigma."
           if vs else ""]
    for i, picked, got, *_ in rows:
        csv_rows.append([task, f"auto[{i}]={picked:.4g}", f"{got:.2f}", "", "1", note])
    return md


def tune_report(out: Path, runs: list[Run], rules: dict[str, str], scale: str, notes: dict[str, str]) -> str:
    """tune.md and tune.csv: per set, the mean test PSNR of every sigma over the tuning images, the
    search's choice against the density rule's sigma, and sigma=auto against the search, image by image."""
    md = [f"# The authors' sigma search on their tuning images (scale `{scale}`)", "",
          "The Gaussian encoding trained on the even pixels of each tuning image and scored on its odd "
          "pixels (test_psnr, dB), averaged over the tuning images; the best mean is the search's sigma "
          "(the authors' notebook). The test images are never used. The grid is the density rule's sigma "
          "(the paper's 10 natural / 14 text at 512 px, x resolution / 512) x 2^(k/2).", ""]
    csv_rows: list[list[str]] = []
    for task in dict.fromkeys(r.task for r in runs):
        s = TaskSearch.read(task, runs)
        md += grid_section(s, rules[task], notes[task], csv_rows)
        if not s.means:
            md += ["", "No completed tuning run.", ""]
            continue
        chosen = max(s.means, key=lambda g: s.means[g][0])
        md += ["", f"- {task}: {agreement(s, chosen, rules[task])}."]
        rows = auto_rows(s, chosen)
        if rows:
            md += auto_section(task, rows, chosen, notes[task], csv_rows)
        md.append("")
    return write_table(out, "tune", ["task", "sigma", "test_psnr", "std", "n", "data"], csv_rows, md)
