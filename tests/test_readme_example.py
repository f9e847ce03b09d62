"""The README's example summary table is what `ffrun-summary` writes for the command shown beside it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import readme_example  # noqa: E402

CELL = re.compile(r"^(-|[-+0-9.e]+( ± [-+0-9.e]+)?)$")


def rows(table: str) -> list[list[str]]:
    return [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in table.splitlines() if ln.startswith("|")]


def test_readme_block_matches_a_fresh_sweep():
    block = readme_example.readme_block((ROOT / "README.md").read_text())
    assert f"Example (`{readme_example.COMMAND}`, then `ffrun-summary`)" in block  # the command that was run
    shown = rows(block)
    fresh = rows(readme_example.summary_table(["trainer.steps=2"]))
    assert shown[0] == fresh[0] and shown[1] == fresh[1]  # the same columns, in the same order
    assert [r[:4] for r in shown[2:]] == [r[:4] for r in fresh[2:]]  # the same settings and run counts
    for r in shown[2:]:
        assert all(CELL.match(c) for c in r[4:]), r  # numbers as ffrun-summary formats them
