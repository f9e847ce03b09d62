"""Regenerate the README's example summary table ("Sweeps and the summary") from the command it shows.

    python scripts/readme_example.py             # run the sweep and ffrun-summary, rewrite the README block
    python scripts/readme_example.py --check     # only say whether the README block is the current format

The block lies between the markers below; the line before the table names the command. Values differ from
machine to machine (wall_s above all); tests/test_readme_example.py checks that the block has the columns
and format `ffrun-summary` writes today and shows this script's command.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from ffrun.sweep.commands import multirun_command

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BEGIN = "<!-- readme-example: begin (scripts/readme_example.py writes this block) -->"
END = "<!-- readme-example: end -->"
# The README's sweep (encoding=gauss sigma=1,10,100) at the smoke size, two seeds. Only gauss: an encoding without a
# sigma swept over sigmas would train the same run once per sigma.
OVERRIDES = ["experiment=smoke", "encoding=gauss", "sigma=1,10,100", "seed=0,1"]
COMMAND = "ffrun -m " + " ".join(OVERRIDES)


def block(table: str) -> str:
    return f"{BEGIN}\nExample (`{COMMAND}`, then `ffrun-summary`):\n\n```\n{table.strip()}\n```\n{END}"


def readme_block(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


def summary_table(extra: list[str] = (), sweep: Path | None = None) -> str:
    """Run the command (plus `extra` overrides) into a fresh folder and return ffrun-summary's table."""
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        sweep = Path(tmp) / "sweep"
        subprocess.run(multirun_command([*OVERRIDES, *extra], sweep, program=[str(bin_dir / "ffrun")]), cwd=tmp,
                       check=True, capture_output=True, text=True)
        subprocess.run([str(bin_dir / "ffrun-summary"), str(sweep)], cwd=tmp, check=True, capture_output=True)
        md = (sweep / "summary.md").read_text()
    return "\n".join(ln for ln in md.splitlines() if ln.startswith("|"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    text = README.read_text()
    if args.check:
        print(readme_block(text))
        return 0
    new = block(summary_table())
    README.write_text(text.replace(readme_block(text), new))
    print(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
