"""`hydra/launcher=vectorized`: a sweep's compatible jobs trained together as one batched network.

    ffrun -m hydra/launcher=vectorized task=image encoding=gauss sigma=1,2,4,8,16,32

Jobs whose resolved configs differ only in sigma, seed or the encoding (with the same feature width and
learning rate) and that can be batched (see ffrun.train.vectorized.why_not_vectorizable) form one group of at
most `max_group` jobs, trained in one process; every other job runs as Hydra's basic launcher would run
it. Each job gets its usual run directory, `.hydra/` files, config.yaml, metrics.json, history,
checkpoint and pictures.
"""


# No `from __future__ import annotations`: Hydra's plugin scan executes this module outside sys.modules,
# where dataclasses cannot resolve string annotations.
import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)


@dataclass
class VectorizedLauncherConf:
    _target_: str = "hydra_plugins.ffrun_launcher.vectorized_launcher.VectorizedLauncher"
    max_group: int = 64  # most jobs trained together in one batched network


ConfigStore.instance().store(group="hydra/launcher", name="vectorized", node=VectorizedLauncherConf, provider="ffrun")


class VectorizedLauncher(Launcher):
    def __init__(self, max_group: int = 64) -> None:
        super().__init__()
        self.max_group = max_group
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def _run_one(self, sweep_config: DictConfig, task_function: TaskFunction) -> JobReturn:
        return run_job(hydra_context=self.hydra_context, task_function=task_function, config=sweep_config,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from ffrun.train.vectorized import group_key

        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        if not isinstance(self.max_group, int) or isinstance(self.max_group, bool) or self.max_group < 1:
            import sys

            print(f"ffrun: error: hydra.launcher.max_group={self.max_group!r} is out of range: use an integer >= 1 "
                  "(the most jobs trained together; 64 by default)", file=sys.stderr)
            sys.exit(2)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs (vectorized where compatible)")
        jobs = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            jobs.append((idx, sweep_config))
        groups: dict[tuple, list] = {}
        for idx, sweep_config in jobs:
            try:
                key = group_key(_job_config(sweep_config, resolve=True))
            except Exception:  # sigma=auto or a bad value does not resolve: the job runs alone and reports it
                key = ("alone", idx)
            groups.setdefault(key, []).append((idx, sweep_config))
        returns: dict[int, JobReturn] = {}
        for members in groups.values():
            for start in range(0, len(members), self.max_group):
                returns.update(self._launch_group(members[start : start + self.max_group]))
        return [returns[idx] for idx, _ in jobs]

    def _launch_group(self, members: list) -> dict[int, JobReturn]:
        from ffrun.run.job import prepare
        from ffrun.run.rundir import claim_run_dir, holds_earlier_run
        from ffrun.train.vectorized import why_not_vectorizable
        from ffrun.util.errors import FfrunError

        sequential = {idx: cfg for idx, cfg in members}
        prepared = []
        reasons = [] if len(members) < 2 else [r for _, c in members if (r := why_not_vectorizable(_job_config(c)))]
        if reasons:
            log.info(f"not vectorized: {reasons[0]}; running the jobs one after another")
        elif len(members) > 1:
            try:
                task = None
                for idx, sweep_config in members:
                    job = prepare(_job_config(sweep_config), _run_dir(sweep_config), task=task)
                    task = job.task
                    prepared.append((idx, sweep_config, job))
            except FfrunError:
                prepared = []  # the basic path reports the error of the job that raised it
        out: dict[int, JobReturn] = {}
        # Sub-groups with the same feature width (posenc and gauss can share one when their m match).
        widths: dict[int, list] = {}
        for item in prepared:
            if holds_earlier_run(item[2].run_dir):
                continue  # a rerun into a run's folder: the basic path says it is complete, or continues it
            if claim_run_dir(item[2].run_dir, job=item[0]):
                continue  # held by another run or job: the basic path refuses it without touching the directory
            widths.setdefault(item[2].field.encoding.out_dim, []).append(item)
        for same in widths.values():
            if len(same) < 2:
                continue
            for idx, _, _ in same:
                sequential.pop(idx)
            out.update(self._train_together(same))
        for idx, sweep_config in sequential.items():
            out[idx] = self._run_one(sweep_config, self.task_function)
        return out

    def _train_together(self, items: list) -> dict[int, JobReturn]:
        import sys

        from ffrun.run.job import train_together
        from ffrun.run.outcome import report
        from ffrun.run.record import Status

        jobs = [job for _, _, job in items]
        log.info("training %d jobs as one batched network: %s", len(jobs), ", ".join(j.label for j in jobs))
        results = train_together(jobs)
        # An interrupted or diverged member's final metrics.json at once, before any member's outputs are
        # written, so none is left "running"; a completed one's follows its outputs (Job.finish).
        for job, result in zip(jobs, results):
            if result.status != Status.COMPLETED:
                job.record(result, result.status)
        out = {}
        for (idx, sweep_config, job), result in zip(items, results):
            def finish(cfg: DictConfig, job=job, result=result) -> float:
                return report(job.cfg, job.run_dir, lambda: job.finish(result), exit_on_signal=False)

            out[idx] = self._run_one(sweep_config, finish)
        signals = [r.signal for r in results if r.status == Status.INTERRUPTED]
        if signals:  # a signal stops the whole sweep, as it stops a single run, once every member is written
            sys.exit(128 + signals[0])
        return out


def _job_config(sweep_config: DictConfig, resolve: bool = False):
    """The job's own config (without the hydra node), as Hydra hands it to the task function."""
    cfg = copy.deepcopy(sweep_config)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True) if resolve else cfg


def _run_dir(sweep_config: DictConfig) -> Path:
    return Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
