"""ffrun: an experiment runner for Fourier-feature coordinate MLPs (Tancik et al., NeurIPS 2020).

In Python: `ffrun.load(run_dir)` gives back a run's trained field, `ffrun.load_task(run_dir)` its task,
`ffrun.load_exported(path)` a field written by `ffrun-export`; `ffrun.models` holds the encodings and MLP.
"""

# Before anything imports torch: MKL's optimized matrix path on x86 CPUs that are not Intel's (ffrun.util.blas).
from ffrun.util.blas import prepare as _prepare_blas

_prepare_blas()

__version__ = "0.1.0"


def load(run_dir, device="cpu"):
    """The trained field (encoding + MLP) of a run directory on `device`; see ffrun.run.load.load."""
    from ffrun.run.load import load as _load

    return _load(run_dir, device)


def load_task(run_dir, device="cpu"):
    """The task of a run directory, rebuilt from its config; see ffrun.run.load.load_task."""
    from ffrun.run.load import load_task as _load_task

    return _load_task(run_dir, device)


def load_exported(path, device="cpu"):
    """A field written by `ffrun-export` (safetensors + JSON), without Hydra; see ffrun.apps.export."""
    from ffrun.apps.export import load_exported as _load_exported

    return _load_exported(path, device)
