#!/usr/bin/env python
"""Simplified NeRF on the real Lego scene: rays per second and test PSNR per encoding.

    python scripts/bench_nerf.py                        # CPU schedule (below), ~45 min on 2 cores
    python scripts/bench_nerf.py --paper                # the paper's protocol: 400x400, 50,000 steps (GPU)
    python scripts/bench_nerf.py -- trainer.steps=500   # extra ffrun overrides after `--`

1. Throughput: for each encoding, training rays per second of ffrun's own training step
   (`ffrun.train.loop.train_step`: sample + forward + backward + Adam), median of 10 timed steps after 3
   warm-up steps, in this process.
2. Quality: `ffrun -m experiment=paper_nerf task.data=<lego_400> encoding=none,basic,posenc,gauss`.
   The CPU schedule keeps the paper's network (4x256, 4 outputs), mapping (no 2*pi, sigma 26, posenc
   2^0..2^8), per-encoding learning rates, 1,024 rays per step and near/far, but downscales the
   400x400 images by 8 (50x50, focal 69.4), takes 64 samples per ray instead of 128, and trains
   2,000 steps instead of 50,000. PSNR is on all 13 test views (mean +- std over views).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sweep import run_sweep

from ffrun.data.location import data_dir

ROOT = Path(__file__).resolve().parents[1]
LEGO = data_dir() / "nerf" / "lego_400"
CPU_SCHEDULE = ["task.downscale=8", "task.n_samples=64", "trainer.steps=2000", "trainer.eval_every=1000",
                "trainer.ckpt_every=1000", "task.turntable_frames=24"]
PAPER_PSNR = {"none": "22.41 +- 0.92", "basic": "23.16 +- 0.90", "posenc": "25.60 +- 0.76", "gauss": "25.48 +- 0.89"}
ENCODINGS = ("none", "basic", "posenc", "gauss")


def rays_per_second(overrides: list[str], encodings: list[str]) -> dict[str, float]:
    from ffrun.apps.bench import build, compose, median_time
    from ffrun.run.device import resolve_device
    from ffrun.train.loop import train_step
    from ffrun.util.allocator import tune_cpu

    out = {}
    for name in encodings:
        cfg = compose([*overrides, f"encoding={name}"])
        device = resolve_device(cfg.device)
        if device.type == "cpu":
            tune_cpu()
        task, field, optimizer, schedule = build(cfg, device)
        counter = iter(range(10**9))
        step_s = median_time(lambda: train_step(task, field, optimizer, schedule, next(counter)), device, 10, warmup=3)
        out[name] = task.batch_size / step_s
        print(f"{name}: {out[name]:.0f} rays/s ({step_s * 1000:.0f} ms per step of {task.batch_size} rays x "
              f"{task.n_samples} samples) on {device}", flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(LEGO))
    p.add_argument("--paper", action="store_true", help="the paper's full protocol instead of the CPU schedule")
    p.add_argument("--out", default="outputs/bench_nerf")
    p.add_argument("--encodings", default=",".join(ENCODINGS))
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    if not (Path(args.data) / "transforms_train.json").is_file():
        print(f"bench_nerf: no Blender-format scene at {args.data}; the Lego scene lives in "
              "$FFRUN_DATA/nerf/lego_400 (or pass --data)", file=sys.stderr)
        return 2
    overrides = ["experiment=paper_nerf", f"task.data={args.data}", *([] if args.paper else CPU_SCHEDULE),
                 *args.overrides]
    encodings = args.encodings.split(",")
    speed = rays_per_second(overrides, encodings)

    code, runs = run_sweep([*overrides, f"encoding={','.join(encodings)}"], Path(args.out))
    cfg = runs[0]["config"]
    print(f"\n{'paper' if args.paper else 'CPU'} schedule: {runs[0]['steps']} steps x "
          f"{cfg['trainer']['batch_size']} rays x {cfg['task']['n_samples']} samples, downscale "
          f"{cfg['task']['downscale']}, device {runs[0]['device']}")
    print("| encoding | test PSNR (dB, mean +- std over views) | paper (400x400, 50k steps) | rays/s "
          "| train time (s) |")
    print("| --- | --- | --- | --- | --- |")
    for r in runs:
        if r.get("status") != "completed":
            print(f"| {r['encoding']} | {r.get('status')}: {r.get('reason')} | | | |")
            continue
        m = r["metrics"]
        print(f"| {r['encoding']} | {m['test_psnr']:.2f} +- {m['test_psnr_std']:.2f} | {PAPER_PSNR[r['encoding']]} | "
              f"{speed[r['encoding']]:.0f} | {r['wall_s']:.0f} |")
    return code


if __name__ == "__main__":
    sys.exit(main())
