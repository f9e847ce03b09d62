"""What a newcomer meets in the docs holds: the counts the docs give agree, and a notebook example runs on a CPU."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_fuzz_count_is_the_same_wherever_the_docs_give_it():
    cases = int(re.search(r"^Cases: (\d+) over", (ROOT / "docs/fuzz.md").read_text(), re.M).group(1))
    said = re.findall(r"\((\d+) commands\)", (ROOT / "docs/troubleshooting.md").read_text())
    assert said and all(int(n) == cases for n in said), (said, cases)
    assert f"[docs/fuzz.md](docs/fuzz.md): {cases} bad inputs" in (ROOT / "README.md").read_text()


def test_the_notebook_example_of_ecosystem_md_runs_on_this_machine(run_cli, tmp_path):
    assert run_cli("experiment=smoke", "task.resolution=32", "hydra.run.dir=run").returncode == 0
    text = (ROOT / "docs/ecosystem.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "ffrun.load(" in b)
    code = code.replace("outputs/2026-11-27/10-00-00", str(tmp_path / "run")).replace("2048", "64")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "test_psnr" in r.stdout
