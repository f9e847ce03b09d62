"""`ffrun`: the Hydra app. Compose the config, build task and field, train, write the run directory.

    ffrun task=image encoding=gauss sigma=10
    ffrun -m task=image encoding=gauss sigma=1,10,100

Exit status: 0 completed; 2 bad input or config (one line on stderr); 3 diverged; 128 + signal number
when interrupted by SIGINT/SIGTERM (after a checkpoint). In a multirun a failed or diverged job is
recorded in its metrics.json and the sweep goes on; the sweep then exits with the worst job's status.
The work itself is in ffrun.run (job: the experiment; outcome: its exit status; app: what every Hydra app
of ffrun shares); this module is the command line around it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ffrun.util.errors import quiet_interrupt_while_starting

quiet_interrupt_while_starting()  # before the slow imports below (torch)

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from ffrun.config import register_configs  # noqa: E402
from ffrun.run.app import group_choices, groups_text, mark_job_started, run_hydra_app, wants_help  # noqa: E402
from ffrun.run.job import execute  # noqa: E402
from ffrun.run.outcome import EXIT_BAD_INPUT, SweepTally, in_its_own_folder, report  # noqa: E402

register_configs()


def register_launcher() -> None:
    """`hydra/launcher=vectorized` and ffrun's SLURM and joblib launchers. Hydra's plugin scan finds them in a regular
    install, but an editable install's import hook hides them from that scan, so ffrun registers them itself."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.ffrun_launcher.vectorized_launcher import VectorizedLauncher

    Plugins.instance().register(VectorizedLauncher)
    for module, name in (("slurm_launcher", "SlurmLauncher"), ("joblib_launcher", "JoblibLauncher")):
        try:
            plugin = __import__(f"hydra_plugins.ffrun_launcher.{module}", fromlist=[name])
        except ImportError:  # without Hydra's submitit or joblib plugin (pip install 'ffrun[cluster]')
            continue
        Plugins.instance().register(getattr(plugin, name))
        if hasattr(plugin, "register"):
            plugin.register()


register_launcher()


@hydra.main(config_path="pkg://ffrun.configs", config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> float:
    mark_job_started()
    for group in ("experiment", "method"):
        chosen = HydraConfig.get().runtime.choices.get(group)
        if chosen not in (None, "null") and chosen not in group_choices(group):
            # an `optional` group makes Hydra skip a missing preset without a word: the run would be another one
            print(f"ffrun: error: {group}={chosen} is not a preset; choose one of "
                  f"{', '.join(group_choices(group))}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
    with in_its_own_folder(cfg, Path(HydraConfig.get().runtime.output_dir)) as run_dir:
        return report(cfg, run_dir, lambda: execute(cfg, run_dir))


def help_text() -> str:
    """`ffrun --help`: what ffrun is, its config groups and their choices, examples, where outputs go."""
    groups = groups_text()
    return f"""ffrun: train a coordinate MLP with Fourier features (Tancik et al., NeurIPS 2020), \
one command per experiment.

Usage: ffrun [-m] [group=option ...] [key=value ...]

Config groups (group=option):
{groups}

Top-level keys: sigma (the Gaussian scale; a number or auto), seed, device (auto, cpu, cuda, cuda:N).
Any key can be set: task.resolution=128, trainer.steps=500, model.width=128, encoding.m=128.

Examples:
  ffrun experiment=smoke                           seconds: checks a task end to end \
(any task=, method=); reproduces nothing
  ffrun experiment=paper_image method=siren        a method in place of Fourier features (method=NAME, see above)
  ffrun task=image encoding=gauss sigma=10         the default run: 512x512, 2000 steps, about 15 min on a 2-core CPU
  ffrun task.image=coffee task.resolution=128 sigma=auto    choose sigma from the training data, then train
  ffrun -m task=image encoding=gauss sigma=1,10,100         a sweep (one run per sigma)
  ffrun-summary outputs/multirun/DATE/TIME                  the sweep's table and plots

Outputs: outputs/DATE/TIME/ (a sweep: outputs/multirun/DATE/TIME/N/), relative to where you run ffrun; each
holds config.yaml, metrics.json, history.csv, checkpoint.pt, the pictures and cli.log. Move them with
hydra.run.dir=... (hydra.sweep.dir=... for -m). Resume with trainer.resume=true or trainer.resume=RUN_DIR (an
interrupted run prints the whole command). A directory that holds a run takes only that experiment again: a
completed one is not retrained (trainer.fresh=true moves it to DIR.earlier-N and trains again), an unfinished one
is continued.

Exit status: 0 completed, 2 bad input (one line on stderr), 3 diverged, 130/143 interrupted (checkpointed).
More: the README and docs/ of the repository; the full config: ffrun --cfg job; Hydra's own flags: ffrun --hydra-help
"""


def sum_up(tally: SweepTally) -> None:
    """After a sweep: where its table and plots come from, and which jobs did not complete (exit status)."""
    for sweep, jobs in tally.sweeps.items():
        print(f"ffrun: sweep of {jobs} run(s) in {sweep}; table and plots: ffrun-summary {sweep}")
    if tally.failed:
        print(f"ffrun: {len(tally.failed)} job(s) of the sweep did not complete: "
              + "; ".join(f"{d} ({status})" for d, status, _ in tally.failed), file=sys.stderr)
        sys.exit(tally.exit_status())


def main() -> None:
    if wants_help():
        print(help_text(), end="")
        return
    tally = run_hydra_app(_app)  # a Ctrl-C from here on is ignored: the outcome is decided (ffrun.util.errors)
    sum_up(tally)


if __name__ == "__main__":
    main()
