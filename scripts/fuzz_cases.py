"""The cases of scripts/fuzz.py: ffrun's command-line tools and Python API as a hostile or careless user
drives them, each with the outcome it must have (see fuzz.py for how they run and are classified)."""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from fuzz_files import (
    SMOKE,
    crafted_pickle,
    edit_json,
    export_run,
    field_json,
    image_set,
    interrupted_twice,
    make_zip,
    metrics,
    nifti,
    png,
    random_bytes,
    raw,
    read_only_folder,
    read_only_once,
    real_run,
    torch_save,
)

TINY = ["trainer.steps=2", "trainer.eval_every=2", "trainer.progress=false", "device=cpu", "model.depth=2",
        "model.width=16", "encoding.m=8"]


@dataclass
class Case:
    command: str  # as shown in the table; the tool and its arguments, split on spaces unless `args` is given
    expect: str  # refuse | complete | interrupt
    setup: Callable[[Path], None] | None = None  # makes the files the case needs in its folder
    # globs (in the case's folder) that must match after it: what a complete promises, what a refusal or an
    # interruption must have kept
    outputs: tuple[str, ...] = ()
    args: list[str] | None = None
    call: Callable[[Path], object] | None = None  # a Python API case
    why: str = ""
    env: dict[str, str] = field(default_factory=dict)  # environment variables the command runs with
    says: str = ""  # what the line the user sees must hold (the set syntax, the fix), where it matters
    # how the command runs when not in the case's child itself: (folder, argv) -> exit status (a real process,
    # for signals and the interpreter's own shutdown)
    runner: Callable[[Path, list[str]], int] | None = None
    section: str = ""  # which function of this module declares it (fuzz.py --section)

    @property
    def tool(self) -> str:
        return "python" if self.call else self.command.split()[0]


def _ffrun(c: list[Case]):
    """An adder of `ffrun ARGS` cases to `c`: the run goes to run/ (a sweep to sweep/), and a case expected to
    complete must leave its metrics.json (and checkpoint)."""

    def ffrun(args: str, expect: str = "refuse", setup=None, base=SMOKE, why: str = "", **more) -> None:
        argv = base + args.split() + ([] if "hydra.run.dir" in args or args.startswith("-m") else ["hydra.run.dir=run"])
        if args.startswith("-m"):
            argv = ["-m"] + base + args.split()[1:] + ["hydra.sweep.dir=sweep"]
        outs = ("sweep/*/metrics.json",) if args.startswith("-m") else ("run/metrics.json", "run/checkpoint.pt")
        c.append(Case(f"ffrun {args}", expect, setup, outs if expect == "complete" else (), ["ffrun", *argv], why=why,
                      **more))
    return ffrun


def value_cases() -> list[Case]:
    """Bad values, key by key, and the methods and budgets."""
    c: list[Case] = []
    ffrun = _ffrun(c)
    # bad values, key by key
    for a in ["sigma=-1", "sigma=abc", "sigma=automatic", "sigma=nan", "sigma=inf", "sigma=-inf", "sigma=''",
              "encoding.m=0", "encoding.m=-5", "encoding.m=100000000", "encoding.levels=0", "encoding.scale=nan",
              "model.depth=0", "model.width=0", "model.width=-1", "model.init=foo", "model.parametrization=foo",
              "trainer.steps=0", "trainer.steps=-3", "trainer.lr=0", "trainer.lr=-1", "trainer.lr=nan",
              "trainer.batch_size=0", "trainer.eval_every=0", "trainer.ckpt_every=-1", "trainer.lr_decay=0",
              "trainer.lr_decay=2", "trainer.lr_decay_steps=-1", "trainer.precision=fp8", "trainer.optimizer=lbfgs",
              "trainer.threads=0", "trainer.threads=abc", "trainer.threads=-2", "trainer.resume=/nonexistent/run",
              "trainer.resume=''", "seed=18446744073709551615", "seed=-1", "device=cuda:7", "device=tpu", "device=cuda",
              "seed=abc", "seed=1.5",
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
              "method=hashgrid encoding.min_resolution=64 encoding.max_resolution=16",
              "method=hashgrid encoding.backend=tcnn",
              "method=densegrid encoding.resolution=1", "method=densegrid encoding.resolution=[4,5,6]",
              "method=densegrid encoding.features=0", "method=densegrid model=mlp model.params=3",
              "encoding=multiscale encoding.sigmas=[]", "encoding=multiscale sigma=auto", "method=learned sigma=auto",
              "model.params=0", "model.params=-5", "method=siren model.params=3", "encoding=grid model.params=1000",
              "task=toy1d method=hashgrid model.params=100000", "model=direct", "encoding.foo=1 method=hashgrid"]:
        ffrun(a)
    for a in ["method=siren", "method=wire", "method=hashgrid encoding.levels=4", "method=densegrid",
              "method=learned", "method=multiscale model.params=3000",
              "-m method=siren,densegrid model.params=2000,4000"]:
        ffrun(a, "complete")
    return c


def data_cases() -> list[Case]:
    """Bad data files, every task at tiny sizes, runs that must complete, sweeps."""
    c: list[Case] = []
    ffrun = _ffrun(c)
    # images
    ffrun("task.image=garbage.png", setup=raw("garbage.png", random_bytes(3000)))
    ffrun("task.image=empty.png", setup=raw("empty.png", b""))
    ffrun("task.image=text.jpg", setup=raw("text.jpg", b"hello, not a jpeg\n"))
    ffrun("task.image=trunc.png", setup=lambda d: (png(d, "full.png"),
                                                  (d / "trunc.png").write_bytes((d / "full.png").read_bytes()[:200])))
    ffrun("task.image=folder", setup=lambda d: (d / "folder").mkdir())
    ffrun("task.image=ok.png", "complete", setup=lambda d: png(d, "ok.png"))
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
            raw("rand.obj", random_bytes(3000))(d)
            (d / "cloud.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
            (d / "flat.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nf 1 2 3\nf 2 4 3\n")
            (d / "m.xyz").write_text("0 0 0\n")
            (d / "v.nii.gz").write_bytes(random_bytes(500))
            nifti(d, "c.nii.gz", fill=1.0)
            nifti(d, "four.nii.gz", shape=(8, 8, 8, 2))
            (d / "emptyscene").mkdir()
            (d / "badscene").mkdir()
            (d / "badscene" / "transforms_train.json").write_text('{"camera_angle_x": 9, "frames": []}')
            (d / "bad.dcm").write_bytes(random_bytes(400))
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
    return c


def file_cases() -> list[Case]:
    """ffrun-summary, ffrun-export and the Python API on crafted files."""
    c: list[Case] = []
    # ffrun-summary
    def summary(args: str, expect: str, setup=None, outputs=()) -> None:
        c.append(Case(f"ffrun-summary {args}", expect, setup, outputs))
    summary("/nonexistent", "refuse")
    summary("empty", "refuse", lambda d: (d / "empty").mkdir())
    summary("sweep", "refuse", metrics("not json"))
    summary("sweep", "refuse", metrics("[1, 2, 3]"))
    summary("sweep", "complete", metrics('{"status": "completed", "task": "image", "encoding": "gauss", "sigma": 1, '
                                          '"metrics": {"../../x": 1}}'), ("sweep/summary.md",))  # a safe file name
    summary("sweep", "refuse", metrics('{"status": "completed", "task": "image", "encoding": "gauss", "metrics": []}'))
    summary("sweep", "refuse", raw("sweep/0/metrics.json", random_bytes(200)))
    summary("file.txt", "refuse", raw("file.txt", b"x"))
    summary("run", "complete", real_run, ("run/summary.md", "run/summary.csv"))
    summary("run --out /proc/ffrun", "refuse", real_run)

    # ffrun-export and the Python API on crafted files
    def export(args: str, expect: str, setup=None, outputs=()) -> None:
        c.append(Case(f"ffrun-export {args}", expect, setup, outputs))
    crafted = {
        "empty": raw("run/checkpoint.pt", b""),
        "random": raw("run/checkpoint.pt", random_bytes(4000)),
        "pickle": crafted_pickle,
        "plain-pickle": raw("run/checkpoint.pt", pickle.dumps({"a": 1})),
        "zip": lambda d: make_zip(d / "run" / "checkpoint.pt"),
        "truncated": lambda d: (real_run(d), (d / "run" / "checkpoint.pt").write_bytes(
            (d / "run" / "checkpoint.pt").read_bytes()[:3000])),
        "foreign": lambda d: torch_save(d / "run" / "checkpoint.pt", {"weights": [1, 2, 3]}),
        "dir": lambda d: (d / "run" / "checkpoint.pt").mkdir(parents=True),
        "config.yaml planted beside it": lambda d: (real_run(d),
                                                    (d / "run" / "config.yaml").write_text("sigma: ${oc.env:HOME}\n")),
    }
    for name, make in crafted.items():
        # A planted config.yaml is not what export reads (the checkpoint's own config is): it completes.
        export(f"run  # checkpoint: {name}", "complete" if "planted" in name else "refuse", make)
        c.append(Case(f"python: ffrun.load(run)  # checkpoint: {name}", "complete" if "planted" in name else "refuse",
                      make,
                      call=lambda d: __import__("ffrun").load(d / "run")))
    export("/nonexistent", "refuse")
    export("empty", "refuse", lambda d: (d / "empty").mkdir())
    export("run", "complete", real_run, ("run/export/field.safetensors", "run/export/field.json"))
    export("run --out /proc/ffrun", "refuse", real_run)
    c.append(Case("python: ffrun.load(run)", "complete", real_run, call=lambda d: __import__("ffrun").load(d / "run")))
    c.append(Case("python: ffrun.load_task(run)", "complete", real_run,
                  call=lambda d: __import__("ffrun").load_task(d / "run")))
    c.append(Case("python: ffrun.load('/nonexistent')", "refuse",
                  call=lambda d: __import__("ffrun").load("/nonexistent")))
    c.append(Case("python: ffrun.load_task('/nonexistent')", "refuse",
                  call=lambda d: __import__("ffrun").load_task("/nonexistent")))
    c.append(Case("python: ffrun.load(run, device='tpu')", "refuse", real_run,
                  call=lambda d: __import__("ffrun").load(d / "run", device="tpu")))

    def exported(what: str, make, expect: str = "refuse") -> None:
        c.append(Case(f"python: ffrun.load_exported(exp)  # {what}", expect, make,
                      call=lambda d: __import__("ffrun").load_exported(d / "exp")))
    exported("valid", export_run, "complete")
    exported("field.json: not JSON", field_json("{not json"))
    exported("field.json: a list", field_json("[1, 2]"))
    exported("field.json: no keys", field_json("{}"))
    exported("field.json: mlp.width=-1",
             lambda d: (export_run(d), edit_json(d / "exp" / "field.json", "mlp.width", -1)))
    exported("field.json: mlp.depth=7", lambda d: (export_run(d), edit_json(d / "exp" / "field.json", "mlp.depth", 7)))
    exported("field.json: encoding.name=foo",
             lambda d: (export_run(d), edit_json(d / "exp" / "field.json", "encoding.name", "foo")))
    exported("safetensors: empty", lambda d: (export_run(d), (d / "exp" / "field.safetensors").write_bytes(b"")))
    exported("safetensors: random",
             lambda d: (export_run(d), (d / "exp" / "field.safetensors").write_bytes(random_bytes(999))))
    exported("safetensors: header length 2^60", lambda d: (export_run(d), (d / "exp" / "field.safetensors").write_bytes(
        struct.pack("<Q", 2**60) + b"{}")))
    exported("safetensors: missing", lambda d: (export_run(d), (d / "exp" / "field.safetensors").unlink()))
    c.append(Case("python: ffrun.load_exported('/nonexistent')", "refuse",
                  call=lambda d: __import__("ffrun").load_exported("/nonexistent")))
    return c


def tool_cases() -> list[Case]:
    """ffrun-sigma, ffrun-ntk, ffrun-bench and ffrun-reproduce refusing bad arguments."""
    c: list[Case] = []
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
    for a in ["--tasks foo", "--device tpu", "--repeats -1", "--vectorized -2", "--check-steps -1",
              "--json /proc/ffrun/b.json", "--tasks ''"]:
        c.append(Case(f"ffrun-bench {a}", "refuse"))
    for a in ["--scale foo", "--tasks foo", "--launcher foo", "--out /proc/ffrun/x --scale smoke --tasks toy1d",
              "--scale smoke --tasks image --data /nonexistent/data", "--scale smoke --tasks image trainer.stpes=3",
              "--scale smoke --tasks image sigma=-1"]:
        c.append(Case(f"ffrun-reproduce {a}", "refuse"))
    return c


LONG = ["task.resolution=32", "trainer.steps=100000", "trainer.eval_every=5", "trainer.ckpt_every=5",
        "trainer.progress=false"]


def careless_cases() -> list[Case]:
    """Mistakes that were silent or ended in a traceback (issue 28, item 7): each one line or the right result."""
    c: list[Case] = []
    ffrun = _ffrun(c)
    for a in ["encoding=posenc encoding.scale=-3", "model.w_std=-1", "model.b_std=-1",
              "task.image=" + "a" * 300 + ".png"]:
        ffrun(a, says="out of range" if "std" in a or "scale" in a else "too long")
    c.append(Case("ffrun-export run --out ''", "refuse", real_run, says="empty folder name"))
    for content in ("{}", '{"status": "completed"}'):
        c.append(Case(f"ffrun-summary sweep  # metrics.json {content}", "refuse", metrics(content), says="no usable"))
    c.append(Case("ffrun-summary run  # beside a metrics.json {}", "complete",
                  lambda d: (real_run(d), (d / "run" / "x").mkdir(),
                             (d / "run" / "x" / "metrics.json").write_text("{}")),
                  ("run/summary.md",)))
    reproduce = ["--scale", "smoke", "--tasks", "image", "--out", "ro"]
    c.append(Case("ffrun-reproduce --out ro  # an existing read-only folder", "refuse", read_only_folder("ro"),
                  args=["ffrun-reproduce", *reproduce], says="cannot write there"))
    c.append(Case("ffrun-compare --out ro  # an existing read-only folder", "refuse", read_only_folder("ro"),
                  args=["ffrun-compare", *reproduce, "--methods", "gauss", "--budgets", "2000"],
                  says="cannot write there"))
    c.append(Case("ffrun-reproduce --out ''", "refuse", args=["ffrun-reproduce", *reproduce[:-1], ""],
                  says="empty folder name"))
    c.append(Case("ffrun trainer.steps=400  # the run folder turns read-only mid-run", "refuse",
                  read_only_once("run", "run/checkpoint.pt"), ("run/checkpoint.pt",),
                  ["ffrun", *SMOKE, "trainer.steps=400", "trainer.eval_every=1", "trainer.ckpt_every=1",
                   "trainer.progress=false", "hydra.run.dir=run"], says="is kept: resume with"))
    c.append(Case("ffrun task.image=div2k:0  # FFRUN_DATA=~nouser/x", "refuse", args=["ffrun", *SMOKE,
                  "task.image=div2k:0", "hydra.run.dir=run"], env={"FFRUN_DATA": "~nouser/x"}, says="FFRUN_DATA"))
    c.append(Case("ffrun-reproduce --scale smoke  # FFRUN_DATA=~nouser/x", "refuse",
                  args=["ffrun-reproduce", *reproduce[:-1], "out"], env={"FFRUN_DATA": "~nouser/x"}, says="FFRUN_DATA"))
    c.append(Case("ffrun trainer.steps=100000  # two Ctrl-C's 30 ms apart", "interrupt",
                  outputs=("run/checkpoint.pt", "run/metrics.json"), args=["ffrun", *SMOKE, *LONG, "hydra.run.dir=run"],
                  runner=interrupted_twice(0.03, "run/checkpoint.pt"), says="resume with"))
    for spec, why in [("div2k:-1", "a negative index"), ("div2k", "the set without an index"),
                      ("div2k:3", "03.png is a folder"), ("div2k:7", "past the last image")]:
        c.append(Case(f"ffrun task.image={spec}  # {why}", "refuse", image_set,
                      args=["ffrun", *SMOKE, f"task.image={spec}", "hydra.run.dir=run"], env={"FFRUN_DATA": "data"},
                      says="div2k:N with N in 0..2"))
    return c


SECTIONS = {"values": value_cases, "data": data_cases, "files": file_cases, "tools": tool_cases,
            "careless": careless_cases}


def cases(section: str | None = None) -> list[Case]:
    """Every case in table order, or those of one section (see SECTIONS)."""
    found = []
    for name, make in SECTIONS.items():
        if section in (None, name):
            found += [replace(case, section=name) for case in make()]
    return found
