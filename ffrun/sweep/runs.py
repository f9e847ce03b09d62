"""One run of a sweep: where it lives, the overrides it is run with, and where it stands."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ffrun.run.record import RECORD, RunRecord, Status
from ffrun.sweep.overrides import job_keys

# Display states of a sweep's run besides its record's own status (ffrun.run.record.Status).
PENDING = "pending"  # no record yet
STALE = "stale"  # recorded with other overrides than this command's
UNKNOWN = "unknown"  # a record without a status
NOT_RUN = "not run"  # how a table shows a run without a record


@dataclass
class Run:
    task: str
    item: str
    encoding: str
    dir: Path
    overrides: list[str] = field(default_factory=list)  # the job's overrides, as Hydra records them

    @property
    def label(self) -> str:
        return f"{self.task}/{self.encoding} [{self.item}]"

    def record(self) -> RunRecord | None:
        return RunRecord.read(self.dir)

    def status(self) -> Status | str:
        """pending, stale (run with other overrides than this command's), or the run's own status."""
        rec = self.record()
        if rec is None:
            return PENDING
        try:
            import yaml

            recorded = yaml.safe_load((self.dir / ".hydra" / "overrides.yaml").read_text()) or []
        except (OSError, ValueError, ImportError):
            recorded = None
        if recorded is None or job_keys(recorded) != job_keys(self.overrides):
            return STALE
        return rec.status if rec.status is not None else UNKNOWN

    def recorded_differences(self) -> str:
        """How the overrides the run was made with (its .hydra/overrides.yaml) differ from this command's, as
        `recorded -> asked` (the first few), for a run whose status is stale."""
        try:
            import yaml

            recorded = [str(o) for o in yaml.safe_load((self.dir / ".hydra" / "overrides.yaml").read_text()) or []]
        except (OSError, ValueError, ImportError, TypeError):
            return "its .hydra/overrides.yaml is missing or unreadable"
        had = [o for o in recorded if o not in self.overrides]
        asked = [o for o in self.overrides if o not in recorded]
        return f"{' '.join(had[:3]) or '(none)'} -> {' '.join(asked[:3]) or '(none)'}"

    @property
    def done(self) -> bool:
        """Finished with this command's settings: rerunning would not change it."""
        return self.status() in (Status.COMPLETED, Status.DIVERGED)


def shown_status(rec: RunRecord | None) -> str:
    """A run's status as a table shows it: its record's, or `not run`."""
    return NOT_RUN if rec is None else rec.get("status", NOT_RUN)


def has_results(out: Path) -> bool:
    """Whether a sweep folder holds any run that trained (its settings then bind the folder)."""
    for path in (out / "runs").rglob(RECORD):
        rec = RunRecord.read(path.parent)
        if rec is not None and not rec.failed:
            return True
    return False


def unreachable(rec: RunRecord | None) -> bool:
    """A run refused because its method cannot be sized to the budget on its task (ffrun.models.budget)."""
    reason = str(rec.get("reason") or "") if rec is not None else ""
    return reason.startswith("model.params=") and "is unreachable" in reason
