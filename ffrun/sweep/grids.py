"""The DIV2K table of "Grids Often Outperform Implicit Neural Representations" (NeurIPS 2025, benchmark code
voilalab/INR-benchmark) as a sweep (`ffrun-compare --benchmark grids`): the plan (which runs, with which
overrides, where), launching them, and the table of ffrun beside the published numbers.

Every run is one ffrun job of the `grids_div2k` experiment with a `grids/<method>` preset, on one of the
benchmark's ten DIV2K x4 images, at one parameter budget and one protocol (fit, 4x super-resolution or
denoising). The benchmark scores Grid by its final iterate and every INR by its best evaluation (every 100
steps); the table's score column follows that rule and shows both.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ffrun.run.record import RunRecord, Status
from ffrun.sweep.commands import multirun_command
from ffrun.sweep.execute import SIGNALLED, run_ffrun
from ffrun.sweep.gallery import gallery
from ffrun.sweep.runs import Run, shown_status
from ffrun.sweep.tables import hms, md_row, write_table
from ffrun.util.atomic import save_figure

BENCHMARKS = ("grids",)
EXPERIMENT = "grids_div2k"
IMAGE_SET = "div2k_grids"  # $FFRUN_DATA/images/div2k_grids/{x4,hr}/NN.png
METHODS = ("grid", "siren", "wire", "ffn", "ingp")  # configs/method/grids/<method>.yaml
NAMES = {"grid": "Grid", "siren": "SIREN", "wire": "WIRE", "ffn": "FFN", "ingp": "Instant-NGP"}
PROTOCOLS = ("fit", "superres", "denoise")
IMAGES = tuple(range(10))
# The four images whose 2040x1356 originals (hr/NN.png) the benchmark's repository carries: 4x super-resolution
# is scored against them, so it runs on these alone.
ORIGINALS = (0, 6, 7, 9)
DEFAULT_BUDGETS = (10_000, 30_000, 100_000)
DEFAULT_NOISE = 0.05  # the benchmark's denoising levels are 0.05 and 0.1
METRIC = "test_psnr"
# How the benchmark scores a run: Grid by its final iterate, every INR by its best evaluation.
FINAL_SCORED = ("grid",)
# How far ffrun's mean over the ten images may land from the published one: Grid has no randomness.
TOLERANCE = {"grid": 0.15}
DEFAULT_TOLERANCE = 1.0

# The published numbers: PSNR (dB), mean over the ten images, at each parameter budget. Source: the paper's
# DIV2K table, as listed in the data README ($FFRUN_DATA/README.md, images/div2k_grids). No denoising
# numbers are available here: that table shows ffrun alone.
PUBLISHED_BUDGETS = (10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000)
_FIT = {"grid": (21.92, 24.06, 27.29, 33.01, 149.73, 156.53),
        "siren": (21.98, 23.93, 22.05, 20.35, 15.87, 11.22),
        "wire": (21.58, 24.08, 27.67, 31.62, 36.09, 39.06),
        "ffn": (15.99, 22.00, 28.88, 35.95, 44.08, 48.26),
        "ingp": (15.71, 20.18, 24.73, 32.42, 39.21, 63.21)}
_SUPERRES = {"grid": (19.70, 20.85, 21.85, 22.37, 22.46, 22.05),
             "siren": (19.74, 20.78, 18.75, 16.97, 13.92, 9.95),
             "wire": (19.45, 20.76, 21.89, 22.41, 22.54, 22.61),
             "ffn": (15.16, 19.51, 21.98, 22.51, 22.72, 22.78),
             "ingp": (14.39, 17.77, 17.71, 14.03, 12.91, 12.29)}
PUBLISHED: dict[str, dict[str, dict[int, float]]] = {
    protocol: {m: dict(zip(PUBLISHED_BUDGETS, values)) for m, values in table.items()}
    for protocol, table in (("fit", _FIT), ("superres", _SUPERRES), ("denoise", {}))}
SOURCE = ("the DIV2K table of \"Grids Often Outperform Implicit Neural Representations\" (NeurIPS 2025, "
          "voilalab/INR-benchmark), as listed in the data README")


def published(protocol: str, method: str, budget: int) -> float | None:
    return PUBLISHED.get(protocol, {}).get(method, {}).get(budget)


def tolerance(method: str) -> float:
    return TOLERANCE.get(method, DEFAULT_TOLERANCE)


def scored_by(method: str) -> str:
    """`final` (the last iterate: Grid) or `best` (the best evaluation: the INRs), as the benchmark scores."""
    return "final" if method in FINAL_SCORED else "best"


def tag(image: int) -> str:
    return f"{image:02d}"


# ---- the plan -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridsPlan:
    """What one invocation runs: protocols x images x budgets x methods, the noise level of denoising and the
    user's overrides for every run."""

    protocols: tuple[str, ...] = ("fit",)
    methods: tuple[str, ...] = METHODS
    images: tuple[int, ...] = IMAGES  # as asked; superres keeps those with originals
    budgets: tuple[int, ...] = DEFAULT_BUDGETS
    noise: float = DEFAULT_NOISE
    extra: tuple[str, ...] = field(default_factory=tuple)

    def images_of(self, protocol: str) -> tuple[int, ...]:
        return tuple(i for i in self.images if i in ORIGINALS) if protocol == "superres" else self.images

    @property
    def subset(self) -> bool:
        """Whether fewer than the benchmark's ten images were asked for (a quick look: no verdict)."""
        return set(self.images) != set(IMAGES)


def run_overrides(protocol: str, image: int, method: str, budget: int, noise: float, extra: list[str] | tuple = ()
                  ) -> list[str]:
    """One job's overrides (`method` may be a comma-separated sweep of methods)."""
    methods = ",".join(f"grids/{m}" for m in method.split(","))
    out = [f"experiment={EXPERIMENT}", f"method={methods}", f"task.image={IMAGE_SET}:x4/{tag(image)}",
           f"task.protocol={protocol}", f"model.params={budget}", "trainer.progress=false"]
    if protocol == "superres":
        out.append(f"task.reference={IMAGE_SET}:hr/{tag(image)}")
    if protocol == "denoise":
        out.append(f"task.noise_std={noise:g}")
    return [*out, *extra]


def sweep_dir(out: Path, protocol: str, image: int, budget: int) -> Path:
    return out / "runs" / "grids" / protocol / f"{tag(image)}@{budget}"


def run_of(out: Path, plan: GridsPlan, protocol: str, image: int, budget: int, method: str) -> Run:
    """The run of one protocol, image, budget and method, in out/runs/grids/<protocol>/<NN>@<budget>/<method>."""
    return Run(f"grids/{protocol}", f"{tag(image)}@{budget}", method, sweep_dir(out, protocol, image, budget) / method,
               run_overrides(protocol, image, method, budget, plan.noise, plan.extra))


def grids_runs(plan: GridsPlan, out: Path) -> list[Run]:
    """Every protocol x image x budget x method of the plan (superres on the images with originals alone)."""
    return [run_of(out, plan, p, i, b, m) for p in plan.protocols for i in plan.images_of(p) for b in plan.budgets
            for m in plan.methods]


def protocol_of(run: Run) -> str:
    return run.task.split("/", 1)[1]


def image_budget(run: Run) -> tuple[int, int]:
    image, budget = run.item.split("@", 1)
    return int(image), int(budget)


def launch_grids(plan: GridsPlan, protocol: str, image: int, budget: int, methods: list[str], where: Path,
                 launcher: str) -> int:
    """The runs of one protocol, image and budget, each `ffrun -m` into where/<method>.

    One process per method: Hydra names a multirun's job folder by an interpolation, and the method's choice
    (`grids/siren`) would nest the folder as where/grids/siren. Every preset sets its own learning rate."""
    code = 0
    for method in methods:
        args = multirun_command(run_overrides(protocol, image, method, budget, plan.noise, plan.extra), where,
                                method, launcher)
        code = run_ffrun(args, f"grids {protocol}/{method} [{tag(image)}, {budget} parameters]") or code
        if code in SIGNALLED:
            return code
    return code


def missing_data(plan: GridsPlan, data: Path) -> list[Path]:
    """The benchmark's image files the plan needs and the data directory lacks."""
    folder = data / "images" / IMAGE_SET
    need = [folder / "x4" / f"{tag(i)}.png" for i in dict.fromkeys(i for p in plan.protocols
                                                                    for i in plan.images_of(p))]
    if "superres" in plan.protocols:
        need += [folder / "hr" / f"{tag(i)}.png" for i in plan.images_of("superres")]
    return [p for p in need if not p.is_file()]


# Keys the benchmark sets on every run itself: a user's override of one would change what the table means.
OWN_KEYS = ("experiment", "method", "model.params", "model.name", "task", "task.name", "task.image", "task.protocol",
            "task.reference", "task.noise_std")


def own_key(extra: list[str] | tuple) -> str | None:
    """The first override that sets a key the benchmark sets itself, or None."""
    return next((o for o in extra if o.split("=", 1)[0].lstrip("+~") in OWN_KEYS), None)


def check_composes(plan: GridsPlan) -> str | None:
    """Why the plan's jobs cannot run, as one line, or None: each protocol's first job composes (the presets
    exist, the overrides fit them) and passes ffrun's range checks, before anything runs."""
    from ffrun.config import validate
    from ffrun.run.compose import compose

    for p in plan.protocols:
        images = plan.images_of(p)
        if not images:
            continue
        overrides = run_overrides(p, images[0], plan.methods[0], plan.budgets[0], plan.noise, plan.extra)
        try:
            validate(compose(overrides))
        except Exception as e:
            why = " ".join(str(e).split())[:300]
            if plan.extra:
                return f"overrides {' '.join(plan.extra)!r} do not fit the grids {p} runs: {why}"
            return f"the grids {p} runs do not compose ({' '.join(overrides[:5])}): {why}"
    return None


def superres_note(plan: GridsPlan) -> str:
    kept = plan.images_of("superres")
    return (f"superres runs only on the images whose originals the benchmark carries ({_list(ORIGINALS)}): here "
            f"{_list(kept) or 'none'}; the published superres mean covers all ten images, so no verdict is given "
            "and ffrun's fit score on the same images stands beside it")


def plan_summary(plan: GridsPlan) -> list[str]:
    """What the invocation runs, a line per protocol (said before the runs start)."""
    lines = []
    for p in plan.protocols:
        images = plan.images_of(p)
        what = f" (noise std {plan.noise:g})" if p == "denoise" else ""
        lines.append(f"grids {p}{what}: images {_list(images)} x budgets {', '.join(f'{b:,}' for b in plan.budgets)}"
                     f" x {', '.join(plan.methods)} = {len(images) * len(plan.budgets) * len(plan.methods)} runs")
    if "superres" in plan.protocols:
        lines.append(superres_note(plan))
    if plan.subset:
        lines.append(f"images {_list(plan.images)}: a quick look at a subset of the ten; the table gives no verdict")
    return lines


def _list(images) -> str:
    return ", ".join(tag(i) for i in images)


# ---- the results ----------------------------------------------------------------------------------------
def _finite(x) -> float | None:
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


@dataclass
class ImageResult:
    image: int
    final: float | None
    best: float | None
    params: int | None = None
    benchmark_params: int | None = None

    def score(self, method: str) -> float | None:
        return self.final if scored_by(method) == "final" else self.best


def image_result(run: Run, rec: RunRecord | None, protocol: str) -> ImageResult | str:
    """One finished run's final and best PSNR, or why it holds none (a line for the table's notes)."""
    image = image_budget(run)[0]
    if rec is None or not rec.succeeded(METRIC):
        reason = rec.get("reason") if rec is not None else None
        return f"{shown_status(rec)}" + (f": {str(reason)[:160]}" if reason else "")
    recorded = rec.get("protocol")
    if recorded is not None and recorded != protocol:
        return f"recorded protocol {recorded!r}, not {protocol!r}"
    best = rec.get("best")
    sizes = rec.sizes if isinstance(rec.sizes, dict) else {}
    res = ImageResult(image, rec.metric(METRIC), _finite(best.get(METRIC)) if isinstance(best, dict) else None,
                      rec.params, sizes.get("benchmark_params"))
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

    @property
    def images(self) -> list[int]:
        return [r.image for r in self.results]

    @property
    def final(self) -> float | None:
        return _mean([r.final for r in self.results if r.final is not None])

    @property
    def best(self) -> float | None:
        return _mean([r.best for r in self.results if r.best is not None])

    @property
    def score(self) -> float | None:
        return _mean([s for r in self.results if (s := r.score(self.method)) is not None])

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
    def params(self) -> tuple[int | None, int | None]:
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


def collect_grids(runs: list[Run], plan: GridsPlan, out: Path) -> Table:
    """protocol -> a row per method and budget: the runs' results, their notes, and (superres) the fit score on
    the same images."""
    rows: dict[tuple[str, str, int], Row] = {}
    for p in plan.protocols:
        for m in plan.methods:
            for b in plan.budgets:
                rows[(p, m, b)] = Row(p, m, b)
    for run in runs:
        p = protocol_of(run)
        image, budget = image_budget(run)
        row = rows.setdefault((p, run.encoding, budget), Row(p, run.encoding, budget))
        res = image_result(run, run.record(), p)
        if isinstance(res, ImageResult):
            row.results.append(res)
        else:
            row.notes.append(f"{tag(image)}: {res}")
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
          "params", "benchmark_params", "image_list"]


def protocol_table(protocol: str, rows: list[Row], plan: GridsPlan, wall_s: float | None = None
                   ) -> tuple[list[str], list[list[str]]]:
    """One protocol's markdown and CSV rows."""
    superres = protocol == "superres"
    asked = plan.images_of(protocol)
    title = {"fit": "fitting", "superres": "4x super-resolution",
             "denoise": f"denoising (noise std {plan.noise:g})"}[protocol]
    md = [f"# Grids benchmark, DIV2K, {title}: ffrun beside the published numbers", "",
          f"Images {_list(asked) or 'none'} of the benchmark's ten ($FFRUN_DATA/images/{IMAGE_SET}/x4); PSNR (dB) on "
          "the protocol's scored pixels, mean over the images scored. final: the last iterate; best: the best "
          "evaluation (every 100 steps); score: the benchmark's rule (Grid by its final iterate, the INRs by "
          "their best evaluation), compared with the published mean over the ten images "
          f"({SOURCE}). Tolerance: Grid {tolerance('grid')} dB, the others {DEFAULT_TOLERANCE:g} dB; no verdict "
          "(`-`) without a published number or on other than the ten images.", ""]
    if superres:
        md += [f"Note: {superres_note(plan)} (`fit, same images`).", ""]
    if protocol == "denoise":
        md += ["No published denoising numbers are available here: ffrun alone.", ""]
    if plan.subset:
        md += [f"Images {_list(plan.images)}: a quick look at a subset, not the benchmark's mean.", ""]
    cols = ["method", "budget", "images", "ffrun final", "ffrun best", "ffrun score", "published", "difference",
            "within tolerance", *(["fit, same images"] if superres else []), "params (ffrun / benchmark)"]
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
                          row.verdict, *([fit_cell] if superres else []), f"{ours or '-'} / {theirs or '-'}"]))
        fit = [_csv(fit_mean), str(fit_n)] if superres else ["", ""]
        csv_rows.append([protocol, row.method, str(row.budget), str(len(row.images)), _csv(row.final), _csv(row.best),
                         _csv(row.score), scored_by(row.method), _csv(row.published), _csv(row.difference),
                         "" if row.verdict == "-" else row.verdict, f"{tolerance(row.method):g}", *fit,
                         str(ours or ""), str(theirs or ""), " ".join(tag(i) for i in sorted(row.images))])
    notes = [f"- {NAMES.get(r.method, r.method)} @ {r.budget:,}: {why}" for r in rows for why in grouped(r.notes)]
    if notes:
        md += ["", "Runs without a score:", *notes]
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
    """grids_<protocol>.md and .csv for every protocol; returns the markdown of all of them."""
    texts = []
    for protocol in plan.protocols:
        md, csv_rows = protocol_table(protocol, table.get(protocol, []), plan, wall_s)
        texts.append(write_table(out, f"grids_{protocol}", HEADER, csv_rows, md))
    return "\n".join(texts)


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


def report(out: Path, plan: GridsPlan, runs: list[Run], wall_s: float | None = None) -> str:
    """The tables, budget plots and galleries of the plan's runs; returns the tables' markdown."""
    table = collect_grids(runs, plan, out)
    text = write_grids_tables(out, table, plan, wall_s)
    for protocol in plan.protocols:
        budget_plot(out, protocol, table.get(protocol, []))
    galleries(out, plan, runs)
    return text
