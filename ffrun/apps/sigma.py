"""`ffrun-sigma`: the sigma that `sigma=auto` would choose, without training.

    ffrun-sigma task.image=coffee task.resolution=128
    ffrun-sigma experiment=paper_text task.data_seed=3

Same config syntax as `ffrun` (the given sigma is ignored: it is the one being predicted). Prints the
choice and writes, into the run directory (outputs/sigma/<date>/<time>/ by default):
`sigma_curve.png` (the proxy's held-out score against sigma, log axis, the choice marked) and
`sigma_auto.json` (the choice, the method, every candidate and its score, the seconds spent).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from ffrun.config import check_settings, register_configs, validate
from ffrun.run.app import groups_text, run_analysis, run_command, say
from ffrun.run.device import resolve_device
from ffrun.sigma.auto import SigmaChoice, is_auto, predict_sigma
from ffrun.tasks import build_task
from ffrun.util.atomic import save_figure, write_json

log = logging.getLogger("ffrun.sigma")


def predict(cfg: DictConfig, run_dir: Path) -> SigmaChoice:
    """Build the task (training data only is read), predict sigma, write the curve and the JSON."""
    check_settings(cfg)  # sigma=abc is named as given, before it is replaced by auto
    configured = cfg.sigma
    OmegaConf.update(cfg, "sigma", "auto")
    validate(cfg)
    task = build_task(cfg.task, resolve_device(cfg.device), cfg.trainer.batch_size, cfg.seed)
    choice = predict_sigma(task, cfg)
    record = {"task": cfg.task.name, "configured_sigma": None if is_auto(configured) else float(configured),
              **choice.record()}
    write_json(run_dir / "sigma_auto.json", record)
    plot_curve(choice, run_dir / "sigma_curve.png", cfg.task.name,
               None if is_auto(configured) else float(configured))
    say(f"sigma=auto: {choice.sigma:.4g} for task={cfg.task.name} ({choice.method}, "
          f"{len(choice.candidates)} candidates, {choice.seconds:.2f} s)"
          + ("" if is_auto(configured) else f"; the configured sigma is {float(configured):.4g}"))
    say(f"ffrun-sigma: wrote the curve {run_dir / 'sigma_curve.png'} and the scores {run_dir / 'sigma_auto.json'}")
    return choice


def plot_curve(choice: SigmaChoice, path: Path, title: str, configured: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(choice.candidates, choice.scores, "o-", ms=3, color="C0", label="proxy score")
    ax.axvline(choice.sigma, color="C3", lw=1.5, label=f"chosen: {choice.sigma:.3g}")
    if configured is not None:
        ax.axvline(configured, color="0.5", ls="--", lw=1, label=f"configured: {configured:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("sigma")
    ax.set_ylabel(choice.score)
    ax.set_title(f"sigma=auto, task={title}: {choice.method}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(path, fig)
    plt.close(fig)


register_configs()


@hydra.main(config_path="pkg://ffrun.configs", config_name="sigma", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    run_analysis("ffrun-sigma", cfg, predict, resolve=False)


def help_text() -> str:
    return f"""ffrun-sigma: the sigma that sigma=auto would choose for a run, without training.

Usage: ffrun-sigma [group=option ...] [key=value ...]     (the same config as ffrun; its sigma is ignored)

Config groups (group=option):
{groups_text()}

Examples:
  ffrun-sigma task.image=coffee task.resolution=128       the choice for a 128 px photo
  ffrun-sigma experiment=paper_text task.data_seed=3       for the paper's text protocol, another image
  ffrun-sigma task=ct task.resolution=128                  CT: the proxy is the task's own projector

Prints the choice and how it was made; writes sigma_curve.png (the proxy's held-out score against sigma, the
choice marked) and sigma_auto.json (method, candidates, scores, seconds) into outputs/sigma/DATE/TIME/
(move it with hydra.run.dir=...). Train with it: ffrun ... sigma=auto (the same prediction, then training).

Exit status: 0 done, 2 bad input (one line on stderr). The method: docs/sigma_auto.md; the full config:
ffrun-sigma --cfg job.
"""


def main() -> None:
    run_command(_app, help_text)


if __name__ == "__main__":
    main()
