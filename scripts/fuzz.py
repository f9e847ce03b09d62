"""Fuzz ffrun's command-line tools and Python API as a hostile or careless user would, and classify each outcome.

    python scripts/fuzz.py                       # every case; writes the table to docs/fuzz.md
    python scripts/fuzz.py --only ffrun-export   # the cases whose command starts so
    python scripts/fuzz.py --out /tmp/fuzz.md --limit 10

Each case is a command (`ffrun ...`, `ffrun-summary ...`, ..., or `python: <call>` for the API) and the class
expected of it: `refuse` (exit status 2 and one line on stderr naming the problem; for the API, an FfrunError)
or `complete` (exit status 0 and the outputs the command promises). Outcomes:

- ok: as expected
- traceback: "Traceback" on stderr (or, for the API, an exception other than FfrunError)
- wrong: a refusal was expected and the command succeeded (a bad value accepted silently)
- lost: the command exited 0 but an output it promises is missing
- exit N: another exit status than the expected one

Cases run one at a time, each in a child forked from one process that has imported ffrun and torch (a fresh
interpreter per case would spend most of the time importing torch), in its own temporary folder, on one
CPU thread, with sizes small enough that the whole table takes minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
TINY = ["trainer.steps=2", "trainer.eval_every=2", "trainer.progress=false", "device=cpu", "model.depth=2",
        "model.width=16", "encoding.m=8"]
SMOKE = ["experiment=smoke", "trainer.steps=4", "trainer.eval_every=2"]


@dataclass
class Case:
    command: str  # as shown in the table; the tool and its arguments, split on spaces unless `args` is given
    expect: str  # refuse | complete
    setup: Callable[[Path], None] | None = None  # makes the files the case needs in its folder
    outputs: tuple[str, ...] = ()  # globs (in the case's folder) that must match after a complete
    args: list[str] | None = None
    call: Callable[[Path], object] | None = None  # a Python API case
    why: str = ""

    @property
    def tool(self) -> str:
        return "python" if self.call else self.command.split()[0]


# ---- files a hostile user sends ----------------------------------------------------------------------------

def _bytes(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda d: (d / name).parent.mkdir(parents=True, exist_ok=True) or (d / name).write_bytes(data)


def _random(n: int) -> bytes:
    return bytes((i * 7919 + 13) % 256 for i in range(n))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > PWNED",))


def _crafted_pickle(d: Path, name: str = "run/checkpoint.pt") -> None:
    import torch

    (d / name).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"field": _Evil()}, d / name)


def _png(d: Path, name: str, size: int = 64) -> None:
    import numpy as np
    from PIL import Image

    (d / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(0).random((size, size, 3)) * 255).astype("uint8")).save(d / name)


def _nifti(d: Path, name: str, shape=(12, 12, 12), fill: float | None = None) -> None:
    import nibabel as nib
    import numpy as np

    data = np.random.default_rng(0).random(shape).astype("float32") if fill is None else np.full(shape, fill, "float32")
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(d / name))


def _real_run(d: Path) -> None:
    """A completed tiny run in d/run (made by the real ffrun, in the case's own child)."""
    _in_process(["ffrun", *SMOKE, f"hydra.run.dir={d / 'run'}"], d)


def _exported(d: Path) -> None:
    _real_run(d)
    from ffrun.apps.export import main as export_main

    export_main([str(d / "run"), "--out", str(d / "exp")])


def _field_json(content: str) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        _exported(d)
        (d / "exp" / "field.json").write_text(content)
    return make


def _metrics(content: str) -> Callable[[Path], None]:
    return _bytes("sweep/0/metrics.json", content.encode())


# ---- the cases ---------------------------------------------------------------------------------------------

def cases() -> list[Case]:
    c: list[Case] = []

    def ffrun(args: str, expect: str = "refuse", setup=None, base=SMOKE, why: str = "") -> None:
        argv = base + args.split() + ([] if "hydra.run.dir" in args or args.startswith("-m") else ["hydra.run.dir=run"])
        if args.startswith("-m"):
            argv = ["-m"] + base + args.split()[1:] + ["hydra.sweep.dir=sweep"]
        outs = ("sweep/*/metrics.json",) if args.startswith("-m") else ("run/metrics.json", "run/checkpoint.pt")
        c.append(Case(f"ffrun {args}", expect, setup, outs if expect == "complete" else (), ["ffrun", *argv], why=why))

    # bad values, key by key
    for a in ["sigma=-1", "sigma=abc", "sigma=automatic", "sigma=nan", "sigma=inf", "sigma=-inf", "sigma=''",
              "encoding.m=0", "encoding.m=-5", "encoding.m=100000000", "encoding.levels=0", "encoding.scale=nan",
              "model.depth=0", "model.width=0", "model.width=-1", "model.init=foo", "model.parametrization=foo",
              "trainer.steps=0", "trainer.steps=-3", "trainer.lr=0", "trainer.lr=-1", "trainer.lr=nan",
              "trainer.batch_size=0", "trainer.eval_every=0", "trainer.ckpt_every=-1", "trainer.lr_decay=0",
              "trainer.lr_decay=2", "trainer.lr_decay_steps=-1", "trainer.precision=fp8", "trainer.optimizer=lbfgs",
              "trainer.threads=0", "trainer.threads=abc", "trainer.threads=-2", "trainer.resume=/nonexistent/run",
              "trainer.resume=''", "seed=18446744073709551615", "seed=-1", "device=cuda:7", "device=tpu", "device=cuda", "seed=abc", "seed=1.5",
              "task=shapee", "encoding=foo", "logger=foo", "model=foo", "experiment=nope", "trainer.stpes=10",
              "sigmaa=2", "task.imag=x", "model.depth=1.5", "trainer.progress=maybe", "+foo=1",
              "task.resolution=-2", "task.resolution=0", "task.resolution=3", "task.resolution=33",
              "task.resolution=100000", "task.image=/nonexistent.png", "task.image=nope_sample",
              "sigma=auto task.resolution=4", "hydra.run.dir=/proc/ffrun/x", "hydra.run.dir=/etc/passwd/x",
              "hydra.run.dir=" + "a" * 300, "hydra.run.dir=run/" + "/".join(["b" * 200] * 25)]:
        ffrun(a)
    # methods and budgets
    for a in ["method=bar", "method=siren model.w0=0", "method=siren model.depth=1", "method=wire model.s0=-1",
              "method=hashgrid encoding.levels=0", "method=hashgrid encoding.table_size=2",
              "method=hashgrid encoding.min_resolution=64 encoding.max_resolution=16", "method=hashgrid encoding.backend=tcnn",
              "method=densegrid encoding.resolution=1", "method=densegrid encoding.resolution=[4,5,6]",
              "method=densegrid encoding.features=0", "method=densegrid model=mlp model.params=3",
              "encoding=multiscale encoding.sigmas=[]", "encoding=multiscale sigma=auto", "method=learned sigma=auto",
              "model.params=0", "model.params=-5", "method=siren model.params=3", "encoding=grid model.params=1000",
              "task=toy1d method=hashgrid model.params=100000", "model=direct", "encoding.foo=1 method=hashgrid"]:
        ffrun(a)
    for a in ["method=siren", "method=wire", "method=hashgrid encoding.levels=4", "method=densegrid",
              "method=learned", "method=multiscale model.params=3000", "-m method=siren,densegrid model.params=2000,4000"]:
        ffrun(a, "complete")
    # images
    ffrun("task.image=garbage.png", setup=_bytes("garbage.png", _random(3000)))
    ffrun("task.image=empty.png", setup=_bytes("empty.png", b""))
    ffrun("task.image=text.jpg", setup=_bytes("text.jpg", b"hello, not a jpeg\n"))
    ffrun("task.image=trunc.png", setup=lambda d: (_png(d, "full.png"),
                                                  (d / "trunc.png").write_bytes((d / "full.png").read_bytes()[:200])))
    ffrun("task.image=folder", setup=lambda d: (d / "folder").mkdir())
    ffrun("task.image=ok.png", "complete", setup=lambda d: _png(d, "ok.png"))
    ffrun("task.image=../../../../etc/passwd")
    # tasks at tiny sizes
    for a in ["task=mri task.resolution=-8", "task=mri task.samples=0", "task=mri task.sample_std=0",
              "task=mri task.chunk=0", "task=mri task.volume=/nonexistent.nii.gz", "task=mri task.volume=v.nii.gz",
              "task=mri task.volume=c.nii.gz", "task=mri task.volume=four.nii.gz", "task=mri task.resolution=100000",
              "task=nerf task.downscale=-1", "task=nerf task.downscale=0", "task=nerf task.builtin_resolution=0",
              "task=nerf task.data=/nonexistent", "task=nerf task.data=emptyscene", "task=nerf task.near=7",
              "task=nerf task.n_samples=1", "task=nerf task.ray_order=foo", "task=nerf task.data=badscene",
              "task=shape task.chunk=0", "task=shape task.surface_std=-1", "task=shape task.mesh=/nonexistent.obj",
              "task=shape task.mesh=rand.obj", "task=shape task.mesh=cloud.obj", "task=shape task.mesh=m.xyz",
              "task=shape task.mesh=flat.obj", "task=shape task.box=foo", "task=shape task.mesh_resolution=2",
              "task=ct task.resolution=0", "task=ct task.num_angles=0", "task=ct task.interpolation=foo",
              "task=ct task.image=bad.dcm", "task=ct task.perturbation=foo", "task=ct task.batch_size=3",
              "task=toy1d task.n_points=7", "task=toy1d task.max_freq=1000", "task=toy1d task.alpha=nan",
              "task=shape sigma=auto", "task=nerf sigma=auto"]:
        def setup(d: Path) -> None:
            _bytes("rand.obj", _random(3000))(d)
            (d / "cloud.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
            (d / "flat.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nf 1 2 3\nf 2 4 3\n")
            (d / "m.xyz").write_text("0 0 0\n")
            (d / "v.nii.gz").write_bytes(_random(500))
            _nifti(d, "c.nii.gz", fill=1.0)
            _nifti(d, "four.nii.gz", shape=(8, 8, 8, 2))
            (d / "emptyscene").mkdir()
            (d / "badscene").mkdir()
            (d / "badscene" / "transforms_train.json").write_text('{"camera_angle_x": 9, "frames": []}')
            (d / "bad.dcm").write_bytes(_random(400))
        ffrun(a, setup=setup, base=TINY)
    # runs that must complete, small
    for a in ["", "encoding=none", "encoding=basic", "encoding=posenc", "trainer.threads=1", "logger=tensorboard",
              "sigma=auto task.resolution=16", "trainer.batch_size=16", "sigma=0"]:
        ffrun(a, "complete")
    for a in ["task=toy1d task.n_points=32", "task=ct task.resolution=16", "task=mri task.resolution=8",
              "task=shape task.test_points=512 task.mesh_resolution=8 trainer.batch_size=256"]:
        ffrun(a, "complete", base=TINY)
    # sweeps
    ffrun("-m sigma=1,2", "complete")
    ffrun("-m hydra/launcher=vectorized sigma=1,2", "complete")
    ffrun("-m hydra/launcher=vectorized sigma=auto,1", "complete")
    ffrun("-m hydra/launcher=vectorized hydra.launcher.max_group=0 sigma=1,2")
    ffrun("-m sigma=1,-1", why="one bad job: the sweep runs the other and exits 2")
    ffrun("-m hydra/launcher=vectorized sigma=1,-1", why="one bad job: the sweep runs the other and exits 2")

    # ffrun-summary
    def summary(args: str, expect: str, setup=None, outputs=()) -> None:
        c.append(Case(f"ffrun-summary {args}", expect, setup, outputs))
    summary("/nonexistent", "refuse")
    summary("empty", "refuse", lambda d: (d / "empty").mkdir())
    summary("sweep", "refuse", _metrics("not json"))
    summary("sweep", "refuse", _metrics("[1, 2, 3]"))
    summary("sweep", "complete", _metrics('{"status": "completed", "task": "image", "encoding": "gauss", "sigma": 1, '
                                          '"metrics": {"../../x": 1}}'), ("sweep/summary.md",))  # a safe file name
    summary("sweep", "refuse", _metrics('{"status": "completed", "task": "image", "encoding": "gauss", "metrics": []}'))
    summary("sweep", "refuse", _bytes("sweep/0/metrics.json", _random(200)))
    summary("file.txt", "refuse", _bytes("file.txt", b"x"))
    summary("run", "complete", _real_run, ("run/summary.md", "run/summary.csv"))
    summary("run --out /proc/ffrun", "refuse", _real_run)

    # ffrun-export and the Python API on crafted files
    def export(args: str, expect: str, setup=None, outputs=()) -> None:
        c.append(Case(f"ffrun-export {args}", expect, setup, outputs))
    crafted = {
        "empty": _bytes("run/checkpoint.pt", b""),
        "random": _bytes("run/checkpoint.pt", _random(4000)),
        "pickle": _crafted_pickle,
        "plain-pickle": _bytes("run/checkpoint.pt", pickle.dumps({"a": 1})),
        "zip": lambda d: _zip(d / "run" / "checkpoint.pt"),
        "truncated": lambda d: (_real_run(d), (d / "run" / "checkpoint.pt").write_bytes(
            (d / "run" / "checkpoint.pt").read_bytes()[:3000])),
        "foreign": lambda d: _torch_save(d / "run" / "checkpoint.pt", {"weights": [1, 2, 3]}),
        "dir": lambda d: (d / "run" / "checkpoint.pt").mkdir(parents=True),
        "config.yaml planted beside it": lambda d: (_real_run(d), (d / "run" / "config.yaml").write_text("sigma: ${oc.env:HOME}\n")),
    }
    for name, make in crafted.items():
        # A planted config.yaml is not what export reads (the checkpoint's own config is): it completes.
        export(f"run  # checkpoint: {name}", "complete" if "planted" in name else "refuse", make)
        c.append(Case(f"python: ffrun.load(run)  # checkpoint: {name}", "complete" if "planted" in name else "refuse", make,
                      call=lambda d: __import__("ffrun").load(d / "run")))
    export("/nonexistent", "refuse")
    export("empty", "refuse", lambda d: (d / "empty").mkdir())
    export("run", "complete", _real_run, ("run/export/field.safetensors", "run/export/field.json"))
    export("run --out /proc/ffrun", "refuse", _real_run)
    c.append(Case("python: ffrun.load(run)", "complete", _real_run, call=lambda d: __import__("ffrun").load(d / "run")))
    c.append(Case("python: ffrun.load_task(run)", "complete", _real_run,
                  call=lambda d: __import__("ffrun").load_task(d / "run")))
    c.append(Case("python: ffrun.load('/nonexistent')", "refuse", call=lambda d: __import__("ffrun").load("/nonexistent")))
    c.append(Case("python: ffrun.load_task('/nonexistent')", "refuse",
                  call=lambda d: __import__("ffrun").load_task("/nonexistent")))
    c.append(Case("python: ffrun.load(run, device='tpu')", "refuse", _real_run,
                  call=lambda d: __import__("ffrun").load(d / "run", device="tpu")))

    def exported(what: str, make, expect: str = "refuse") -> None:
        c.append(Case(f"python: ffrun.load_exported(exp)  # {what}", expect, make,
                      call=lambda d: __import__("ffrun").load_exported(d / "exp")))
    exported("valid", _exported, "complete")
    exported("field.json: not JSON", _field_json("{not json"))
    exported("field.json: a list", _field_json("[1, 2]"))
    exported("field.json: no keys", _field_json("{}"))
    exported("field.json: mlp.width=-1", lambda d: (_exported(d), _edit_json(d / "exp" / "field.json", "mlp.width", -1)))
    exported("field.json: mlp.depth=7", lambda d: (_exported(d), _edit_json(d / "exp" / "field.json", "mlp.depth", 7)))
    exported("field.json: encoding.name=foo",
             lambda d: (_exported(d), _edit_json(d / "exp" / "field.json", "encoding.name", "foo")))
    exported("safetensors: empty", lambda d: (_exported(d), (d / "exp" / "field.safetensors").write_bytes(b"")))
    exported("safetensors: random", lambda d: (_exported(d), (d / "exp" / "field.safetensors").write_bytes(_random(999))))
    exported("safetensors: header length 2^60", lambda d: (_exported(d), (d / "exp" / "field.safetensors").write_bytes(
        struct.pack("<Q", 2**60) + b"{}")))
    exported("safetensors: missing", lambda d: (_exported(d), (d / "exp" / "field.safetensors").unlink()))
    c.append(Case("python: ffrun.load_exported('/nonexistent')", "refuse",
                  call=lambda d: __import__("ffrun").load_exported("/nonexistent")))

    # ffrun-sigma, ffrun-ntk, ffrun-bench, ffrun-reproduce
    tiny_sigma = ["task.resolution=16", "hydra.run.dir=sig"]
    c.append(Case("ffrun-sigma task.resolution=16", "complete", outputs=("sig/sigma_curve.png", "sig/sigma_auto.json"),
                  args=["ffrun-sigma", *tiny_sigma]))
    for a in ["task=shape", "task=nerf", "task.resolution=4", "task.resolution=-2", "sigma=abc", "encoding.m=0",
              "task=shapee", "hydra.run.dir=/proc/ffrun/x"]:
        c.append(Case(f"ffrun-sigma {a}", "refuse", args=["ffrun-sigma", *tiny_sigma, *a.split()]))
    tiny_ntk = ["ntk.widths=[16]", "ntk.seeds=1", "ntk.train=false", "ntk.convergence_points=8", "task.n_points=32",
                "hydra.run.dir=ntk"]
    c.append(Case("ffrun-ntk (tiny)", "complete", outputs=("ntk/*.png",), args=["ffrun-ntk", *tiny_ntk]))
    for a in ["ntk.widths=[0]", "ntk.seeds=0", "ntk.sigmas=[-1]", "ntk.encodings=[foo]", "task.n_points=7",
              "ntk.gd_lr_fraction=-1", "ntk.rows_at=[2.0]", "task=image", "model.width=0", "ntk.convergence_points=0"]:
        c.append(Case(f"ffrun-ntk {a}", "refuse", args=["ffrun-ntk", *tiny_ntk, a]))
    for a in ["--tasks foo", "--device tpu", "--repeats -1", "--vectorized -2", "--check-steps -1", "--json /proc/ffrun/b.json",
              "--tasks ''"]:
        c.append(Case(f"ffrun-bench {a}", "refuse"))
    for a in ["--scale foo", "--tasks foo", "--launcher foo", "--out /proc/ffrun/x --scale smoke --tasks toy1d",
              "--scale smoke --tasks image --data /nonexistent/data", "--scale smoke --tasks image trainer.stpes=3",
              "--scale smoke --tasks image sigma=-1"]:
        c.append(Case(f"ffrun-reproduce {a}", "refuse"))
    return c


def _zip(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"garbage")


def _torch_save(path: Path, obj) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)


def _edit_json(path: Path, key: str, value) -> None:
    data = json.loads(path.read_text())
    *parents, last = key.split(".")
    node = data
    for k in parents:
        node = node[k]
    node[last] = value
    path.write_text(json.dumps(data))


# ---- running a case in a forked child ----------------------------------------------------------------------

ENTRY = {"ffrun": "ffrun.apps.cli:main", "ffrun-summary": "ffrun.apps.summary:main", "ffrun-ntk": "ffrun.apps.ntk:main",
         "ffrun-sigma": "ffrun.apps.sigma:main", "ffrun-export": "ffrun.apps.export:main", "ffrun-bench": "ffrun.apps.bench:main",
         "ffrun-reproduce": "ffrun.apps.reproduce:console"}


def _entry(tool: str):
    import importlib

    module, name = ENTRY[tool].split(":")
    return getattr(importlib.import_module(module), name)


def _in_process(argv: list[str], cwd: Path) -> None:
    """Run a console script's main with `argv` in this process (setup of a case, inside its child)."""
    old, old_cwd = sys.argv, os.getcwd()
    sys.argv = argv
    os.chdir(cwd)
    try:
        _entry(argv[0])()
    except SystemExit as e:
        if e.code not in (0, None):
            raise RuntimeError(f"setup {' '.join(argv)} exited {e.code}") from None
    finally:
        sys.argv = old
        os.chdir(old_cwd)


def _argv(case: Case) -> list[str]:
    if case.args:
        return case.args
    text = case.command.split("  #")[0]
    return [a if a != "''" else "" for a in text.split()]


def run_case(case: Case, timeout: float) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="ffrun-fuzz-"))
    out, err = folder.parent / (folder.name + ".out"), folder.parent / (folder.name + ".err")
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: set up, run, exit with the command's status
        code = 1
        try:
            fd_out, fd_err = os.open(out, os.O_WRONLY | os.O_CREAT), os.open(err, os.O_WRONLY | os.O_CREAT)
            os.dup2(fd_out, 1)
            os.dup2(fd_err, 2)
            sys.stdout, sys.stderr = io.TextIOWrapper(os.fdopen(1, "wb", 0)), io.TextIOWrapper(os.fdopen(2, "wb", 0))
            sys.stdout.reconfigure(line_buffering=True)
            sys.stderr.reconfigure(line_buffering=True)
            os.chdir(folder)
            if case.setup:
                with open(os.devnull, "w") as null:
                    saved = sys.stdout, sys.stderr
                    sys.stdout = sys.stderr = null
                    try:
                        case.setup(folder)
                    finally:
                        sys.stdout, sys.stderr = saved
            if case.call:
                from ffrun.util.errors import FfrunError

                try:
                    case.call(folder)
                    code = 0
                except FfrunError as e:
                    print(f"FfrunError: {e}", file=sys.stderr)
                    code = 2
            else:
                argv = _argv(case)
                sys.argv = argv
                try:
                    ret = _entry(argv[0])()
                    code = ret if isinstance(ret, int) else 0  # main(argv) -> int, as the console script exits
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    deadline = start + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.perf_counter() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status = None
            break
        time.sleep(0.05)
    rc = None if status is None else os.waitstatus_to_exitcode(status)
    stdout = out.read_text(errors="replace") if out.exists() else ""
    stderr = err.read_text(errors="replace") if err.exists() else ""
    return {"rc": rc, "stdout": stdout, "stderr": stderr, "seconds": time.perf_counter() - start, "folder": folder,
            "pwned": (folder / "PWNED").exists() or any(folder.rglob("PWNED"))}


def classify(case: Case, r: dict) -> tuple[str, str]:
    """(outcome, the message a user saw)."""
    lines = [ln for ln in r["stderr"].splitlines() if ln.strip() and not ln.startswith("[")]
    said = lines[-1][:160] if lines else ""
    if r["rc"] is None:
        return "timeout", said
    if r["pwned"]:
        return "wrong", "a crafted file ran code"
    if "Traceback" in r["stderr"]:
        tb = [ln for ln in r["stderr"].splitlines() if ln and not ln.startswith((" ", "Traceback", "["))]
        return "traceback", (tb[-1] if tb else said)[:160]
    if case.expect == "refuse":
        if r["rc"] == 0:
            shown = said or "".join(r["stdout"].strip().splitlines()[-1:]) or "accepted"
            return "wrong", f"exit 0: {shown[:150]}"
        if r["rc"] != 2:
            return f"exit {r['rc']}", said
        return "ok", said
    if r["rc"] != 0:
        return f"exit {r['rc']}", said
    missing = [g for g in case.outputs if not any(r["folder"].glob(g))]
    if missing:
        return "lost", "missing " + ", ".join(missing)
    if case.tool == "ffrun":
        for m in r["folder"].glob("**/metrics.json"):
            if json.loads(m.read_text()).get("status") != "completed":
                return "lost", f"{m.relative_to(r['folder'])}: status {json.loads(m.read_text()).get('status')}"
    return "ok", said


# Why a case still fails, where that is known (shown under "Remaining").
NOTES: dict[str, str] = {}


def table(results: list[tuple[Case, str, str, dict]]) -> str:
    counts: dict[str, int] = {}
    for _, outcome, _, _ in results:
        key = outcome if outcome in ("ok", "traceback", "wrong", "lost", "timeout") else "other exit"
        counts[key] = counts.get(key, 0) + 1
    tools = sorted({c.tool for c, *_ in results})
    lines = ["# Fuzz table", "",
             "Generated by `python scripts/fuzz.py` (every case run one after another on a 2-core CPU, one thread; "
             "`tests/test_fuzz.py` reruns a sample of it). Expected: `refuse` = exit status 2 with one line naming "
             "the problem (the API: an FfrunError), `complete` = exit 0 with the promised outputs.", "",
             f"Cases: {len(results)} over {', '.join(tools)}. "
             f"ok: {counts.get('ok', 0)}, tracebacks: {counts.get('traceback', 0)}, wrong results: "
             f"{counts.get('wrong', 0)}, lost outputs: {counts.get('lost', 0)}, timeouts: {counts.get('timeout', 0)}, "
             f"other exit status: {counts.get('other exit', 0)}.", ""]
    remaining = [(c, o, s) for c, o, s, _ in results if o != "ok"]
    if remaining:
        lines += ["Remaining (not ok):", ""]
        lines += [f"- `{_md(c.command)}` (expected {c.expect}): **{o}**, {_md(s)}" + NOTES.get(c.command, "")
                  for c, o, s in remaining]
        lines.append("")
    lines += ["| # | command | expected | outcome | what the user saw | s |", "| --- | --- | --- | --- | --- | --- |"]
    for i, (c, o, s, r) in enumerate(results):
        lines.append(f"| {i} | `{_md(c.command)[:110]}` | {c.expect} | {o} | {_md(s)[:140]} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ")


def remove_case_files(result: dict) -> None:
    """A case's folder and its captured output, once classified: a run of the table leaves nothing in /tmp."""
    shutil.rmtree(result["folder"], ignore_errors=True)
    for suffix in (".out", ".err"):
        Path(str(result["folder"]) + suffix).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "fuzz.md")
    p.add_argument("--only", default=None, help="only the cases whose command starts with this")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--timeout", type=float, default=240)
    args = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    own_cache = None if "FFRUN_CACHE" in os.environ else tempfile.mkdtemp(prefix="ffrun-fuzz-cache-")
    if own_cache:
        os.environ["FFRUN_CACHE"] = own_cache
    import torch

    torch.set_num_threads(1)
    import ffrun.apps.cli  # noqa: F401 (imported once, before the children fork)
    import ffrun.apps.export  # noqa: F401
    import ffrun.apps.summary  # noqa: F401

    selected = [c for c in cases() if not args.only or c.command.startswith(args.only)][: args.limit]
    results = []
    for i, case in enumerate(selected):
        r = run_case(case, args.timeout)
        outcome, said = classify(case, r)
        results.append((case, outcome, said, r))
        remove_case_files(r)
        print(f"[{i + 1}/{len(selected)}] {outcome:9s} {r['seconds']:5.1f}s {case.command[:90]} -> {said[:100]}", flush=True)
    if own_cache:
        shutil.rmtree(own_cache, ignore_errors=True)
    args.out.write_text(table(results))
    bad = sum(o != "ok" for _, o, _, _ in results)
    print(f"{len(results)} cases, {bad} not ok; table in {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
