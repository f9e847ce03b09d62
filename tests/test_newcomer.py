"""What a newcomer meets in the docs holds: the counts the docs give agree, and a notebook example runs on a CPU."""

from __future__ import annotations

import json
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


def test_a_method_that_cannot_be_sized_is_said_as_n_a_not_as_an_error(capsys):
    from ffrun.sweep.execute import run_ffrun

    said = ("ffrun: error: model.params=100000 is unreachable: toy1d/hashgrid has at most 1234 parameters\n"
            "ffrun: 1 job(s) of the sweep did not complete: runs/toy1d/hashgrid (failed)\n")
    code = run_ffrun([sys.executable, "-c", f"import sys; sys.stderr.write({said!r}); sys.exit(2)"], "toy1d")
    assert code == 2
    err = capsys.readouterr().err
    assert "error" not in err.replace("(not an error)", "") and "exited" not in err, err
    assert "toy1d: n/a (not an error): model.params=100000 is unreachable" in err
    # a real failure beside it is still shown as one
    said = said.replace("1 job(s)", "2 job(s)") + "ffrun: error: task.image='x.png': no such file\n"
    run_ffrun([sys.executable, "-c", f"import sys; sys.stderr.write({said!r}); sys.exit(2)"], "toy1d")
    err = capsys.readouterr().err
    assert "toy1d exited 2" in err and "no such file" in err and "n/a (not an error)" in err


def test_a_smoke_run_of_the_hash_grid_is_smoke_sized(run_cli, tmp_path):
    r = run_cli("experiment=smoke", "method=hashgrid", "hydra.run.dir=run")
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert rec["params"] < 200_000, rec["params"]  # Instant-NGP's own sizes give 5.5 million on the image
    assert (tmp_path / "run" / "checkpoint.pt").stat().st_size < 5 * 2**20
