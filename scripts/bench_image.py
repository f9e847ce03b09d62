#!/usr/bin/env python
"""The paper's 2D image protocol on one image for all four encodings (PAPER.md, "2D image regression").

    python scripts/bench_image.py                     # astronaut, 2000 steps (about 1 h on a 2-core CPU)
    python scripts/bench_image.py --image text --experiment paper_text
    python scripts/bench_image.py --steps 200 -- trainer.progress=false   # a quick look

Runs `ffrun -m experiment=<preset> encoding=none,basic,posenc,gauss` into --out, then prints the test
PSNRs with `ffrun-summary` and checks the paper's ordering: none < basic < posenc, gauss >= posenc - 0.5 dB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ENCODINGS = ("none", "basic", "posenc", "gauss")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", default="astronaut")
    p.add_argument("--experiment", default="paper_image")
    p.add_argument("--steps", type=int, default=None, help="override the preset's 2000 steps")
    p.add_argument("--out", default="outputs/bench_image")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = p.parse_args()

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    cmd = ["ffrun", "-m", f"experiment={args.experiment}", f"task.image={args.image}",
           f"encoding={','.join(ENCODINGS)}", f"hydra.sweep.dir={out}", *args.overrides]
    if args.steps is not None:
        cmd.append(f"trainer.steps={args.steps}")
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    subprocess.run(["ffrun-summary", str(out)], check=True)

    runs = [json.loads(f.read_text()) for f in sorted(out.glob("*/metrics.json"))]
    psnr = {r["encoding"]: r["metrics"]["test_psnr"] for r in runs}
    wall = {r["encoding"]: r["wall_s"] for r in runs}
    print(f"\n{args.image}, {args.experiment}, {runs[0]['steps']} steps, device {runs[0]['device']}")
    print("| encoding | test_psnr (dB) | full_psnr (dB) | train time (s) |")
    print("| --- | --- | --- | --- |")
    for r in runs:
        print(f"| {r['encoding']} | {r['metrics']['test_psnr']:.2f} | {r['metrics']['full_psnr']:.2f} | {wall[r['encoding']]:.0f} |")
    ok = psnr["none"] < psnr["basic"] < psnr["posenc"] and psnr["gauss"] >= psnr["posenc"] - 0.5
    print("paper ordering (none < basic < posenc, gauss >= posenc - 0.5):", "holds" if ok else "DOES NOT hold")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
