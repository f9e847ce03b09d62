"""One run of a sweep: where it lives, the overrides it is run with, and where it stands."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from ffrun.run.record import RECORD, RunRecord, Status
from ffrun.sweep.overrides import job_keys

# Display states of a sweep's run besides its record's own status (ffrun.run.record.Status).
PENDING = "pending"  # no record yet
STALE = "stale"  # recorded with other overrides than this command's, or with a preset or default since edited
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
        """pending, stale (run with other overrides than this command's, or with settings its overrides no longer
        compose to), or the run's own status."""
        rec = self.record()
        if rec is None:
            return PENDING
        recorded = self.recorded_overrides()
        if recorded is None or job_keys(recorded) != job_keys(self.overrides) or self.config_changes(recorded):
            return STALE
        return rec.status if rec.status is not None else UNKNOWN

    def recorded_overrides(self) -> list[str] | None:
        """The overrides the run was made with (its .hydra/overrides.yaml), or None where unreadable."""
        try:
            import yaml

            return [str(o) for o in yaml.safe_load((self.dir / ".hydra" / "overrides.yaml").read_text()) or []]
        except (OSError, ValueError, ImportError, TypeError):
            return None

    def config_changes(self, recorded: list[str] | None = None) -> list[str]:
        """`key: recorded -> now` for each setting whose value in the run's .hydra/config.yaml differs from what its
        recorded overrides compose to today: a preset or default edited since the run was made, so its score is of
        other settings than the same command gives now. A key only one side holds is no change (an option added
        since defaults to the behaviour before it). Empty where either side cannot be read. `recorded`: the
        run's overrides where the caller has read them already."""
        path = self.dir / ".hydra" / "config.yaml"
        recorded = self.recorded_overrides() if recorded is None else recorded
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            return []
        if recorded is None:
            return []
        return list(_config_changes(str(path), stamp, tuple(recorded)))

    def recorded_differences(self) -> str:
        """How the run's recorded settings differ from this command's, as `recorded -> asked` (the first few), for
        a run whose status is stale: its overrides, or else the settings a preset or default edit changed."""
        recorded = self.recorded_overrides()
        if recorded is None:
            return "its .hydra/overrides.yaml is missing or unreadable"
        if job_keys(recorded) == job_keys(self.overrides):
            changes = self.config_changes(recorded)
            if changes:
                return f"a preset or default changed since: {'; '.join(changes[:3])}"
        had = [o for o in recorded if o not in self.overrides]
        asked = [o for o in self.overrides if o not in recorded]
        return f"{' '.join(had[:3]) or '(none)'} -> {' '.join(asked[:3]) or '(none)'}"

    @property
    def done(self) -> bool:
        """Finished with this command's settings: rerunning would not change it."""
        return self.status() in (Status.COMPLETED, Status.DIVERGED)


@functools.lru_cache(maxsize=4096)
def _config_changes(path: str, stamp: int, recorded: tuple[str, ...]) -> tuple[str, ...]:
    """Run.config_changes, cached by the config file's path and mtime: a report asks it of every run, often
    more than once. Both sides unresolved, as Hydra writes .hydra/config.yaml."""
    from omegaconf import OmegaConf

    from ffrun.config import flatten
    from ffrun.run.compose import compose

    try:
        then = flatten(OmegaConf.to_container(OmegaConf.load(path), resolve=False))
        now = flatten(OmegaConf.to_container(compose(list(recorded)), resolve=False))
    except Exception:  # unreadable, or overrides that no longer compose: the overrides' own check decides
        return ()
    return tuple(f"{k}: {then[k]!r} -> {now[k]!r}" for k in then if k in now and then[k] != now[k])


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
