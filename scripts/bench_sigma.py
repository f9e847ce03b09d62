"""How good is sigma=auto? Trained networks at the sigmas each way of choosing picks, against a grid search.

    python scripts/bench_sigma.py --out bench_sigma.json              # image cases (and toy1d), CPU scale
    python scripts/bench_sigma.py --out b.json --phase grid           # only the grid's trainings
    python scripts/bench_sigma.py --out b.json --report               # the table from what is there

Per case it trains the task's network at the sigmas below. The cases: photos and text images of the image
task and toy1d signals (their preset at --resolution and --steps), and the CT phantoms, the MRI volume,
the meshes and the NeRF scene at ffrun-reproduce's cpu scale (`ffrun.apps.reproduce.plans`, the same runs as
the cpu Table 1). The sigmas:
  grid     a log grid of >= 8 sigmas (default * 2^(k/2), k = --grid); the best held-out metric is the
           grid search's answer (its cost: the sum of its trainings),
  default  the task's default sigma (task.default_sigma: the paper's, scaled to the sampling density),
  paper    the paper's sigma scaled to the samples per unit length, sigma_paper * N / N_paper (the same
           rule, written out: for the image task it equals the default),
  fresh    FreSh's pick (ffrun.sigma.fresh.fresh_scores: untrained output spectrum vs the training
           signal's, Wasserstein distance),
  auto     sigma=auto (ffrun.sigma.auto.predict_sigma),
and prints each one's held-out metric, the seconds it spent choosing, and for auto the mean and worst gap
to the grid's best and its cost as a fraction of one training run. Every result is written to --out as
it arrives (JSON) and reused on the next call, so an interrupted benchmark resumes.

The photographs are those shipped with scikit-image and matplotlib (no download), except chelsea, the
sigma-tuning photo of `experiment=search_sigma`, and the images the method was tuned on (TUNING).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

# isort: off
import ffrun  # noqa: F401  (before torch: MKL's optimized path on any x86 CPU, ffrun.util.blas)
# isort: on
import torch

from ffrun.apps.reproduce import plans
from ffrun.data.location import data_dir
from ffrun.run.compose import compose
from ffrun.run.job import prepare
from ffrun.sigma.auto import candidate_sigmas, predict_sigma
from ffrun.sigma.fresh import fresh_scores
from ffrun.tasks import build_task, task_class
from ffrun.train.loop import optimizer_for, train_step
from ffrun.util.atomic import write_json
from ffrun.util.errors import FfrunError

SKIMAGE_FILES = {"hubble_deep_field": "hubble_deep_field.jpg", "motorcycle_left": "motorcycle_left.png",
                 "retina": "retina.jpg", "coins": "coins.png", "brick": "brick.png"}
PHOTOS = ("astronaut", "camera", "coffee", "rocket", "immunohistochemistry", "grace_hopper", "hubble_deep_field",
          "motorcycle_left")
TEXTS = (0, 1, 2, 3)  # task.data_seed of the rendered text images
# Used while designing the method (its constants); kept out of the benchmark (--tuning runs them).
TUNING_PHOTOS = ("chelsea", "coins", "brick")
TUNING_TEXTS = (100,)
TOY1D_TUNING = {"toy1d tune a0.75": ["task.alpha=0.75", "task.data_seed=100"],
                "toy1d tune a1.5": ["task.alpha=1.5", "task.data_seed=100"],
                "toy1d tune a1 f32": ["task.alpha=1.0", "task.max_freq=32", "task.data_seed=100"]}
TOY1D = {"toy1d a0.5": ["task.alpha=0.5"], "toy1d a1": ["task.alpha=1.0"], "toy1d a2": ["task.alpha=2.0"],
         "toy1d a1 f16": ["task.alpha=1.0", "task.max_freq=16"]}
CT_PHANTOMS = (0, 1)  # task.data_seed of the test-split phantoms
PAPER_SIGMA = {"photo": (10.0, 512), "text": (14.0, 512), "ct": (4.0, 512), "mri": (5.0, 96)}  # sigma, grid side
# The 1D signals' best sigma lies further from the default (10): a wider grid, cheap in 1D.
GRID_BY_KIND = {"toy1d": list(range(-6, 6)),
                # the shape's default (12) was chosen after 10,000 steps; the cpu scale trains 600
                "shape": [-8, -6, -5, -4, -3, -2, 0, 2]}


def skimage_file(name: str, folder: Path) -> str:
    """A photograph bundled with scikit-image, as a PNG the image task reads (no network access)."""
    import skimage
    from PIL import Image

    out = folder / f"{name}.png"
    if not out.is_file():
        Image.open(Path(skimage.__file__).parent / "data" / SKIMAGE_FILES[name]).save(out)
    return str(out)


def cases(args, folder: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (kind, overrides)."""
    base = ["device=cpu", "trainer.progress=false", f"trainer.steps={args.steps}", "trainer.eval_every=100000"]
    out = {}
    photos, texts = (TUNING_PHOTOS, TUNING_TEXTS) if args.tuning else (PHOTOS, TEXTS)
    if "image" in args.tasks:
        for p in photos:
            image = skimage_file(p, folder) if p in SKIMAGE_FILES else p
            out[p] = ("photo", ["experiment=paper_image", f"task.image={image}", f"task.resolution={args.resolution}",
                                *base])
        for s in texts:
            out[f"text{s}"] = ("text", ["experiment=paper_text", f"task.data_seed={s}",
                                        f"task.resolution={args.resolution}", *base])
    if "toy1d" in args.tasks:
        for name, extra in (TOY1D_TUNING if args.tuning else TOY1D).items():
            out[name] = ("toy1d", ["task=toy1d", *extra, *base])
    # The other tasks at their cpu scale: ffrun-reproduce's plan (preset, overrides, data items)
    cpu = plans("cpu", args.data)
    for task in ("ct", "mri", "shape", "nerf"):
        if task not in args.tasks:
            continue
        plan = cpu[task]
        shared = [o for o in plan.overrides if not o.startswith(("trainer.eval_every=", "trainer.progress="))]
        items = ({f"phantom{s}": [f"task.data_seed={s}"] for s in CT_PHANTOMS} if task == "ct" and not args.tuning
                 else {"phantom100": ["task.data_seed=100"]} if task == "ct" else plan.items)
        for item, extra in items.items():
            out[f"{task} {item}"] = (task, [f"experiment={plan.preset}", *shared, *extra, "device=cpu",
                                            "trainer.eval_every=100000"])
    return out


def train_once(overrides: list[str], sigma: float, task=None) -> tuple[dict, float, object]:
    """Train the case's network at sigma; (its held-out metrics, training seconds, the task)."""
    cfg = compose([*overrides, f"sigma={sigma!r}"])
    with tempfile.TemporaryDirectory() as tmp:
        job = prepare(cfg, Path(tmp), task=task)
    tr = cfg.trainer
    optimizer, schedule = optimizer_for(job.field, job.lr, tr)
    start = time.perf_counter()
    for i in range(tr.steps):
        train_step(job.task, job.field, optimizer, schedule, i)
    seconds = time.perf_counter() - start
    job.field.eval()
    return job.task.evaluate(job.field), seconds, job.task


class Results:
    """The JSON file: per case, every trained sigma's metrics and each method's pick."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    def case(self, name: str) -> dict:
        return self.data.setdefault(name, {"runs": {}, "picks": {}})

    def save(self) -> None:
        write_json(self.path, self.data)


def key(sigma: float) -> str:
    return f"{sigma:.6g}"


def ensure_run(res: Results, name: str, overrides: list[str], sigma: float, state: dict) -> dict:
    runs = res.case(name)["runs"]
    if key(sigma) not in runs:
        metrics, seconds, state["task"] = train_once(overrides, sigma, state.get("task"))
        runs[key(sigma)] = {"sigma": sigma, "metrics": metrics, "train_s": seconds}
        res.save()
        primary = state["task"].primary_metric
        print(f"  {name} sigma={sigma:.4g}: {primary} {metrics[primary]:.3f} ({seconds:.1f} s)", flush=True)
    return runs[key(sigma)]


def grid_sigmas(default: float, ks: list[int]) -> list[float]:
    return [default * 2 ** (k / 2) for k in ks]


def run_case(res: Results, name: str, kind: str, overrides: list[str], args) -> None:
    cfg = compose([*overrides])
    default = float(cfg.sigma)
    state: dict = {}
    for s in grid_sigmas(default, GRID_BY_KIND.get(kind, args.grid)) if args.phase in ("grid", "all") else ():
        ensure_run(res, name, overrides, s, state)
    res.case(name)["metric"] = task_class(cfg.task.name).primary_metric
    if args.phase == "grid":
        return
    if args.phase == "noise":  # the same default sigma, another seed: how much one run's metric moves
        noise = res.case(name).setdefault("seed_noise", {})
        if "seed1" not in noise:
            metrics, seconds, _ = train_once([*overrides, "seed=1"], default)
            noise["seed1"] = {"sigma": default, "metrics": metrics, "train_s": seconds}
            res.save()
            print(f"  {name} seed=1 sigma={default:.4g}: {metrics}", flush=True)
        return
    picks = res.case(name)["picks"]
    if "task" not in state:
        state["task"] = build_task(cfg.task, torch.device("cpu"), None, cfg.seed)
    task = state["task"]
    torch.set_num_threads(1)
    try:
        auto = predict_sigma(task, compose([*overrides, "sigma=auto"]))
        picks["auto"] = {"sigma": auto.sigma, "seconds": auto.seconds, "record": auto.record()}
    except FfrunError as e:  # a task sigma=auto refuses (say CT with too few angles): recorded, not trained
        picks["auto"] = {"error": str(e)}
        print(f"  {name}: sigma=auto refused: {e}", flush=True)
    if kind in PAPER_SIGMA:
        sigma_paper, side = PAPER_SIGMA[kind]
        picks["paper"] = {"sigma": sigma_paper * cfg.task.resolution / side, "seconds": 0.0}
    if kind in ("photo", "text", "ct", "mri"):
        _, candidates = candidate_sigmas(task)  # the same candidates as sigma=auto's
        start = time.perf_counter()
        scores = fresh_scores(task, cfg, candidates)
        best = min(range(len(scores)), key=lambda i: scores[i])
        picks["fresh"] = {"sigma": candidates[best], "seconds": time.perf_counter() - start,
                          "candidates": candidates, "distances": scores}
    res.save()
    for method in ("auto", "fresh", "paper"):
        if "sigma" in picks.get(method, {}):
            ensure_run(res, name, overrides, picks[method]["sigma"], state)


def report(res: Results, args, case_kinds: dict[str, str]) -> str:
    lines = ["| case | grid best (sigma) | default (sigma) | paper scaled (sigma) | FreSh (sigma) | auto (sigma) "
             "| auto - grid | FreSh - grid | auto s | FreSh s | grid s | one run s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    gaps: dict[str, list[float]] = {"auto": [], "fresh": [], "paper": [], "default": []}
    ratios = []
    groups: dict[str, dict[str, list[float]]] = {}
    for name, kind in case_kinds.items():
        if name not in res.data:
            continue
        case = res.data[name]
        runs = case["runs"]
        metric = case.get("metric", "test_psnr")
        ks = GRID_BY_KIND.get(kind, args.grid)
        grid = [r for r in runs.values() if r["sigma"] in set(grid_sigmas(case["default_sigma"], ks))]
        if len(grid) < len(ks):
            continue
        best = max(grid, key=lambda r: r["metrics"][metric])
        cell = {"default": runs.get(key(case["default_sigma"]))}
        for method in ("paper", "fresh", "auto"):
            pick = case["picks"].get(method, {})
            cell[method] = runs.get(key(pick["sigma"])) if "sigma" in pick else None
        fmt = lambda r: "-" if r is None else f"{r['metrics'][metric]:.2f} ({r['sigma']:.3g})"  # noqa: E731
        gap = {m: (None if cell[m] is None else cell[m]["metrics"][metric] - best["metrics"][metric]) for m in cell}
        for m, g in gap.items():
            if g is not None:
                gaps[m].append(g)
                groups.setdefault(kind, {}).setdefault(m, []).append(g)
        one_run = statistics.mean(r["train_s"] for r in grid)
        grid_s = sum(r["train_s"] for r in grid)
        auto_s = case["picks"].get("auto", {}).get("seconds")
        fresh_s = case["picks"].get("fresh", {}).get("seconds")
        if auto_s is not None:
            ratios.append(auto_s / one_run)
        g = lambda v: "-" if v is None else f"{v:+.2f}"  # noqa: E731
        s = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        lines.append(f"| {name} | {fmt(best)} | {fmt(cell['default'])} | {fmt(cell['paper'])} | {fmt(cell['fresh'])} "
                     f"| {fmt(cell['auto'])} | {g(gap['auto'])} | {g(gap['fresh'])} | {s(auto_s)} | {s(fresh_s)} "
                     f"| {grid_s:.0f} | {one_run:.1f} |")
    lines.append("")
    for kind, per in groups.items():
        for m, values in per.items():
            if values:
                lines.append(f"{kind}: {m} - grid best: mean {statistics.mean(values):+.3f} dB, worst "
                             f"{min(values):+.3f} dB over {len(values)} cases")
    image = {m: [g for kind in ("photo", "text") for g in groups.get(kind, {}).get(m, [])] for m in gaps}
    lines.append("(gaps in the case's metric: dB for PSNR)")
    for m, values in image.items():
        if values:
            lines.append(f"image cases: {m} - grid best: mean {statistics.mean(values):+.3f} dB, worst "
                         f"{min(values):+.3f} dB over {len(values)} cases")
    diffs = []
    for name in case_kinds:
        case = res.data.get(name, {})
        other = case.get("seed_noise", {}).get("seed1")
        base = case.get("runs", {}).get(key(case.get("default_sigma", -1)))
        if other and base:
            metric = case.get("metric", "test_psnr")
            diffs.append(other["metrics"][metric] - base["metrics"][metric])
    if diffs:
        lines.append(f"seed noise (seed 1 - seed 0 at the default sigma): mean |diff| "
                     f"{statistics.mean(abs(d) for d in diffs):.3f}, max |diff| {max(abs(d) for d in diffs):.3f} "
                     f"over {len(diffs)} cases")
    if ratios:
        lines.append(f"prediction cost / one training run: mean {statistics.mean(ratios):.4f}, max {max(ratios):.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_sigma.json"))
    ap.add_argument("--tasks", default="image,toy1d,ct,mri",
                    help="comma-separated: image, toy1d (at --resolution / --steps), ct, mri, shape, nerf (at "
                         "ffrun-reproduce's cpu scale)")
    ap.add_argument("--resolution", type=int, default=64, help="image side of the image cases")
    ap.add_argument("--steps", type=int, default=1000, help="training steps of the image and toy1d cases")
    ap.add_argument("--data", type=Path, default=None, help="data folder of the cpu-scale tasks (default: $FFRUN_DATA, "
                    "else ../shared/data beside the checkout)")
    ap.add_argument("--grid", default="-4,-3,-2,-1,0,1,2,3",
                    help="k of the grid sigmas default * 2^(k/2) (at least 8 for the issue's protocol)")
    ap.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    ap.add_argument("--phase", choices=("grid", "methods", "noise", "all"), default="all",
                    help="grid: only the grid's trainings; methods: only the methods' picks and their trainings "
                         "(two processes can share the work, each with its own --out; see --merge)")
    ap.add_argument("--merge", type=Path, nargs="*", default=[], help="more result files to read (runs and picks)")
    ap.add_argument("--tuning", action="store_true", help="the images the method was tuned on, not the benchmark's")
    ap.add_argument("--report", action="store_true", help="only print the table from --out")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training (1: steady on a shared CPU)")
    args = ap.parse_args(argv)
    args.tasks = args.tasks.split(",")
    args.data = args.data or data_dir()
    args.grid = [int(k) for k in args.grid.split(",")]
    torch.set_num_threads(args.threads)
    res = Results(args.out)
    for other in args.merge:
        for name, case in json.loads(other.read_text()).items():
            if name.startswith("_"):
                continue
            mine = res.case(name)
            mine["runs"].update({k: v for k, v in case.get("runs", {}).items() if k not in mine["runs"]})
            mine["picks"] = {**case.get("picks", {}), **mine["picks"]}
            for k in ("default_sigma", "metric", "seed_noise"):
                if case.get(k) is not None:
                    mine.setdefault(k, case.get(k))
    folder = args.out.parent / "bench_sigma_images"
    folder.mkdir(parents=True, exist_ok=True)
    all_cases = cases(args, folder)
    chosen = args.cases.split(",") if args.cases else list(all_cases)
    kinds = {n: all_cases[n][0] for n in chosen}
    if not args.report:
        res.data.setdefault("_settings", {"resolution": args.resolution, "steps": args.steps, "grid": args.grid})
        for name in chosen:
            kind, overrides = all_cases[name]
            res.case(name)["default_sigma"] = float(compose(overrides).sigma)
            print(f"{name} ({kind})", flush=True)
            start = time.perf_counter()
            run_case(res, name, kind, overrides, args)
            print(f"  {name} done in {time.perf_counter() - start:.0f} s", flush=True)
    print(report(res, args, kinds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
