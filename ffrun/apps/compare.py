"""`ffrun-compare`: Fourier features against their successors at equal parameter budgets, on every task.

    ffrun-compare --scale cpu --out compare/                              # every method x task, 1e5 parameters
    ffrun-compare --scale cpu --tasks image,ct --budgets 1e4,3e4,1e5,3e5  # metric against parameter count
    ffrun-compare --scale paper --launcher slurm --out compare/           # the paper's protocols (a GPU job)

Each task runs on its Table 1 protocol (`ffrun-reproduce`'s plan at the scale: the preset, its data and its
held-out metric: odd pixels for images, unseen views for NeRF, near-surface IoU for shapes, the image for
CT and MRI), every method sized to the same `model.params` budget and trained with its own reference
learning rate (the method presets in configs/method/). Runs land in `DIR/runs/<task>/<item>@<budget>/<method>/`,
ordinary run directories; DIR gets `compare.md` / `compare.csv` (metric, parameter count, seconds per step,
wall time per method and task, and whether the Grids paper's conclusion holds), `gallery_<task>.png` and,
with several budgets, `budget_<task>.png`. Rerunning the same command skips completed runs and resumes
interrupted ones, as ffrun-reproduce does.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from ffrun.data.location import data_dir
from ffrun.sweep.commands import LAUNCHERS
from ffrun.sweep.console import error, interrupted, run_console, say
from ffrun.sweep.execute import execute
from ffrun.sweep.gallery import gallery
from ffrun.sweep.method_table import budget_plot, collect, write_compare_table
from ffrun.sweep.methods import (
    COMPARE_TASKS,
    DEFAULT_BUDGET,
    METHODS,
    budget_runs,
    compare_plans,
    launch_methods,
    unreachable,
)
from ffrun.sweep.overrides import check_overrides, not_an_override
from ffrun.sweep.paper import PAPER, metric_of
from ffrun.sweep.plans import SCALES
from ffrun.sweep.runs import Run
from ffrun.util.atomic import write_json
from ffrun.util.errors import FfrunError
from ffrun.util.paths import expand_user, output_folder

PROG = "ffrun-compare"


def fail(msg: str) -> int:
    return error(PROG, msg)


def parse_budgets(text: str) -> list[int]:
    try:
        budgets = [int(float(b)) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ValueError(f"--budgets {text!r}: give numbers, e.g. 1e4,1e5") from None
    if not budgets or min(budgets) < 1:
        raise ValueError(f"--budgets {text!r}: give parameter counts >= 1")
    return sorted(set(budgets))


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=SCALES, default="cpu",
                    help="each task's Table 1 protocol at this scale (ffrun-reproduce's plans): smoke: seconds a run, "
                         "reproduces nothing (CI); cpu: the reduced protocol, about an hour for every method x task on "
                         "2 CPU cores; paper: the authors' full protocol (a GPU job)")
    ap.add_argument("--tasks", default=",".join(COMPARE_TASKS),
                    help=f"comma-separated subset of {','.join(COMPARE_TASKS)}")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--budgets", default=str(DEFAULT_BUDGET),
                    help="parameter budgets, comma-separated (e.g. 1e4,3e4,1e5,3e5: one plot line per method)")
    ap.add_argument("--out", default="compare", help="output folder (default ./compare)")
    ap.add_argument("--launcher", choices=tuple(LAUNCHERS), default="basic")
    ap.add_argument("--data", default=None, help="data directory (default $FFRUN_DATA)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run (e.g. device=cuda)")
    return ap.parse_args(argv)


def refusal(args: argparse.Namespace, tasks: list[str], methods: list[str]) -> str | None:
    """Why the command cannot run as given, as one line, or None (the budgets are parsed apart)."""
    if not tasks or any(t not in COMPARE_TASKS for t in tasks):
        return f"--tasks {args.tasks!r}: choose from {','.join(COMPARE_TASKS)}"
    if not methods or any(m not in METHODS for m in methods):
        return f"--methods {args.methods!r}: choose from {','.join(METHODS)}"
    return None


def override_refusal(extra: list[str]) -> str | None:
    bad = not_an_override(extra)
    if bad is not None:
        return f"{bad!r} is not a Hydra override (key=value); put options before overrides"
    if any(o.split("=", 1)[0].lstrip("+~") in ("method", "model.params", "model.name") for o in extra):
        return "the comparison sweeps methods and budgets itself; use --methods and --budgets"
    return None


def report(out: Path, args: argparse.Namespace, tasks: list[str], budgets: list[int], all_plans: dict,
           runs: list[Run], wall: float) -> str:
    """compare.md / compare.csv, the galleries of the largest budget and the budget plots; returns the table."""
    table = collect(runs)
    text = write_compare_table(out, table, args.scale, all_plans, wall)
    top = max(budgets)
    for task in tasks:
        gallery(out, task, [r for r in runs if r.task == task and r.item.endswith(f"@{top}")],
                metric=metric_of(task))
        budget_plot(out, task, {b: table[(task, b)] for b in budgets if (task, b) in table})
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    extra = list(args.overrides)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    refused = refusal(args, tasks, methods)
    if refused:
        return fail(refused)
    try:
        budgets = parse_budgets(args.budgets)
    except ValueError as e:
        return fail(str(e))
    refused = override_refusal(extra)
    if refused:
        return fail(refused)
    try:
        data = expand_user(args.data, f"--data {args.data}") if args.data else data_dir()
    except FfrunError as e:
        return fail(str(e))
    if args.data:
        os.environ["FFRUN_DATA"] = str(data)
    all_plans = compare_plans(args.scale, data)
    # the overrides must compose with every task (the gauss plan is the one check_overrides composes)
    refused = check_overrides({t: replace(p, encodings=("gauss",)) for t, p in all_plans.items() if t in PAPER},
                              [t for t in tasks if t in PAPER], extra)
    if refused:
        return fail(refused)
    try:
        out = output_folder(args.out).resolve()  # before any run: a folder it cannot write is refused now
        write_json(out / "compare.json", {"scale": args.scale, "budgets": budgets, "methods": methods,
                                          "tasks": tasks, "overrides": extra, "data": str(data)})
    except FfrunError as e:  # refused by output_folder, or a full disk
        return fail(str(e))
    except OSError as e:
        return fail(f"--out {args.out}: cannot write compare.json ({e})")
    runs = budget_runs(all_plans, tasks, methods, budgets, out, extra)

    def launch_group(task: str, label: str, fresh: list[Run]) -> int:
        item, budget = label.rsplit("@", 1)
        return launch_methods(all_plans[task], task, item, int(budget), [r.encoding for r in fresh],
                              out / "runs" / task / label, args.launcher, extra)

    _, stopped, wall = execute(runs, launch_group, f"scale {args.scale}, budgets {budgets}, out {out}")
    say(report(out, args, tasks, budgets, all_plans, runs, wall))
    if stopped:
        return interrupted(PROG)
    failed = [r.label for r in runs if ((rec := r.record()) is None or rec.failed) and not unreachable(rec)]
    if failed:
        return fail(f"{len(failed)} of {len(runs)} runs failed: {', '.join(failed[:5])}; the table holds the others")
    return 0


def console() -> None:
    run_console(main)


if __name__ == "__main__":
    console()
