"""A run's record, `metrics.json`: the only reader and writer of that file.

Every tool that asks how a run went (resume, ffrun-summary, ffrun-reproduce, ffrun-compare, ffrun-export)
reads it through `RunRecord.read`; the job writes it through `RunRecord.write` (atomically, so a reader
never sees half a record). The file stays plain JSON with the same keys, so records written by any earlier
ffrun read back unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffrun.train.status import Status
from ffrun.util.atomic import write_json

__all__ = ["RECORD", "MAX_RECORD_BYTES", "NotARecord", "RunRecord", "Status", "best_evaluation", "problem"]

RECORD = "metrics.json"
# A metrics.json larger than this is not one ffrun wrote (a long run's is well under 1 MB).
MAX_RECORD_BYTES = 64 * 2**20


# The keys ffrun writes, in the order it writes them; anything else in a record is kept in `extra`.
_FIELDS = ("status", "reason", "task", "encoding", "model", "method", "params", "sizes", "sigma", "seed", "steps",
           "step", "checkpoint_step", "lr", "device", "wall_s", "peak_memory_mb", "primary_metric", "metrics",
           "history", "resumed_from", "config")


class NotARecord(ValueError):
    """JSON that reads, but is not a run record (a list, a metric that is not a number, ...)."""


def _number(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def problem(data: Any) -> str | None:
    """Why parsed JSON cannot be a run record ffrun wrote, or None when it can (ffrun-summary's test)."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    metrics = data.get("metrics", {})
    if not isinstance(metrics, dict):
        return "`metrics` is not an object"
    bad = [k for k, v in metrics.items() if not _number(v)]
    if bad:
        return f"metric {bad[0]!r} is not a number"
    for key in ("sigma", "seed", "wall_s", "steps"):
        if not _number(data.get(key)):
            return f"`{key}` is not a number"
    for key in ("status", "task", "encoding", "reason"):
        if data.get(key) is not None and not isinstance(data[key], str):
            return f"`{key}` is not a string"
    if not isinstance(data.get("config", {}), dict):
        return "`config` is not an object"
    return None


def best_evaluation(history: list, primary: str | None, selected_by: str | None = None) -> dict | None:
    """The evaluation of `history` with the highest `selected_by` (default: `primary`), as {"step", "selected_by",
    primary: its value, selected_by: its value}; None when no evaluation has a finite one. Ties go to the
    earliest. The Grids benchmark scores an INR by this, its best evaluation."""
    selected_by = selected_by or primary
    if not primary:
        return None
    best = None
    for row in history:
        v = row.get(selected_by) if isinstance(row, dict) else None
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (
                best is None or v > best[selected_by]):
            best = row
    if best is None:
        return None
    return {"step": best.get("step"), "selected_by": selected_by, primary: best.get(primary),
            **({selected_by: best[selected_by]} if selected_by != primary else {})}


def _read_json(path: Path) -> Any:
    """The JSON in `path`: OSError when it is not a regular file (a FIFO would block the reader) or larger than
    any record; ValueError when it is not JSON (UnicodeDecodeError included)."""
    if not path.is_file():
        raise OSError("not a regular file")
    if path.stat().st_size > MAX_RECORD_BYTES:
        raise OSError(f"larger than {MAX_RECORD_BYTES // 2**20} MB")
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass
class RunRecord:
    """The content of one metrics.json. Unknown statuses read back as their string (a newer ffrun's)."""

    status: Status | str | None = None
    reason: str | None = None
    task: str | None = None
    encoding: str | None = None
    model: str | None = None
    method: str | None = None
    params: int | None = None
    sizes: dict = field(default_factory=dict)
    sigma: float | None = None
    seed: int | None = None
    steps: int | None = None
    step: int | None = None
    checkpoint_step: int | None = None
    lr: float | None = None
    device: str | None = None
    wall_s: float | None = None
    peak_memory_mb: float | None = None
    primary_metric: str | None = None
    metrics: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    resumed_from: str | None = None
    config: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # signal, sigma_auto, benchmark counts, ...
    # The known keys this record holds (None: all of them). A run stopped before training writes only some
    # (ffrun.run.outcome.bare_record), and a record read back is written again with the keys it had.
    present: tuple[str, ...] | None = field(default=None, compare=False, repr=False)

    # ---- reading -------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict) -> "RunRecord":
        if not isinstance(data, dict):
            raise NotARecord("a run record is a JSON object")
        known = {k: data[k] for k in _FIELDS if k in data}
        present = tuple(known)
        for key, empty in (("sizes", {}), ("metrics", {}), ("history", []), ("config", {})):
            if not isinstance(known.get(key, empty), type(empty)):
                known[key] = empty  # a hand-edited or foreign record: read what makes sense
            known.setdefault(key, empty)
        status = known.get("status")
        try:
            known["status"] = Status(status) if status is not None else None
        except ValueError:
            known["status"] = str(status)
        return cls(**known, extra={k: v for k, v in data.items() if k not in _FIELDS}, present=present)

    @classmethod
    def load(cls, path: Path) -> "RunRecord":
        """The record in the file `path`; OSError or ValueError when it cannot be read as one."""
        return cls.from_dict(_read_json(Path(path)))

    @classmethod
    def parse(cls, path: Path) -> "RunRecord":
        """As `load`, but strict: NotARecord (a ValueError) naming the first key that is not what ffrun writes,
        where `load` reads what makes sense of it."""
        data = _read_json(Path(path))
        why = problem(data)
        if why:
            raise NotARecord(why)
        return cls.from_dict(data)

    @classmethod
    def read(cls, run_dir: Path) -> "RunRecord | None":
        """The record of the run in `run_dir`, or None when it has none that can be read (a run killed before
        its first record, or a file that is not one)."""
        try:
            return cls.load(Path(run_dir) / RECORD)
        except (OSError, ValueError, TypeError, UnicodeDecodeError):
            return None

    # ---- writing -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out: dict[str, Any] = {}
        for key in _FIELDS if self.present is None else [k for k in _FIELDS if k in self.present]:
            value = getattr(self, key)
            out[key] = value.value if isinstance(value, Status) else value
        # keys that ffrun writes only sometimes (signal, sigma_auto) stay absent unless set
        out.update(self.extra)
        return out

    def write(self, run_dir: Path) -> dict:
        """Write this record as `run_dir`/metrics.json, atomically; returns what was written."""
        data = self.to_dict()
        write_json(Path(run_dir) / RECORD, data)
        return data

    # ---- questions every reader asks ------------------------------------------------------------------
    @property
    def primary_value(self) -> float | None:
        """The value of the task's primary metric, or None when absent or not a number."""
        return self.metric(self.primary_metric) if self.primary_metric else None

    def metric(self, name: str) -> float | None:
        value = self.metrics.get(name)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def succeeded(self, metric: str | None = None) -> bool:
        """Completed, with a finite value of `metric` (default: its primary metric)."""
        value = self.metric(metric) if metric else self.primary_value
        return self.status == Status.COMPLETED and value is not None and math.isfinite(value)

    @property
    def finished(self) -> bool:
        """Training came to an end that rerunning would not change (completed or diverged)."""
        return self.status in (Status.COMPLETED, Status.DIVERGED)

    @property
    def failed(self) -> bool:
        """Failed, or no status at all (a record that never got one)."""
        return self.status in (None, Status.FAILED)

    def get(self, key: str, default: Any = None) -> Any:
        """A key of the record as metrics.json names it (known fields or extra keys)."""
        if key in _FIELDS:
            value = getattr(self, key)
            return default if value is None else (value.value if isinstance(value, Status) else value)
        return self.extra.get(key, default)
