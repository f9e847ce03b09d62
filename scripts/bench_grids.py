"""Where a training step of the Grids benchmark's DIV2K fit goes, per method and budget, and what the whole table
costs on this machine.

    python scripts/bench_grids.py                      # the five methods at 1e4, 3e4, 1e5 on image 00 (510 x 339)
    python scripts/bench_grids.py --budgets 1e4 --methods grid,siren --repeats 5

For each method and budget: the median time of one full training step as `ffrun` runs it (forward, 0.5 * MSE,
backward, Adam, in a process tuned as a run's is: `tune_cpu`), split into the field's forward and the rest
(backward + optimizer); the time of the step's matrix products alone at this machine's rate (every Linear
layer's forward, weight-gradient and input-gradient product, real or complex, timed on preallocated operands
and outputs) and the ratio step / products; the projected time of the benchmark's 1000 steps, and the
projected fit table (ten images) in total. For the Grid it also times the plain
PyTorch loop of the benchmark's own code (bicubic `grid_sample` over every pixel, from the same values), so the
ratio of the two is measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

# isort: off
import ffrun  # noqa: F401  (before torch: MKL's optimized path on any x86 CPU, ffrun.util.blas)
# isort: on
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ffrun.models.field import build_field  # noqa: E402
from ffrun.run.compose import compose  # noqa: E402
from ffrun.tasks import build_task  # noqa: E402
from ffrun.train.loop import optimizer_for, train_step  # noqa: E402
from ffrun.util.allocator import tune_cpu  # noqa: E402

METHODS = ("grid", "siren", "wire", "ffn", "ingp")


def median_time(fn, repeats: int) -> float:
    fn()  # warm up (caches, lattice matrices, allocator)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(method: str, budget: float, image: str, repeats: int) -> dict:
    cfg = compose(["experiment=grids_div2k", f"method=grids/{method}", f"model.params={budget}", f"task.image={image}"])
    device = torch.device("cpu")
    task = build_task(cfg.task, device, None, cfg.seed)
    field = build_field(cfg.encoding, cfg.model, task.in_dim, task.out_dim, task.out_activation, cfg.seed,
                        bounds=task.bounds)
    optimizer, schedule = optimizer_for(field, float(cfg.trainer.lr), cfg.trainer)
    step = median_time(lambda: train_step(task, field, optimizer, schedule, 0), repeats)
    coords = task.train[0]

    def forward():
        with torch.no_grad():
            field.forward_static(coords)

    fwd = median_time(forward, repeats)
    products = products_time(field, coords, repeats)
    out = {"method": method, "budget": budget, "sizes": dict(field.sizes), "step_s": step, "forward_s": fwd,
           "products_s": products}
    if method == "grid":
        out["plain_step_s"] = plain_grid_step(field.encoding.values.detach(), task, float(cfg.trainer.lr), repeats)
    return out


def products_time(field, coords: torch.Tensor, repeats: int) -> float:
    """Seconds of the step's matrix products alone: each nn.Linear's forward, weight gradient and (where its input
    needs one) input gradient, at the shapes and dtype (complex for WIRE) one forward meets, on preallocated
    operands and outputs."""
    from torch.overrides import TorchFunctionMode

    seen = []

    class Products(TorchFunctionMode):  # every product a forward makes, fused layers' (addmm) included
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in (torch.nn.functional.linear, torch.addmm, torch.mm, torch.matmul):
                x, w = (args[0], args[1]) if func is not torch.addmm else (args[1], args[2].t())
                if func in (torch.mm, torch.matmul):
                    w = w.t()
                if w.dim() == 2 and x.dim() >= 2:
                    seen.append((x.reshape(-1, x.shape[-1]).shape[0], w.shape[1], w.shape[0], w.dtype,
                                 x.requires_grad))
            return func(*args, **kwargs)

    with Products():
        out = field(coords)
    out.sum().backward()
    field.zero_grad(set_to_none=True)
    ops = []
    for n, fan_in, fan_out, dtype, input_grad in seen:
        x, w, dy = torch.randn(n, fan_in, dtype=dtype), torch.randn(fan_out, fan_in, dtype=dtype), \
            torch.randn(n, fan_out, dtype=dtype)
        y, dw, dx = torch.empty(n, fan_out, dtype=dtype), torch.empty(fan_out, fan_in, dtype=dtype), \
            torch.empty(n, fan_in, dtype=dtype)
        ops += [lambda x=x, w=w, y=y: torch.mm(x, w.T, out=y), lambda x=x, dy=dy, dw=dw: torch.mm(dy.T, x, out=dw)]
        if input_grad:
            ops.append(lambda w=w, dy=dy, dx=dx: torch.mm(dy, w, out=dx))

    def run():
        for op in ops:
            op()

    return median_time(run, repeats) if ops else 0.0


def plain_grid_step(values: torch.Tensor, task, lr: float, repeats: int) -> float:
    """The benchmark's loop (run_DIV2K.py): bicubic grid_sample at every pixel, nn.MSELoss, Adam."""
    grid = values.permute(2, 1, 0).unsqueeze(0).clone().requires_grad_()  # (1, C, R_y, R_x)
    h, w = task.image.shape[:2]
    xy = (task.train[0] * 2 - 1).reshape(1, h, w, 2)
    target = task.train[1].reshape(h, w, 3)
    opt = torch.optim.Adam([grid], lr=lr)

    def step():
        out = F.grid_sample(grid, xy, mode="bicubic", align_corners=True, padding_mode="border")[0].permute(1, 2, 0)
        loss = F.mse_loss(out, target)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return median_time(step, repeats)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--budgets", default="1e4,3e4,1e5")
    ap.add_argument("--image", default="div2k_grids:x4/0")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--images", type=int, default=10, help="images in the projected table (default: the ten)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: every core)")
    args = ap.parse_args(argv)
    os.environ.setdefault("FFRUN_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    tune_cpu()  # as a run does (malloc thresholds, subnormals): without it a step here is not a run's step
    total = 0.0
    print(f"Grids benchmark fit, {args.image} at its own size, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}")
    print(f"{'method':<6} {'budget':>7} {'sizes':<34} {'step ms':>8} {'forward':>8} {'rest':>8} {'products ms':>12} "
          f"{'step/products':>14} {'1000 steps':>11}")
    for method in args.methods.split(","):
        for budget in (float(b) for b in args.budgets.split(",")):
            r = measure(method, budget, args.image, args.repeats)
            sizes = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r["sizes"].items() if k != "benchmark_params")
            per_run = 1000 * r["step_s"]
            total += per_run * args.images
            ratio = f"{r['step_s'] / r['products_s']:.2f}" if r["products_s"] else "-"
            print(f"{method:<6} {budget:>7.0e} {sizes:<34} {1e3 * r['step_s']:>8.1f} "
                  f"{r['forward_s'] / r['step_s']:>7.0%} {1 - r['forward_s'] / r['step_s']:>7.0%} "
                  f"{1e3 * r['products_s']:>12.1f} {ratio:>14} {per_run:>10.0f}s", flush=True)
            if "plain_step_s" in r:
                print(f"{'':<6} {'':>7} {'plain grid_sample loop (benchmark code)':<34} {1e3 * r['plain_step_s']:>8.1f}"
                      f"   ffrun / plain = {r['step_s'] / r['plain_step_s']:.2f}")
    print(f"projected fit table ({args.images} images, these methods and budgets, training steps only): "
          f"{total / 3600:.2f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
