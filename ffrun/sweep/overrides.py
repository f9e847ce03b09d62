"""The Hydra overrides a sweep command takes: whether they are overrides at all, whether they fit every
task's plan, and which of them define a job's result (to tell a finished run from one with other settings)."""

from __future__ import annotations

from ffrun.sweep.plans import TaskPlan, job_overrides


def not_an_override(extra: list[str]) -> str | None:
    """The first trailing argument that is not a Hydra override (key=value), or None."""
    return next((o for o in extra if "=" not in o or o.startswith("-")), None)


def job_keys(overrides: list[str]) -> set[tuple[str, str]]:
    """The overrides that define a job's result (not where it runs, on how many threads, how it resumes or shows
    progress), as (key, value) parsed by Hydra: .hydra/overrides.yaml records a sweep's values re-serialised
    (trainer.lr=2e-3 comes back as trainer.lr=0.002, true as True), so the text alone does not compare.
    A key given twice counts with its last value, as Hydra applies it (a trailing `trainer.steps=...` after the
    scale's own)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    kept = [o for o in overrides
            if not o.startswith(("hydra", "trainer.resume=", "trainer.progress=", "trainer.threads="))]
    try:
        parsed = OverridesParser.create().parse_overrides(kept)
    except Exception:  # not parseable: compare the text
        return {(o, "") for o in kept}
    return set({f"{o.get_key_element()}": repr(o.value()) for o in parsed}.items())


def check_overrides(plans: dict[str, TaskPlan], tasks: list[str], extra: list[str]) -> str | None:
    """Why the trailing overrides cannot run, as one line, or None: they must compose with every task's
    plan and pass ffrun's range checks, before anything is recorded or run; and the encoding is the
    table's own sweep, not an override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(extra)
    except Exception as e:
        return f"overrides {' '.join(extra)!r}: {' '.join(str(e).split())[:300]}"
    for o in parsed:
        if o.key_or_group in ("encoding", "encoding.name") or o.key_or_group.startswith("encoding@"):
            return (f"{o.input_line!r}: the table sweeps every encoding itself; drop the override (or run "
                    f"`ffrun -m encoding=...` for a sweep of your own)")
    from ffrun.config import validate
    from ffrun.run.compose import compose

    for task in tasks:
        plan = plans[task]
        item = next(iter(plan.items))
        try:
            validate(compose(job_overrides(plan, item, plan.encodings[-1], extra)))
        except Exception as e:
            return f"overrides {' '.join(extra)!r} do not fit the {task} runs: {' '.join(str(e).split())[:300]}"
    return None
