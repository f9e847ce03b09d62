#!/usr/bin/env bash
# The methods' CUDA check (a few minutes on one GPU): seconds per step of every method at equal budget and
# the hash grid's encoding share, with the PyTorch hash grid and, where tiny-cuda-nn's PyTorch bindings are
# installed, its fused encoding (checked first to agree with the PyTorch one).
# Usage: bash scripts/gpu_methods.sh [OUT_DIR]        (default outputs/gpu_methods)
set -euo pipefail
out="${1:-outputs/gpu_methods}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
if python -c "import tinycudann" 2>/dev/null; then
  python -m pytest -q tests/test_methods.py -k tiny_cuda_nn | tee "$out/tcnn_agreement.txt"
  backends="torch auto"
else
  echo "tiny-cuda-nn is not importable: the PyTorch hash grid only" | tee "$out/tcnn_agreement.txt"
  backends="torch"
fi
for task in image nerf; do
  for b in $backends; do
    python scripts/bench_methods.py --device cuda --task "$task" --backend "$b" --repeats 20 \
      | tee "$out/bench_${task}_${b}.md"
  done
done
