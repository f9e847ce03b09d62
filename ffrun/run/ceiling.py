"""The machine's matrix-multiply ceiling, measured more than one way.

One BLAS's default path is not the machine's ceiling: torch's MKL takes a generic path on non-Intel x86 CPUs
(ffrun.util.blas), numpy's OpenBLAS is another library, and a CPU with AVX512-BF16 or AMX multiplies bfloat16
faster still. `rates` times exactly a step's products (every forward and backward product of each layer, on
preallocated operands) on:

- `torch fp32 (mkl <path>)`: this process, on the path ffrun runs (MKL's optimized kernels where ffrun could);
- `torch fp32 (mkl generic)`: the same in a child process on MKL's generic path (FFRUN_MKL_SHIM=0 on a
  non-Intel CPU, FFRUN_MKL_SHIM=generic on Intel's);
- `numpy fp32 (<BLAS>)`: numpy's own BLAS in a child process with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset
  (there alone: they hold OpenBLAS at an older kernel on some CPUs);
- `torch bf16`: the products in bfloat16 (oneDNN), where the CPU has AVX512-BF16 or AMX; never a ceiling for
  float32 training, reported beside it.

`best_fp32` is the ceiling ffrun-bench divides by. Run as `python -m ffrun.run.ceiling` it prints one path's
rate as JSON (what the child processes do).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch

from ffrun.tasks.cost import step_flops as step_products
from ffrun.util import blas


def _median(fn, repeats: int, warmup: int = 2) -> float:
    times = []
    for i in range(warmup + repeats):
        t = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def _layer_products(n_points: int, k: int, fan_in: int, fan_out: int, randn, empty, mm) -> list:
    """One layer's products on preallocated operands and outputs: forward and weight gradient, the input
    gradient after the first layer."""
    x, w, dy = randn(n_points, fan_in), randn(fan_out, fan_in), randn(n_points, fan_out)
    y, dw = empty(n_points, fan_out), empty(fan_out, fan_in)
    ops = [lambda: mm(x, w.T, y), lambda: mm(dy.T, x, dw)]
    if k > 0:
        dx = empty(n_points, fan_in)
        ops.append(lambda: mm(dy, w, dx))
    return ops


def _step_seconds(n_points: int, shapes, repeats: int, randn, empty, mm, sync=lambda: None) -> float:
    """Seconds of every product of one step: each layer's operands allocated, its products timed (median over
    repeats) and freed before the next layer's, so the measure needs one layer's operands at a time (MRI's
    884,736 points would need ~18 GB for all of them at once)."""
    total = 0.0
    for k, (fan_in, fan_out) in enumerate(shapes):
        ops = _layer_products(n_points, k, fan_in, fan_out, randn, empty, mm)

        def run(ops=ops):
            for op in ops:
                op()
            sync()

        total += _median(run, repeats)
        del ops
    return total


def torch_rate(n_points: int, shapes, repeats: int, dtype=torch.float32, device="cpu") -> float:
    """FLOP/s of the step's products in torch."""
    cuda = torch.device(device).type == "cuda"
    seconds = _step_seconds(n_points, shapes, repeats, lambda *s: torch.randn(*s, device=device, dtype=dtype),
                            lambda *s: torch.empty(*s, device=device, dtype=dtype),
                            lambda a, b, o: torch.mm(a, b, out=o), torch.cuda.synchronize if cuda else lambda: None)
    return step_products(n_points, shapes) / seconds


def numpy_rate(n_points: int, shapes, repeats: int) -> float:
    """FLOP/s of the step's products in numpy (its own BLAS)."""
    import numpy as np

    rng = np.random.default_rng(0)
    seconds = _step_seconds(n_points, shapes, repeats, lambda *s: rng.standard_normal(s, dtype=np.float32),
                            lambda *s: np.empty(s, np.float32), lambda a, b, o: np.matmul(a, b, out=o))
    return step_products(n_points, shapes) / seconds


def numpy_blas() -> str:
    """numpy's BLAS and the kernel it runs (threadpoolctl, where installed, reads the kernel)."""
    try:
        from threadpoolctl import threadpool_info

        libs = [f"{i['internal_api']} {i.get('architecture') or ''}".strip() for i in threadpool_info()
                if i.get("user_api") == "blas"]
        if libs:
            return ", ".join(libs)
    except ImportError:
        pass
    import numpy as np

    try:
        return str(np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"])
    except (TypeError, KeyError, AttributeError):
        return "BLAS"


def cpu_has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _child(kind: str, n_points: int, shapes, repeats: int, env: dict) -> dict | None:
    cmd = [sys.executable, "-m", "ffrun.run.ceiling", kind, str(n_points), json.dumps(shapes), str(repeats)]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=True)
        return json.loads(next(ln for ln in reversed(out.stdout.splitlines()) if ln.startswith("{")))  # past MKL's
    except StopIteration:
        return None
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return None


def rates(n_points: int, shapes: list[tuple[int, int]], repeats: int, others: bool = True) -> dict:
    """{path: GFLOP/s} of the step's products on every path measured here, and `best_fp32`."""
    shapes = [tuple(s) for s in shapes]
    here = blas.report()
    label = f"torch fp32 (mkl {here['mkl_path']})" if here["blas"] == "mkl" else "torch fp32"
    out = {label: torch_rate(n_points, shapes, repeats) / 1e9}
    if others:
        if here["blas"] == "mkl" and here["mkl_path"] != "generic":
            env = dict(os.environ, **{blas.SWITCH: "generic" if here["vendor"] == "GenuineIntel" else "0"})
            got = _child("torch", n_points, shapes, repeats, env)
            if got and got.get("mkl_path") == "generic":
                out["torch fp32 (mkl generic)"] = got["gflops"]
        env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        got = _child("numpy", n_points, shapes, repeats, env)
        if got:
            out[f"numpy fp32 ({got['blas']})"] = got["gflops"]
    fp32 = {k: v for k, v in out.items() if "fp32" in k}
    best = max(fp32, key=fp32.get)
    if others and cpu_has_bf16():
        out["torch bf16"] = torch_rate(n_points, shapes, repeats, torch.bfloat16) / 1e9
    return {"rates_gflops": out, "best_fp32": best, "best_fp32_gflops": fp32[best], "blas": here}


def main(argv: list[str]) -> int:
    kind, n_points, shapes, repeats = argv[0], int(argv[1]), [tuple(s) for s in json.loads(argv[2])], int(argv[3])
    if kind == "numpy":
        print(json.dumps({"gflops": numpy_rate(n_points, shapes, repeats) / 1e9, "blas": numpy_blas()}))
    else:
        print(json.dumps({"gflops": torch_rate(n_points, shapes, repeats) / 1e9,
                          "mkl_path": blas.report()["mkl_path"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
