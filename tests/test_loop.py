"""The one training loop: single runs and vectorized sweeps share it, stop and resume the same way, and
ffrun's modules import each other without a cycle."""

from __future__ import annotations

import ast
import json
import signal
import time
from pathlib import Path

import numpy as np
import torch
from conftest import ROOT, ffrun_cmd

TINY = ["task=image", "task.resolution=32", "encoding=gauss", "sigma=4", "encoding.m=16", "model.depth=3",
        "model.width=32", "trainer.progress=false", "device=cpu"]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)


def assert_same_state(a: dict, b: dict) -> None:
    """Two checkpoints hold the same weights, optimizer and schedule state, bit for bit."""
    assert a["step"] == b["step"] and a["history"] == b["history"]
    assert a["field"].keys() == b["field"].keys()
    for k in a["field"]:
        assert torch.equal(a["field"][k], b["field"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for key in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][key]), torch.as_tensor(sb[i][key])), (i, key)
    assert a["schedule"] == b["schedule"]


def test_a_k1_vectorized_run_equals_the_plain_run_bit_for_bit(compose, tmp_path):
    """The same loop drives both: a group of one (BatchedTraining, the launcher's path) writes what a
    single run writes, to the last bit on a CPU, lr decay and checkpoint cadence included."""
    from ffrun.run.job import prepare, run, train_together

    cfg = compose(*TINY, "trainer.steps=30", "trainer.eval_every=10", "trainer.ckpt_every=15",
                  "trainer.lr_decay=0.5", "trainer.lr_decay_steps=10")
    plain = run(cfg, tmp_path / "plain")
    job = prepare(cfg, tmp_path / "vec")
    (result,) = train_together([job])
    vec = job.finish(result).to_dict()
    assert plain["status"] == vec["status"] == "completed"
    assert [h["step"] for h in plain["history"]] == [10, 20, 30]
    assert vec["history"] == plain["history"] and vec["metrics"] == plain["metrics"]
    assert (vec["step"], vec["checkpoint_step"]) == (plain["step"], plain["checkpoint_step"]) == (30, 30)
    assert_same_state(checkpoint(tmp_path / "vec"), checkpoint(tmp_path / "plain"))
    assert (tmp_path / "vec" / "config.yaml").is_file() and (tmp_path / "vec" / "history.csv").is_file()
    picture = "reconstruction.png"
    assert (tmp_path / "vec" / picture).read_bytes() == (tmp_path / "plain" / picture).read_bytes()


def test_a_resumed_run_equals_an_uninterrupted_one_with_minibatches_and_lr_decay(compose, tmp_path):
    """The minibatch generator (drawn on the task's device) and the lr schedule continue from the
    checkpoint: 10 steps, then 10 more, end exactly where 20 straight steps end."""
    from ffrun.run.job import run

    common = [*TINY, "trainer.batch_size=64", "trainer.lr_decay=0.3", "trainer.lr_decay_steps=7",
              "trainer.eval_every=5", "trainer.ckpt_every=10"]
    straight = run(compose(*common, "trainer.steps=20"), tmp_path / "straight")
    first = run(compose(*common, "trainer.steps=10"), tmp_path / "first")
    assert first["step"] == 10
    resumed = run(compose(*common, "trainer.steps=20", f"trainer.resume={tmp_path / 'first'}"), tmp_path / "resumed")
    assert resumed["resumed_from"] == str(tmp_path / "first" / "checkpoint.pt")
    assert resumed["history"] == straight["history"] and resumed["metrics"] == straight["metrics"]
    a, b = checkpoint(tmp_path / "resumed"), checkpoint(tmp_path / "straight")
    assert_same_state(a, b)
    assert torch.equal(a["task"]["generator"], b["task"]["generator"])
    # the minibatches matter: the same run without them ends elsewhere
    full = run(compose(*[c for c in common if "batch_size" not in c], "trainer.steps=20"), tmp_path / "full")
    assert full["metrics"] != straight["metrics"]


# ~3 ms a step for two members: a signal lands mid-run, and the run is quick to resume
LONG = ["experiment=smoke", "task.resolution=64", "model.width=64", "trainer.steps=100000", "trainer.eval_every=50",
        "trainer.ckpt_every=25", "encoding=gauss"]


def test_sigterm_stops_a_vectorized_sweep_with_every_member_interrupted_and_resumable(run_cli, spawn, tmp_path):
    sweep = tmp_path / "outputs" / "vec"
    proc = spawn([ffrun_cmd(), "-m", "hydra/launcher=vectorized", *LONG, "sigma=1,4", f"hydra.sweep.dir={sweep}"],
                 cwd=tmp_path)
    deadline = time.time() + 120
    while True:
        try:
            if all(metrics(sweep / str(i))["checkpoint_step"] >= 50 for i in range(2)):
                break
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "no checkpoints appeared"
        time.sleep(0.05)
    for i in range(2):  # written before training, so trainer.resume=true can find a killed member
        assert (sweep / str(i) / "config.yaml").is_file()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err
    steps = []
    for i in range(2):
        m = metrics(sweep / str(i))
        assert m["status"] == "interrupted" and "SIGTERM" in m["reason"], m["reason"]
        assert m["checkpoint_step"] == m["step"] > 0
        ckpt = checkpoint(sweep / str(i))
        assert ckpt["step"] == m["step"]
        # Adam has taken exactly the recorded number of steps: a resume replays none and skips none
        assert all(int(s["step"]) == m["step"] for s in ckpt["optimizer"]["state"].values())
        assert f"trainer.resume={sweep / str(i)} hydra.run.dir={sweep / str(i)}" in err and "resume with: ffrun " in err
        steps.append(m["step"])
    assert steps[0] == steps[1]
    # member 1 (sigma 4) is found by trainer.resume=true and continues in its own folder, leaving no other
    r = run_cli(*LONG, "sigma=4", f"trainer.steps={steps[1] + 10}", "trainer.resume=true", "hydra.run.dir=more")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (tmp_path / "more").exists()
    more = metrics(sweep / "1")
    assert more["resumed_from"] == "outputs/vec/1/checkpoint.pt"
    assert more["status"] == "completed" and more["step"] == steps[1] + 10


def test_the_image_split_holds_out_every_odd_pixel_and_trains_on_none_of_them(compose):
    """Train on img[::2, ::2], score on img[1::2, 1::2]: disjoint, and every held-out pixel is an odd one."""
    from ffrun.tasks import build_task

    cfg = compose(*TINY)
    n = cfg.task.resolution
    task = build_task(cfg.task, torch.device("cpu"), None, 0)

    def pixels(coords: torch.Tensor) -> np.ndarray:  # (x, y) = (col / n, row / n) -> (row, col)
        rc = np.rint(coords.numpy()[:, ::-1] * n).astype(int)
        assert np.allclose(rc / n, coords.numpy()[:, ::-1], atol=1e-6)  # exactly on the pixel grid
        return rc

    train, test = pixels(task.train[0]), pixels(task.test[0])
    assert len(train) == len(test) == (n // 2) ** 2
    assert (train % 2 == 0).all() and (test % 2 == 1).all()
    assert not {tuple(p) for p in train} & {tuple(p) for p in test}
    image = torch.from_numpy(task.image)
    assert torch.equal(task.train[1], image[train[:, 0], train[:, 1]])
    assert torch.equal(task.test[1], image[test[:, 0], test[:, 1]])


def project_imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its source (inside functions too), for ffrun
    and ffrun's Hydra plugin. An import of an enclosing package is left out: Python initialises a
    package before any module in it, so it cannot close a cycle."""
    files = {}
    for top in ("ffrun", "hydra_plugins"):
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {resolve(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                found |= {resolve(f"{base}.{a.name}") for a in node.names}
        graph[mod] = {m for m in found if m and m != mod and not mod.startswith(m + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        path.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return path[path.index(v):] + [v]
            if v not in state and (cycle := visit(v)):
                return cycle
        path.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (cycle := visit(u)):
            return cycle
    return None


def test_no_import_cycle_among_ffrun_modules():
    graph = project_imports()
    # the parser sees imports inside functions, where the old bench/cli/vectorized/launcher circle hid
    assert "ffrun.run.job" in graph["hydra_plugins.ffrun_launcher.vectorized_launcher"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_a_generator_state_from_another_device_reseeds_deterministically(compose):
    """A CPU run resumed on a GPU (or back): the saved state cannot drive the other kind of generator, so
    the minibatches continue from a seed taken from it, the same on every such resume."""
    from ffrun.tasks import build_task

    task = build_task(compose(*TINY).task, torch.device("cpu"), 8, 0)
    state = task.state_dict()
    assert state["generator_device"] == "cpu" and state["generator"].dtype == torch.uint8
    following = task.sample(0)[0]
    task.load_state_dict(state)
    assert torch.equal(task.sample(0)[0], following)  # same kind: continues exactly
    draws = []
    for _ in range(2):
        task.load_state_dict({**state, "generator_device": "cuda"})
        draws.append(task.sample(0)[0])
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], following)
