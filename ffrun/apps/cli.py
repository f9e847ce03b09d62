"""`ffrun`: the Hydra app. Compose the config, build task and field, train, write the run directory.

    ffrun task=image encoding=gauss sigma=10
    ffrun -m task=image encoding=gauss sigma=1,10,100

Exit status: 0 completed; 2 bad input or config (one line on stderr); 3 diverged; 128 + signal number
when interrupted by SIGINT/SIGTERM (after a checkpoint). In a multirun a failed or diverged job is
recorded in its metrics.json and the sweep goes on; the sweep then exits with the worst job's status.
The work itself is in ffrun.run.job; this module is the command line around it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ffrun.util.errors import quiet_interrupt_while_starting

quiet_interrupt_while_starting()  # before the slow imports below (torch)

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from ffrun.run import job as runner  # noqa: E402
from ffrun.config import register_configs  # noqa: E402
from ffrun.run.job import EXIT_BAD_INPUT, report, resolve_device, run, seed_everything  # noqa: F401,E402 (the app's API)

register_configs()


def register_launcher() -> None:
    """`hydra/launcher=vectorized`. Hydra's plugin scan finds it in a regular install, but an editable
    install's import hook hides it from that scan, so ffrun registers it itself."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.ffrun_launcher.vectorized_launcher import VectorizedLauncher

    Plugins.instance().register(VectorizedLauncher)


register_launcher()

_job_started = False  # set once Hydra hands a composed config to the app


@hydra.main(config_path="pkg://ffrun.configs", config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> float:
    mark_job_started()
    for group in ("experiment", "method"):
        chosen = HydraConfig.get().runtime.choices.get(group)
        if chosen not in (None, "null") and chosen not in _choices(group):
            # an `optional` group makes Hydra skip a missing preset without a word: the run would be another one
            print(f"ffrun: error: {group}={chosen} is not a preset; choose one of "
                  f"{', '.join(_choices(group))}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    return report(cfg, run_dir, lambda: run(cfg, run_dir))


def run_analysis(tool: str, cfg: DictConfig, work, resolve: bool = True) -> None:
    """The body of an analysis app (ffrun-ntk, ffrun-sigma): save the config into the Hydra run directory,
    run `work(cfg, run_dir)`, and turn bad input into one line `<tool>: error: ...` and exit status 2."""
    from omegaconf import OmegaConf

    from ffrun.util.atomic import write_text
    from ffrun.util.errors import FfrunError

    mark_job_started()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=resolve))
    try:
        work(cfg, run_dir)
    except FfrunError as e:
        print(f"{tool}: error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def mark_job_started() -> None:
    """Called first by every Hydra app of ffrun: from here on, exit status 1 is not a config error."""
    global _job_started
    _job_started = True


class _UntilJobStarts:
    """stderr that holds back what is written before the app starts (Hydra's multi-line report of a bad
    override), and passes everything through once it has started."""

    def __init__(self, real) -> None:
        self.real, self.held = real, []

    def write(self, text: str) -> int:
        if _job_started:
            self.release()
            return self.real.write(text)
        self.held.append(text)
        return len(text)

    def release(self) -> None:
        if self.held:
            self.real.write("".join(self.held))
            self.held = []

    def __getattr__(self, name):  # flush, fileno, isatty, encoding: the real stream's
        return getattr(self.real, name)


_OS_ERROR = re.compile(r"^(?:\w+\.)*(\w*Error): \[Errno (\d+)\] ([^:]+)(?:: '(.*)')?", re.M)


def _os_error_line(report: str) -> str | None:
    """A traceback Hydra printed for a file-system error before the app started (the run or sweep directory
    cannot be made or written: read-only, a file in the way, a name too long) as one line with the fix."""
    found = _OS_ERROR.findall(report)
    if "Traceback (most recent call last)" not in report or not found:
        return None
    _, errno_, what, path = found[-1]
    shown = path if len(path) <= 120 else f"{path[:60]}...{path[-40:]} ({len(path)} characters)"
    fix = ("give it a shorter path: each folder name at most 255 bytes, the whole path at most 4096"
           if int(errno_) == 36 else "give hydra.run.dir (or hydra.sweep.dir for -m) a folder you can write to")
    return f"cannot write {shown} (the run directory or a file in it): {what.lower()}; {fix}"


def _one_line(report: str) -> str:
    """Hydra's error report as one line: its message lines, without the hints about stack traces."""
    os_error = _os_error_line(report)
    if os_error:
        return os_error
    keep = [ln.strip() for ln in report.splitlines() if ln.strip() and "HYDRA_FULL_ERROR" not in ln
            and not ln.strip().startswith(("full_key:", "object_type=", "reference_type=", "provider=", "Config search"))]
    return " ".join(keep)[:500]


def run_hydra_app(app) -> None:
    """Run a Hydra app, turning Hydra's exit 1 for a bad override or config (unknown key, wrong type,
    missing option), raised before the app starts, into one line and ffrun's exit status 2 for bad input."""
    global _job_started
    _job_started = False
    name = Path(sys.argv[0]).name if Path(sys.argv[0]).name.startswith("ffrun") else "ffrun"
    stderr = sys.stderr = _UntilJobStarts(sys.stderr)
    try:
        app()
    except SystemExit as e:
        if e.code == 1 and not _job_started:
            report, stderr.held = "".join(stderr.held), []
            print(f"{name}: error: {_one_line(report)}", file=stderr.real)
            sys.exit(EXIT_BAD_INPUT)
        raise
    finally:
        sys.stderr = stderr.real
        stderr.release()


GROUPS = (("task", "what to learn"), ("encoding", "how coordinates enter the network"),
          ("model", "the network"), ("trainer", "steps, learning rate, checkpoints, resume"),
          ("logger", "what is recorded beside metrics.json"), ("experiment", "presets: the paper's protocols"))


def _choices(group: str) -> list[str]:
    """The options of a config group, read from ffrun's config package (installed) or configs/ (a checkout)."""
    try:
        from importlib.resources import files

        folder = files("ffrun.configs") / group
        names = [p.name for p in folder.iterdir()]
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        names = [p.name for p in (Path(__file__).resolve().parents[1] / "configs" / group).glob("*.yaml")]
    return sorted(n[: -len(".yaml")] for n in names if n.endswith(".yaml"))


def help_text() -> str:
    """`ffrun --help`: what ffrun is, its config groups and their choices, examples, where outputs go."""
    groups = "\n".join(f"  {name:<11} {what}: {', '.join(_choices(name))}" for name, what in GROUPS)
    return f"""ffrun: train a coordinate MLP with Fourier features (Tancik et al., NeurIPS 2020), one command per experiment.

Usage: ffrun [-m] [group=option ...] [key=value ...]

Config groups (group=option):
{groups}

Top-level keys: sigma (the Gaussian scale; a number or auto), seed, device (auto, cpu, cuda, cuda:N).
Any key can be set: task.resolution=128, trainer.steps=500, model.width=128, encoding.m=128.

Examples:
  ffrun experiment=smoke                           a 32x32 check, about a second of training
  ffrun task=image encoding=gauss sigma=10         the default run: 512x512, 2000 steps, about 15 min on a 2-core CPU
  ffrun task.image=coffee task.resolution=128 sigma=auto    choose sigma from the training data, then train
  ffrun -m task=image encoding=gauss sigma=1,10,100         a sweep (one run per sigma)
  ffrun-summary outputs/multirun/DATE/TIME                  the sweep's table and plots

Outputs: outputs/DATE/TIME/ (a sweep: outputs/multirun/DATE/TIME/N/), relative to where you run ffrun; each
holds config.yaml, metrics.json, history.csv, checkpoint.pt, the pictures and cli.log. Move them with
hydra.run.dir=... (hydra.sweep.dir=... for -m). Resume with trainer.resume=true or trainer.resume=RUN_DIR.

Exit status: 0 completed, 2 bad input (one line on stderr), 3 diverged, 130/143 interrupted (checkpointed).
More: the README and docs/ of the repository; the full config: ffrun --cfg job; Hydra's own flags: ffrun --hydra-help
"""


def main() -> None:
    if any(a in ("--help", "-h") for a in sys.argv[1:]):
        print(help_text(), end="")
        return
    run_hydra_app(_app)
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)  # the sweep has ended: no longer "while starting"
    for sweep, jobs in runner.sweep_dirs.items():
        print(f"ffrun: sweep of {jobs} run(s) in {sweep}; table and plots: ffrun-summary {sweep}")
    if runner.failed_jobs:
        print(f"ffrun: {len(runner.failed_jobs)} job(s) of the sweep did not complete: "
              + "; ".join(f"{d} ({status})" for d, status, _ in runner.failed_jobs), file=sys.stderr)
        codes = {code for _, _, code in runner.failed_jobs}
        sys.exit(EXIT_BAD_INPUT if EXIT_BAD_INPUT in codes else max(codes))


if __name__ == "__main__":
    main()
