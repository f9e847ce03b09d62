"""`ffrun-ntk`: the paper's kernel argument, run on the user's own settings.

For each encoding (and each gauss sigma in `ntk.sigmas`) on the 1D power-law task it computes
(a) the empirical NTK of the network at initialisation (NTK parametrization, width `model.width`),
(b) the closed-form infinite-width NTK composed with the mapping's kernel, (c) kernel regression with
both, compared in test error with the real network trained by ffrun's trainer, and (d) plots: kernel
rows k(x, .), eigenvalue spectra, the per-frequency learning speed the spectrum predicts, and the
empirical kernel's convergence to the closed form as the width grows.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from ffrun.config import register_configs, validate
from ffrun.models.field import Field, build_field
from ffrun.run.app import run_analysis, run_command, say
from ffrun.run.device import seed_everything
from ffrun.run.job import run
from ffrun.sigma.kernels import (
    analytic_ntk,
    empirical_ntk,
    fourier_eigenvalues,
    gd_kernel_regression,
    kernel_regression,
    stationarity_error,
)
from ffrun.tasks import build_task, task_class
from ffrun.tasks.toy1d import Toy1DTask
from ffrun.train.loop import train
from ffrun.util.atomic import save_figure, write_json, write_text
from ffrun.util.errors import FfrunError

log = logging.getLogger("ffrun.sigma.kernels")

# The mappings the paper's kernel argument compares (gauss at each of ntk.sigmas): the closed-form NTK of a
# fixed B, one scale each.
PAPER_ENCODINGS = ("none", "basic", "posenc", "gauss")


class CenteredField(Field):
    """f(x) = g_theta(x) - g_theta0(x): the network minus a frozen copy of itself at initialisation.

    It has the same NTK as g but starts from f = 0, which is what the kernel predictions assume; without
    it the random initial function's high frequencies stay between the training points and swamp the
    comparison for high-bandwidth mappings."""

    def __init__(self, field: Field):
        super().__init__(field.encoding, field.mlp)
        self.initial_mlp = copy.deepcopy(field.mlp).requires_grad_(False)

    def from_features(self, g):
        return self.mlp(g) - self.initial_mlp(g)


def check_settings(ntk) -> None:
    """Range checks of the ntk.* settings; FfrunError naming the key."""
    rules = [("encodings", len(ntk.encodings) >= 1, "name at least one encoding"),
             ("sigmas", all(s >= 0 for s in ntk.sigmas), "use sigmas >= 0"),
             ("widths", len(ntk.widths) >= 1 and all(w >= 1 for w in ntk.widths), "use widths >= 1"),
             ("seeds", ntk.seeds >= 1, "use seeds >= 1"),
             ("convergence_points", ntk.convergence_points >= 2, "use at least 2 points"),
             ("gd_lr_fraction", ntk.gd_lr_fraction > 0, "use a fraction > 0 (GD is stable below 2)"),
             ("rows_at", all(0 <= x <= 1 for x in ntk.rows_at), "use points x in [0, 1]")]
    for key, ok, rule in rules:
        if not ok:
            raise FfrunError(f"config: ntk.{key}={OmegaConf.to_container(ntk)[key]!r} is out of range: {rule}")


def settings_of(cfg: DictConfig) -> list[tuple[str, float | None]]:
    out: list[tuple[str, float | None]] = []
    for name in cfg.ntk.encodings:
        if name not in PAPER_ENCODINGS:
            raise FfrunError(f"ntk.encodings: {name!r} is not one of the paper's encodings; choose from "
                             f"{', '.join(PAPER_ENCODINGS)}")
        out += [("gauss", float(s)) for s in cfg.ntk.sigmas] if name == "gauss" else [(name, None)]
    return out


def label_of(name: str, sigma: float | None) -> str:
    return name if sigma is None else f"gauss sigma={sigma:g}"


def setting_cfg(cfg: DictConfig, name: str, sigma: float | None) -> DictConfig:
    c = copy.deepcopy(cfg)
    with_sigma = sigma if sigma is not None else cfg.sigma
    OmegaConf.update(c, "encoding.name", name)
    OmegaConf.update(c, "sigma", with_sigma)
    OmegaConf.update(c, "encoding.sigma", with_sigma)
    return c


def ntk_model_cfg(cfg: DictConfig, width: int) -> DictConfig:
    m = copy.deepcopy(cfg.model)
    OmegaConf.update(m, "parametrization", "ntk")
    OmegaConf.update(m, "width", width)
    return m


def width_convergence(cfg: DictConfig, scfg: DictConfig, enc) -> dict[int, float]:
    """The empirical kernel's relative distance to the closed form at each width in ntk.widths, on a coarser
    grid, averaged over ntk.seeds draws of the MLP (the same B)."""
    depth, w_std, b_std = cfg.model.depth, cfg.model.w_std, cfg.model.b_std
    xc = torch.linspace(0, 1, cfg.ntk.convergence_points + 1)[:-1, None]
    kc = analytic_ntk(enc, xc, xc, depth, w_std, b_std)
    conv = {}
    for width in cfg.ntk.widths:
        errs = []
        for s in range(cfg.ntk.seeds):
            f = build_field(scfg.encoding, ntk_model_cfg(scfg, width), 1, 1, "none", cfg.seed + 1000 * (s + 1))
            f.encoding.load_state_dict(enc.state_dict())  # the same B: only the MLP's draw varies
            errs.append(((empirical_ntk(f, xc) - kc).norm() / kc.norm()).item())
        conv[int(width)] = sum(errs) / len(errs)
    return conv


def train_networks(cfg: DictConfig, scfg: DictConfig, task, label: str, gd_lr: float, run_dir: Path) -> dict:
    """Test MSE of ffrun's own network (standard init, Adam) and of the network the theory describes (NTK
    parametrization, centred, plain gradient descent at the kernel's step size)."""
    slug = label.replace(" ", "_").replace("=", "")
    rec = run(scfg, run_dir / "trained" / slug)
    gd = copy.deepcopy(scfg)
    OmegaConf.update(gd, "trainer.optimizer", "sgd")
    OmegaConf.update(gd, "trainer.eval_every", cfg.trainer.steps)
    gd_field = CenteredField(build_field(gd.encoding, ntk_model_cfg(gd, cfg.model.width), 1, 1, "none", cfg.seed))
    res = train(task, gd_field, gd.trainer, gd_lr, run_dir / "trained_gd" / slug,
                OmegaConf.to_container(gd, resolve=True), desc=f"GD {label}")
    return {"trained_test_mse": rec["metrics"]["test_mse"], "trained_gd_test_mse": res.metrics["test_mse"]}


def analyse(cfg: DictConfig, run_dir: Path) -> dict:
    validate(cfg)
    check_settings(cfg.ntk)
    if not issubclass(task_class(cfg.task.name), Toy1DTask):  # its grid, train/test split and signal
        raise FfrunError(f"task={cfg.task.name}: ffrun-ntk analyses the 1D task; use task=toy1d")
    seed_everything(cfg.seed)
    task = build_task(cfg.task, torch.device("cpu"), None, 0)
    x_all, y_all = task.full
    x_tr, y_tr = task.train
    x_te, y_te = task.test
    depth, w_std, b_std = cfg.model.depth, cfg.model.w_std, cfg.model.b_std
    results = []
    curves = {}
    for name, sigma in settings_of(cfg):
        label = label_of(name, sigma)
        log.info("NTK of %s", label)
        scfg = setting_cfg(cfg, name, sigma)
        field = build_field(scfg.encoding, ntk_model_cfg(scfg, cfg.model.width), 1, 1, "none", cfg.seed)
        enc = field.encoding
        k_an = analytic_ntk(enc, x_all, x_all, depth, w_std, b_std)
        k_emp = empirical_ntk(field, x_all)
        tr, te = slice(0, None, 2), slice(1, None, 2)
        mse = lambda pred: torch.mean((pred[:, 0] - y_te.double()[:, 0]) ** 2).item()  # noqa: E731
        row = {
            "encoding": name, "sigma": sigma,
            "ntk_test_mse": mse(kernel_regression(k_an[tr, tr], k_an[te, tr], y_tr)),
            "empirical_ntk_test_mse": mse(kernel_regression(k_emp[tr, tr], k_emp[te, tr], y_tr)),
            "stationarity_error_analytic": stationarity_error(k_an),
            "stationarity_error_empirical": stationarity_error(k_emp),
            "empirical_vs_analytic_rel_error": ((k_emp - k_an).norm() / k_an.norm()).item(),
        }
        conv = row["rel_error_by_width"] = width_convergence(cfg, scfg, enc)
        # Gradient descent as the theory describes it: step size a fixed fraction of the stable limit
        # 2n / lambda_max, the same for the kernel prediction and the NTK-parametrized network.
        n_tr = k_an[tr, tr].shape[0]
        gd_lr = cfg.ntk.gd_lr_fraction * n_tr / torch.linalg.eigvalsh(k_an[tr, tr]).max().item()
        steps = cfg.trainer.steps
        row["gd_lr"], row["gd_steps"] = gd_lr, steps
        row["ntk_gd_test_mse"] = mse(gd_kernel_regression(k_an[tr, tr], k_an[te, tr], y_tr, gd_lr, steps))
        if cfg.ntk.train:
            row.update(train_networks(cfg, scfg, task, label, gd_lr, run_dir))
        freqs, lam = fourier_eigenvalues(k_an[tr, tr], x_tr)
        curves[label] = {
            "eigenvalues": torch.linalg.eigvalsh(k_an[tr, tr]).flip(0).clamp_min(0).tolist(),
            "freqs": freqs.tolist(), "freq_eigenvalues": lam.tolist(),
            "rows": {str(x0): (k_an[i], k_emp[i]) for x0 in cfg.ntk.rows_at
                     for i in [min(range(len(task.x)), key=lambda j: abs(task.x[j] - x0))]},
        }
        results.append(row)
        log.info("%s: NTK regression test MSE %.3g (empirical %.3g), after %d GD steps %.3g%s; stationarity %.2g; "
                 "rel. error %s", label, row["ntk_test_mse"], row["empirical_ntk_test_mse"], steps,
                 row["ntk_gd_test_mse"],
                 f"; trained: Adam {row['trained_test_mse']:.3g}, GD {row['trained_gd_test_mse']:.3g}"
                 if "trained_test_mse" in row else "",
                 row["stationarity_error_analytic"], {w: round(e, 3) for w, e in conv.items()})
    record = {"task": OmegaConf.to_container(cfg.task), "depth": depth, "width": cfg.model.width,
              "w_std": w_std, "b_std": b_std, "results": results,
              "spectra": {k: {"eigenvalues": v["eigenvalues"], "freqs": v["freqs"],
                              "freq_eigenvalues": v["freq_eigenvalues"]} for k, v in curves.items()}}
    write_json(run_dir / "ntk.json", record)
    write_text(run_dir / "ntk_table.md", table(results))
    plot_all(curves, results, task, cfg, run_dir)
    say(table(results))
    return record


def table(results: list[dict]) -> str:
    """Test MSE of each predictor, and the kernel diagnostics."""
    head = ("| encoding | sigma | net, Adam | net (NTK param.), GD | NTK, GD same steps | NTK regression (t = inf) "
            "| empirical NTK regression | stationarity error | empirical vs closed form, by width |\n")
    head += "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    fmt = lambda r, k: f"{r[k]:.3g}" if k in r else "-"  # noqa: E731
    for r in results:
        conv = ", ".join(f"{w}: {e:.3f}" for w, e in r["rel_error_by_width"].items())
        sigma = "-" if r["sigma"] is None else f"{r['sigma']:g}"
        head += (f"| {r['encoding']} | {sigma} | {fmt(r, 'trained_test_mse')} | {fmt(r, 'trained_gd_test_mse')} | "
                 f"{fmt(r, 'ntk_gd_test_mse')} | {fmt(r, 'ntk_test_mse')} | {fmt(r, 'empirical_ntk_test_mse')} | "
                 f"{r['stationarity_error_analytic']:.2g} | {conv} |\n")
    return head


def plot_all(curves: dict, results: list[dict], task: Toy1DTask, cfg: DictConfig, run_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(curves)
    colours = plt.get_cmap("tab10").colors

    # Kernel rows: stationary kernels have rows that are shifted copies of each other.
    fig, axes = plt.subplots(1, len(labels), figsize=(3.2 * len(labels), 3), sharey=True, squeeze=False)
    for ax, label in zip(axes[0], labels):
        for i, (x0, (ka, ke)) in enumerate(curves[label]["rows"].items()):
            ax.plot(task.x, (ka / ka.max()).numpy(), color=colours[i], label=f"x={float(x0):g}")
            ax.plot(task.x, (ke / ke.max()).numpy(), color=colours[i], ls=":", lw=1)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("x'")
    axes[0][0].set_ylabel("k(x, x') / max (solid: closed form, dotted: empirical)", fontsize=7)
    axes[0][0].legend(fontsize=7)
    save_figure(run_dir / "kernel_rows.png", fig)
    plt.close(fig)

    def line_plot(name: str, lines, xlabel: str, ylabel: str, title: str, log_x: bool) -> None:
        """One figure with a line per (label, x, y), on log-y (and optionally log-x) axes."""
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, (label, x, y) in enumerate(lines):
            ax.plot(x, y, "o-" if len(x) < 10 else "-", color=colours[i % 10], label=label)
        ax.set_yscale("log")
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
        save_figure(run_dir / name, fig)
        plt.close(fig)

    spectra = []
    speeds = []
    for label in labels:
        ev = torch.tensor(curves[label]["eigenvalues"])
        spectra.append((label, list(range(1, len(ev) + 1)), (ev / ev[0]).clamp_min(1e-16).numpy()))
        f, lam = torch.tensor(curves[label]["freqs"]), torch.tensor(curves[label]["freq_eigenvalues"])
        speeds.append((label, f[1:].numpy(), (lam[1:] / lam[1:].max()).clamp_min(1e-16).numpy()))
    line_plot("spectrum.png", spectra, "eigenvalue index", "lambda_i / lambda_1",
              f"NTK spectrum on the training points (depth {cfg.model.depth})", log_x=True)
    line_plot("frequency_speed.png", speeds, "frequency (cycles per unit)", "relative learning speed lambda_f / max",
              "How fast gradient descent learns each frequency", log_x=False)
    convergence = [(label_of(r["encoding"], r["sigma"]), sorted(r["rel_error_by_width"]),
                    [r["rel_error_by_width"][w] for w in sorted(r["rel_error_by_width"])]) for r in results]
    line_plot("ntk_convergence.png", convergence, "width", "||Theta_emp - Theta|| / ||Theta||",
              "Empirical NTK -> closed form", log_x=True)


register_configs()


@hydra.main(config_path="pkg://ffrun.configs", config_name="ntk", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    run_analysis("ffrun-ntk", cfg, analyse)


def help_text() -> str:
    return """ffrun-ntk: the paper's neural tangent kernel analysis (its section 4) on the 1D power-law task.

Usage: ffrun-ntk [group=option ...] [key=value ...]

For each encoding in ntk.encodings (and each sigma in ntk.sigmas for gauss): the empirical NTK at
initialisation, the closed-form infinite-width NTK, kernel regression with both against the trained network,
kernel rows, eigenvalue spectra, per-frequency learning speed and the empirical kernel's convergence in width.

Keys (ntk.*): encodings {none,basic,posenc,gauss}, sigmas [1,10], widths [64,256,1024], seeds 2,
convergence_points 32, train true, gd_lr_fraction 0.5, rows_at [0.25,0.5,0.75]; and ffrun's own keys of the
1D task and the network: task.n_points, task.alpha, task.max_freq, model.width, model.depth, trainer.*, seed.

Examples:
  ffrun-ntk                                          none/basic/posenc/gauss (sigma 1 and 10), width 256
  ffrun-ntk ntk.sigmas=[1,3,10,30] task.alpha=2 model.width=512

Writes plots and ntk.json into outputs/ntk/DATE/TIME/ (move it with hydra.run.dir=...). Exit status: 0 done,
2 bad input (one line on stderr). More: docs/ntk.md; the full config: ffrun-ntk --cfg job.
"""


def main() -> None:
    run_command(_app, help_text)


if __name__ == "__main__":
    main()
