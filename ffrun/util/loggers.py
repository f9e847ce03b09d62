"""What a run records at each evaluation, beside metrics.json: `history.csv` always (one row per
evaluation: step, training loss, every metric), and with `logger=tensorboard` a TensorBoard event file in
`<run dir>/tensorboard` holding the same scalars and the task's pictures (reconstruction, renders,
slices) at each evaluation: `tensorboard --logdir outputs/`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ffrun.util.atomic import csv_text, write_text
from ffrun.util.errors import FfrunError

LOGGERS = ("csv", "tensorboard")


def check_logger(name: str):
    """The SummaryWriter class for logger=tensorboard (None for csv); FfrunError for an unknown logger or a
    missing tensorboard package. Called when a run is prepared, before any data loads or a sweep groups it."""
    if name not in LOGGERS:
        raise FfrunError(f"logger={name!r} is not a logger; choose one of {', '.join(LOGGERS)}")
    if name != "tensorboard":
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise FfrunError("logger=tensorboard needs the tensorboard package: pip install 'ffrun[tensorboard]' "
                         "(or pip install tensorboard), or use logger=csv") from None
    return SummaryWriter


class RunLogger:
    def __init__(self, run_dir: Path, name: str = "csv", images: bool = True):
        writer = check_logger(name)
        self.csv_path = Path(run_dir) / "history.csv"
        self.writer = None if writer is None else writer(log_dir=str(Path(run_dir) / "tensorboard"))
        self.images = images and self.writer is not None

    @property
    def wants_images(self) -> bool:
        return self.images

    def log(self, history: list[dict[str, float]], images: dict[str, np.ndarray] | None = None) -> None:
        """Record the newest evaluation (history[-1]); the CSV is rewritten whole, atomically."""
        keys = list(dict.fromkeys(k for row in history for k in row))
        write_text(self.csv_path, csv_text(keys, [[row.get(k, "") for k in keys] for row in history]))
        if self.writer is None:
            return
        row = history[-1]
        step = int(row["step"])
        for key, value in row.items():
            if key != "step":
                self.writer.add_scalar("train/loss" if key == "loss" else f"eval/{key}", value, step)
        for name, img in (images or {}).items():
            img = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
            self.writer.add_image(name, img, step, dataformats="HWC" if img.ndim == 3 else "HW")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
