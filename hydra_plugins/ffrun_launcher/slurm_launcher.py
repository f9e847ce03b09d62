"""`hydra/launcher=slurm` (configs/hydra/launcher/slurm.yaml): hydra-submitit-launcher's SLURM launcher, with what a
run longer than a job's time limit needs, and the sweep's outcome in the command that submitted it.

In the job: submitit's signal before the time limit (SIGUSR2, `signal_delay_s` before it) or at a preemption
(`scancel --signal=USR2`) stops the run at the end of its step with a checkpoint, like SIGTERM; the signal is then
handed to submitit, which calls `checkpoint` and requeues the job (at most `max_num_timeout` times for time limits).
The requeued job continues the run from its checkpoint in the same run directory (`trainer.resume=RUN_DIR`), and its
metrics.json counts the requeues.

In the submitting command: every job's record is read once the jobs have ended, and each job that did not complete
is one line with its run directory and reason, and counts in the sweep's exit status (`ffrun.run.outcome.tally_job`).
"""


import logging
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher

log = logging.getLogger(__name__)


class _Tracked:
    """The app as the job runs it, keeping the run directory Hydra gave it (a requeued job continues there)."""

    def __init__(self, task_function) -> None:
        self.task_function, self.run_dir = task_function, None

    def __call__(self, cfg):
        self.run_dir = Path(HydraConfig.get().runtime.output_dir)
        return self.task_function(cfg)


class _SacctOnce(logging.Filter):
    """submitit asks `sacct` for the jobs' states at every poll; a cluster without accounting answers with an error,
    which submitit logs each time. Said once: the jobs' results are then read from their result files."""

    said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        if not _SacctOnce.said:
            _SacctOnce.said = True
            log.info("sacct gives no job states here (accounting disabled): waiting for the jobs' result files")
        return False


def preempt_signal() -> signal.Signals:
    """The signal submitit asks SLURM to send before the time limit (`--signal`): SIGUSR2 unless
    $SUBMITIT_PREEMPT_SIGNAL names another."""
    import submitit

    return signal.Signals[f"SIG{submitit.JobEnvironment.USR_SIG}"]


class SlurmLauncher(SubmititSlurmLauncher):
    # ---- in the job ------------------------------------------------------------------------------------
    def __call__(self, sweep_overrides: list, job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: dict, requeues: int = 0) -> JobReturn:
        from ffrun.run.job import set_requeues
        from ffrun.train.loop import stop_also_on

        stop_also_on(preempt_signal())
        set_requeues(requeues)
        app = self.task_function
        self.task_function = self._tracked = _Tracked(app)
        try:
            return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
        except SystemExit as e:
            self.task_function = app
            if e.code == 128 + preempt_signal():
                return self._requeue(job_num, e)
            if e.code in (128 + signal.SIGTERM, 128 + signal.SIGINT):
                return self._ended()  # stopped with a checkpoint, not requeued: the submitting command says so
            raise
        finally:
            self.task_function = app

    def _requeue(self, job_num: int, stopped: SystemExit) -> JobReturn:
        """The run checkpointed on submitit's signal: submitit's own handler (back in place now) decides, calls
        `checkpoint` and requeues the job (exiting), or says why not: then the job ends, interrupted."""
        from submitit.core.utils import UncompletedJobError

        log.info("job %s: checkpointed on %s; handing the signal to submitit", job_num, preempt_signal().name)
        try:
            signal.raise_signal(preempt_signal())
        except UncompletedJobError as e:
            return self._ended(f"{e} (hydra.launcher.max_num_timeout={self.params.get('max_num_timeout')})")
        raise stopped  # the signal did not reach submitit's handler: the job ends as the run did

    def _ended(self, note: str = "") -> JobReturn:
        """The return of a job whose run stopped early: the submitting command reads its record."""
        run_dir = self._tracked.run_dir  # None: stopped before the app began (no record to read)
        ret = JobReturn(status=JobStatus.COMPLETED, _return_value=float("nan"), hydra_cfg=None if run_dir is None
                        else OmegaConf.create({"hydra": {"runtime": {"output_dir": str(run_dir)}}}))
        ret.ffrun_note = note
        return ret

    def checkpoint(self, sweep_overrides: list, job_dir_key: str, job_num: int, job_id: str, singleton_state: dict,
                   requeues: int = 0) -> Any:
        """What submitit requeues: the same job, continuing its run from the checkpoint in its run directory."""
        import submitit

        run_dir = getattr(getattr(self, "_tracked", None), "run_dir", None)
        overrides = [o for o in sweep_overrides if not o.lstrip("+~").startswith("trainer.resume=")]
        if run_dir is not None and (run_dir / "checkpoint.pt").is_file():
            overrides.append(f"trainer.resume={_quoted(str(run_dir))}")
        return submitit.helpers.DelayedSubmission(self, overrides, job_dir_key, job_num, job_id, singleton_state,
                                                  requeues=requeues + 1)

    # ---- in the submitting command -----------------------------------------------------------------------
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        from ffrun.run.app import mark_job_started
        from ffrun.run.outcome import EXIT_BAD_INPUT, tally_job

        mark_job_started()
        self.params["signal_delay_s"] = checked_signal_delay(self.params)
        logging.getLogger("submitit").addFilter(_SacctOnce())
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
                                         slurm_max_num_timeout=self.params.get("max_num_timeout", 0))
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in self.params.items()
                                      if k not in ("submitit_folder", "max_num_timeout")})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        params = []
        for num, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
            params.append((list(overrides), "hydra.sweep.dir", num, f"job_id_for_{num}", Singleton.get_state()))
        try:
            jobs = executor.map_array(self, *zip(*params))
        except Exception as e:  # sbatch refused the jobs (a partition, a size the cluster does not have)
            why = " ".join(str(e).split())
            print(f"ffrun: error: SLURM refused the sweep's jobs: {why[-400:]}; check hydra.launcher.partition, "
                  "gpus_per_node, cpus_per_task and mem_gb against the cluster (sinfo)", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        returns = []
        for (overrides, _, num, _, _), job in zip(params, jobs):
            try:
                ret = job.results()[0]
            except Exception as e:  # the job ended without a result (not requeued, killed): its own words
                why = " ".join(str(e).split("\n")[-3:]).strip() or type(e).__name__
                tally_job(sweep_dir, None, num, f"SLURM job {job.job_id} ended without a result: {why[-300:]} "
                          f"(log: {job.paths.stderr})")
                ret = JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=float("nan"))
            else:
                run_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg is not None else None
                note = getattr(ret, "ffrun_note", "")
                tally_job(sweep_dir, run_dir, num, f"{note}; " * bool(note) + f"log: {job.paths.stderr}")
            returns.append(ret)
        return returns


def _quoted(value: str) -> str:
    """A value as a Hydra override writes it: quoted, so that any path reads back as itself."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def checked_signal_delay(params: dict) -> int:
    """`signal_delay_s` for the job's time limit: one that would signal the job before it trained (at least half of
    `timeout_min`) becomes half of it, said in one line; a limit under one minute is refused (exit 2)."""
    from ffrun.run.outcome import EXIT_BAD_INPUT

    limit_min, delay = params.get("timeout_min"), int(params.get("signal_delay_s", 120))
    if not isinstance(limit_min, int) or limit_min < 1:
        print(f"ffrun: error: hydra.launcher.timeout_min={limit_min}: give the job's time limit in whole minutes, "
              "at least 1", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    limit_s = 60 * limit_min
    if delay * 2 <= limit_s:
        return delay
    adjusted = limit_s // 2
    print(f"ffrun: hydra.launcher.signal_delay_s={delay} would signal each job to checkpoint before half of "
          f"hydra.launcher.timeout_min={limit_min} ({limit_s} s) was spent; using signal_delay_s={adjusted}",
          file=sys.stderr, flush=True)
    return adjusted

