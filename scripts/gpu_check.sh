#!/usr/bin/env bash
# The CUDA check, one short script (about 3-5 minutes on an H100): run it on a CUDA machine; its final
# table is the GPU row of docs/performance.md.
#   1. ffrun-bench on every task's paper step: efficiency against the matmul ceiling, speedup against a
#      plain loop (image), vectorized 8-job sweep against sequential; then the image step in tf32 and bf16;
#   2. the paper image protocol (astronaut, 512x512, 2000 full-batch steps) for the four encodings in fp32,
#      and gauss in tf32 and bf16 (the PSNR change of each precision);
#   3. a table of all of it.
# Usage: bash scripts/gpu_check.sh [OUT_DIR]      (default outputs/gpu_check; $OUT/gpu_check on the device)
set -euo pipefail
out="${1:-${OUT:+$OUT/gpu_check}}"
out="${out:-outputs/gpu_check}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"

ffrun-bench --device cuda --tasks image,shape,mri,nerf --vectorized 8 --json "$out/bench.json" | tee "$out/bench.txt"
for p in tf32 bf16; do
  ffrun-bench --device cuda --tasks image --json "$out/bench_$p.json" trainer.precision=$p | tee "$out/bench_$p.txt"
done
ffrun -m experiment=paper_image device=cuda encoding=none,basic,posenc,gauss trainer.progress=false \
  hydra.sweep.dir="$out/paper_image"
ffrun -m experiment=paper_image device=cuda encoding=gauss trainer.precision=tf32,bf16 trainer.progress=false \
  hydra.sweep.dir="$out/precision"

python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"\n## GPU check: {(out / 'gpu.txt').read_text().strip()}\n")
b = json.loads((out / "bench.json").read_text())
print("| task | precision | GFLOP/step | matmul ceiling (GFLOP/s) | ffrun step (ms) | efficiency | speedup vs plain |")
print("| --- | --- | --- | --- | --- | --- | --- |")
rows = b["tasks"] + [json.loads((out / f"bench_{p}.json").read_text())["tasks"][0] for p in ("tf32", "bf16")]
for r in rows:
    sp = f"{r['speedup_vs_plain']:.2f}x" if "speedup_vs_plain" in r else "-"
    print(f"| {r['task']} | {r['precision']} | {r['flops_per_step'] / 1e9:.1f} | {r['ceiling_gflops']:.0f} | "
          f"{r['ffrun_step_s'] * 1000:.2f} | {r['efficiency']:.3f} | {sp} |")
for v in b.get("vectorized", []):
    print(f"\nvectorized sweep {v['label']}: K={v['k']}, {v['steps']} steps: sequential {v['sequential_s']:.2f} s, "
          f"vectorized {v['vectorized_s']:.2f} s, {v['speedup']:.2f}x")
print("\n| run | encoding | precision | test_psnr (dB) | train time (s) | peak memory (MB) |")
print("| --- | --- | --- | --- | --- | --- |")
for sweep in ("paper_image", "precision"):
    for f in sorted((out / sweep).glob("*/metrics.json")):
        m = json.loads(f.read_text())
        print(f"| {sweep} | {m['encoding']} | {m['config']['trainer']['precision']} | "
              f"{m['metrics'].get('test_psnr', float('nan')):.2f} | {m['wall_s']:.1f} | {m['peak_memory_mb']} |")
PY
