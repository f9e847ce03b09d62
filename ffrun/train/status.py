"""Where a run stands: the status values of metrics.json.

Defined here, below the run layer, because the training loop decides three of them (completed, interrupted,
diverged); `ffrun.run.record` re-exports it with the record that writes it.
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """Where a run stands. A str, so `rec.status == "completed"` and JSON both read it as its name."""

    RUNNING = "running"  # written at each checkpoint while training
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"  # a signal stopped it after a checkpoint; resumable
    DIVERGED = "diverged"  # the loss became non-finite: a result of its settings, not a fault
    FAILED = "failed"  # bad input or an error: `reason` says which

    def __str__(self) -> str:
        return self.value
