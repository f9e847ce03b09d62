"""Which runs the Grids benchmark's table needs (the plan), their overrides and folders, launching them, and
the checks made before anything runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ffrun.sweep.commands import multirun_command
from ffrun.sweep.execute import SIGNALLED, run_ffrun
from ffrun.sweep.grids.published import (
    DEFAULT_BUDGETS,
    DEFAULT_NOISE,
    EXPERIMENT,
    IMAGE_SET,
    IMAGES,
    METHODS,
    ORIGINALS,
    tag,
)
from ffrun.sweep.runs import Run


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
    return (f"superres runs only on the images whose originals the benchmark carries ({tags(ORIGINALS)}): here "
            f"{tags(kept) or 'none'}; the published superres mean covers all ten images, so no verdict is given "
            "and ffrun's fit score on the same images stands beside it")


def plan_summary(plan: GridsPlan) -> list[str]:
    """What the invocation runs, a line per protocol (said before the runs start)."""
    lines = []
    for p in plan.protocols:
        images = plan.images_of(p)
        what = f" (noise std {plan.noise:g})" if p == "denoise" else ""
        lines.append(f"grids {p}{what}: images {tags(images)} x budgets {', '.join(f'{b:,}' for b in plan.budgets)}"
                     f" x {', '.join(plan.methods)} = {len(images) * len(plan.budgets) * len(plan.methods)} runs")
    if "superres" in plan.protocols:
        lines.append(superres_note(plan))
    if plan.subset:
        lines.append(f"images {tags(plan.images)}: a quick look at a subset of the ten; the table gives no verdict")
    return lines


def tags(images) -> str:
    return ", ".join(tag(i) for i in images)


# ---- the results ----------------------------------------------------------------------------------------
