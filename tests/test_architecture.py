"""The package's layers (docs/architecture.md): each folder imports only the folders below it, apps never import
each other, and no module outside ffrun/tasks reaches into a task's private names."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ffrun"

# bottom to top; a module may import its own layer and the layers below it
LAYERS = {"util": 0, "models": 1, "data": 1, "tasks": 2, "config": 3, "sigma": 4, "train": 4, "run": 5, "sweep": 6,
          "apps": 7}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) for every ffrun import in the file, at any depth (lazy imports count)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ffrun":
            out.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "ffrun"]
    return out


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_belongs_to_a_layer():
    strays = [m for m in modules() if m != "ffrun" and layer_of(m) is None]
    assert not strays, f"modules outside the layer folders (add them to a layer): {strays}"


def test_layers_import_only_downwards():
    wrong = []
    for module, path in modules().items():
        here = layer_of(module)
        for target, names, line in imports(path):
            if target == "ffrun":  # the package root: only its version string may be read from below
                if here is not None and set(names) - {"__version__"}:
                    wrong.append(f"{path.name}:{line} imports {names} from the package root")
                continue
            there = layer_of(target)
            if here is None or there is None:
                continue
            if LAYERS[there] > LAYERS[here]:
                wrong.append(f"{module}:{line} ({here}) imports {target} ({there}), a layer above it")
    assert not wrong, "\n".join(wrong)


def test_apps_never_import_each_other():
    wrong = []
    for module, path in modules().items():
        if layer_of(module) != "apps":
            continue
        for target, names, line in imports(path):
            if target == "ffrun.apps" and names or layer_of(target) == "apps" and target not in (module, "ffrun.apps"):
                wrong.append(f"{module}:{line} imports {names or target} from {target}")
    assert not wrong, "apps use the layers below, never another app:\n" + "\n".join(wrong)


def test_no_module_outside_tasks_imports_a_task_private_name():
    wrong = []
    for module, path in modules().items():
        if layer_of(module) == "tasks":
            continue
        for target, names, line in imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if layer_of(target) == "tasks" and (private or any(p.startswith("_") for p in target.split(".")[2:])):
                wrong.append(f"{module}:{line} imports {private or target} from {target}")
    assert not wrong, "\n".join(wrong)


def test_no_module_outside_tasks_reads_a_task_private_attribute():
    """`task._projector` and the like: a task answers through its methods, not its internals."""
    wrong = []
    for module, path in modules().items():
        if layer_of(module) == "tasks":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and (isinstance(node.value, ast.Name) and node.value.id == "task"
                         or isinstance(node.value, ast.Attribute) and node.value.attr == "task")):
                wrong.append(f"{module}:{node.lineno} reads task.{node.attr}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("probe, rule", [
    ("from ffrun.apps.cli import main\n", "apps"),
    ("from ffrun.tasks.ct import _rotate\n", "private"),
    ("from ffrun.run.job import Job\n", "layer"),
])
def test_the_rules_catch_a_violation(tmp_path, probe, rule, monkeypatch):
    """Each rule fails on a planted violation (so the checks above cannot pass vacuously)."""
    target = {"apps": "apps/probe_app.py", "private": "sigma/probe.py", "layer": "models/probe.py"}[rule]
    fake = tmp_path / "ffrun"
    (fake / target).parent.mkdir(parents=True)
    (fake / target).write_text(probe)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    check = {"apps": test_apps_never_import_each_other,
             "private": test_no_module_outside_tasks_imports_a_task_private_name,
             "layer": test_layers_import_only_downwards}[rule]
    with pytest.raises(AssertionError):
        check()
