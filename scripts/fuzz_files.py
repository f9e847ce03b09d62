"""What the fuzz cases (scripts/fuzz_cases.py) hand to ffrun: crafted files, folders it may not write, an
environment, and signals at the wrong moment. Everything here runs in a case's own forked child, in its
own temporary folder (the child's current folder), so nothing leaks into the next case."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Callable

SMOKE = ["experiment=smoke", "trainer.steps=4", "trainer.eval_every=2"]
ENTRY = {"ffrun": "ffrun.apps.cli:main", "ffrun-summary": "ffrun.apps.summary:main", "ffrun-ntk": "ffrun.apps.ntk:main",
         "ffrun-sigma": "ffrun.apps.sigma:main", "ffrun-export": "ffrun.apps.export:main",
         "ffrun-bench": "ffrun.apps.bench:main", "ffrun-reproduce": "ffrun.apps.reproduce:console",
         "ffrun-compare": "ffrun.apps.compare:console"}


def entry(tool: str):
    import importlib

    module, name = ENTRY[tool].split(":")
    return getattr(importlib.import_module(module), name)


def in_process(argv: list[str], cwd: Path) -> None:
    """Run a console script's main with `argv` in this process (setup of a case, inside its child)."""
    old, old_cwd = sys.argv, os.getcwd()
    sys.argv = argv
    os.chdir(cwd)
    try:
        entry(argv[0])()
    except SystemExit as e:
        if e.code not in (0, None):
            raise RuntimeError(f"setup {' '.join(argv)} exited {e.code}") from None
    finally:
        sys.argv = old
        os.chdir(old_cwd)


# ---- files a hostile user sends ----------------------------------------------------------------------------

def raw(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda d: (d / name).parent.mkdir(parents=True, exist_ok=True) or (d / name).write_bytes(data)


def random_bytes(n: int) -> bytes:
    return bytes((i * 7919 + 13) % 256 for i in range(n))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > PWNED",))


def crafted_pickle(d: Path, name: str = "run/checkpoint.pt") -> None:
    import torch

    (d / name).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"field": _Evil()}, d / name)


def png(d: Path, name: str, size: int = 64) -> None:
    import numpy as np
    from PIL import Image

    (d / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(0).random((size, size, 3)) * 255).astype("uint8")).save(d / name)


def nifti(d: Path, name: str, shape=(12, 12, 12), fill: float | None = None) -> None:
    import nibabel as nib
    import numpy as np

    data = np.random.default_rng(0).random(shape).astype("float32") if fill is None else np.full(shape, fill, "float32")
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(d / name))


def real_run(d: Path) -> None:
    """A completed tiny run in d/run (made by the real ffrun, in the case's own child)."""
    in_process(["ffrun", *SMOKE, f"hydra.run.dir={d / 'run'}"], d)


def export_run(d: Path) -> None:
    real_run(d)
    from ffrun.apps.export import main as export_main

    export_main([str(d / "run"), "--out", str(d / "exp")])


def field_json(content: str) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        export_run(d)
        (d / "exp" / "field.json").write_text(content)
    return make


def metrics(content: str) -> Callable[[Path], None]:
    return raw("sweep/0/metrics.json", content.encode())


def make_zip(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"garbage")


def torch_save(path: Path, obj) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)


def edit_json(path: Path, key: str, value) -> None:
    data = json.loads(path.read_text())
    *parents, last = key.split(".")
    node = data
    for k in parents:
        node = node[k]
    node[last] = value
    path.write_text(json.dumps(data))


def image_set(d: Path, indices=(0, 1, 2), folders=(3,)) -> None:
    """data/images/div2k/test/NN.png for `indices`, and a folder named like an image for each of `folders`."""
    for i in indices:
        png(d, f"data/images/div2k/test/{i:02d}.png", 16)
    for i in folders:
        (d / f"data/images/div2k/test/{i:02d}.png").mkdir(parents=True)


# ---- folders it may not write ------------------------------------------------------------------------------

def read_only(folder: Path) -> None:
    """Make `folder` unwritable for this process: as root (whom permissions do not stop) a read-only bind mount
    in a mount namespace of the case's child alone, gone when the child exits; otherwise chmod a-w."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    _private_mounts()
    _mount(str(folder), str(folder), _MS_BIND)
    _mount(None, str(folder), _MS_BIND | _MS_REMOUNT | _MS_RDONLY)


_MS_RDONLY, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
_CLONE_NEWNS = 0x00020000
_unshared = False


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _private_mounts() -> None:
    """This process in a mount namespace of its own, propagating nothing back to the machine's."""
    global _unshared
    if _unshared:
        return
    libc = _libc()
    if libc.unshare(_CLONE_NEWNS) != 0:
        raise OSError(__import__("ctypes").get_errno(), "unshare(CLONE_NEWNS): a root without CAP_SYS_ADMIN")
    _mount(None, "/", _MS_REC | _MS_PRIVATE)
    _unshared = True


def _mount(source: str | None, target: str, flags: int) -> None:
    libc = _libc()
    if libc.mount(source and source.encode(), target.encode(), None, flags, None) != 0:
        raise OSError(__import__("ctypes").get_errno(), f"mount {source} {target}")


def read_only_folder(name: str) -> Callable[[Path], None]:
    """Setup: an existing folder `name` that may not be written."""
    def make(d: Path) -> None:
        (d / name).mkdir(parents=True)
        read_only(d / name)
    return make


def read_only_once(name: str, appears: str) -> Callable[[Path], None]:
    """Setup: folder `name` turns unwritable as soon as the file `appears` (in it) exists: a disk remounted
    read-only, or permissions taken away, in the middle of a run."""
    def make(d: Path) -> None:
        if os.geteuid() == 0:
            _private_mounts()  # before the thread starts: the whole child shares the namespace

        def watch() -> None:
            while not (d / appears).exists():
                time.sleep(0.01)
            read_only(d / name)
        threading.Thread(target=watch, daemon=True).start()
    return make


# ---- signals ---------------------------------------------------------------------------------------------

def interrupted_twice(delay: float, after: str) -> Callable[[Path, list[str]], int]:
    """A runner: the command as a real process (its own interpreter shutdown included), sent SIGINT once the
    file `after` exists and SIGINT again `delay` seconds later, as two quick Ctrl-C's at a terminal."""
    def run(d: Path, argv: list[str]) -> int:
        exe = Path(sys.executable).parent / argv[0]
        proc = subprocess.Popen([str(exe), *argv[1:]], cwd=d)  # stdout, stderr: the case's own files
        deadline = time.time() + 200
        while not (d / after).exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        return proc.wait(timeout=200)
    return run
