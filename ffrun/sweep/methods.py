"""Fourier features against their successors at equal parameter budgets, as a sweep (`ffrun-compare`): each
task on its Table 1 plan, every method sized to the budget and trained at its own reference learning rate."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ffrun.sweep.commands import multirun_command
from ffrun.sweep.execute import SIGNALLED, run_ffrun
from ffrun.sweep.plans import TaskPlan, plans
from ffrun.sweep.runs import Run

METHODS = ("gauss", "learned", "multiscale", "siren", "wire", "hashgrid", "densegrid")
# Methods whose preset sets the reference code's learning rate: a plan's own trainer.lr (tuned for the
# paper's ReLU MLP) is not applied to them.
OWN_LR = ("siren", "wire", "hashgrid", "densegrid")
COMPARE_TASKS = ("image", "text", "toy1d", "shape", "ct", "mri", "nerf")
DEFAULT_BUDGET = 100_000
# cpu scale: Table 1's cpu protocol on its first data item, with these step counts (about an hour for every
# method x task on 2 CPU cores; see docs/methods.md for the measured time).
CPU_STEPS = {"image": 300, "text": 300, "toy1d": 1000, "shape": 200, "ct": 300, "mri": 200, "nerf": 150}


def compare_plans(scale: str, data: Path) -> dict[str, TaskPlan]:
    """Each task's protocol for the comparison: Table 1's plan at `scale` (smoke/cpu: its first item and,
    at cpu, CPU_STEPS), plus toy1d, the paper's 1D setting."""
    base = plans(scale, data)
    toy_steps = {"smoke": 30, "cpu": CPU_STEPS["toy1d"], "paper": 2000}[scale]
    base["toy1d"] = TaskPlan("", ["trainer.progress=false", "task=toy1d", f"trainer.steps={toy_steps}",
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


def method_overrides(plan: TaskPlan, item: str, method: str, budget: int, extra: list[str]) -> list[str]:
    """One job's overrides (`method` may be a comma-separated sweep of methods alike in learning rate: all in
    OWN_LR, or none)."""
    own_lr = method.split(",")[0] in OWN_LR
    own = [o for o in plan.overrides if not (own_lr and o.startswith("trainer.lr="))]
    preset = [f"experiment={plan.preset}"] if plan.preset else []
    return [*preset, f"method={method}", *own, *plan.items[item], f"model.params={budget}", *extra]


def budget_runs(plans: dict[str, TaskPlan], tasks: list[str], methods: list[str], budgets: list[int], out: Path,
                extra: list[str]) -> list[Run]:
    """Every task x data item x budget x method, each in out/runs/<task>/<item>@<budget>/<method>."""
    runs: list[Run] = []
    for task in tasks:
        plan = plans[task]
        for item in plan.items:
            for budget in budgets:
                label = f"{item}@{budget}"
                runs += [Run(task, label, m, out / "runs" / task / label / m,
                             method_overrides(plan, item, m, budget, extra)) for m in methods]
    return runs


def launch_methods(plan: TaskPlan, task: str, item: str, budget: int, methods: list[str], sweep_dir: Path,
                   launcher: str, extra: list[str]) -> int:
    """One Hydra multirun over the methods of one task, data item and budget; each job in sweep_dir/<method>.
    Methods that keep the plan's learning rate and those with their own go in separate sweeps."""
    code = 0
    for group in ([m for m in methods if m not in OWN_LR], [m for m in methods if m in OWN_LR]):
        if not group:
            continue
        overrides = method_overrides(plan, item, ",".join(group), budget, extra)
        args = multirun_command(overrides, sweep_dir, "${hydra:runtime.choices.method}", launcher)
        code = run_ffrun(args, f"{task} [{item}, {budget} parameters]") or code
        if code in SIGNALLED:
            return code
    return code


