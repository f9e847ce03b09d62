"""Which checkpoint a run continues from (trainer.resume): only one of the same experiment, and only one with
training left to do. The checkpoint's own config decides, not the config.yaml beside it (a file anyone can
edit), and a run's metrics.json is read through `RunRecord`.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ffrun.config import flatten
from ffrun.run.record import RunRecord, Status
from ffrun.run.rundir import write_config
from ffrun.sigma.auto import is_auto
from ffrun.tasks.registry import PLUGINS_ENV
from ffrun.train.checkpoint import CHECKPOINT, find_checkpoint, load_checkpoint
from ffrun.util.errors import FfrunError

log = logging.getLogger("ffrun")

# Keys that may differ between a run and the run that resumes it.
RESUME_FREE_KEYS = {"trainer.resume", "trainer.fresh", "trainer.progress", "trainer.steps", "trainer.eval_every",
                    "trainer.ckpt_every", "trainer.threads", "device", "logger.name", "logger.images",
                    "trainer.precision"}
SIGMA_KEYS = frozenset({"sigma", "encoding.sigma"})


def config_differences(old: dict, new: dict, free: frozenset[str] = frozenset()) -> list[str]:
    """The keys (other than RESUME_FREE_KEYS and `free`) in which two resolved configs differ, as
    `key (old -> new)`."""
    fa, fb = flatten(old), flatten(new)
    # A key only one side has was added or removed by an ffrun update, not chosen by the user.
    keys = sorted((set(fa) & set(fb)) - RESUME_FREE_KEYS - free)
    return [f"{k} ({fa.get(k)!r:.40} -> {fb.get(k)!r:.40})" for k in keys if fa.get(k) != fb.get(k)]


def _unfinished(run_dir: Path, steps: int) -> bool:
    """A run with training left to do for `steps`: interrupted, killed, failed, or completed at fewer steps.
    One whose metrics.json cannot be read was killed before its first record."""
    rec = RunRecord.read(run_dir)
    try:
        return rec is None or rec.status != Status.COMPLETED or int(rec.step or 0) < steps
    except (TypeError, ValueError):  # a step that is not a number: not a record ffrun finished
        return True


def _chose_sigma_auto(run_dir: Path) -> bool:
    """Whether the run in `run_dir` predicted its sigma (sigma=auto): its metrics.json records how."""
    rec = RunRecord.read(run_dir)
    return rec is not None and isinstance(rec.get("sigma_auto"), dict)


def _free_keys(run_dir: Path, auto: bool) -> frozenset[str]:
    """sigma=auto: a run that predicted its own sigma matches whatever sigma it chose."""
    return SIGMA_KEYS if auto and _chose_sigma_auto(run_dir) else frozenset()


def find_resume_checkpoint(resume: bool | str, config: dict, run_dir: Path, auto: bool = False) -> Path | None:
    """The checkpoint to continue from: that of the given run directory (refused when that run is another
    experiment, or already past trainer.steps), or (resume=true) of the newest unfinished run of the same
    experiment under ./outputs. The checkpoint's own config decides, not the config.yaml beside it.
    `auto` (sigma=auto): a run that predicted its own sigma matches whatever sigma it chose, since the
    prediction depends on the step count; `prepare` then keeps that sigma."""
    if isinstance(resume, str):
        return _named_checkpoint(resume, config, auto)
    return _newest_unfinished(config, run_dir, auto)


def _named_checkpoint(resume: str, config: dict, auto: bool) -> Path:
    """trainer.resume=RUN_DIR: its checkpoint, or FfrunError saying why that run cannot be continued."""
    ckpt = find_checkpoint(resume, f"trainer.resume={resume}")
    state = load_checkpoint(ckpt)
    differences = config_differences(state["config"], config, _free_keys(ckpt.parent, auto))
    if differences:
        shown = ", ".join(differences[:6]) + (f" and {len(differences) - 6} more" if len(differences) > 6 else "")
        raise FfrunError(f"trainer.resume={resume}: that run is another experiment, it differs in {shown}; "
                         "resume with the run's own settings, or start a new run without trainer.resume")
    steps = config["trainer"]["steps"]
    if isinstance(state["step"], int) and state["step"] > steps:
        raise FfrunError(f"trainer.resume={resume}: that run is already at step {state['step']}, past "
                         f"trainer.steps={steps}; ask for trainer.steps>={state['step']} to continue it")
    return ckpt


def _newest_unfinished(config: dict, run_dir: Path, auto: bool) -> Path | None:
    """trainer.resume=true: the checkpoint of the newest run under ./outputs of the same experiment with
    training left to do, or None."""
    candidates = []
    for ckpt in Path("outputs").rglob(CHECKPOINT):
        other = ckpt.parent
        if (not ckpt.is_file() or other.resolve() == run_dir.resolve()
                or not _unfinished(other, config["trainer"]["steps"])):
            continue  # not a regular file (reading a FIFO would wait forever), itself, or nothing left to train
        free = _free_keys(other, auto)
        try:
            other_cfg = OmegaConf.to_container(OmegaConf.load(other / "config.yaml"))
        except Exception:
            continue
        if not config_differences(other_cfg, config, free):
            candidates.append((ckpt, free))
    for ckpt, free in sorted(candidates, key=lambda c: c[0].stat().st_mtime, reverse=True):
        try:  # config.yaml is only the quick look: the checkpoint is what resuming loads
            if not config_differences(load_checkpoint(ckpt)["config"], config, free):
                return ckpt
        except FfrunError as e:
            log.warning("trainer.resume=true: skipping %s: %s", ckpt, e)
    return None


def finished_here(cfg: DictConfig, run_dir: Path) -> RunRecord | None:
    """The record of the run in `run_dir` when it has nothing left to train for `cfg` (completed at
    trainer.steps or beyond, or diverged: the same settings diverge again), else None. Call it once
    `refuse_another_experiment` has accepted `cfg` for that directory."""
    rec = RunRecord.read(run_dir)
    if rec is None or rec.status not in (Status.COMPLETED, Status.DIVERGED):
        return None
    if rec.status == Status.COMPLETED and _unfinished(run_dir, int(cfg.trainer.steps)):
        return None  # completed at fewer steps than now asked for: it is continued
    return rec


def continue_here(cfg: DictConfig, run_dir: Path) -> bool:
    """The run in `run_dir` (the same experiment, with training left to do) is continued from its own checkpoint:
    trainer.resume names that directory (as the printed resume command does). False when it has none."""
    if cfg.trainer.resume not in (True, False) or not (run_dir / CHECKPOINT).is_file():
        return False
    OmegaConf.update(cfg, "trainer.resume", str(run_dir))
    return True


def unfinished_run_to_continue(cfg: DictConfig, run_dir: Path) -> Path | None:
    """trainer.resume=true: the folder of the run it would continue, when that run did not complete (interrupted,
    killed, failed), so that it is continued in its own folder rather than in `run_dir`; None otherwise (no
    such run, a completed one whose result must stay as it is, or a config that does not resolve)."""
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
        ckpt = _newest_unfinished(config, run_dir, is_auto(cfg.get("sigma")))
    except Exception:  # a bad value: the job itself reports it
        return None
    if ckpt is None:
        return None
    rec = RunRecord.read(ckpt.parent)
    return None if rec is not None and rec.status == Status.COMPLETED else ckpt.parent


def keep_resumed_sigma(cfg: DictConfig, run_dir: Path, resume_from: Path, chosen: float | None,
                       sigma_auto: dict | None) -> dict | None:
    """sigma=auto resuming a run that chose its own sigma: that run's choice (predicted for its step count, it
    is what its weights were trained with) replaces the one predicted now, in `cfg` and config.yaml. Returns
    the new sigma_auto record, or None when the two agree."""
    kept = load_checkpoint(resume_from)["config"]["sigma"]
    if kept == cfg.sigma:
        return None
    log.info("sigma=auto: keeping sigma %.4g chosen by the resumed run %s", kept, resume_from.parent)
    OmegaConf.update(cfg, "sigma", float(kept))
    if (run_dir / "config.yaml").is_file():
        write_config(cfg, run_dir)
    return {**(sigma_auto or {}), "sigma": float(kept), "predicted_now": chosen, "kept_from": str(resume_from.parent)}


def refuse_another_experiment(cfg: DictConfig, run_dir: Path) -> None:
    """A run directory that holds an earlier run takes only that experiment again (a rerun, or its resume):
    FfrunError naming the differing keys otherwise, before anything in it is written."""
    rec = RunRecord.read(run_dir)
    old = rec.config if rec is not None and rec.config else None
    if old is None and (run_dir / CHECKPOINT).is_file():
        try:
            old = load_checkpoint(run_dir / CHECKPOINT)["config"]
        except FfrunError:
            return  # not a checkpoint ffrun can read: nothing to protect that resuming could use
    if not old:
        return
    try:
        new = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # a value that does not resolve (sigma=auto under a float schema): compare it as given
        new = OmegaConf.to_container(cfg, resolve=False)
    differences = config_differences(old, new, _free_keys(run_dir, is_auto(cfg.get("sigma"))))
    if differences:
        status = rec.status if rec is not None and rec.status else "earlier"
        shown = ", ".join(differences[:6]) + (f" and {len(differences) - 6} more" if len(differences) > 6 else "")
        raise FfrunError(f"hydra.run.dir={run_dir} holds a {status} run of another experiment (it differs in "
                         f"{shown}); give this run its own hydra.run.dir, or move that run away first")


def resume_command(run_dir: Path, in_job: bool = True) -> str:
    """The whole command that continues the run in `run_dir`, to paste into a shell: FFRUN_PLUGINS when set, its
    own overrides and config search path, then trainer.resume and the same run directory (Hydra's record of the
    job's overrides; `.hydra/` outside a job, or with `in_job=False`: a sweep's command naming a job that ran
    elsewhere). Each argument is quoted for the shell, and a path for Hydra too."""
    overrides = _job_overrides(run_dir, "task", in_job)
    keep = [o for o in overrides if not o.lstrip("+~").startswith(("trainer.resume=", "hydra.run.dir="))]
    keep += [o for o in _job_overrides(run_dir, "hydra", in_job) if o.lstrip("+~").startswith("hydra.searchpath=")]
    where = hydra_quote(str(run_dir))
    plugins = os.environ.get(PLUGINS_ENV)
    prefix = [f"{PLUGINS_ENV}={shlex.quote(plugins)}"] if plugins else []
    return " ".join([*prefix, "ffrun", *map(shlex.quote, [*keep, f"trainer.resume={where}", f"hydra.run.dir={where}"])])


# A value Hydra's override grammar reads back as it is, unquoted; anything else is given in Hydra's quotes.
_PLAIN_VALUE = re.compile(r"[\w/.+:~@%-]+(?: [\w/.+:~@%-]+)*")


def hydra_quote(value: str) -> str:
    """`value` as an override's value that Hydra reads back unchanged (a comma, '=', brackets, a quote, a space at
    either end would otherwise make it a sweep, a syntax error or another string)."""
    if _PLAIN_VALUE.fullmatch(value):
        return value
    # Hydra's quoted string: a quote is escaped; backslashes are doubled only before a quote or at the end
    return "'" + re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value).replace("'", "\\'") + "'"


def _job_overrides(run_dir: Path, which: str, in_job: bool = True) -> list[str]:
    """The job's overrides of `which` kind (task: the user's; hydra: Hydra's own, as hydra.searchpath): this
    Hydra job's, else (or with in_job=False) those saved in the run's `.hydra/`."""
    from hydra.core.hydra_config import HydraConfig

    if not in_job:
        return _saved_overrides(run_dir, which)
    try:
        return [str(o) for o in HydraConfig.get().overrides[which]]
    except Exception:  # not inside a Hydra job
        return _saved_overrides(run_dir, which)


def _saved_overrides(run_dir: Path, which: str) -> list[str]:
    try:
        if which == "task":
            return [str(o) for o in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")]
        return [str(o) for o in OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.overrides[which]]
    except Exception:
        return []
