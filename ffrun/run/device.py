"""The machine a run uses: its device, CPU threads and memory, and the random seeds of the process.

`check_fits` and `set_threads` are the heuristics `prepare` applies before training; `memory_error` tells
`report` that an exception was an allocation that failed; `peak_memory_mb` goes into metrics.json.
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch
from omegaconf import DictConfig

from ffrun.tasks import Task
from ffrun.tasks.cost import layer_shapes
from ffrun.tasks.cost import step_flops as count_step_flops
from ffrun.util.errors import FfrunError

log = logging.getLogger("ffrun")


def resolve_device(spec: str) -> torch.device:
    """auto -> CUDA when available, else CPU; cpu; cuda; cuda:N."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise FfrunError(f"device={spec}: this machine has no CUDA device; use device=cpu or device=auto")
        try:
            dev = torch.device(spec)
        except RuntimeError:
            raise FfrunError(f"device={spec!r} is not a device; use auto, cpu, cuda or cuda:N") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FfrunError(f"device={spec}: only {torch.cuda.device_count()} CUDA device(s) here; use cuda:0...")
        return dev
    raise FfrunError(f"device={spec!r} is not a device; use auto, cpu, cuda or cuda:N")


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this run: CUDA memory allocated by torch on a GPU, else the process's peak RSS."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB


def memory_bytes(device: torch.device) -> int:
    """The memory of the device a run trains on: the GPU's, or this machine's physical memory."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(cfg: DictConfig, device: torch.device) -> None:
    """Refuse a network whose first layer obviously cannot fit (encoding.m=1e8): its 2m x width weights, their
    gradient and Adam's two moments in float32, against the whole memory of the device."""
    if cfg.encoding.name not in ("gauss", "posenc"):
        return
    need = 4 * 4 * 2 * int(cfg.encoding.m) * int(cfg.model.width)
    have = memory_bytes(device)
    if need > have:
        raise FfrunError(f"config: encoding.m={cfg.encoding.m} with model.width={cfg.model.width}: the first layer "
                         f"alone needs {need / 2**30:.1f} GiB for training, more than the {have / 2**30:.1f} GiB of "
                         f"{device}; use a smaller encoding.m (the paper's is 256)")


# below this (a 128 px image, 4x256) trainer.threads=auto takes one CPU thread (scripts/threads.py)
SMALL_STEP_FLOPS = 1e10


def step_flops(cfg: DictConfig, task: Task, field) -> int | None:
    """Floating-point operations of one training step: the task's points per step through the MLP's layers
    (ffrun.tasks.cost), or None when the task does not say how many points a step takes or no encoding
    feeds a network (the grid baseline)."""
    points = task.points_per_step()
    encoding = getattr(field, "encoding", None)
    if points is None or encoding is None:
        return None
    shapes = layer_shapes(encoding.out_dim, int(cfg.model.depth), int(cfg.model.width), task.out_dim)
    return count_step_flops(points, shapes)


def set_threads(cfg: DictConfig, task: Task, field, device: torch.device) -> None:
    """trainer.threads on the CPU: a number, or auto (one thread when a step is small: with two or more
    threads a small step mostly waits on synchronisation, many times slower on a loaded machine)."""
    threads = cfg.trainer.get("threads", "auto")
    if device.type != "cpu":
        return
    if isinstance(threads, str) and threads.strip().lower() == "auto":
        flops = step_flops(cfg, task, field)
        if flops is not None and flops < SMALL_STEP_FLOPS and torch.get_num_threads() > 1:
            log.info("trainer.threads=auto: one CPU thread for this small problem (%.2g FLOP per step)", flops)
            torch.set_num_threads(1)
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise FfrunError(f"config: trainer.threads={threads!r} is out of range: use auto or a number of threads >= 1")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if threads > cores:  # oversubscribed threads wait on each other: many times slower, never faster
        log.warning("trainer.threads=%d is more than the %d CPU core(s) this process may use; a step with more threads "
                    "than cores is many times slower. Use trainer.threads=auto or at most %d", threads, cores, cores)
    torch.set_num_threads(threads)


def memory_error(e: BaseException) -> bool:
    """An allocation that failed (CPU or CUDA), as torch or Python report it."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    return isinstance(e, RuntimeError) and any(s in str(e) for s in ("can't allocate memory", "out of memory"))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
