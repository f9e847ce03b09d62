"""Structured config schema, registered in Hydra's ConfigStore.

Every YAML file in `configs/` starts from one of these dataclasses, or from one a task, an encoding or a
network registers beside its code (ffrun.tasks.registry, ffrun.models.registry), so a typo'd or unknown
key (`trainer.stpes=10`) and a value of the wrong type (`model.depth=1.5`) fail when the config is
composed, before any work starts. Value ranges are checked in `validate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from ffrun.models.configs import EncodingConfig, ModelConfig  # noqa: F401  (the schemas live beside the models)
from ffrun.tasks.registry import TASKS, check_limits, registered
from ffrun.util.errors import FfrunError, closest_name

# trainer.lr_schedule's names (their factors live with the optimizer, ffrun.train.loop.LR_SCHEDULES)
LR_SCHEDULES = ("constant", "wire")


def _side(size: Any, reference: Any) -> float:
    """A resolution as a side length: N; the larger of W and H for `WxH` or [W, H]; `native` (known only once the
    image is read) counts as the reference, so the paper's own value applies. The forms are the image task's
    (ffrun.data.images.image_size)."""
    if isinstance(size, (int, float)) and not isinstance(size, bool):
        return float(size)
    from ffrun.data.images import NATIVE, image_size

    side = image_size(size)
    return float(reference) if side == NATIVE else float(max(side))


def per_sample(value: Any, size: Any, reference: Any) -> float:
    """value * size / reference: a frequency (sigma) chosen at the paper's sampling density `reference`
    (pixels or voxels per unit length), carried to `size`, so it stays the same fraction of the Nyquist
    frequency. YAML: ${ffrun.per_sample:4.0,${task.resolution},512}."""
    return float(value) * _side(size, reference) / float(reference)


def per_sample_count(value: Any, size: Any, reference: Any) -> int:
    """round(value * size / reference), at least 1: a count of measurements (CT angles) that keeps the
    ratio of measurements to unknowns when the grid shrinks. YAML: ${ffrun.count:20,${.resolution},512}."""
    return max(1, math.floor(float(value) * _side(size, reference) / float(reference) + 0.5))


def per_sample_octaves(value: Any, size: Any, reference: Any) -> float:
    """log2(1 + (2^value - 1) * size / reference): the posenc scale whose top band 2^scale - 1 (the notebooks'
    posenc_new, offset 1) is carried to `size` as per_sample carries sigma, so it stays the same fraction of
    the Nyquist frequency. YAML: ${ffrun.octaves:6.0,${task.resolution},512}."""
    return math.log2(1.0 + (2.0 ** float(value) - 1.0) * _side(size, reference) / float(reference))


def register_resolvers() -> None:
    for name, fn in (("ffrun.per_sample", per_sample), ("ffrun.count", per_sample_count),
                     ("ffrun.octaves", per_sample_octaves)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()  # at import: any code that composes or loads an ffrun config has them


@dataclass
class TrainerConfig:
    steps: int = 2000
    optimizer: str = "adam"  # adam (the paper) | sgd (plain gradient descent, what NTK theory describes)
    lr: float = 1e-3
    # Per-encoding learning rates (the paper trains none/basic images at 1e-2); presets read it via
    # `lr: ${oc.select:trainer.lr_by_encoding.${encoding.name},...}` so a CLI `trainer.lr=` still wins.
    lr_by_encoding: Dict[str, float] = field(default_factory=dict)
    lr_decay: float = 1.0  # multiply the lr by this factor every `lr_decay_steps`, continuously
    lr_decay_steps: int = 0  # 0 = constant learning rate
    # A named lr schedule, which then replaces lr_decay/lr_decay_steps: null (lr_decay/lr_decay_steps, the
    # default) | constant | wire (lr * 0.1^min(step / steps, 1): to 0.1 lr at trainer.steps, WIRE's scripts)
    lr_schedule: Optional[str] = None
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam's (beta1, beta2)
    eps: float = 1e-8  # Adam's epsilon
    batch_size: Optional[int] = None  # None = full batch
    eval_every: int = 250
    ckpt_every: int = 500  # checkpoint every N steps (and always at the end); 0 = only at the end
    # false | true (the newest unfinished run of the same experiment under outputs/: one not completed, or
    # completed at fewer steps) | a run directory (refused if that run is another experiment)
    resume: Any = False
    # true: a run already in the run directory (completed or not) is moved aside to `<dir>.earlier-N`, nothing
    # deleted, and this one trains from step 0; false: a completed run there is kept and not retrained
    fresh: bool = False
    progress: bool = True  # tqdm bar
    precision: str = "fp32"  # fp32 | tf32 (CUDA TensorFloat-32 matmuls) | bf16 (autocast for the training step)
    # under bf16: the ReLU MLP's Linear layers that keep float32 products: none | first | last | ends (both)
    fp32_layers: str = "none"
    # CPU threads: auto (one thread for a small problem, where more threads only wait on each other, else
    # torch's default; docs/performance.md, "Threads") or a number
    threads: Any = "auto"


@dataclass
class LoggerConfig:
    name: str = "csv"  # csv (history.csv + metrics.json) | tensorboard (also TensorBoard scalars and pictures)
    images: bool = True  # tensorboard: log the task's pictures at each evaluation


@dataclass
class Config:
    task: Any = MISSING
    encoding: Any = MISSING  # each encoding's yaml names its schema (EncodingConfig or one in ffrun/models)
    model: Any = MISSING  # likewise for networks
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # The Gaussian encoding's scale, the hyperparameter the paper sweeps: a number >= 0, or "auto" (chosen
    # from the training data before training, ffrun.sigma.auto). Typed Any so that "auto" composes;
    # `validate` refuses any other string.
    sigma: Any = 10.0
    seed: int = 0
    device: str = "auto"  # auto (CUDA when available, else CPU) | cpu | cuda | cuda:N


@dataclass
class NTKSettings:
    encodings: List[str] = field(default_factory=lambda: ["none", "basic", "posenc", "gauss"])
    sigmas: List[float] = field(default_factory=lambda: [1.0, 10.0])  # gauss sigmas to compare
    widths: List[int] = field(default_factory=lambda: [64, 256, 1024])  # empirical -> closed form convergence
    seeds: int = 2  # networks per width in the convergence check
    convergence_points: int = 32  # grid points used in the convergence check
    train: bool = True  # also train the real networks (Adam / standard, and GD / NTK parametrization)
    gd_lr_fraction: float = 0.5  # GD step size as a fraction of n / lambda_max (stable below 2)
    rows_at: List[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])  # x of the plotted kernel rows


@dataclass
class NTKAppConfig(Config):
    ntk: NTKSettings = field(default_factory=NTKSettings)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: a resolved config as dotted keys, for comparing runs."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def register_configs() -> None:
    cs = ConfigStore.instance()
    # Schemas live in their own `schema/` group so they do not show up as choices of `task=` etc.;
    # each YAML file names its schema first in its defaults list (`/schema/task@_here_: image`).
    cs.store(group="schema", name="config", node=Config)
    cs.store(group="schema", name="ntk", node=NTKAppConfig)
    tasks = registered_tasks()  # first: a plug-in module may register encodings and networks too
    from ffrun.models.registry import ENCODINGS, NETWORKS, load_builtins

    load_builtins()
    cs.store(group="schema/encoding", name="encoding", node=EncodingConfig)
    for entry in ENCODINGS.values():
        if entry.schema is not EncodingConfig:
            cs.store(group="schema/encoding", name=entry.name, node=entry.schema)
    for entry in NETWORKS.values():
        cs.store(group="schema/model", name=entry.name, node=entry.schema)
    cs.store(group="schema/trainer", name="trainer", node=TrainerConfig)
    cs.store(group="schema/logger", name="logger", node=LoggerConfig)
    for entry in tasks.values():  # each task's module holds its schema (ffrun.tasks.registry)
        cs.store(group="schema/task", name=entry.name, node=entry.schema)


# Why the plug-ins of FFRUN_PLUGINS could not be registered (None when they were): `ffrun` refuses to run then
# (`plugin_error`), as a traceback at import would have.
PLUGIN_ERROR: str | None = None


def registered_tasks() -> dict:
    """Every registered task; a plug-in module that cannot be imported (or registers a task ffrun cannot use)
    is kept in PLUGIN_ERROR, for the app to say in one line, instead of a traceback here."""
    global PLUGIN_ERROR
    try:
        return registered()
    except FfrunError as e:
        PLUGIN_ERROR = str(e)
        return TASKS


def plugin_error() -> str | None:
    """Why FFRUN_PLUGINS' modules were not registered, or None."""
    return PLUGIN_ERROR


def unknown_keys(cfg: DictConfig, prefix: str = "") -> list[tuple[str, set[str]]]:
    """Keys inside ffrun's config groups that their schema does not have (`+trainer.stpes=10`): each as
    (dotted key, the valid keys beside it). Free-form dict settings (trainer.lr_by_encoding) are not checked."""
    import dataclasses

    found = []
    for key in cfg.keys() if isinstance(cfg, DictConfig) else ():
        node = cfg._get_node(key)
        if not isinstance(node, DictConfig) or key == "hydra":
            continue
        schema = OmegaConf.get_type(node)
        if not dataclasses.is_dataclass(schema):
            continue
        valid = {f.name for f in dataclasses.fields(schema)}
        path = f"{prefix}{key}"
        found += [(f"{path}.{k}", valid) for k in node.keys() if k not in valid]
        found += unknown_keys(node, f"{path}.")
    return found


def check_settings(cfg: DictConfig) -> None:
    """The checks that must come before any interpolation is resolved: the raw task settings derived values
    come from, and a sigma that is neither a number nor `auto` (resolving `encoding.sigma` from it fails)."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(NTKAppConfig)}  # ffrun's keys, and ffrun-ntk's `ntk`
    extra = [(k, known) for k in cfg.keys() if k not in known and k != "hydra"] + unknown_keys(cfg)
    if extra:  # `+foo=1` (or `++foo=1`) adds a key Hydra accepts and nothing reads: the run would ignore it
        key, valid = extra[0]
        close = closest_name(key.rsplit(".", 1)[-1], valid)
        hint = f"did you mean {key.rsplit('.', 1)[0] + '.' if '.' in key else ''}{close}? " if close else ""
        others = f" (and {', '.join(k for k, _ in extra[1:])})" if len(extra) > 1 else ""
        raise FfrunError(f"config: {key}{others}: not a setting of ffrun (added with + or ++?); {hint}see "
                         "ffrun --help or ffrun --cfg job for the keys")
    # the task settings other values derive from (the default sigma, CT's angle count): named themselves
    check_limits(cfg.get("task"))
    try:
        sigma = cfg.get("sigma")  # resolves task.default_sigma from the task's size
    except InterpolationResolutionError as e:  # a resolver's own refusal (task.resolution=nativ): its one line
        cause = e.__cause__ or e.__context__
        if isinstance(cause, FfrunError):
            raise FfrunError(f"config: {cause}") from None
        raise
    if isinstance(sigma, str) and sigma.strip().lower() != "auto":
        raise FfrunError(f"config: sigma={sigma!r} is not a number; give sigma >= 0, or sigma=auto to "
                         "choose it from the training data")
    encoding = cfg.get("encoding")
    if isinstance(sigma, str) and getattr(encoding, "name", None) in ("learned", "multiscale"):
        raise FfrunError(f"config: sigma=auto predicts the fixed Gaussian encoding's sigma; encoding="
                         f"{encoding.name} needs a number (use encoding=gauss sigma=auto to choose one)")


def validate(cfg: DictConfig) -> None:
    """Range checks the types alone cannot express; raises FfrunError naming the key and the fix."""
    check_settings(cfg)

    def check(ok: bool, key: str, value: Any, rule: str) -> None:
        if not ok:
            raise FfrunError(f"config: {key}={value!r} is out of range: {rule}")

    if isinstance(cfg.sigma, (str, bool)) or not isinstance(cfg.sigma, (int, float)):
        if not (isinstance(cfg.sigma, str) and cfg.sigma.strip().lower() == "auto"):
            raise FfrunError(f"config: sigma={cfg.sigma!r} is not a number; give sigma >= 0, or sigma=auto to "
                             "choose it from the training data")
        # sigma=auto is resolved once the task is built (ffrun.sigma.auto.resolve_auto_sigma); everything
        # else is checked now, with a stand-in sigma (encoding.sigma cannot resolve to a string).
        probe = cfg.copy()
        probe.sigma = 1.0
        validate(probe)
        return

    # The range checks below let inf through (and would name nan merely "out of range"); no setting
    # means anything at either, so they are refused wherever they appear, lists included.
    import math

    from omegaconf import OmegaConf

    def non_finite(node: Any, key: str):
        if isinstance(node, float) and not math.isfinite(node):
            return key, node
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        # A level's own values before its sub-configs: `sigma=inf` is named as typed, not as the
        # encoding.sigma that interpolates it.
        for k, v in sorted(children, key=lambda kv: isinstance(kv[1], (dict, list))):
            found = non_finite(v, f"{key}.{k}" if key and isinstance(k, str) else f"{key}[{k}]" if key else str(k))
            if found:
                return found
        return None

    found = non_finite(OmegaConf.to_container(cfg, resolve=True), "")
    if found:
        raise FfrunError(f"config: {found[0]}={found[1]!r} is not a finite number; give a finite value")

    from ffrun.models.registry import encoding_entry, network_entry

    enc = cfg.encoding
    for key, entry in (("encoding", encoding_entry(enc.name)), ("model", network_entry(cfg.model.name))):
        why = entry.check(cfg[key]) if entry.check else None
        if why:
            raise FfrunError(f"config: {key}={entry.name}: {why}")
    check(cfg.sigma >= 0, "sigma", float(cfg.sigma), "use sigma >= 0, or sigma=auto")
    # NumPy takes seeds below 2**32: seeds equal modulo 2**32 would give the same data and sampling.
    check(0 <= cfg.seed < 2**32, "seed", cfg.seed, "use 0 <= seed < 2**32")
    if "m" in enc:  # the Fourier family
        check(enc.sigma >= 0, "encoding.sigma", enc.sigma, "use sigma >= 0")
        check(enc.m >= 1, "encoding.m", enc.m, "use m >= 1")
        check(enc.levels is None or enc.levels >= 1, "encoding.levels", enc.levels,
              "use levels >= 1, or null for m // d")
        check(enc.name != "multiscale" or bool(enc.sigmas) and min(enc.sigmas) >= 0, "encoding.sigmas",
              enc.sigmas, "give multiscale a list of sigmas >= 0, e.g. encoding.sigmas=[1,10]")
    params = cfg.model.params
    check(params is None or math.isfinite(params) and params >= 1 and float(params).is_integer(), "model.params",
          params, "use a whole parameter budget >= 1 (e.g. 1e4 or 10000), or null")
    check(cfg.model.depth >= 1, "model.depth", cfg.model.depth, "use depth >= 1")
    check(cfg.model.width >= 1, "model.width", cfg.model.width, "use width >= 1")
    check(cfg.model.init in ("glorot", "torch"), "model.init", cfg.model.init, "use glorot or torch")
    check(cfg.model.parametrization in ("standard", "ntk"), "model.parametrization", cfg.model.parametrization,
          "use standard or ntk")
    check(cfg.model.budget_rule in ("ffrun", "grids"), "model.budget_rule", cfg.model.budget_rule,
          "use ffrun (within 5 % of model.params) or grids (the Grids benchmark's sizes)")
    check(cfg.model.out_activation in (None, "none", "sigmoid"), "model.out_activation", cfg.model.out_activation,
          "use none, sigmoid, or null for the task's")
    tr = cfg.trainer
    check(tr.steps >= 1, "trainer.steps", tr.steps, "use steps >= 1")
    check(tr.lr > 0, "trainer.lr", tr.lr, "use lr > 0")
    check(tr.optimizer in ("adam", "sgd"), "trainer.optimizer", tr.optimizer, "use adam or sgd")
    check(tr.eval_every >= 1, "trainer.eval_every", tr.eval_every, "use eval_every >= 1")
    check(tr.batch_size is None or tr.batch_size >= 1, "trainer.batch_size", tr.batch_size,
          "use batch_size >= 1, or null for full batch")
    check(0 < tr.lr_decay <= 1, "trainer.lr_decay", tr.lr_decay, "use 0 < lr_decay <= 1")
    check(tr.ckpt_every >= 0, "trainer.ckpt_every", tr.ckpt_every, "use >= 0 (0 = only at the end)")
    check(isinstance(tr.resume, (bool, str)) and tr.resume != "", "trainer.resume", tr.resume,
          "use true, false or the path of a run directory")
    threads = tr.get("threads", "auto")  # checked here too: a rerun into a finished run stops before set_threads
    check((isinstance(threads, str) and threads.strip().lower() == "auto")
          or (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1), "trainer.threads",
          threads, "use auto or a number of threads >= 1")
    if tr.fresh and tr.resume is not False:
        given = str(tr.resume).lower() if isinstance(tr.resume, bool) else tr.resume
        raise FfrunError(f"config: trainer.fresh=true with trainer.resume={given}: a fresh run trains from step 0 "
                         "and a resumed one continues a run; give one of them")
    check(tr.precision in ("fp32", "tf32", "bf16"), "trainer.precision", tr.precision, "use fp32, tf32 or bf16")
    check(tr.get("fp32_layers", "none") in ("none", "first", "last", "ends"), "trainer.fp32_layers",
          tr.get("fp32_layers"), "use none, first, last or ends (the MLP's first and last Linear layers)")
    check(tr.lr_decay_steps >= 0, "trainer.lr_decay_steps", tr.lr_decay_steps, "use >= 0 (0 = no decay)")
    check(tr.lr_schedule is None or tr.lr_schedule in LR_SCHEDULES, "trainer.lr_schedule", tr.lr_schedule,
          f"use null (trainer.lr_decay and lr_decay_steps), {' or '.join(LR_SCHEDULES)}")
    betas = list(tr.betas)
    check(len(betas) == 2 and all(0 <= b < 1 for b in betas), "trainer.betas", betas,
          "give Adam's two betas, each 0 <= beta < 1, e.g. trainer.betas=[0.9,0.999]")
    check(tr.eps > 0, "trainer.eps", tr.eps, "use eps > 0 (Adam's default 1e-8)")
