"""Training-step time with one CPU thread against torch's default thread count, measured in one process.

    python scripts/threads.py                    # the sizes below
    python scripts/threads.py --steps 100

For each problem size it trains the same network on the same data for `--steps` full-batch Adam steps
with `torch.set_num_threads(1)` and with torch's default, alternating the two so that a change in the
machine's load hits both, and prints the best of each and their ratio. `trainer.threads=auto` is based
on it (docs/performance.md, "Threads").
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

# isort: off
import ffrun  # noqa: F401  (before torch: MKL's optimized path on any x86 CPU, ffrun.util.blas)
# isort: on
import torch

SIZES = [  # (label, overrides): from the smoke run to the cpu-scale Table 1 image
    ("32 px, 2x32 (experiment=smoke)", ["experiment=smoke"]),
    ("64 px, 4x256, m 256", ["task.resolution=64"]),
    ("128 px, 4x256, m 256", ["task.resolution=128"]),
]


def step_seconds(overrides: list[str], steps: int, threads: int) -> float:
    from ffrun.run.compose import compose
    from ffrun.run.job import prepare

    cfg = compose(overrides + [f"trainer.steps={steps}", "trainer.progress=false", "device=cpu",
                               "trainer.threads=" + str(threads)])
    with tempfile.TemporaryDirectory() as tmp:
        job = prepare(cfg, Path(tmp))
        torch.set_num_threads(threads)
        opt = torch.optim.Adam(job.field.parameters(), lr=job.lr)
        x, y = job.task.train
        start = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = 0.5 * ((job.field(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
        return (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3, help="alternations of one thread and the default")
    args = p.parse_args()
    default = torch.get_num_threads()
    print(f"torch default: {default} threads on {torch.get_num_threads()} of this machine's cores")
    for label, overrides in SIZES:
        one, many = [], []
        for _ in range(args.rounds):
            one.append(step_seconds(overrides, args.steps, 1))
            many.append(step_seconds(overrides, args.steps, default))
        t1, tn = min(one), min(many)
        print(f"{label}: 1 thread {t1 * 1e3:.2f} ms/step, {default} threads {tn * 1e3:.2f} ms/step, "
              f"default / one = {tn / t1:.2f}x", flush=True)


if __name__ == "__main__":
    main()
