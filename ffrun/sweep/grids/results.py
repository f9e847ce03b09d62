"""Earlier results: the per-image file every report writes (`grids_<protocol>_images.csv`: one line per run
scored) and reading it, or an earlier table (`grids_<protocol>.csv`), back with `--results`, so one table can
be assembled from runs made in several sittings or on several machines. A run in --out always wins over an
earlier result; the table says which cells came from which file."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from ffrun.sweep.grids.published import IMAGES, PROTOCOLS, scored_by, tag
from ffrun.util.errors import FfrunError

# One line per scored run (an empty cell: no value).
IMAGE_HEADER = ["protocol", "method", "budget", "image", "noise", "final", "best", "params", "benchmark_params",
                "wall_s", "overrides"]
# The columns of grids_<protocol>.csv that a whole earlier row is taken from.
TABLE_COLUMNS = {"protocol", "method", "budget", "images", "ffrun_final", "ffrun_best", "image_list", "params",
                 "benchmark_params"}


@dataclass
class ImageResult:
    """One image's result: a run's in --out, or an earlier per-image file's (`source`)."""

    image: int
    final: float | None
    best: float | None
    params: int | None = None
    benchmark_params: int | None = None
    wall_s: float | None = None
    source: str | None = None  # the earlier results file it came from (--results); None: a run in --out

    def score(self, method: str) -> float | None:
        return self.final if scored_by(method) == "final" else self.best


@dataclass(frozen=True)
class EarlierRow:
    """A whole row from an earlier table: only its means over `images` are known."""

    final: float | None
    best: float | None
    images: tuple[int, ...]
    params: int | None
    benchmark_params: int | None
    wall_s: float | None
    source: str


@dataclass
class Earlier:
    """Every earlier result given, keyed by (protocol, method, budget[, image])."""

    images: dict[tuple[str, str, int, int], ImageResult]
    rows: dict[tuple[str, str, int], EarlierRow]

    @classmethod
    def none(cls) -> "Earlier":
        return cls({}, {})

    def whole_row(self, key: tuple[str, str, int], asked: tuple[int, ...], here: bool) -> EarlierRow | None:
        """The earlier table's row standing for `key` (protocol, method, budget), or None: only where none of
        the row's runs is in --out (`here`), no earlier image of it was given, and its images were asked for.
        The table (collect_grids) and the runs left to train (to_run) both take rows by this rule."""
        row = self.rows.get(key)
        if row is None or here or any(k[:3] == key for k in self.images) or not set(row.images) <= set(asked):
            return None
        return row


def _float(text: str, where: str) -> float | None:
    if text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise FfrunError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise FfrunError(f"{where}: {text!r} is not a finite number")
    return value


def _int(text: str, where: str) -> int | None:
    value = _float(text, where)
    if value is None:
        return None
    if value != int(value):
        raise FfrunError(f"{where}: {text!r} is not a whole number")
    return int(value)


def load_earlier(paths: list[Path], noise: float, overrides: tuple[str, ...]) -> Earlier:
    """The results of earlier per-image files and tables made with the same denoising noise and overrides (other
    lines are skipped: they measured something else). A malformed file raises FfrunError naming the file and
    line. The first file given wins where two hold the same cell."""
    earlier = Earlier.none()
    for path in paths:
        try:
            with open(path, newline="") as f:
                lines = list(csv.DictReader(f))
                header = set(lines[0]) if lines else set()
        except FileNotFoundError:
            raise FfrunError(f"--results {path}: no such file") from None
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise FfrunError(f"--results {path}: cannot be read as CSV ({e})") from None
        if set(IMAGE_HEADER) <= header:
            _per_image(path, lines, noise, overrides, earlier)
        elif TABLE_COLUMNS <= header:
            _table(path, lines, overrides, earlier)
        elif lines:
            raise FfrunError(f"--results {path}: neither a grids_<protocol>_images.csv nor a grids_<protocol>.csv "
                             f"written by ffrun-compare --benchmark grids (columns {', '.join(sorted(header))})")
    return earlier


def _key(row: dict, where: str) -> tuple[str, str, int]:
    protocol, method = row["protocol"], row["method"]
    if protocol not in PROTOCOLS:
        raise FfrunError(f"{where}: protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    budget = _int(row["budget"], f"{where} budget")
    if budget is None or budget < 1:
        raise FfrunError(f"{where}: budget {row['budget']!r} is not a parameter count")
    return protocol, method, budget


def _per_image(path: Path, lines: list[dict], noise: float, overrides: tuple[str, ...], earlier: Earlier) -> None:
    wanted = " ".join(overrides)
    for n, row in enumerate(lines, start=2):
        where = f"--results {path} line {n}"
        protocol, method, budget = _key(row, where)
        image = _int(row["image"], f"{where} image")
        if image not in IMAGES:
            raise FfrunError(f"{where}: image {row['image']!r} is not one of the benchmark's 0..9")
        if row["overrides"].strip() != wanted:
            continue
        if protocol == "denoise" and _float(row["noise"], f"{where} noise") != noise:
            continue
        found = ImageResult(image, _float(row["final"], f"{where} final"), _float(row["best"], f"{where} best"),
                             _int(row["params"], f"{where} params"),
                             _int(row["benchmark_params"], f"{where} benchmark_params"),
                             _float(row["wall_s"], f"{where} wall_s"), path.name)
        earlier.images.setdefault((protocol, method, budget, image), found)


def _table(path: Path, lines: list[dict], overrides: tuple[str, ...], earlier: Earlier) -> None:
    if overrides:  # a table does not record the overrides it was made with
        return
    for n, row in enumerate(lines, start=2):
        where = f"--results {path} line {n}"
        protocol, method, budget = _key(row, where)
        if protocol == "denoise" or not row["image_list"].strip():  # no noise level recorded; a row not run
            continue
        try:
            images = tuple(int(t) for t in row["image_list"].split())
        except ValueError:
            raise FfrunError(f"{where}: image_list {row['image_list']!r} is not image numbers") from None
        if not set(images) <= set(IMAGES) or _int(row["images"], f"{where} images") != len(images):
            raise FfrunError(f"{where}: image_list {row['image_list']!r} does not match images {row['images']!r}")
        found = EarlierRow(_float(row["ffrun_final"], f"{where} ffrun_final"),
                           _float(row["ffrun_best"], f"{where} ffrun_best"), images,
                           _int(row["params"], f"{where} params"),
                           _int(row["benchmark_params"], f"{where} benchmark_params"),
                           _float(row.get("wall_s") or "", f"{where} wall_s"), path.name)
        earlier.rows.setdefault((protocol, method, budget), found)


def to_run(runs: list, earlier: Earlier, plan) -> list:
    """The runs an invocation still has to train: those with no record in --out and no earlier result (an
    earlier image, or an earlier table's whole row: Earlier.whole_row, as the table takes them)."""
    from ffrun.sweep.grids.plans import image_budget, protocol_of

    def key(run) -> tuple[str, str, int]:
        return protocol_of(run), run.encoding, image_budget(run)[1]

    recorded = [(run, run.record() is not None) for run in runs]
    rows_here = {key(run) for run, here in recorded if here}
    todo = []
    for run, here in recorded:
        k, image = key(run), image_budget(run)[0]
        row = earlier.whole_row(k, plan.images_of(k[0]), k in rows_here)
        if here or not ((*k, image) in earlier.images or (row is not None and image in row.images)):
            todo.append(run)
    return todo


def image_lines(table: dict, noise: float, overrides: tuple[str, ...]) -> list[list[str]]:
    """grids_<protocol>_images.csv's lines: every image result of the table's rows (runs and earlier images)."""
    def cell(x) -> str:
        return "" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x))

    out = []
    for protocol, rows in table.items():
        for row in rows:
            for r in sorted(row.results, key=lambda r: r.image):
                out.append([protocol, row.method, str(row.budget), tag(r.image),
                            f"{noise:g}" if protocol == "denoise" else "", cell(r.final), cell(r.best),
                            cell(r.params), cell(r.benchmark_params),
                            "" if r.wall_s is None else f"{r.wall_s:.1f}", " ".join(overrides)])
    return out
