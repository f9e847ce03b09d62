"""The matrix path of torch's CPU build: MKL's optimized kernels on every x86 CPU, not only on Intel's.

The MKL inside torch's CPU wheel chooses its kernels by CPU vendor: on an x86 processor that is not Intel's
(AMD's EPYC and Ryzen) it takes a generic path, 172 against 406 GFLOP/s at the image MLP's shapes on a 2-core
Zen 5 EPYC with AVX-512. Its vendor test is one exported function, `mkl_serv_intel_cpu_true`. A library that
defines it and is loaded into the process's global symbol scope before torch is loaded answers it for MKL:
the dynamic linker binds libtorch_cpu's reference to the first definition in the global scope, exactly as
LD_PRELOAD would, so nothing needs to restart the process. ffrun compiles that one-line library once with the
system C compiler into its cache and loads it when the `ffrun` package is imported, which every ffrun command,
launcher worker (joblib, submitit/SLURM) and `python -m ffrun...` does before torch.

- `FFRUN_MKL_SHIM=0` turns it off (`force` loads it on any x86 CPU; `generic` answers "not Intel", so
  that ffrun-bench can measure MKL's generic path on an Intel CPU too); on an Intel CPU, a non-x86 machine
  or a torch without MKL nothing changes.
- Without a C compiler (and no shim built before): one warning line, and MKL keeps its generic path.
- In a notebook, `import ffrun` before `import torch`; once torch is loaded, MKL's reference is bound.
- `report()` (after torch is imported) says which path ran, as MKL itself names it: metrics.json and
  ffrun-bench record it.

Imports no torch: it runs before torch is loaded.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

SYMBOL = "mkl_serv_intel_cpu_true"
SHIM_SOURCE = f"int {SYMBOL}(void) {{ return 1; }}\n"
GENERIC_SOURCE = f"int {SYMBOL}(void) {{ return 0; }}\n"  # FFRUN_MKL_SHIM=generic: MKL's generic path, to measure it
SWITCH = "FFRUN_MKL_SHIM"
X86 = ("x86_64", "amd64", "i386", "i686", "x86")
OFF = ("0", "off", "false", "no")


@dataclass(frozen=True)
class Machine:
    """What the decision reads: the CPU, torch's BLAS, the compiler and the switch (faked in tests)."""

    arch: str  # platform.machine()
    vendor: str  # /proc/cpuinfo's vendor_id: GenuineIntel, AuthenticAMD, ...
    mkl: bool | None  # torch's CPU library carries MKL's vendor test (None: torch not found)
    compiler: str | None  # a C compiler on PATH
    built: bool  # the shim is already in ffrun's cache (no compiler needed)
    switch: str | None  # $FFRUN_MKL_SHIM


@dataclass(frozen=True)
class Decision:
    load: bool
    reason: str
    warn: bool = False  # the generic path stays although the user did not ask for it: say so once


def decide(m: Machine) -> Decision:
    """Whether to load the vendor shim on machine `m`, and why (the words metrics.json records)."""
    if m.switch is not None and m.switch.strip().lower() in OFF:
        return Decision(False, f"off ({SWITCH}={m.switch})")
    if m.arch.lower() not in X86:
        return Decision(False, f"not needed ({m.arch}: MKL's vendor test is x86's)")
    if not m.vendor:  # no /proc/cpuinfo (macOS, Windows): a library loaded here does not reach MKL's reference
        return Decision(False, "not needed (no CPU vendor to read: not Linux)")
    if (m.switch or "").strip().lower() == "generic":
        if m.arch.lower() not in X86 or m.mkl is not True or (not m.built and m.compiler is None):
            return Decision(False, f"unavailable ({SWITCH}=generic needs an x86 CPU, MKL and a C compiler)")
        return Decision(True, f"generic ({SWITCH}=generic: MKL's generic path, for comparison)")
    forced = (m.switch or "").strip().lower() == "force"  # load it on any x86 CPU (tests, a CPU reporting oddly)
    if m.vendor == "GenuineIntel" and not forced:
        return Decision(False, "not needed (an Intel CPU: MKL's optimized path by default)")
    if m.mkl is False:
        return Decision(False, "not needed (torch's BLAS is not MKL)")
    if m.mkl is None:
        return Decision(False, "not needed (torch not found)")
    if not m.built and m.compiler is None:
        return Decision(False, "unavailable (no C compiler to build the shim: MKL's generic path)", warn=True)
    if forced:
        return Decision(True, f"loaded ({SWITCH}=force)")
    return Decision(True, f"loaded ({m.vendor or 'a non-Intel'} x86 CPU: MKL's optimized path)")


def cpu_vendor(cpuinfo: str | None = None) -> str:
    """vendor_id of /proc/cpuinfo ('' where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "vendor_id":
            return value.strip()
    return ""


def cpu_model(cpuinfo: str | None = None) -> str:
    """model name of /proc/cpuinfo, else platform.processor()."""
    try:
        text = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return platform.processor() or platform.machine()


def torch_cpu_library() -> Path | None:
    """torch's CPU library (libtorch_cpu), found without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib", "torch_cpu.dll"):
        if (lib / name).is_file():
            return lib / name
    return None


def cache_dir() -> Path:
    env = os.environ.get("FFRUN_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "ffrun") / "blas"


def has_vendor_test(library: Path, cache: Path | None = None) -> bool:
    """Whether `library` carries MKL's vendor test (its symbol's name in the file), remembered in the cache by
    the library's path, size and time, so the 500 MB file is read once per torch install."""
    st = library.stat()
    key = f"{library.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    import hashlib

    memo = (cache or cache_dir()) / f"vendor_test-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
    if key in _memo:
        return _memo[key]
    try:
        known = json.loads(memo.read_text())
        if known.get("key") == key:
            return bool(known["mkl"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    needle = SYMBOL.encode() + b"\0"
    found = False
    with open(library, "rb") as f:
        tail = b""
        while chunk := f.read(1 << 24):
            if needle in tail + chunk:
                found = True
                break
            tail = chunk[-len(needle):]
    _memo[key] = found
    try:
        _write_atomic(memo, json.dumps({"key": key, "mkl": found}).encode())
    except OSError:
        pass  # a read-only cache: each process reads the library once
    return found


_memo: dict[str, bool] = {}


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def find_compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def shim_path(cache: Path | None = None, source: str = SHIM_SOURCE) -> Path:
    import hashlib

    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    return (cache or cache_dir()) / f"mkl_vendor_shim-{digest}.so"


def build_shim(compiler: str, cache: Path | None = None, source: str = SHIM_SOURCE) -> Path:
    """Compile `source` into a shared library in ffrun's cache (once; atomically, so two processes starting
    together never load a half-written file)."""
    out = shim_path(cache, source)
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        c, so = Path(tmp) / "shim.c", Path(tmp) / "shim.so"
        c.write_text(source)
        subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(so), str(c)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
        os.replace(so, out)
    return out


def load_global(path: Path) -> ctypes.CDLL:
    """Load a library into the global symbol scope (what torch's libraries, loaded later, bind to first); only
    a file this user owns that no one else may write, in a folder no one else may write (a shared cache must not
    let another user plant code every `import ffrun` runs)."""
    for p in (path, path.parent):
        st = p.stat()
        if hasattr(os, "getuid") and st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise OSError(f"{p} is not this user's own or others may write it: not loaded (remove it, or set "
                          f"FFRUN_CACHE to a folder of your own)")
    return ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)


def this_machine() -> Machine:
    arch, vendor = platform.machine(), cpu_vendor()
    mkl = None
    switch = (os.environ.get(SWITCH) or "").strip().lower()
    if arch.lower() in X86 and (vendor != "GenuineIntel" or switch in ("force", "generic")) and switch not in OFF:
        library = torch_cpu_library()  # read only where the answer matters
        if library is not None:
            try:
                mkl = has_vendor_test(library)
            except OSError:
                mkl = None
    source = GENERIC_SOURCE if switch == "generic" else SHIM_SOURCE
    return Machine(arch=arch, vendor=vendor, mkl=mkl, compiler=find_compiler(),
                   built=shim_path(source=source).is_file(), switch=os.environ.get(SWITCH))


STATE: dict = {}


def prepare() -> dict:
    """Load the vendor shim where MKL would take its generic path; once per process, before torch. Returns
    (and keeps in STATE) what was decided, for `report`."""
    if STATE:
        return STATE
    try:
        m = this_machine()
        d = decide(m)
    except Exception as e:  # noqa: BLE001 (the fast path must never stop ffrun from starting)
        STATE.update(shim=f"unavailable ({type(e).__name__}: {e})")
        return STATE
    shim = d.reason
    if d.load and "torch" in sys.modules:
        shim = "unavailable (torch was imported before ffrun: MKL's generic path; import ffrun first)"
        warnings.warn(f"ffrun: torch was imported before ffrun, so MKL keeps its generic path on this {m.vendor} "
                      f"CPU (about half the fp32 rate); import ffrun before torch (in a notebook: restart the "
                      f"kernel), or set {SWITCH}=0 to silence this", stacklevel=3)
    elif d.load:
        source = GENERIC_SOURCE if (m.switch or "").strip().lower() == "generic" else SHIM_SOURCE
        try:
            load_global(shim_path(source=source) if m.built else build_shim(m.compiler, None, source))
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", None) or e
            shim = f"unavailable (the shim did not build or load: {str(detail).strip()[:200]})"
            warnings.warn(f"ffrun: MKL's vendor shim did not build or load ({str(detail).strip()[:200]}); MKL keeps "
                          f"its generic path; set {SWITCH}=0 to silence this", stacklevel=3)
    elif d.warn:
        warnings.warn(f"ffrun: no C compiler to build MKL's vendor shim: MKL keeps its generic path on this "
                      f"{m.vendor} CPU (about half the fp32 rate); install gcc, or set {SWITCH}=0 to silence this",
                      stacklevel=3)
    STATE.update(shim=shim, vendor=m.vendor, arch=m.arch)
    return STATE


def mkl_code_path() -> str | None:
    """The kernel family MKL runs, as MKL's verbose mode names it ('Intel(R) Advanced Vector Extensions 512
    ...', 'Intel(R) Architecture processors' on the generic path), from one small product with verbose
    output captured; None where torch has no MKL."""
    global _code_path
    if _code_path is not False:
        return _code_path
    import torch

    _code_path = None
    if not torch.backends.mkl.is_available():
        return None
    library = torch_cpu_library()
    try:
        lib = ctypes.CDLL(str(library))
        libc = ctypes.CDLL(None)
        verbose = lib.MKL_Verbose
    except (OSError, AttributeError, TypeError):
        return None
    a = torch.ones(8, 8)
    if sys.stdout is not None:
        sys.stdout.flush()
    libc.fflush(None)  # C-level output already buffered goes out before fd 1 is borrowed
    try:
        saved = os.dup(1)
        capture = tempfile.TemporaryFile()
    except OSError:  # no standard output to borrow (a closed fd 1), or no temporary file
        return None
    with capture as f:
        os.dup2(f.fileno(), 1)
        try:
            verbose(1)
            torch.mm(a, a)
            verbose(1 if os.environ.get("MKL_VERBOSE", "0") not in ("", "0") else 0)
            libc.fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        f.seek(0)
        text = f.read().decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("MKL_VERBOSE") and " architecture " in line:
            _code_path = line.split(" architecture ", 1)[1].rsplit(", Lnx", 1)[0].strip()
            break
    else:  # MKL names its kernels once per process: $MKL_VERBOSE printed them before ffrun asked
        _code_path = "unknown"
    return _code_path


_code_path: str | None | bool = False


# mkl_cbwr_get_auto_branch()'s answers (mkl_cbwr.h): the code branch MKL's dispatcher chose for this CPU
_BRANCHES = {14: "avx512", 13: "avx512", 12: "avx512", 11: "avx512", 10: "avx2", 9: "avx"}


def mkl_branch() -> str | None:
    """The kernel family MKL's dispatcher chose, from its own answer (mkl_cbwr_get_auto_branch, exported
    by torch's library under its service name): 'avx512', 'avx2', 'avx' or 'generic'; None where the
    symbol is absent. On an AMD CPU with the shim loaded the verbose banner still reads 'Intel(R)
    Architecture processors' while the optimized kernels run; this answer follows the kernels."""
    try:
        lib = ctypes.CDLL(str(torch_cpu_library()))
        auto_branch = lib.mkl_serv_cbwr_get_auto_branch
    except (OSError, AttributeError, TypeError):
        return None
    auto_branch.restype = ctypes.c_int
    return _BRANCHES.get(int(auto_branch()), "generic")


def path_label(code_path: str | None, branch: str | None = None) -> str:
    """A short name for MKL's kernel family: avx512, avx2, avx, generic. MKL's dispatcher answer
    (``branch``) wins over the verbose banner (``code_path``), which does not follow the shim."""
    if code_path is None:
        return "not MKL"
    if branch is not None:
        return branch
    if code_path == "unknown":
        return "unknown"
    for needle, label in (("AVX-512", "avx512"), ("AVX2", "avx2"), ("(Intel(R) AVX)", "avx")):
        if needle in code_path:
            return label
    return "generic"


def report(kernels: bool = False) -> dict:
    """Which matrix path this process runs: torch's BLAS, MKL's kernel family, the shim's state and the CPU
    (what metrics.json and ffrun-bench record). `kernels` adds `mkl_kernels`, the kernels' name in MKL's
    verbose banner: its first use calibrates MKL's clock (~0.6 s), so a run asks only where MKL's dispatcher
    cannot answer. Never raises: a record is not lost to it."""
    try:
        import torch

        state = prepare()
        mkl = torch.backends.mkl.is_available()
        branch = mkl_branch() if mkl else None
        code_path = mkl_code_path() if mkl and (kernels or branch is None) else None
        out = {"cpu": cpu_model(), "vendor": state.get("vendor", cpu_vendor()), "blas": "mkl" if mkl else "other",
               "mkl_path": (branch if branch is not None else path_label(code_path)) if mkl else None,
               "vendor_shim": state.get("shim")}
        if kernels:
            out["mkl_kernels"] = code_path
        return out
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}"}
