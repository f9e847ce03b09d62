"""`hydra/launcher=joblib`: Hydra's joblib launcher (its keys and defaults), with the sweep's outcome in the command
that started it: each job ran in a worker process, so its record is read once the jobs have ended, and one that did
not complete is one line with its run directory and reason, and counts in the exit status."""


from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn

from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as HydraJoblibLauncher


@dataclass
class JoblibLauncherConf(JobLibLauncherConf):
    _target_: str = "hydra_plugins.ffrun_launcher.joblib_launcher.JoblibLauncher"


def register() -> None:
    """Make `hydra/launcher=joblib` this launcher (after Hydra's plugin scan, which stores the plugin's own)."""
    ConfigStore.instance().store(group="hydra/launcher", name="joblib", node=JoblibLauncherConf, provider="ffrun")


class JoblibLauncher(HydraJoblibLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from ffrun.run.outcome import tally_job

        returns = super().launch(job_overrides, initial_job_idx)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        for num, ret in enumerate(returns, start=initial_job_idx):
            tally_job(sweep_dir, Path(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg is not None else None,
                      num, say=False)  # the worker's own line reached this terminal
        return returns
