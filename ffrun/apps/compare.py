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
import math
import os
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from ffrun.util.atomic import csv_text, save_figure, write_json, write_text
from ffrun.data.location import data_dir
from ffrun.apps.reproduce import (LAUNCHERS, PAPER, Run, TaskPlan, _call, _fmt, _hms, check_overrides, execute,
                             ffrun_command, gallery, plans, run_console, say)

METHODS = ("gauss", "learned", "multiscale", "siren", "wire", "hashgrid", "densegrid")
# Methods whose preset sets the reference code's learning rate: a plan's own trainer.lr (tuned for the
# paper's ReLU MLP) is not applied to them.
OWN_LR = ("siren", "wire", "hashgrid", "densegrid")
TASKS = ("image", "text", "toy1d", "shape", "ct", "mri", "nerf")
DEFAULT_BUDGET = 100_000
# cpu scale: Table 1's cpu protocol on its first data item, with these step counts (about an hour for every
# method x task on 2 CPU cores; see docs/methods.md for the measured time).
CPU_STEPS = {"image": 300, "text": 300, "toy1d": 1000, "shape": 200, "ct": 300, "mri": 200, "nerf": 150}


def compare_plans(scale: str, data: Path) -> dict[str, TaskPlan]:
    """Each task's protocol for the comparison: Table 1's plan at `scale` (smoke/cpu: its first item and,
    at cpu, CPU_STEPS), plus toy1d, the paper's 1D setting."""
    base = plans(scale, data)
    fast = ["trainer.progress=false"]
    toy_steps = {"smoke": 30, "cpu": CPU_STEPS["toy1d"], "paper": 2000}[scale]
    base["toy1d"] = TaskPlan("", [*fast, "task=toy1d", f"trainer.steps={toy_steps}",
                                  f"trainer.eval_every={toy_steps}"], {"signal": []})
    out = {}
    for task, plan in base.items():
        if scale == "cpu" and task != "toy1d":
            steps = CPU_STEPS[task]
            plan = replace(plan, overrides=[*plan.overrides, f"trainer.steps={steps}", f"trainer.eval_every={steps}"])
        if scale != "paper":
            plan = replace(plan, items=dict(list(plan.items.items())[:1]))
        out[task] = replace(plan, encodings=METHODS)
    return out


def job_overrides(plan: TaskPlan, item: str, method: str, budget: int, extra: list[str]) -> list[str]:
    own = [o for o in plan.overrides if not (method in OWN_LR and o.startswith("trainer.lr="))]
    preset = [f"experiment={plan.preset}"] if plan.preset else []
    return [*preset, f"method={method}", *own, *plan.items[item], f"model.params={budget}", *extra]


def launch(plan: TaskPlan, task: str, item: str, budget: int, methods: list[str], sweep_dir: Path,
           launcher: str, extra: list[str]) -> int:
    """One Hydra multirun over the methods of one task, data item and budget; each job in sweep_dir/<method>.
    Methods that keep the plan's learning rate and those with their own go in separate sweeps."""
    code = 0
    for group in ([m for m in methods if m not in OWN_LR], [m for m in methods if m in OWN_LR]):
        if not group:
            continue
        common = job_overrides(plan, item, group[0], budget, extra)
        args = [*ffrun_command(), "-m", *[o if not o.startswith("method=") else f"method={','.join(group)}"
                                          for o in common],
                f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra:runtime.choices.method}"]
        if LAUNCHERS[launcher]:
            args.append(f"hydra/launcher={LAUNCHERS[launcher]}")
        code = _call(args, f"{task} [{item}, {budget} parameters]") or code
        if code in (130, 143):
            return code
    return code


# --------------------------------------------------------------------------------------------- table


@dataclass
class Cell:
    metric: str
    values: list[float]
    params: int | None = None
    s_per_step: float | None = None
    wall_s: float = 0.0
    failed: str | None = None
    unreachable: bool = False  # the method cannot be sized to this budget on this task (not a failure)


def metric_of(task: str) -> str:
    return PAPER[task][0] if task in PAPER else "test_psnr"


def unreachable(rec: dict) -> bool:
    """A run refused because its method cannot be sized to the budget on its task (ffrun.models.budget)."""
    reason = str(rec.get("reason") or "")
    return reason.startswith("model.params=") and "is unreachable" in reason


def collect(runs: list[Run]) -> dict[tuple[str, int], dict[str, Cell]]:
    """(task, budget) -> method -> its metric over the data items, parameter count and speed."""
    table: dict[tuple[str, int], dict[str, Cell]] = {}
    for run in runs:
        budget = int(run.item.rsplit("@", 1)[1])
        cell = table.setdefault((run.task, budget), {}).setdefault(run.encoding, Cell(metric_of(run.task), []))
        rec = run.record() or {}
        value = (rec.get("metrics") or {}).get(cell.metric)
        if rec.get("status") == "completed" and isinstance(value, (int, float)) and math.isfinite(value):
            cell.values.append(float(value))
            cell.params = rec.get("params")
            wall, steps = rec.get("wall_s"), rec.get("step")
            cell.wall_s += float(wall or 0.0)
            cell.s_per_step = float(wall) / steps if wall and steps else None
        else:
            cell.unreachable = unreachable(rec)
            cell.failed = f"{rec.get('status', 'not run')}: {str(rec.get('reason') or '')[:160]}"
    return table


def grids_verdict(task: str, cells: dict[str, Cell]) -> str:
    """The Grids paper's conclusion at this budget: the dense grid at least as good as every network."""
    means = {m: statistics.fmean(c.values) for m, c in cells.items() if c.values}
    if "densegrid" not in means or len(means) < 2:
        return f"{task}: no verdict (no completed densegrid run or nothing to compare it with)"
    best = max((m for m in means if m != "densegrid"), key=lambda m: means[m])
    fmt = lambda m: f"{m} {_fmt(means[m], cells[m].metric)}"  # noqa: E731
    if means["densegrid"] >= means[best]:
        return f"{task}: holds (the dense grid {fmt('densegrid')} >= the best network, {fmt(best)})"
    return f"{task}: does NOT hold (the dense grid {fmt('densegrid')} < {fmt(best)})"


def write_table(out: Path, table: dict[tuple[str, int], dict[str, Cell]], scale: str, plans_: dict[str, TaskPlan],
                wall_s: float) -> str:
    header = ["task", "budget", "method", "metric", "ffrun", "n", "params", "s_per_step", "wall_s", "data"]
    rows_csv, md = [], [f"# Fourier features and their successors at equal budgets (scale `{scale}`)", "",
                        "Each task on its Table 1 protocol and held-out metric; every method sized to the budget "
                        "(`model.params`, within 5 %) and trained at its reference learning rate. s/step: the run's "
                        "own wall time over its steps, evaluations included.", ""]
    verdicts = []
    for task in dict.fromkeys(t for t, _ in table):
        budgets = sorted(b for t, b in table if t == task)
        data = ", ".join(plans_[task].items) or "-"
        metric = metric_of(task)
        md += [f"## {task} ({metric}; data: {data})", "",
               "| method | " + " | ".join(f"{b:,} params" for b in budgets) + " | params | s/step | wall |",
               "| --- |" + " --- |" * (len(budgets) + 3)]
        for method in METHODS:
            cells = [table[(task, b)].get(method) for b in budgets]
            if not any(cells):
                continue
            shown = [_fmt(statistics.fmean(c.values), metric) if c and c.values else
                     ("n/a" if c and c.unreachable else "failed" if c else "-") for c in cells]
            last = next((c for c in reversed(cells) if c and c.values), None)
            speed = f"{last.s_per_step:.3f}" if last and last.s_per_step else "-"
            md.append(f"| {method} | " + " | ".join(shown) + f" | {last.params if last else '-'} | {speed} | "
                      f"{_hms(sum(c.wall_s for c in cells if c))} |")
            for b, c in zip(budgets, cells):
                if c:
                    rows_csv.append([task, str(b), method, metric,
                                     _fmt(statistics.fmean(c.values), metric) if c.values else "",
                                     str(len(c.values)), str(c.params or ""),
                                     f"{c.s_per_step:.4f}" if c.s_per_step else "", f"{c.wall_s:.1f}", data])
        md.append("")
        for b in budgets:
            verdicts.append(grids_verdict(f"{task} at {b:,}", table[(task, b)]))
        cells = [(b, m, c) for b in budgets for m, c in table[(task, b)].items() if c.failed]
        notes = [f"- {'n/a' if c.unreachable else 'failed'}: {m} @ {b}: {c.failed}" for b, m, c in cells]
        md += notes + ([""] if notes else [])
    md += ["## Does a dense grid beat the networks? (the Grids paper's conclusion, on held-out metrics)", ""]
    md += [f"- {v}" for v in verdicts]
    total = sum(c.wall_s for cells in table.values() for c in cells.values())
    md += ["", f"Wall time of this invocation: {_hms(wall_s)}; the runs' own wall times sum to {_hms(total)}."]
    text = "\n".join(md) + "\n"
    write_text(out / "compare.csv", csv_text(header, rows_csv))
    write_text(out / "compare.md", text)
    return text


def budget_plot(out: Path, task: str, cells: dict[int, dict[str, Cell]]) -> Path | None:
    """budget_<task>.png: the held-out metric against the parameter count, one line per method."""
    if len(cells) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for method in METHODS:
        pts = sorted((c.params, statistics.fmean(c.values)) for b in cells if (c := cells[b].get(method))
                     and c.values and c.params)
        if pts:
            ax.plot(*zip(*pts), marker="o", label=method, linestyle="--" if method == "densegrid" else "-")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(metric_of(task))
    ax.set_title(f"{task}: held-out {metric_of(task)} at equal budgets")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = save_figure(out / f"budget_{task}.png", fig)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- main


def fail(msg: str) -> int:
    print(f"ffrun-compare: error: {msg}", file=sys.stderr)
    return 2


def parse_budgets(text: str) -> list[int]:
    try:
        budgets = [int(float(b)) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ValueError(f"--budgets {text!r}: give numbers, e.g. 1e4,1e5") from None
    if not budgets or min(budgets) < 1:
        raise ValueError(f"--budgets {text!r}: give parameter counts >= 1")
    return sorted(set(budgets))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ffrun-compare", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=("smoke", "cpu", "paper"), default="cpu")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)}")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--budgets", default=str(DEFAULT_BUDGET),
                    help="parameter budgets, comma-separated (e.g. 1e4,3e4,1e5,3e5: one plot line per method)")
    ap.add_argument("--out", default="compare", help="output folder (default ./compare)")
    ap.add_argument("--launcher", choices=tuple(LAUNCHERS), default="basic")
    ap.add_argument("--data", default=None, help="data directory (default $FFRUN_DATA)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run (e.g. device=cuda)")
    args = ap.parse_args(argv)
    extra = list(args.overrides)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not tasks or any(t not in TASKS for t in tasks):
        return fail(f"--tasks {args.tasks!r}: choose from {','.join(TASKS)}")
    if not methods or any(m not in METHODS for m in methods):
        return fail(f"--methods {args.methods!r}: choose from {','.join(METHODS)}")
    try:
        budgets = parse_budgets(args.budgets)
    except ValueError as e:
        return fail(str(e))
    bad = [o for o in extra if "=" not in o or o.startswith("-")]
    if bad:
        return fail(f"{bad[0]!r} is not a Hydra override (key=value); put options before overrides")
    if any(o.split("=", 1)[0].lstrip("+~") in ("method", "model.params", "model.name") for o in extra):
        return fail("the comparison sweeps methods and budgets itself; use --methods and --budgets")
    data = Path(args.data).expanduser() if args.data else data_dir()
    if args.data:
        os.environ["FFRUN_DATA"] = str(data)
    all_plans = compare_plans(args.scale, data)
    # the overrides must compose with every task (the gauss plan is the one check_overrides composes)
    refused = check_overrides({t: replace(p, encodings=("gauss",)) for t, p in all_plans.items() if t in PAPER},
                              [t for t in tasks if t in PAPER], extra)
    if refused:
        return fail(refused)
    out = Path(args.out).expanduser().resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return fail(f"--out {out}: {e}")
    write_json(out / "compare.json", {"scale": args.scale, "budgets": budgets, "methods": methods, "tasks": tasks,
                                      "overrides": extra, "data": str(data)})
    runs: list[Run] = []
    for task in tasks:
        plan = all_plans[task]
        for item in plan.items:
            for budget in budgets:
                label = f"{item}@{budget}"
                runs += [Run(task, label, m, out / "runs" / task / label / m,
                             job_overrides(plan, item, m, budget, extra)) for m in methods]

    def launch_group(task: str, label: str, fresh: list[Run]) -> int:
        item, budget = label.rsplit("@", 1)
        return launch(all_plans[task], task, item, int(budget), [r.encoding for r in fresh],
                      out / "runs" / task / label, args.launcher, extra)

    _, interrupted, wall = execute(runs, launch_group, f"scale {args.scale}, budgets {budgets}, out {out}")
    table = collect(runs)
    text = write_table(out, table, args.scale, all_plans, wall)
    for task in tasks:
        top = max(budgets)
        gallery(out, task, [r for r in runs if r.task == task and r.item.endswith(f"@{top}")],
                metric=metric_of(task))
        budget_plot(out, task, {b: table[(task, b)] for b in budgets if (task, b) in table})
    say(text)
    if interrupted:
        print("ffrun-compare: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    failed = [r.label for r in runs if (rec := r.record() or {}).get("status") in (None, "failed")
              and not unreachable(rec)]
    if failed:
        return fail(f"{len(failed)} of {len(runs)} runs failed: {', '.join(failed[:5])}; the table holds the others")
    return 0


def console() -> None:
    run_console(main)


if __name__ == "__main__":
    console()
