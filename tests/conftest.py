from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ffrun.data.location import data_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = data_dir()  # $FFRUN_DATA, else ../shared/data beside the checkout
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session", autouse=True)
def own_cache(tmp_path_factory):
    """The suite builds its cached data (meshes, scenes, test sets) in its own folder (one per xdist worker),
    never ~/.cache/ffrun."""
    saved = os.environ.get("FFRUN_CACHE")
    os.environ["FFRUN_CACHE"] = str(tmp_path_factory.mktemp("ffrun-cache"))
    yield
    if saved is None:
        os.environ.pop("FFRUN_CACHE", None)
    else:
        os.environ["FFRUN_CACHE"] = saved


@pytest.fixture(autouse=True)
def subnormals_back():
    """A run made in the test's own process flushes subnormal floats for the process (ffrun.util.allocator.tune_cpu,
    right for a run): undone after each test, so a later test in the same process (hypothesis's float strategies
    refuse to run in that mode) still has them, whatever order the tests run in."""
    yield
    import torch

    torch.set_flush_denormal(False)


# The suite leaves no /tmp/ffrun-* folder behind (the fuzz cases and scripts name theirs so). Checked by the
# process that runs the session (xdist's controller, or pytest alone), once every worker has finished: a worker
# would see another's folders of tests still running.
_LEFTOVER_PATTERN = os.path.join(tempfile.gettempdir(), "ffrun-*")
_before: set[str] = set()


def _is_worker(session) -> bool:
    return hasattr(session.config, "workerinput")


def pytest_sessionstart(session):
    if not _is_worker(session):
        _before.update(glob.glob(_LEFTOVER_PATTERN))


def pytest_sessionfinish(session, exitstatus):
    if _is_worker(session):
        return
    left = sorted(set(glob.glob(_LEFTOVER_PATTERN)) - _before)
    if left:
        print(f"\nthe suite left these behind: {left}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def ffrun_cmd(name: str = "ffrun") -> str:
    exe = BIN / name
    if not exe.exists():
        pytest.fail(f"{exe} not found: install the project with `pip install -e .[test]`")
    return str(exe)


@pytest.fixture
def run_cli(tmp_path):
    """Run a console script in tmp_path; returns the CompletedProcess."""

    def _run(*args: str, name: str = "ffrun", timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([ffrun_cmd(name), *args], cwd=tmp_path, capture_output=True, text=True, timeout=timeout)

    return _run


@pytest.fixture
def spawn():
    """Start a child process (Popen's arguments; pipes and text by default) in a process group of its own. At
    teardown, whether the test passed or failed, every child's group is killed and the child reaped, so no run a
    test started outlives it."""
    procs: list[subprocess.Popen] = []

    def _spawn(cmd, **kw) -> subprocess.Popen:
        kw = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **kw}
        proc = subprocess.Popen(cmd, start_new_session=True, **kw)
        procs.append(proc)
        return proc

    yield _spawn
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the child and anything it started
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.communicate(timeout=60)
        except (subprocess.TimeoutExpired, ValueError, OSError):
            proc.kill()
            proc.wait(timeout=60)


@pytest.fixture
def compose():
    """Compose ffrun's config with Hydra's compose API (no run directory, no subprocess)."""
    from ffrun.run.compose import compose as compose_config

    return lambda *overrides: compose_config(list(overrides))


SMOKE = ["experiment=smoke", "trainer.progress=false"]


@pytest.fixture
def hydra_job():
    """Compose a smoke config as the app gets it, with HydraConfig set (the runner asks it for the run mode)."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from ffrun.config import register_configs

    def _compose(*overrides: str):
        register_configs()
        with initialize_config_module(config_module="ffrun.configs", version_base="1.3"):
            cfg = compose(config_name="config", overrides=[*SMOKE, *overrides], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    return _compose
