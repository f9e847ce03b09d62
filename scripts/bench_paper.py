#!/usr/bin/env python
"""Run a paper protocol for every encoding and print its held-out metric beside the paper's numbers.

    python scripts/bench_paper.py paper_image                  # astronaut, 2000 steps (~45 min on 2 CPU cores)
    python scripts/bench_paper.py paper_text
    python scripts/bench_paper.py paper_ct task.resolution=256             # CPU-sized CT
    python scripts/bench_paper.py paper_mri --memory task.resolution=32     # CPU-sized MRI + 96^3 peak memory

Runs `ffrun -m experiment=<preset> encoding=<all>` into --out, prints the table with `ffrun-summary`,
then a comparison with the authors' notebook results (docs/protocol.md). For paper_image it checks the paper's ordering
(none < basic < posenc, gauss >= posenc - 0.5 dB). `--memory` (MRI) also runs two steps of the full
96^3 protocol in separate processes, chunked and unchunked, and reports each one's peak memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from sweep import run_sweep

PAPER = {  # the authors' notebook results (docs/protocol.md)
    "paper_image": {"none": 19.32, "basic": 21.72, "posenc": 24.95, "gauss": 25.57},
    "paper_text": {"none": 18.40, "basic": 20.48, "posenc": 27.57, "gauss": 30.47},
    "paper_ct": {"none": 16.75, "basic": 23.31, "posenc": 26.89, "gauss": 28.33, "grid": 24.99},
    "paper_mri": {"none": 26.14, "basic": 28.58, "posenc": 32.23, "gauss": 34.51, "grid": 32.71},
}


def run_memory(out: Path) -> None:
    print("\nMRI peak memory at 96^3 (2 steps of experiment=paper_mri, one process each):")
    print("| task.chunk | peak memory (MB) | s per step |")
    print("| --- | --- | --- |")
    for chunk in ("131072", "null"):
        d = out / f"memory_chunk_{chunk}"
        subprocess.run(["ffrun", "experiment=paper_mri", "trainer.steps=2", "trainer.eval_every=2",
                        "trainer.progress=false", f"task.chunk={chunk}", f"hydra.run.dir={d}"], check=True)
        m = json.loads((d / "metrics.json").read_text())
        print(f"| {chunk} | {m['peak_memory_mb']:.0f} | {m['wall_s'] / 2:.1f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=sorted(PAPER))
    p.add_argument("--encodings", default=None, help="comma list (default: every encoding the paper reports)")
    p.add_argument("--out", default=None, help="sweep directory (default outputs/bench_<experiment>)")
    p.add_argument("--memory", action="store_true", help="MRI: also measure peak memory at 96^3")
    args, extra = p.parse_known_args()  # everything else (after an optional --) is a Hydra override
    args.overrides = [a for a in extra if a != "--"]

    encodings = args.encodings or ",".join(PAPER[args.experiment])
    out = Path(args.out or f"outputs/bench_{args.experiment}")
    code, runs = run_sweep([f"experiment={args.experiment}", f"encoding={encodings}", *args.overrides], out)
    subprocess.run(["ffrun-summary", str(out)], check=True)

    runs = [r for r in runs if r.get("status") == "completed"]
    metric = runs[0]["primary_metric"]
    r0 = runs[0]
    res = r0["config"]["task"].get("resolution")
    print(f"\n{args.experiment}: {r0['steps']} steps, resolution {res}, device {r0['device']}, "
          f"overrides {' '.join(args.overrides) or '(none)'}")
    print(f"| encoding | {metric} (dB) | paper notebook (dB) | train time (s) | peak memory (MB) |")
    print("| --- | --- | --- | --- | --- |")
    got = {}
    for r in runs:
        got[r["encoding"]] = r["metrics"][metric]
        print(f"| {r['encoding']} | {got[r['encoding']]:.2f} | {PAPER[args.experiment].get(r['encoding'], '-')} | "
              f"{r['wall_s']:.0f} | {r.get('peak_memory_mb', float('nan')):.0f} |")
    ok = code == 0
    if args.experiment in ("paper_image", "paper_text") and {"none", "basic", "posenc", "gauss"} <= set(got):
        order = got["none"] < got["basic"] < got["posenc"] and got["gauss"] >= got["posenc"] - 0.5
        print("paper ordering (none < basic < posenc, gauss >= posenc - 0.5):", "holds" if order else "DOES NOT hold")
        ok = ok and order
    if args.memory:
        run_memory(out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
