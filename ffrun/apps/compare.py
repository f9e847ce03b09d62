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

    ffrun-compare --benchmark grids --protocols fit,superres,denoise --budgets 1e4,3e4,1e5 --out grids/
    ffrun-compare --benchmark grids --methods grid,siren --images 0,6 --out quick/   # a quick look
    ffrun-compare --benchmark grids --protocols denoise --noise 0.1 --out grids_noise01/ device=cuda

`--benchmark grids` reproduces the published DIV2K table of "Grids Often Outperform Implicit Neural
Representations" (NeurIPS 2025, voilalab/INR-benchmark) and puts ffrun beside it: the methods grid, siren,
wire, ffn, ingp (presets method=grids/<m> of experiment=grids_div2k) on the benchmark's ten DIV2K x4 images
($FFRUN_DATA/images/div2k_grids), protocols fit, superres (4x; only images 0, 6, 7, 9 have originals) and
denoise (--noise, default 0.05), budgets 1e4,3e4,1e5 by default. Runs land in
`DIR/runs/grids/<protocol>/<NN>@<budget>/<method>/`; DIR gets `grids_<protocol>.md` / `.csv` (ffrun's final
and best PSNR, its score by the benchmark's rule: Grid by its final iterate, the INRs by their best
evaluation, the published mean, the difference and whether it is within tolerance), `grids_budget_<protocol>.png`
and `gallery_grids_<protocol>.png`. --images picks a subset (a quick look: no verdict). Resumable as above.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import replace
from pathlib import Path

from ffrun.data.location import data_dir
from ffrun.run.record import Status
from ffrun.sweep import grids
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
)
from ffrun.sweep.overrides import check_overrides, not_an_override
from ffrun.sweep.paper import PAPER, metric_of
from ffrun.sweep.plans import SCALES
from ffrun.sweep.runs import STALE, Run, unreachable
from ffrun.util.atomic import write_json
from ffrun.util.errors import FfrunError
from ffrun.util.paths import expand_user, output_folder

PROG = "ffrun-compare"
EPILOG = """benchmark:
  ffrun-compare --benchmark grids [--protocols fit,superres,denoise] [--budgets 1e4,3e4,1e5]
                [--methods grid,siren,wire,ffn,ingp] [--images 0,6] [--noise 0.05] [--out DIR] [overrides...]
"""
BENCHMARK_ONLY = ("protocols", "images", "noise", "report_only", "results")


def fail(msg: str) -> int:
    return error(PROG, msg)


def parse_budgets(text: str) -> list[int]:
    try:
        budgets = [int(float(b)) for b in text.split(",") if b.strip()]
    except OverflowError:  # inf
        raise ValueError(f"--budgets {text!r}: give finite parameter counts, e.g. 1e4,1e5") from None
    except ValueError:
        raise ValueError(f"--budgets {text!r}: give numbers, e.g. 1e4,1e5") from None
    if not budgets or min(budgets) < 1:
        raise ValueError(f"--budgets {text!r}: give parameter counts >= 1")
    return sorted(set(budgets))


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    ap.add_argument("--scale", choices=SCALES, default=None,
                    help="each task's Table 1 protocol at this scale (ffrun-reproduce's plans): smoke: seconds a run, "
                         "reproduces nothing (CI); cpu (default): the reduced protocol, about an hour for every "
                         "method x task on 2 CPU cores; paper: the authors' full protocol (a GPU job)")
    ap.add_argument("--tasks", default=None,
                    help=f"comma-separated subset of {','.join(COMPARE_TASKS)} (default: all)")
    ap.add_argument("--methods", default=None,
                    help=f"comma-separated subset of {','.join(METHODS)} (default: all); with --benchmark grids, of "
                         f"{','.join(grids.METHODS)}")
    ap.add_argument("--budgets", default=None,
                    help=f"parameter budgets, comma-separated (e.g. 1e4,3e4,1e5,3e5: one plot line per method; "
                         f"default {DEFAULT_BUDGET}; with --benchmark grids "
                         f"{','.join(map(str, grids.DEFAULT_BUDGETS))})")
    ap.add_argument("--benchmark", default=None, metavar="grids",
                    help="reproduce a published benchmark's table instead, ffrun beside it: grids = the DIV2K table "
                         "of \"Grids Often Outperform Implicit Neural Representations\" (NeurIPS 2025, "
                         "voilalab/INR-benchmark)")
    ap.add_argument("--protocols", default=None,
                    help=f"--benchmark grids: comma-separated subset of {','.join(grids.PROTOCOLS)} (default fit); "
                         f"superres runs on the images with originals only ({', '.join(map(str, grids.ORIGINALS))})")
    ap.add_argument("--images", default=None,
                    help="--benchmark grids: comma-separated image numbers 0..9 (default all ten; a subset is a "
                         "quick look, given no verdict)")
    ap.add_argument("--noise", default=None,
                    help=f"--benchmark grids: the noise std of denoise (default {grids.DEFAULT_NOISE:g}; the "
                         "benchmark's levels are 0.05 and 0.1; one level per --out folder)")
    ap.add_argument("--report-only", action="store_true", default=None,
                    help="--benchmark grids: train nothing; write the tables, plots and galleries from the runs "
                         "already in --out (those missing are listed as not run)")
    ap.add_argument("--results", default=None, metavar="CSV[,CSV]",
                    help="--benchmark grids: earlier results (a grids_<protocol>_images.csv a report wrote, or an "
                         "earlier grids_<protocol>.csv table) standing in for the runs --out lacks, so a table can "
                         "be assembled across sittings and machines; only results made with the same overrides "
                         "(and noise) are taken, and the table names each one's file")
    ap.add_argument("--out", default="compare", help="output folder (default ./compare)")
    ap.add_argument("--launcher", choices=tuple(LAUNCHERS), default="basic")
    ap.add_argument("--data", default=None, help="data directory (default $FFRUN_DATA)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run (e.g. device=cuda)")
    return ap.parse_args(_joined_values(sys.argv[1:] if argv is None else argv))


def _joined_values(argv: list[str]) -> list[str]:
    """`--budgets -1e4` as `--budgets=-1e4`: a value that starts with '-' is the option's value (argparse takes
    it for an option and says only that the value is missing), so the budget's own check can name it."""
    out = list(argv)
    for i, a in enumerate(out[:-1]):
        if a == "--budgets" and out[i + 1].startswith("-") and out[i + 1][1:2].isdigit():
            out[i : i + 2] = [f"{a}={out[i + 1]}"]
            break
    return out


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
    if args.benchmark is not None:
        return benchmark_main(args)
    given = next((f"--{k.replace('_', '-')}" for k in BENCHMARK_ONLY if getattr(args, k) is not None), None)
    if given:
        return fail(f"{given} applies only with --benchmark grids")
    args.scale = args.scale or "cpu"
    args.tasks = ",".join(COMPARE_TASKS) if args.tasks is None else args.tasks
    args.methods = ",".join(METHODS) if args.methods is None else args.methods
    args.budgets = str(DEFAULT_BUDGET) if args.budgets is None else args.budgets
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
    data = data_folder(args)
    if isinstance(data, int):
        return data
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
    return sweep_exit(runs, stopped, "the table holds")


def sweep_exit(runs: list[Run], stopped: bool, tables: str) -> int:
    """The command's exit status once its report is written: interrupted, failed runs named (a method that cannot
    be sized to a budget is no failure), or 0."""
    if stopped:
        return interrupted(PROG)
    failed = [r.label for r in runs if ((rec := r.record()) is None or rec.failed) and not unreachable(rec)]
    if failed:
        return fail(f"{len(failed)} of {len(runs)} runs failed: {', '.join(failed[:5])}; {tables} the others")
    # not stopped here, yet left unfinished: its resume was refused or it was stopped from outside
    unfinished = [r.label for r in runs if (rec := r.record()) is not None and rec.status in (
        Status.INTERRUPTED, Status.RUNNING)]
    if unfinished:
        return fail(f"{len(unfinished)} of {len(runs)} runs did not finish: {', '.join(unfinished[:5])} (the lines "
                    f"above say why); run the same command again to continue them; {tables} the others")
    return 0


def items(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_images(text: str) -> list[int]:
    try:
        images = sorted({int(x) for x in items(text)})
    except ValueError:
        images = []
    if not images or any(i not in grids.IMAGES for i in images):
        raise ValueError(f"--images {text!r}: give image numbers 0..9, comma-separated (e.g. 0,6)")
    return images


def parse_noise(text: str) -> float:
    try:
        noise = float(text)
    except ValueError:
        noise = math.nan
    if not (math.isfinite(noise) and 0 < noise <= 1):
        raise ValueError(f"--noise {text!r}: give the noise std, a number in (0, 1] (the benchmark's: 0.05, 0.1)")
    return noise


def grids_plan(args: argparse.Namespace) -> grids.GridsPlan | str:
    """The --benchmark grids plan the arguments ask for, or why they cannot run, as one line."""
    if args.benchmark not in grids.BENCHMARKS:
        return f"--benchmark {args.benchmark!r}: choose from {','.join(grids.BENCHMARKS)}"
    for flag in ("scale", "tasks"):
        if getattr(args, flag) is not None:
            return f"--{flag} does not apply to --benchmark grids (it has its own protocols: use --protocols)"
    protocols = items(args.protocols if args.protocols is not None else "fit")
    if not protocols or any(p not in grids.PROTOCOLS for p in protocols):
        return f"--protocols {args.protocols!r}: choose from {','.join(grids.PROTOCOLS)}"
    methods = items(args.methods if args.methods is not None else ",".join(grids.METHODS))
    if not methods or any(m not in grids.METHODS for m in methods):
        return f"--methods {args.methods!r}: the grids benchmark's methods are {','.join(grids.METHODS)}"
    try:
        images = parse_images(args.images) if args.images is not None else list(grids.IMAGES)
        budgets = parse_budgets(args.budgets if args.budgets is not None else
                                ",".join(str(b) for b in grids.DEFAULT_BUDGETS))
        noise = parse_noise(args.noise) if args.noise is not None else grids.DEFAULT_NOISE
    except ValueError as e:
        return str(e)
    extra = list(args.overrides)
    bad = not_an_override(extra)
    if bad is not None:
        return f"{bad!r} is not a Hydra override (key=value); put options before overrides"
    own = grids.own_key(extra)
    if own is not None:
        return (f"{own!r}: the grids benchmark sets this itself; use --methods, --budgets, --images, --protocols "
                "and --noise")
    plan = grids.GridsPlan(tuple(p for p in grids.PROTOCOLS if p in protocols),
                           tuple(m for m in grids.METHODS if m in methods), tuple(images), tuple(budgets), noise,
                           tuple(extra))
    if "superres" in plan.protocols and not plan.images_of("superres"):
        return (f"--protocols superres: the benchmark has originals only for images "
                f"{','.join(map(str, grids.ORIGINALS))}, none of --images {args.images}")
    return plan


def data_folder(args: argparse.Namespace) -> Path | int:
    """The data directory (--data, exported as $FFRUN_DATA for the runs, or $FFRUN_DATA), or fail()'s exit code."""
    try:
        data = expand_user(args.data, f"--data {args.data}") if args.data else data_dir()
    except FfrunError as e:
        return fail(str(e))
    if args.data:
        os.environ["FFRUN_DATA"] = str(data)
    return data


def benchmark_main(args: argparse.Namespace) -> int:
    """`ffrun-compare --benchmark grids ...`: the published table's runs, then ffrun beside the table."""
    plan = grids_plan(args)
    if isinstance(plan, str):
        return fail(plan)
    earlier = grids.Earlier.none()
    if args.results:
        try:
            earlier = grids.load_earlier([expand_user(f, f"--results {f}") for f in items(args.results)],
                                         plan.noise, plan.extra)
        except FfrunError as e:
            return fail(str(e))
    data = data_folder(args)
    if isinstance(data, int):
        return data
    missing = grids.missing_data(plan, data)
    if missing:
        return fail(f"the grids benchmark's images are missing: {', '.join(map(str, missing[:4]))}"
                    f"{' ...' if len(missing) > 4 else ''} (images/{grids.IMAGE_SET}/x4 and hr/ under the data "
                    "directory; --data or $FFRUN_DATA)")
    refused = grids.check_composes(plan)
    if refused:
        return fail(refused)
    if args.report_only:
        out = Path(args.out).expanduser().resolve()
        if not (out / "runs").is_dir() and not args.results:
            return fail(f"--report-only: {out} holds no runs (no runs/ folder); run without --report-only first, "
                        "or give earlier results with --results")
        try:
            out = output_folder(args.out).resolve()
        except FfrunError as e:
            return fail(str(e))
        runs = grids.grids_runs(plan, out)
        stale = [r for r in runs if r.status() == STALE]
        if stale:  # their scores are of other settings: a table would label them as this command's
            return fail(f"--report-only: {len(stale)} of {len(runs)} runs in {out} were made with other settings "
                        f"than this command's (e.g. {stale[0].label}: {stale[0].recorded_differences()}); give the "
                        "settings they were made with, or run without --report-only to rerun them")
        say(grids.report(out, plan, runs, earlier=earlier))
        return 0
    try:
        out = output_folder(args.out).resolve()  # before any run: a folder it cannot write is refused now
        write_json(out / "grids.json", {"benchmark": args.benchmark, "protocols": list(plan.protocols),
                                        "methods": list(plan.methods), "images": list(plan.images),
                                        "budgets": list(plan.budgets), "noise": plan.noise,
                                        "overrides": list(plan.extra), "data": str(data)})
    except FfrunError as e:
        return fail(str(e))
    except OSError as e:
        return fail(f"--out {args.out}: cannot write grids.json ({e})")
    for line in grids.plan_summary(plan):
        say(f"{PROG}: {line}")
    runs = grids.grids_runs(plan, out)

    def launch_group(task: str, label: str, fresh: list[Run]) -> int:
        image, budget = label.split("@", 1)
        protocol = task.split("/", 1)[1]
        return grids.launch_grids(plan, protocol, int(image), int(budget), [r.encoding for r in fresh],
                                  grids.sweep_dir(out, protocol, int(image), int(budget)), args.launcher)

    todo = grids.to_run(runs, earlier, plan)
    if len(todo) < len(runs):
        say(f"{PROG}: {len(runs) - len(todo)} of {len(runs)} runs have earlier results (--results): not run again")
    _, stopped, wall = execute(todo, launch_group, f"benchmark grids, {', '.join(plan.protocols)}, budgets "
                                                   f"{list(plan.budgets)}, out {out}")
    say(grids.report(out, plan, runs, wall, earlier))
    return sweep_exit(todo, stopped, "the tables hold")


def console() -> None:
    run_console(main)


if __name__ == "__main__":
    console()
