"""MKL's optimized matrix path on every x86 CPU (ffrun.util.blas): the decision from a faked CPU/BLAS
description, the shim built and bound before torch, MKL's own word for the kernels it runs, and the record."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from ffrun.util import blas
from ffrun.util.blas import Machine, decide

AMD = dict(arch="x86_64", vendor="AuthenticAMD", mkl=True, compiler="/usr/bin/cc", built=False, switch=None)


@pytest.mark.parametrize("change, load, words", [
    ({}, True, "loaded"),  # an AMD CPU, torch with MKL, a compiler: MKL's optimized path
    ({"built": True, "compiler": None}, True, "loaded"),  # built before: no compiler needed
    ({"switch": "0"}, False, "off"),
    ({"switch": "off"}, False, "off"),
    ({"vendor": "GenuineIntel"}, False, "Intel CPU"),
    ({"vendor": "GenuineIntel", "switch": "force"}, True, "force"),
    ({"arch": "aarch64"}, False, "aarch64"),
    ({"mkl": False}, False, "not MKL"),  # torch on another BLAS: nothing changes
    ({"mkl": None}, False, "torch not found"),
    ({"vendor": "HygonGenuine"}, True, "HygonGenuine"),
])
def test_the_shim_is_loaded_exactly_where_mkl_would_take_its_generic_path(change, load, words):
    d = decide(Machine(**{**AMD, **change}))
    assert d.load is load and words in d.reason and not d.warn


def test_without_a_compiler_the_generic_path_stays_with_one_warning():
    d = decide(Machine(**{**AMD, "compiler": None}))
    assert not d.load and d.warn and "no C compiler" in d.reason
    assert not decide(Machine(**{**AMD, "compiler": None, "switch": "0"})).warn  # the switch silences it


def test_cpu_vendor_and_model_come_from_cpuinfo():
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R45 64-Core Processor\n"
    assert blas.cpu_vendor(text) == "AuthenticAMD"
    assert blas.cpu_model(text) == "AMD EPYC 9R45 64-Core Processor"
    assert blas.cpu_vendor("flags: avx\n") == ""


def test_the_vendor_test_is_found_in_the_library_and_remembered(tmp_path):
    lib = tmp_path / "libtorch_cpu.so"
    lib.write_bytes(b"\0" * (1 << 24) + b"junk" + blas.SYMBOL.encode() + b"\0tail")  # across a chunk boundary
    assert blas.has_vendor_test(lib, tmp_path / "cache")
    (memo,) = (tmp_path / "cache").glob("vendor_test-*.json")  # one per library (path, size, time)
    assert json.loads(memo.read_text())["mkl"] is True
    other = tmp_path / "libother.so"
    other.write_bytes(b"\0" * 100 + blas.SYMBOL.encode() + b"_not_the_name\0")
    assert not blas.has_vendor_test(other, tmp_path / "cache2")


def _python(code: str, tmp_path, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "FFRUN_CACHE": str(tmp_path / "cache"), **env}
    for key in [k for k, v in env.items() if v is None]:
        full.pop(key)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=300)


REPORT = "import ffrun, json, torch\nfrom ffrun.util import blas\nprint(json.dumps(blas.report()))"

x86_mkl = pytest.mark.skipif(
    platform.machine().lower() not in blas.X86 or blas.find_compiler() is None
    or not blas.torch_cpu_library() or not blas.has_vendor_test(blas.torch_cpu_library()),
    reason="needs an x86 CPU, torch with MKL and a C compiler")


@x86_mkl
def test_the_shim_binds_mkls_vendor_test_before_torch_and_mkl_names_the_kernels_it_runs(tmp_path):
    """The mechanism, measured by MKL itself: a shim answering "not Intel" (FFRUN_MKL_SHIM=generic) sends MKL
    to its generic kernels; the real shim (force, and by default on a non-Intel CPU) keeps or brings the
    optimized ones. Binding happens at load, so both prove the library reached MKL's reference."""
    generic = _python(REPORT, tmp_path, FFRUN_MKL_SHIM="generic")
    assert generic.returncode == 0, generic.stderr
    assert json.loads(generic.stdout)["mkl_path"] == "generic"
    forced = json.loads(_python(REPORT, tmp_path, FFRUN_MKL_SHIM="force").stdout)
    assert forced["vendor_shim"].startswith("loaded") and forced["mkl_path"] in ("avx512", "avx2", "avx")
    assert list((tmp_path / "cache" / "blas").glob("mkl_vendor_shim-*.so"))  # built once into ffrun's cache
    default = json.loads(_python(REPORT, tmp_path, FFRUN_MKL_SHIM=None).stdout)
    assert default["mkl_path"] != "generic", default  # this CPU, Intel's or not, runs MKL's optimized path
    off = json.loads(_python(REPORT, tmp_path, FFRUN_MKL_SHIM="0").stdout)
    assert off["vendor_shim"].startswith("off")
    if off["vendor"] != "GenuineIntel":
        assert off["mkl_path"] == "generic"  # the switch really turns it off


@x86_mkl
def test_torch_imported_first_is_said_in_one_line(tmp_path):
    out = _python("import torch, ffrun\nfrom ffrun.util import blas\nprint(blas.STATE['shim'])", tmp_path,
                  FFRUN_MKL_SHIM="force")
    assert out.returncode == 0 and out.stdout.startswith("unavailable (torch was imported before ffrun")
    assert "import ffrun before torch" in out.stderr and len(out.stderr.strip().splitlines()) <= 2


def test_no_compiler_gives_one_warning_and_the_generic_path(tmp_path):
    out = _python("import ffrun\nfrom ffrun.util import blas\nprint(blas.STATE['shim'])", tmp_path,
                  FFRUN_MKL_SHIM="force", PATH=str(tmp_path), CC=None)
    assert out.returncode == 0, out.stderr
    if platform.machine().lower() in blas.X86 and blas.torch_cpu_library() and \
            blas.has_vendor_test(blas.torch_cpu_library()):
        assert out.stdout.startswith("unavailable (no C compiler")
        assert "no C compiler" in out.stderr and "FFRUN_MKL_SHIM=0" in out.stderr
    assert not list((tmp_path / "cache" / "blas").glob("*.so"))  # nothing half-built left behind


def test_a_run_records_its_matrix_path(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ffrun.apps.cli", "experiment=smoke", f"hydra.run.dir={tmp_path}/run"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rec = json.loads((tmp_path / "run" / "metrics.json").read_text())["blas"]
    import torch

    assert rec["blas"] == ("mkl" if torch.backends.mkl.is_available() else "other")
    assert rec["vendor_shim"] and rec["cpu"]
    if rec["blas"] == "mkl":
        assert rec["mkl_path"] in ("avx512", "avx2", "avx", "generic")
        assert "mkl_kernels" not in rec  # the banner costs a run ~0.6 s of MKL's clock calibration: bench only


@x86_mkl
def test_joblib_workers_load_the_shim_before_torch(tmp_path):
    """Each launcher process imports ffrun before torch: `force` shows 'loaded' in every job's record (it
    would say 'unavailable (torch was imported before ffrun ...)' otherwise)."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    env = {**os.environ, "FFRUN_MKL_SHIM": "force", "FFRUN_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "ffrun.apps.cli", "-m", "hydra/launcher=joblib", "experiment=smoke",
                          "seed=0,1", f"hydra.sweep.dir={tmp_path}/sweep"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").glob("*/metrics.json"))]
    assert len(records) == 2 and all(r["blas"]["vendor_shim"].startswith("loaded") for r in records)


@x86_mkl
def test_the_recorded_path_follows_the_kernels_not_the_banner(tmp_path):
    """The shim on or off, the record names the kernels MKL's dispatcher runs: 'generic' off on a CPU that is
    not Intel's, an optimized family with `force` wherever the CPU has AVX2 (MKL's banner reads 'Intel(R)
    Architecture processors' on an AMD CPU either way, so it cannot be the judge)."""
    code = "import ffrun\nfrom ffrun.util import blas\nprint(blas.report()['mkl_path'])"
    forced = _python(code, tmp_path, FFRUN_MKL_SHIM="force").stdout.split()[-1]
    off = _python(code, tmp_path, FFRUN_MKL_SHIM="0").stdout.split()[-1]
    if "avx2" in open("/proc/cpuinfo").read():
        assert forced in ("avx512", "avx2")
    if blas.cpu_vendor() != "GenuineIntel":
        assert off == "generic"


def test_the_dispatcher_answer_wins_over_the_banner():
    assert blas.path_label("Intel(R) Architecture processors", "avx512") == "avx512"
    assert blas.path_label("Intel(R) Advanced Vector Extensions 512 (Intel(R) AVX-512) enabled processors") == "avx512"
    assert blas.path_label("Intel(R) Architecture processors") == "generic"
    assert blas.path_label(None, "avx512") == "not MKL"
