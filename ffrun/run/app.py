"""What every Hydra app of ffrun (ffrun, ffrun-sigma, ffrun-ntk) shares: bad input as one line and exit
status 2, also for Hydra's own errors before the app starts, and the tally of a sweep's jobs.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Callable

from ffrun.util.errors import FfrunError, closest_name, ending, quiet_interrupt_while_starting, run_began

# Each app imports this module before its slow imports (torch, through ffrun.run.outcome): from here on,
# Ctrl-C in a console script is one line until the app installs its own handler (as `ffrun` does first thing).
quiet_interrupt_while_starting()

from omegaconf import DictConfig, OmegaConf  # noqa: E402

from ffrun.run.outcome import EXIT_BAD_INPUT, SweepTally, tallying  # noqa: E402
from ffrun.util.atomic import write_text  # noqa: E402


class _UntilJobStarts:
    """stderr that holds back what is written before the app starts (Hydra's multi-line report of a bad
    override), and passes everything through once it has started."""

    def __init__(self, real) -> None:
        self.real, self.held, self.started = real, [], False

    def write(self, text: str) -> int:
        if self.started:
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


_gate: _UntilJobStarts | None = None  # the stderr of the app `run_hydra_app` is running


def mark_job_started() -> None:
    """Called first by every Hydra app of ffrun: from here on, exit status 1 is not a config error (and a
    Ctrl-C between runs no longer says that nothing was written)."""
    run_began()
    if _gate is not None:
        _gate.started = True


def run_analysis(tool: str, cfg: DictConfig, work: Callable[[DictConfig, Path], object], resolve: bool = True) -> None:
    """The body of an analysis app (ffrun-ntk, ffrun-sigma): save the config into the Hydra run directory,
    run `work(cfg, run_dir)`, and turn bad input into one line `<tool>: error: ...` and exit status 2."""
    from hydra.core.hydra_config import HydraConfig

    mark_job_started()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=resolve))
    try:
        work(cfg, run_dir)
    except FfrunError as e:
        print(f"{tool}: error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def say(text: str) -> None:
    """A line of an analysis app's result: printed as it is, and kept in the job's log file (`<tool>.log` in the
    run directory, Hydra's file handler), which would otherwise stay empty."""
    import logging

    print(text, flush=True)
    record = logging.LogRecord("ffrun", logging.INFO, __file__, 0, text, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


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


_KEY_NOT_IN = re.compile(r"Could not override '([\w.]+)'\..*?Key '(\w+)' not in '(\w+)'", re.S)


def _schema_keys(schema: str) -> list[str]:
    """The keys of the structured config called `schema` (TrainerConfig, ImageTaskConfig, ...)."""
    from hydra.core.config_store import ConfigStore

    def walk(tree):
        for item in tree.values():
            if isinstance(item, dict):
                yield from walk(item)
            elif OmegaConf.get_type(item.node).__name__ == schema:
                yield from item.node.keys()

    try:
        return sorted(set(walk(ConfigStore.instance().repo.get("schema", {}))))
    except Exception:
        return []


def _unknown_key_line(report: str) -> str | None:
    """Hydra's `Could not override 'trainer.stpes' ... use +trainer.stpes=...` in ffrun's words: a key the
    schema does not have is refused with or without `+`, so the advice to add `+` is replaced by the closest key."""
    found = _KEY_NOT_IN.search(report)
    if not found:
        return None
    full, key, schema = found.groups()
    close = closest_name(key, _schema_keys(schema))
    group = full.rsplit(".", 1)[0] + "." if "." in full else ""
    hint = f"did you mean {group}{close}? " if close else ""
    return (f"config: {full}: not a setting of ffrun (Key '{key}' not in '{schema}'); {hint}see ffrun --help or "
            "ffrun --cfg job for the keys")


_NO_OPTION = re.compile(r"Could not find '([\w/]+)/([^'/]*)'\s*Available options in '\1':\n((?:[ \t]+\S+\n?)*)")


def _unknown_option_line(report: str) -> str | None:
    """Hydra's `Could not find 'task/imgae'` and its list of options as one line, with the closest option."""
    found = _NO_OPTION.search(report)
    if not found:
        return None
    group, chosen, listed = found.groups()
    options = listed.split()  # one indented line each
    close = closest_name(chosen, options)
    hint = f"did you mean {group}={close}? " if close else ""
    return f"config: {group}={chosen} is not an option of {group}; {hint}choose one of {', '.join(options)}"


def _one_line(report: str) -> str:
    """Hydra's error report as one line: its message lines, without the hints about stack traces."""
    os_error = _os_error_line(report) or _unknown_key_line(report) or _unknown_option_line(report)
    if os_error:
        return os_error
    keep = [ln.strip() for ln in report.splitlines() if ln.strip() and "HYDRA_FULL_ERROR" not in ln
            and not ln.strip().startswith(("full_key:", "object_type=", "reference_type=", "provider=",
                                           "Config search"))]
    return " ".join(keep)[:500]


def run_hydra_app(app: Callable[[], object]) -> SweepTally:
    """Run a Hydra app, turning Hydra's exit 1 for a bad override or config (unknown key, wrong type,
    missing option), raised before the app starts, into one line and ffrun's exit status 2 for bad input.
    Returns the tally of the jobs it reported (`ffrun.run.outcome.report`), for the app to sum up."""
    global _gate
    from ffrun.config import plugin_error

    name = Path(sys.argv[0]).name if Path(sys.argv[0]).name.startswith("ffrun") else "ffrun"
    if plugin_error():  # FFRUN_PLUGINS names a module that cannot be used: nothing would run as asked
        print(f"{name}: error: {plugin_error()}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    stderr = sys.stderr = _gate = _UntilJobStarts(sys.stderr)
    try:
        with tallying(SweepTally()) as tally:
            app()
        return tally
    except SystemExit as e:
        if e.code == 1 and not stderr.started:
            report, stderr.held = "".join(stderr.held), []
            print(f"{name}: error: {_one_line(report)}", file=stderr.real)
            sys.exit(EXIT_BAD_INPUT)
        raise
    finally:
        ending()  # the app is done: a Ctrl-C from here to the exit changes nothing
        sys.stderr = stderr.real
        stderr.release()
        _gate = None


# ffrun's config groups, as `--help` of every Hydra app lists them (Hydra's own list shows internal schema groups)
GROUPS = (("task", "what to learn"), ("encoding", "how coordinates enter the network"),
          ("model", "the network"), ("trainer", "steps, learning rate, checkpoints, resume"),
          ("logger", "what is recorded beside metrics.json"), ("experiment", "presets: the paper's protocols"),
          ("method", "a successor's encoding, network and reference learning rate (after experiment=)"))


def group_choices(group: str) -> list[str]:
    """The options of a config group, read from ffrun's config package (installed) or configs/ (a checkout); a
    sub-folder's options are named with it (`grids/siren`)."""
    try:
        from importlib.resources import files

        folder = files("ffrun.configs") / group
        names = _yaml_names(folder)
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        names = _yaml_names(Path(__file__).resolve().parents[2] / "configs" / group)
    return sorted(names)


def _yaml_names(folder, prefix: str = "") -> list[str]:
    """The .yaml files under `folder` (a Path or an importlib Traversable), one level of sub-folders deep."""
    names = []
    for p in folder.iterdir():
        if p.name.endswith(".yaml"):
            names.append(prefix + p.name[: -len(".yaml")])
        elif not prefix and p.is_dir() and not p.name.startswith(("_", ".")):
            names += _yaml_names(p, f"{p.name}/")
    return names


def groups_text(groups=GROUPS) -> str:
    """The config groups and their options, one line each."""
    return "\n".join(f"  {name:<11} {what}: {', '.join(group_choices(name))}" for name, what in groups)


def wants_help() -> bool:
    return any(a in ("--help", "-h") for a in sys.argv[1:])


def run_command(app: Callable[[], object], help_text: Callable[[], str]) -> SweepTally | None:
    """A Hydra command's entry point: its own `--help` (Hydra's lists internal schema groups), else the app."""
    if wants_help():
        print(help_text(), end="")
        return None
    return run_hydra_app(app)
