"""Each task's protocol at a scale (smoke, cpu, paper): its preset, overrides, data items and encodings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ffrun.sweep.paper import ENCODINGS, PAPER_DATA

SCALES = ("smoke", "cpu", "paper")
PHOTOS = ("camera", "coffee", "chelsea", "rocket", "grace_hopper", "immunohistochemistry")
# The authors' image sets in the data directory (images/<set>/<split>/NN.png, ffrun.data.images), per task;
# the cpu scale trains the first CPU_SET_IMAGES test images of each (the paper scale all of them).
IMAGE_SETS = {"image": "div2k", "text": "text"}
CPU_SET_IMAGES = 2
FAST = ("trainer.progress=false",)


@dataclass
class TaskPlan:
    """How one task runs at one scale: the preset, overrides for every run, one override list per data
    item (averaged over, as the paper averages over test images), and the encodings."""

    preset: str
    overrides: list[str]
    items: dict[str, list[str]]
    encodings: tuple[str, ...] = ENCODINGS
    note: str = ""  # what stands in for the paper's data, when it is absent


def job_overrides(plan: TaskPlan, item: str, encoding: str, extra: list[str]) -> list[str]:
    """One Table 1 job's overrides (`encoding` may be a comma-separated sweep)."""
    return [f"experiment={plan.preset}", f"encoding={encoding}", *plan.overrides, *plan.items[item], *extra]


def resolution(overrides: list[str]) -> int:
    """The image side the overrides set (the last task.resolution=), else the presets' 512."""
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("task.resolution=")]
    return int(given[-1]) if given else 512


def set_indices(data: Path, name: str, split: str = "test") -> list[int]:
    """The image numbers of images/<name>/<split>/NN.png under `data`, [] when absent."""
    folder = data / "images" / name / split
    return sorted(int(p.stem) for p in folder.glob("*.png") if p.stem.isdigit()) if folder.is_dir() else []


def set_items(name: str, indices: list[int], split: str = "test") -> dict[str, list[str]]:
    """One data item per image: `<set>_NN` (or `<set>_<split>_NN`) -> task.image=<set>:NN (<set>:<split>/NN)."""
    tag = "" if split == "test" else f"{split}_"
    ref = "" if split == "test" else f"{split}/"
    return {f"{name}_{tag}{i:02d}": [f"task.image={name}:{ref}{i:02d}"] for i in indices}


def set_note(task: str, data: Path, indices: list[int], used: int, resolution: int | None = None) -> str:
    """The table's data column for an image set: which images, and how they were reduced to `resolution`."""
    name = IMAGE_SETS[task]
    what = {"image": "the authors' DIV2K test crops", "text": "the authors' text test images"}[task]
    how = {"image": f", area-averaged to {resolution} px",
           "text": f", a {resolution} px window of each 512 px page (glyphs keep their size in pixels)"}[task]
    which = (f"all {used}, {name}:{indices[0]:02d}..{indices[-1]:02d}" if used >= len(indices) else
             f"{used} of {len(indices)}, {', '.join(f'{name}:{i:02d}' for i in indices[:used])}")
    return f"{what} ({data / 'images' / name / 'test'}): {which}{how if resolution else ''}"


def data_label(plan: TaskPlan) -> str:
    """The markdown table's data column: the data items (the full description is under "Data" and in the
    CSV), marked when a stand-in replaces the paper's data."""
    names = list(plan.items)
    items = f"{names[0]} .. {names[-1]} ({len(names)})" if len(names) > 3 else ", ".join(names)
    return f"stand-in: {items}" if "stand-in" in plan.note else items


@dataclass
class Found:
    """The real data under a data directory, as data items, and a note per task where a stand-in is used."""

    data: Path
    meshes: dict[str, list[str]]
    brain: dict[str, list[str]]
    nerf: dict[str, list[str]]
    sets: dict[str, list[int]]
    notes: dict[str, str]


def find_data(data: Path) -> Found:
    meshes = [p for p in (data / "meshes" / f"{m}.obj" for m in ("dragon", "armadillo", "bunny")) if p.is_file()]
    brain = data / "mri" / "colin27_t1_brain.nii.gz"
    lego = data / "nerf" / "lego_400"
    has_lego = (lego / "transforms_train.json").is_file()
    missing = f"not found under {data}, so ffrun's built-in stand-in is used"
    notes = {"shape": "" if meshes else f"Stanford meshes {missing} (a ridged sphere)",
             "mri": "" if brain.is_file() else f"a brain volume {missing} (a 3D Shepp-Logan phantom)",
             "nerf": "" if has_lego else f"the Lego scene {missing} (a ray-traced still life)"}
    sets = {t: set_indices(data, name) for t, name in IMAGE_SETS.items()}
    for task, name in IMAGE_SETS.items():
        if not sets[task]:
            notes[task] = (f"stand-in: {PAPER_DATA[task].split(' = ')[1]} (the authors' set, images/{name}/test/, "
                           f"not found under {data})")
    return Found(data, {p.stem: [f"task.mesh={p}"] for p in meshes} or {"builtin": []},
                 {"colin27": [f"task.volume={brain}"]} if brain.is_file() else {"phantom": []},
                 {"lego": [f"task.data={lego}"]} if has_lego else {"builtin": []}, sets, notes)


def smoke_plans(found: Found) -> dict[str, TaskPlan]:
    """Seconds per run, on ffrun's built-in stand-ins: what CI runs."""
    tiny = [*FAST, "model.width=32", "trainer.eval_every=1000", "trainer.ckpt_every=0"]
    builtin = "smoke scale: ffrun's built-in stand-in"
    return {
        "image": TaskPlan("paper_image", [*tiny, "task.resolution=32", "trainer.steps=30"],
                          {"astronaut": ["task.image=astronaut"]}, note=builtin),
        "text": TaskPlan("paper_text", [*tiny, "task.resolution=32", "trainer.steps=30"],
                         {"text0": ["task.data_seed=0"]}, note=builtin),
        "shape": TaskPlan("paper_shape", [*tiny, "model.depth=3", "trainer.steps=10", "trainer.batch_size=1024",
                                          "task.test_points=4096", "task.mesh_resolution=24"], {"builtin": []},
                          note=builtin),
        "ct": TaskPlan("paper_ct", [*tiny, "task.resolution=32", "trainer.steps=30"],
                       {"phantom0": ["task.data_seed=0"]}, (*ENCODINGS, "grid")),
        "mri": TaskPlan("paper_mri", [*tiny, "task.resolution=16", "trainer.steps=10"],
                        {"phantom": []}, (*ENCODINGS, "grid"), note=builtin),
        "nerf": TaskPlan("paper_nerf", [*tiny, "task.builtin_resolution=16", "task.n_samples=16", "trainer.steps=10",
                                        "trainer.batch_size=256", "task.test_views=1", "task.turntable_frames=0"],
                         {"builtin": []}, note=builtin),
    }


def cpu_plans(found: Found) -> dict[str, TaskPlan]:
    """About 40 minutes on an idle 2-core CPU: each task's protocol at a smaller size (sigma and posenc's
    top band follow the size through the presets' per-sample rules), fewer data items, and fewer steps
    where a full schedule would not fit. Image and text: the first CPU_SET_IMAGES of the authors' test
    images at 128 px."""
    notes, sets = dict(found.notes), found.sets
    for task in IMAGE_SETS:
        if sets[task]:
            notes[task] = set_note(task, found.data, sets[task], CPU_SET_IMAGES, 128)
    return {
        "image": TaskPlan("paper_image", [*FAST, "task.resolution=128", "trainer.steps=1000",
                                          "trainer.eval_every=1000"],
                          set_items("div2k", sets["image"][:CPU_SET_IMAGES])
                          or {p: [f"task.image={p}"] for p in PHOTOS[:2]}, note=notes["image"]),
        "text": TaskPlan("paper_text", [*FAST, "task.resolution=128", "trainer.steps=1000", "trainer.eval_every=1000"],
                         set_items("text", sets["text"][:CPU_SET_IMAGES]) or {"text0": ["task.data_seed=0"]},
                         note=notes["text"]),
        "shape": TaskPlan("paper_shape", [*FAST, "trainer.steps=600", "trainer.batch_size=8192", "trainer.lr=2e-3",
                                          "trainer.lr_decay_steps=600", "trainer.eval_every=600",
                                          "trainer.ckpt_every=300", "task.mesh_resolution=96"],
                          dict(list(found.meshes.items())[:1]), note=notes["shape"]),
        # The paper's CT protocol but for the grid: 20 angles and 1000 steps at 128^2 (docs/protocol.md).
        "ct": TaskPlan("paper_ct", [*FAST, "task.resolution=128", "trainer.steps=1000", "trainer.eval_every=1000"],
                       {"phantom0": ["task.data_seed=0"]}, (*ENCODINGS, "grid")),
        "mri": TaskPlan("paper_mri", [*FAST, "task.resolution=32", "trainer.steps=500", "trainer.eval_every=500"],
                        found.brain, (*ENCODINGS, "grid"), note=notes["mri"]),
        "nerf": TaskPlan("paper_nerf", [*FAST, "task.downscale=8", "task.n_samples=32", "trainer.steps=1000",
                                        "trainer.eval_every=1000", "trainer.ckpt_every=500",
                                        "task.turntable_frames=0"], found.nerf, note=notes["nerf"]),
    }


def paper_plans(found: Found) -> dict[str, TaskPlan]:
    """The authors' full protocol: every data item, the presets' own schedules."""
    notes, sets = dict(found.notes), found.sets
    for task in IMAGE_SETS:
        if sets[task]:
            notes[task] = set_note(task, found.data, sets[task], len(sets[task]))
    return {
        "image": TaskPlan("paper_image", [*FAST], set_items("div2k", sets["image"])
                          or {p: [f"task.image={p}"] for p in PHOTOS}, note=notes["image"]),
        "text": TaskPlan("paper_text", [*FAST], set_items("text", sets["text"])
                         or {f"text{s}": [f"task.data_seed={s}"] for s in range(6)}, note=notes["text"]),
        "shape": TaskPlan("paper_shape", [*FAST], found.meshes, note=notes["shape"]),
        "ct": TaskPlan("paper_ct", [*FAST], {f"phantom{s}": [f"task.data_seed={s}"] for s in range(4)},
                       (*ENCODINGS, "grid")),
        "mri": TaskPlan("paper_mri", [*FAST], found.brain, (*ENCODINGS, "grid"), note=notes["mri"]),
        "nerf": TaskPlan("paper_nerf", [*FAST], found.nerf, note=notes["nerf"]),
    }


def plans(scale: str, data: Path) -> dict[str, TaskPlan]:
    """Each task's protocol at `scale`, reading real data from `data` where it is present."""
    build = {"smoke": smoke_plans, "cpu": cpu_plans, "paper": paper_plans}
    if scale not in build:
        raise ValueError(scale)
    return build[scale](find_data(data))
