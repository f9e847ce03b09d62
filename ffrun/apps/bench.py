"""`ffrun-bench` (also `python scripts/bench.py`): how close a training step is to the hardware, measured
in one process on one device.

For each task's paper protocol (image, shape, ct, mri, nerf):
  (a) ceiling: the float32 matrix-multiply rate at the MLP's own shapes (every forward and backward
      product of one step, timed alone on preallocated tensors);
  (b) flops: the multiply-adds of one training step counted from the architecture (2 per multiply-add;
      forward N x in x out per layer, backward the same for the weight gradient and, except for the first
      layer whose input needs no gradient, for the input gradient);
  (c) ffrun: the step time of ffrun's own training step (the training loop's `SingleField.step`);
  (d) plain (image): a loop a user would write by hand: nn.Sequential, Adam, the encoding recomputed
      every step, full batch;
  (e) network: the MLP's own forward and backward at the step's points on precomputed features, so the
      rest of the step (the encoding, a task's forward model such as CT's projector or MRI's FFT, the loss,
      the optimizer) shows as `other` = ffrun - network;
and prints efficiency = (flops / ffrun step time) / ceiling and speedup = plain / ffrun, medians over
repeated steps. `--vectorized` adds K-job sweep times, vectorized against sequential.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from omegaconf import OmegaConf
from torch import nn

from ffrun.data.location import data_dir
from ffrun.run.compose import compose
from ffrun.run.device import peak_memory_mb, resolve_device
from ffrun.run.job import prepare
from ffrun.tasks.cost import layer_shapes, step_flops
from ffrun.train.loop import SingleField, optimizer_for, precision_context
from ffrun.util.errors import FfrunError
from ffrun.util.paths import expand_user


@dataclass(frozen=True)
class Preset:
    """A task's paper protocol as benchmarked: its overrides, whether the hand-written loop runs beside it
    (`plain_image_loop`: full-batch regression of an image), and real data used when $FFRUN_DATA has it."""

    overrides: tuple[str, ...]
    plain_loop: bool = False
    data: str | None = None  # task.data=$FFRUN_DATA/<data> when that folder holds a scene


TASK_PRESETS = {
    "image": Preset(("experiment=paper_image",), plain_loop=True),
    "shape": Preset(("experiment=paper_shape",)),
    "ct": Preset(("experiment=paper_ct",)),
    "mri": Preset(("experiment=paper_mri",)),
    "nerf": Preset(("experiment=paper_nerf",), data="nerf/lego_400"),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> float:
    times = []
    for i in range(warmup + repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_ceiling(n_points: int, shapes: list[tuple[int, int]], device: torch.device, repeats: int,
                   others: bool = True) -> dict:
    """The step's products timed alone on every path measured (ffrun.run.ceiling): on the CPU MKL's path in this
    process, MKL's generic path and numpy's BLAS in child processes, bf16 where the CPU has it; on a GPU the
    float32 products. `best_fp32_gflops` is the ceiling."""
    from ffrun.run.ceiling import rates, torch_rate

    if device.type == "cpu":
        return rates(n_points, shapes, repeats, others)
    g = torch_rate(n_points, shapes, repeats, device=device) / 1e9
    return {"rates_gflops": {"torch fp32": g}, "best_fp32": "torch fp32", "best_fp32_gflops": g, "blas": None}


def network_time(field, n_points: int, device: torch.device, repeats: int) -> float:
    """Seconds of the network's forward and backward at `n_points` points, on features computed once (as a
    full-batch step's cached features are): the part of a step the FLOP count describes."""
    with torch.no_grad():
        x = torch.rand(n_points, field.in_dim, device=device)
        features = field.encoding(x).detach()
    features.requires_grad_(not field.static_encoding)  # a trained encoding needs the features' gradient too

    def forward_backward():
        field.zero_grad(set_to_none=True)
        field.from_features(features).sum().backward()

    return median_time(forward_backward, device, repeats)


def build(cfg, device: torch.device):
    from ffrun.models.field import build_field
    from ffrun.tasks import build_task

    task = build_task(cfg.task, device, cfg.trainer.batch_size, cfg.seed)
    field = build_field(cfg.encoding, cfg.model, task.in_dim, task.out_dim, task.out_activation, cfg.seed,
                        bounds=task.bounds).to(device)
    optimizer, schedule = optimizer_for(field, float(cfg.trainer.lr), cfg.trainer)
    return task, field, optimizer, schedule


def plain_image_loop(task, field, lr: float, device: torch.device):
    """What a user writes by hand for the image protocol, from the same initial weights and B."""
    coords, target = task.train
    B = field.encoding.B.clone()
    layers = []
    for module in field.mlp.net:
        if isinstance(module, nn.Linear):
            layer = nn.Linear(module.in_features, module.out_features).to(device)
            layer.load_state_dict(module.state_dict())
            layers += [layer, nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step():
        optimizer.zero_grad()
        proj = 2 * math.pi * coords @ B.T
        features = torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)
        loss = 0.5 * torch.mean((torch.sigmoid(model(features)) - target) ** 2)
        loss.backward()
        optimizer.step()
        return loss

    def predict_test():
        with torch.no_grad():
            proj = 2 * math.pi * task.test[0] @ B.T
            return torch.sigmoid(model(torch.cat([torch.sin(proj), torch.cos(proj)], -1)))

    return step, predict_test


def bench_task(name: str, overrides: list[str], device: torch.device, repeats: int, check_steps: int,
               others: bool = True) -> dict:
    from ffrun.util.metrics import psnr

    preset = TASK_PRESETS[name]
    base = compose([*preset.overrides, f"device={device}"])
    # a `task.` override applies to the tasks that have the key (task.resolution: image and mri, ...)
    missing = object()
    # and `TASK:key=value` only to TASK (nerf:trainer.batch_size=256)
    overrides = [o.split(":", 1)[1] if ":" in o.split("=", 1)[0] else o for o in overrides
                 if ":" not in o.split("=", 1)[0] or o.startswith(f"{name}:")]
    overrides = [o for o in overrides if not o.startswith("task.")
                 or OmegaConf.select(base, o.split("=", 1)[0], default=missing) is not missing]
    cfg = compose([*preset.overrides, f"device={device}", *overrides])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    task, field, optimizer, schedule = build(cfg, device)
    n = task.points_per_step()
    shapes = layer_shapes(field.encoding.out_dim, cfg.model.depth, cfg.model.width, task.out_dim)
    flops = step_flops(n, shapes)
    counter = iter(range(10**9))
    precision = cfg.trainer.precision
    trainee = SingleField(task, field, optimizer, schedule, precision)

    def ffrun_step():
        with precision_context(precision, device):
            return trainee.step(next(counter))

    ffrun_s = median_time(ffrun_step, device, repeats)
    memory = peak_memory_mb(device)  # the run's own peak, before the ceiling's operands are allocated
    # the run's tensors (cached features, activations, Adam's moments) go before the network's own and the
    # ceiling's operands are made: at MRI's 884,736 points each set is several GB
    del trainee, ffrun_step, optimizer, schedule, task
    gc.collect()
    network_s = network_time(field, n, device, repeats)
    paths = matmul_ceiling(n, shapes, device, repeats, others)
    ceiling = paths["best_fp32_gflops"] * 1e9
    row = {"task": name, "precision": precision, "peak_memory_mb": memory, "points_per_step": n, "layers": shapes,
           "flops_per_step": flops, "ceiling_gflops": ceiling / 1e9, "ceiling_path": paths["best_fp32"],
           "product_rates_gflops": paths["rates_gflops"], "ffrun_step_s": ffrun_s,
           "achieved_gflops": flops / ffrun_s / 1e9, "efficiency": flops / ffrun_s / ceiling,
           "network_step_s": network_s, "other_share": max(0.0, 1 - network_s / ffrun_s)}
    if preset.plain_loop:
        # The same number of steps from the same weights, ffrun's step against the plain loop.
        task, field, optimizer, schedule = build(cfg, device)
        plain_step, plain_predict = plain_image_loop(task, field, float(cfg.trainer.lr), device)
        plain_s = median_time(plain_step, device, repeats)
        task, field, optimizer, schedule = build(cfg, device)
        trainee = SingleField(task, field, optimizer, schedule, precision)
        plain_step, plain_predict = plain_image_loop(task, field, float(cfg.trainer.lr), device)
        for i in range(check_steps):
            with precision_context(precision, device):
                trainee.step(i)
            plain_step()
        field.eval()
        ffrun_psnr = psnr(field.predict(task.test[0]), task.test[1])
        plain_psnr = psnr(plain_predict(), task.test[1])
        row.update(plain_step_s=plain_s, speedup_vs_plain=plain_s / ffrun_s, check_steps=check_steps,
                   ffrun_test_psnr=ffrun_psnr, plain_test_psnr=plain_psnr)
    return row


def bench_vectorized(k: int, steps: int, device: torch.device, overrides: list[str]) -> list[dict]:
    """Training time of a K-job sigma sweep, sequential (K separate ffrun training loops) against
    vectorized (one batched loop), on the image protocol and on a 16x16 image (64 training points, where
    the per-step overhead of a training loop, not arithmetic, dominates)."""
    from ffrun.train.vectorized import BatchedTraining

    sigmas = [2.0 ** i for i in range(k)]
    out = []
    for label, extra in (("paper_image 512x512", []), ("16x16", ["task.resolution=16"])):
        base = ["experiment=paper_image", f"device={device}", "trainer.progress=false", *overrides, *extra]
        cfgs = [compose([*base, "encoding=gauss", f"sigma={s}"]) for s in sigmas]
        jobs = [prepare(cfgs[0], Path("."))]
        jobs += [prepare(c, Path("."), task=jobs[0].task) for c in cfgs[1:]]
        t = time.perf_counter()
        for job in jobs:
            trainee = SingleField(job.task, job.field, *optimizer_for(job.field, job.lr, job.cfg.trainer))
            for i in range(steps):
                trainee.step(i)
        sync(device)
        sequential = time.perf_counter() - t
        t = time.perf_counter()
        group = BatchedTraining(jobs)  # the static features are computed inside the timing, once
        for i in range(steps):
            group.step(i)
        sync(device)
        vectorized = time.perf_counter() - t
        out.append({"label": label, "k": k, "steps": steps, "sequential_s": sequential, "vectorized_s": vectorized,
                    "speedup": sequential / vectorized})
        print(f"vectorized sweep {label}: K={k} x {steps} steps, sequential {sequential:.2f} s, vectorized "
              f"{vectorized:.2f} s, {sequential / vectorized:.2f}x", flush=True)
    return out


def bench_in_subprocess(name: str, args, overrides: list[str]) -> dict:
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "row.json"
        subprocess.run([sys.executable, "-m", "ffrun.apps.bench", "--tasks", name, "--device", args.device, "--repeats",
                        str(args.repeats), "--check-steps", str(args.check_steps), "--json", str(path), *overrides],
                       check=True, stdout=subprocess.DEVNULL)
        return __import__("json").loads(path.read_text())["tasks"][0]


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from ffrun.util.blas import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}"


def arguments() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ffrun-bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="image", help="comma list of image, shape, ct, mri, nerf (default image)")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per measurement (median)")
    p.add_argument("--check-steps", type=int, default=50, help="image: steps of ffrun and plain compared for PSNR")
    p.add_argument("--vectorized", type=int, default=0, metavar="K",
                   help="also time a K-job sigma sweep, vectorized vs sequential (image protocol and 16x16)")
    p.add_argument("--vectorized-steps", type=int, default=20)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--memory", action="store_true",
                   help="run each task in a process of its own, so each peak-memory figure is that task's alone")
    p.add_argument("overrides", nargs="*", help="ffrun overrides for every task that has the key "
                   "(task.resolution=256), or for one task (nerf:trainer.batch_size=256)")
    return p


def refusal(args) -> str | None:
    """Why these arguments cannot run (the line to print), checked before any benchmark; None when they can."""
    for flag, value, least in (("--repeats", args.repeats, 1), ("--check-steps", args.check_steps, 0),
                               ("--vectorized", args.vectorized, 0), ("--vectorized-steps", args.vectorized_steps, 1)):
        if value < least:
            return f"ffrun-bench: error: {flag} {value}: give at least {least}"
    try:
        out = expand_user(args.json, f"--json {args.json}").resolve().parent if args.json else None
    except FfrunError as e:
        return f"ffrun-bench: error: {e}"
    if out is not None and not (out.is_dir() and os.access(out, os.W_OK)):
        return (f"ffrun-bench: error: --json {args.json}: {out} is not a folder this user can write to; give a "
                "writable path (checked before the benchmark runs)")
    unknown = [name for name in args.tasks.split(",") if name not in TASK_PRESETS]
    if unknown:
        return f"ffrun-bench: unknown task {unknown[0]!r}; choose from {', '.join(TASK_PRESETS)}"
    try:
        resolve_device(args.device)
    except FfrunError as e:
        return f"ffrun-bench: error: --device: {e}"
    return None


def task_overrides(name: str, overrides: list[str]) -> list[str]:
    """The overrides for one task: its preset's real data (nerf: the Lego scene) when $FFRUN_DATA has it."""
    overrides = list(overrides)
    data = TASK_PRESETS[name].data
    if data is not None and not any(o.startswith("task.data=") for o in overrides):
        scene = data_dir() / data
        if (scene / "transforms_train.json").is_file():
            overrides.append(f"task.data={scene}")
    return overrides


def row_line(name: str, row: dict) -> str:
    line = (f"{name}: {row['points_per_step']} points/step, {row['flops_per_step'] / 1e9:.1f} GFLOP/step, "
            f"ceiling {row['ceiling_gflops']:.0f} GFLOP/s ({row['ceiling_path']}), "
            f"ffrun {row['ffrun_step_s'] * 1000:.1f} ms/step = "
            f"{row['achieved_gflops']:.0f} GFLOP/s, efficiency {row['efficiency']:.3f}; network alone "
            f"{row['network_step_s'] * 1000:.1f} ms, the rest of the step {row['other_share']:.0%}")
    if "plain_step_s" in row:
        line += (f"; plain loop {row['plain_step_s'] * 1000:.1f} ms/step, speedup {row['speedup_vs_plain']:.2f}x; "
                 f"test PSNR after {row['check_steps']} steps ffrun {row['ffrun_test_psnr']:.3f} dB, plain "
                 f"{row['plain_test_psnr']:.3f} dB")
    return line


def main(argv: list[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    why = refusal(args)
    if why is not None:
        print(why, file=sys.stderr)
        return 2
    from ffrun.util.allocator import tune_cpu

    device = resolve_device(args.device)
    if device.type == "cpu":
        tune_cpu()  # as a run does
    print(f"device: {describe_device(device)}", flush=True)
    rows = []
    for name in args.tasks.split(","):
        try:  # a task's data or overrides that cannot be used: one line, as ffrun says it
            overrides = task_overrides(name, args.overrides)
            if args.memory:
                row = bench_in_subprocess(name, args, overrides)
            else:
                row = bench_task(name, overrides, device, args.repeats, args.check_steps)
        except FfrunError as e:
            print(f"ffrun-bench: error: {name}: {e}", file=sys.stderr)
            return 2
        rows.append(row)
        print(row_line(name, row), flush=True)
    result = {"device": describe_device(device), "tasks": rows}
    if device.type == "cpu":
        from ffrun.util import blas

        result["blas"] = blas.report(kernels=True)  # which matrix path ffrun's own steps ran
    image = next((r for r in rows if "speedup_vs_plain" in r), None)  # the headline: the image protocol's
    if image is not None:
        result["efficiency"] = image["efficiency"]
        result["speedup_vs_plain"] = image["speedup_vs_plain"]
    if args.vectorized:
        result["vectorized"] = bench_vectorized(args.vectorized, args.vectorized_steps, device, args.overrides)
        result["vectorized_speedup"] = result["vectorized"][0]["speedup"]
    print_table(result)
    if args.json:
        from ffrun.util.atomic import write_json

        write_json(args.json, result)
    return 0


def print_table(result: dict) -> None:
    print(f"\n{result['device']}")
    if result.get("blas"):
        b = result["blas"]
        print(f"matrix path: {b['blas']} {b['mkl_path'] or ''} (vendor shim: {b['vendor_shim']})")
    for r in result["tasks"]:
        rates = ", ".join(f"{k} {v:.0f}" for k, v in r.get("product_rates_gflops", {}).items())
        print(f"{r['task']}: the step's products alone, GFLOP/s: {rates}; ceiling = {r['ceiling_path']}")
    print("| task | points/step | GFLOP/step | matmul ceiling (GFLOP/s) | ffrun step (ms) | efficiency "
          "| network alone (ms) | rest of the step | plain loop (ms) | speedup vs plain | peak memory (MB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in result["tasks"]:
        plain = (f"{r['plain_step_s'] * 1000:.1f} | {r['speedup_vs_plain']:.2f}x" if "plain_step_s" in r else "- | -")
        print(f"| {r['task']} | {r['points_per_step']} | {r['flops_per_step'] / 1e9:.1f} | "
              f"{r['ceiling_gflops']:.0f} | {r['ffrun_step_s'] * 1000:.1f} | {r['efficiency']:.3f} | "
              f"{r['network_step_s'] * 1000:.1f} | {r['other_share']:.0%} | {plain} | "
              f"{r['peak_memory_mb']:.0f} |")
    for v in result.get("vectorized", []):
        print(f"vectorized sweep, {v['label']}: K={v['k']} jobs x {v['steps']} steps: sequential "
              f"{v['sequential_s']:.2f} s, vectorized {v['vectorized_s']:.2f} s, speedup {v['speedup']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
