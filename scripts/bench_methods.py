"""Seconds per training step of every method at equal budget, and the share of the step spent in the
encoding (forward and backward), measured in the same process.

    python scripts/bench_methods.py                               # image task, 128 px, 1e5 parameters, CPU
    python scripts/bench_methods.py --task ct --device cuda       # another task, on a GPU
    python scripts/bench_methods.py --overrides task.resolution=512 model.params=1000000

A hash grid is gather-bound (16 levels x 2^d corner lookups per point, each a random read of its table),
not matmul-bound like the Fourier-feature MLP: the share of its step spent in the encoding says which. On
CUDA with tiny-cuda-nn importable, the hash grid runs tiny-cuda-nn's fused encoding (`encoding.backend`);
`--backend torch` forces the PyTorch one for the same measurement.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

# isort: off
import ffrun  # noqa: F401  (before torch: MKL's optimized path on any x86 CPU, ffrun.util.blas)
# isort: on
import torch

METHODS = ("gauss", "learned", "multiscale", "siren", "wire", "hashgrid", "densegrid")
TASK_PRESET = {"image": ["experiment=paper_image", "task.resolution=128"],
               "ct": ["experiment=paper_ct", "task.resolution=128"],
               "mri": ["experiment=paper_mri", "task.resolution=32"],
               "shape": ["experiment=paper_shape", "trainer.batch_size=8192"],
               "nerf": ["experiment=paper_nerf", "task.downscale=8", "task.n_samples=32"]}


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of fn() over `repeats` calls, after two warm-up calls."""
    times = []
    for i in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(method: str, args) -> dict:
    from ffrun.models.registry import count_parameters
    from ffrun.run.compose import compose
    from ffrun.run.device import resolve_device
    from ffrun.train.loop import optimizer_for, train_step

    extra = [f"encoding.backend={args.backend}"] if method == "hashgrid" and args.backend else []
    cfg = compose([*TASK_PRESET[args.task], f"method={method}", f"model.params={args.params}",
                   f"device={args.device}", "trainer.progress=false", *extra, *args.overrides])
    device = resolve_device(cfg.device)
    from ffrun.models.field import build_field
    from ffrun.tasks import build_task

    task = build_task(cfg.task, device, cfg.trainer.batch_size, cfg.seed)
    field = build_field(cfg.encoding, cfg.model, task.in_dim, task.out_dim, task.out_activation, cfg.seed,
                        grid_shape=task.grid_shape, bounds=task.bounds).to(device)
    optimizer, schedule = optimizer_for(field, float(cfg.trainer.lr), cfg.trainer)  # the method's own Adam
    step = [0]

    def one_step():
        train_step(task, field, optimizer, schedule, step[0])
        step[0] += 1

    step_s = timed(one_step, device, args.repeats)
    batch = task.sample(0)
    coords = batch[0] if isinstance(batch, (tuple, list)) and torch.is_tensor(batch[0]) else getattr(task, "coords")
    coords = coords.reshape(-1, task.in_dim)

    def encode():
        g = field.encoding(coords)
        if g.requires_grad:
            g.backward(torch.ones_like(g))

    # On the full-batch image and CT tasks a fixed encoding (none, basic, posenc, gauss, multiscale) is computed
    # once and kept across steps (Field.forward_static): it costs the step nothing.
    cached = field.static_encoding and args.task in ("image", "ct")
    enc_s = 0.0 if cached else timed(encode, device, args.repeats)
    return {"method": method, "params": count_parameters(field), "points": coords.shape[0], "step_s": step_s,
            "encoding_s": enc_s, "share": enc_s / step_s, "cached": cached}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=tuple(TASK_PRESET), default="image")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--params", type=int, default=100_000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backend", choices=("auto", "torch", "tcnn"), default=None, help="the hash grid's backend")
    ap.add_argument("--overrides", nargs="*", default=[])
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.params < 1:
        print("bench_methods: --repeats and --params must be >= 1", file=sys.stderr)
        return 2
    print(f"{args.task}, {args.params} parameters, {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.repeats} steps")
    print("| method | params | points/step | s/step | encoding fwd+bwd s | encoding share of the step |")
    print("| --- | --- | --- | --- | --- | --- |")
    for method in args.methods.split(","):
        r = measure(method.strip(), args)
        enc = "cached" if r["cached"] else f"{r['encoding_s']:.4f}"
        print(f"| {r['method']} | {r['params']} | {r['points']} | {r['step_s']:.4f} | {enc} | {r['share']:.0%} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
