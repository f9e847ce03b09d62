"""`ffrun-summary DIR`: every metrics.json under DIR -> a table (Markdown and CSV) and plots vs sigma.

Runs that differ only in seed or image (`task.image`) share a setting and are reported as
mean +- std (population std, as the authors' notebooks) with their count n. Columns beyond task,
encoding and sigma appear only for config keys that actually vary across the runs (e.g. a swept lr).

Writes, into DIR (or --out): summary.md, summary.csv (one row per setting), runs.csv (one row per run),
and summary_<metric>.png (each metric against sigma, one line per encoding; encodings without a sigma
are drawn as horizontal lines).

The metrics.json files may come from anywhere: a file that is not a run record is skipped with a
warning, a null metric (what ffrun writes for nan or inf) is left out of its mean, and a metric name
becomes a file name only through `safe_filename`, so no name writes outside the output folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ffrun.config import flatten
from ffrun.run.record import RECORD, NotARecord, RunRecord, Status
from ffrun.util.atomic import csv_text, save_figure, write_text
from ffrun.util.errors import FfrunError

# Keys that never define a setting: seeds and images are what a setting is averaged over.
AVERAGED_KEYS = {"seed", "task.image", "task.data_seed"}
# Keys that do not change the result.
IGNORED_KEYS = {"device", "trainer.progress", "trainer.eval_every"}
# Encoding parameters that only mean something for some encodings.
ENCODING_ONLY = {"sigma": "gauss", "encoding.sigma": "gauss", "encoding.scale": "posenc"}
# One plot per metric: a file naming thousands of metrics must not produce thousands of files.
MAX_PLOTS = 64
MAX_NAME = 80


def safe_filename(name: str) -> str:
    """`name` as one harmless file-name component: letters, digits and `._+-` kept, anything else
    (path separators, `..`, NUL, spaces) replaced by `_`, at most MAX_NAME characters. A name that had
    to change gets a short hash of the original, so two different names never share a file."""
    clean = re.sub(r"[^A-Za-z0-9._+-]+|\.\.+", "_", name).strip("._-")[:MAX_NAME] or "metric"
    if clean != name:
        clean += "-" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return clean


def no_row(rec: RunRecord) -> str | None:
    """Why a record that counts as completed has nothing to put in a row (`{}`, or a status alone), or None.
    A run that did not complete is listed by its status and reason, whatever else its record holds."""
    if rec.status not in (None, Status.COMPLETED):
        return None
    missing = [k for k in ("task", "encoding") if rec.get(k) is None] + ([] if rec.metrics else ["metrics"])
    if not missing:
        return None
    return "it has no " + (", ".join(missing[:-1]) + " or " + missing[-1] if len(missing) > 1 else missing[0])


def load_runs(root: Path) -> list[dict]:
    """Every run record under `root`, as metrics.json names its keys, with `run_dir` (relative to `root`);
    a file that is no usable record is skipped with one line on stderr."""
    runs = []
    for path in sorted(root.rglob(RECORD)):
        try:
            rec = RunRecord.parse(path)
            why = no_row(rec)
            if why:
                raise NotARecord(why)
        except NotARecord as e:
            print(f"ffrun-summary: skipping {path}: not an ffrun run record ({e})", file=sys.stderr)
            continue
        except (OSError, ValueError) as e:
            print(f"ffrun-summary: skipping {path}: unreadable ({e})", file=sys.stderr)
            continue
        runs.append({**rec.to_dict(), "run_dir": str(path.parent.relative_to(root)) or "."})
    return runs


def _completed(run: dict) -> bool:
    """A run to summarise: completed, or a record without a status (one written by hand)."""
    return run.get("status", Status.COMPLETED) == Status.COMPLETED


def setting_keys(run: dict) -> dict[str, Any]:
    """The config keys that define a run's setting (what it is grouped by)."""
    flat = flatten(run.get("config", {}))
    enc = run.get("encoding")
    keep = {}
    for k, v in flat.items():
        if k in AVERAGED_KEYS or k in IGNORED_KEYS or k.startswith("trainer.lr_by_encoding"):
            continue
        if k in ENCODING_ONLY and ENCODING_ONLY[k] != enc:
            continue
        if k == "encoding.m" and enc in ("none", "basic"):
            continue
        keep[k] = v
    return keep


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def summarise(runs: list[dict]) -> tuple[list[str], list[dict]]:
    """Group the completed runs by setting; returns (the varying config columns, one row per setting)."""
    runs = [r for r in runs if _completed(r)]
    keys = [setting_keys(r) for r in runs]
    all_keys = sorted(set().union(*keys)) if keys else []
    varying = [k for k in all_keys if len({json.dumps(ks[k], sort_keys=True) for ks in keys if k in ks}) > 1]
    varying = [k for k in varying if k not in ("task.name", "encoding.name", "sigma", "encoding.sigma")]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    seen: set[tuple] = set()
    for r, ks in zip(runs, keys):
        gkey = (r.get("task"), r.get("encoding"), r.get("sigma")) + tuple(json.dumps(ks.get(k)) for k in varying)
        # `encoding=none,gauss sigma=1,10` runs `none` once per sigma: identical runs, counted once.
        member = (gkey, r.get("seed"), json.dumps(r.get("config", {}).get("task", {}).get("image")))
        if member in seen:
            continue
        seen.add(member)
        groups[gkey].append(r)
    rows = []
    for gkey, members in groups.items():
        row: dict[str, Any] = {"task": gkey[0], "encoding": gkey[1], "sigma": gkey[2]}
        for k, v in zip(varying, gkey[3:]):
            row[k] = json.loads(v)
        row["n"] = len(members)
        names = sorted({m for r in members for m in r.get("metrics", {})})
        for name in names:
            # null is a metric that was nan or inf (files written before ffrun wrote null hold NaN itself):
            # it has no value to average.
            vals = np.array([v for r in members if (v := r.get("metrics", {}).get(name)) is not None
                             and math.isfinite(v)], float)
            row[name] = (float(vals.mean()), float(vals.std()), len(vals)) if len(vals) else None
        walls = [r["wall_s"] for r in members if r.get("wall_s") is not None]
        row["wall_s"] = (float(np.mean(walls)), float(np.std(walls)), len(walls)) if walls else None
        rows.append(row)
    order = {"none": 0, "basic": 1, "posenc": 2, "gauss": 3}
    rows.sort(key=lambda r: (str(r["task"]), order.get(r["encoding"], 9), r["sigma"] if r["sigma"] is not None else -1,
                             [json.dumps(r.get(k)) for k in varying]))
    return varying, rows


def metric_names(rows: list[dict], varying: list[str]) -> list[str]:
    fixed = {"task", "encoding", "sigma", "n", "wall_s", *varying}
    names = sorted({k for r in rows for k in r if k not in fixed})
    # The held-out metrics first, as a reader looks for them.
    return sorted(names, key=lambda k: (not k.startswith("test"), k))


def _cell(text: str) -> str:
    """Text that stays inside its Markdown table cell."""
    return re.sub(r"[\r\n\x00]+", " ", text).replace("|", "\\|")


def to_markdown(rows: list[dict], varying: list[str], runs: list[dict]) -> str:
    names = metric_names(rows, varying)
    header = [_cell(h) for h in ["task", "encoding", "sigma", *varying, "n", *names, "wall_s"]]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows:
        cells = [_cell(_fmt(v)) for v in (r["task"], r["encoding"], r["sigma"], *(r.get(k) for k in varying))]
        cells.append(str(r["n"]))
        for name in names + ["wall_s"]:
            v = r.get(name)
            if v is None:
                cells.append("-")
            elif v[2] > 1:  # 4 significant digits: a loss of 3e-5 is not 0.00
                cells.append(f"{v[0]:.4g} ± {f'{v[1]:#.2g}'.rstrip('.')}")
            else:
                cells.append(f"{v[0]:.4g}")
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    bad = [r for r in runs if not _completed(r)]
    if bad:
        text += "\nRuns not completed:\n\n| run | status | reason |\n| --- | --- | --- |\n"
        for r in bad:
            text += f"| {_cell(r['run_dir'])} | {_cell(str(r.get('status')))} | {_cell(r.get('reason') or '')} |\n"
    return text


def to_csv(rows: list[dict], varying: list[str]) -> str:
    names = metric_names(rows, varying) + ["wall_s"]
    header = ["task", "encoding", "sigma", *varying, "n"] + [f"{n}_{s}" for n in names for s in ("mean", "std")]
    body = []
    for r in rows:
        line = [r["task"], r["encoding"], r["sigma"], *(r.get(k) for k in varying), r["n"]]
        for n in names:
            v = r.get(n)
            line += [v[0], v[1]] if v else ["", ""]
        body.append(line)
    return csv_text(header, body)


def runs_csv(runs: list[dict]) -> str:
    names = sorted({m for r in runs for m in r.get("metrics", {})})
    header = ["run_dir", "status", "task", "encoding", "sigma", "seed", "image", "steps", "wall_s", *names]
    body = [[r["run_dir"], r.get("status", ""), r.get("task"), r.get("encoding"), r.get("sigma"), r.get("seed"),
             r.get("config", {}).get("task", {}).get("image", ""), r.get("steps"), r.get("wall_s"),
             *(r.get("metrics", {}).get(n, "") for n in names)] for r in runs]
    return csv_text(header, body)


def _printable(text: str, limit: int = 60) -> str:
    """Plot text: control characters shown as `?`, and short (a tight bounding box grows with the text)."""
    text = re.sub(r"[\x00-\x1f\x7f]", "?", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plot(rows: list[dict], varying: list[str], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    lines: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get(metric) is None:
            continue
        label = _printable(_fmt(r["encoding"]) + "".join(f", {k.split('.')[-1]}={_fmt(r.get(k))}" for k in varying))
        lines[label].append(r)
    sigmas = [r["sigma"] for r in rows if r["sigma"] is not None]
    colours = plt.get_cmap("tab10").colors
    for i, (label, members) in enumerate(lines.items()):
        colour = colours[i % len(colours)]
        with_sigma = sorted((r for r in members if r["sigma"] is not None), key=lambda r: r["sigma"])
        if with_sigma:
            x = [r["sigma"] for r in with_sigma]
            y = [r[metric][0] for r in with_sigma]
            e = [r[metric][1] for r in with_sigma]
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, color=colour, label=label)
        for r in members:
            if r["sigma"] is None:  # an encoding with no sigma: its value is the same at every sigma
                ax.axhline(r[metric][0], linestyle="--", color=colour, label=label)
                if r[metric][2] > 1 and sigmas:
                    ax.axhspan(r[metric][0] - r[metric][1], r[metric][0] + r[metric][1], color=colour, alpha=0.12)
    if sigmas and min(sigmas) > 0 and max(sigmas) / min(sigmas) >= 10:
        ax.set_xscale("log")
    ax.set_xlabel("sigma (gauss)")
    ax.set_ylabel(_printable(metric) + (" (dB)" if "psnr" in metric else ""))
    ax.set_title(f"{_printable(metric)} vs sigma")
    ax.grid(alpha=0.3)
    for text in [ax.title, ax.xaxis.label, ax.yaxis.label, *(ax.legend(fontsize=8).get_texts())]:
        text.set_usetex(False)
        text.set_parse_math(False)  # a `$` in a name from metrics.json is text, not mathtext to parse
    save_figure(path, fig)
    plt.close(fig)


def write_outputs(out: Path, md: str, rows: list[dict], varying: list[str], runs: list[dict]) -> None:
    write_text(out / "summary.md", md)
    write_text(out / "summary.csv", to_csv(rows, varying))
    write_text(out / "runs.csv", runs_csv(runs))
    plotted = [m for m in metric_names(rows, varying) if any(r.get(m) and math.isfinite(r[m][0]) for r in rows)]
    if len(plotted) > MAX_PLOTS:
        print(f"ffrun-summary: {len(plotted)} metrics; plotting the first {MAX_PLOTS}", file=sys.stderr)
    for metric in plotted[:MAX_PLOTS]:
        plot(rows, varying, metric, out / f"summary_{safe_filename(metric)}.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ffrun-summary", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path, help="a run or multirun directory (searched recursively)")
    p.add_argument("--out", default=None, help="where to write the table and plots (default: DIR)")
    args = p.parse_args(argv)
    if not args.dir.is_dir():
        print(f"ffrun-summary: error: {args.dir} is not a directory; give a run or multirun directory", file=sys.stderr)
        return 2
    if args.out is not None and not args.out.strip():  # Path("") is the current folder
        print("ffrun-summary: error: --out '': an empty folder name would write into the current folder; give the "
              "folder to write into, or leave --out out for DIR", file=sys.stderr)
        return 2
    runs = load_runs(args.dir)
    if not runs:
        found = any(True for _ in args.dir.rglob(RECORD))
        print(f"ffrun-summary: error: {'no usable run record' if found else 'no metrics.json'} under {args.dir}"
              f"{' (each was skipped, see above)' if found else ''}; is it an ffrun output directory?", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out is not None else args.dir
    varying, rows = summarise(runs)
    md = to_markdown(rows, varying, runs)
    try:
        write_outputs(out, md, rows, varying, runs)
    except FfrunError as e:  # a full disk
        print(f"ffrun-summary: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # --out is a file, or a folder it may not write to
        print(f"ffrun-summary: error: cannot write {e.filename or out}: {e.strerror or e}; give --out a folder you "
              "can write to", file=sys.stderr)
        return 2
    print(md, end="")
    print(f"\n{len(runs)} runs; wrote summary.md, summary.csv, runs.csv and plots to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
