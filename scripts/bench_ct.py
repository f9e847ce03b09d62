"""CT's training step at the paper's size, with the sparse-matrix projector and with grid_sample's, in one run.

    python scripts/bench_ct.py [--repeats 3] [task.resolution=512 ...]

Prints, for each projector: the step time, the network's own share (`ffrun-bench`'s network-alone time), the
efficiency against the matmul ceiling of the MLP's shapes, and the projector's own forward+backward time;
then the ratio of the two step times. Both run in the same process on the same task and weights, so the ratio
holds on a busy machine too (the absolute times do not).
"""

from __future__ import annotations

import argparse
import sys

# isort: off
import ffrun  # noqa: F401  (before torch: MKL's optimized path on any x86 CPU, ffrun.util.blas)
# isort: on
import torch

from ffrun.apps.bench import bench_task, median_time
from ffrun.run.compose import compose
from ffrun.run.device import resolve_device
from ffrun.tasks import build_task
from ffrun.tasks.ct import ParallelProjector


def projector_time(overrides: list[str], device: torch.device, repeats: int, reference: bool) -> float:
    cfg = compose(["experiment=paper_ct", f"device={device}", *overrides])
    task = build_task(cfg.task, device, None, 0)
    img = torch.rand(task.n, task.n, device=device, requires_grad=True)
    project = task.project.reference if reference else task.project

    def forward_backward():
        img.grad = None
        project(img).sum().backward()

    return median_time(forward_backward, device, repeats)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    sparse_call = ParallelProjector.__call__
    rows = {}
    for name, reference in (("grid_sample", True), ("sparse matrix", False)):
        ParallelProjector.__call__ = ParallelProjector.reference if reference else sparse_call
        try:
            row = bench_task("ct", args.overrides, device, args.repeats, 0)
        finally:
            ParallelProjector.__call__ = sparse_call
        row["projector_s"] = projector_time(args.overrides, device, args.repeats, reference)
        rows[name] = row
        print(f"{name}: step {row['ffrun_step_s']:.3f} s, network alone {row['network_step_s']:.3f} s, projector "
              f"forward+backward {row['projector_s']:.3f} s, efficiency {row['efficiency']:.3f} "
              f"(ceiling {row['ceiling_gflops']:.0f} GFLOP/s, {row['points_per_step']} points)", flush=True)
    old, new = rows["grid_sample"]["ffrun_step_s"], rows["sparse matrix"]["ffrun_step_s"]
    print(f"step time grid_sample / sparse matrix: {old / new:.2f}x; projector alone: "
          f"{rows['grid_sample']['projector_s'] / rows['sparse matrix']['projector_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
