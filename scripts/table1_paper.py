"""Table 1's CT and MRI rows at the paper's own scale, from the runs that made them: docs/table1_paper/.

    python scripts/table1_paper.py --ct CT_DIR --mri MRI_DIR [--out docs/table1_paper]

CT_DIR holds one run directory per encoding (none, basic, posenc, gauss, grid) of
`ffrun experiment=paper_ct encoding=E task.data_seed=0` (512^2, 20 angles, 1000 full-batch steps); MRI_DIR the
same for `experiment=paper_mri task.volume=$FFRUN_DATA/mri/colin27_t1_brain.nii.gz` (96^3). A run that is not
there (or not completed) is a row marked so, with the step it reached. Writes table1_paper.md / .csv (ffrun
beside the authors' notebook numbers, seconds per step, wall time) and one gallery per task.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from ffrun.run.record import RunRecord, Status  # noqa: E402
from ffrun.sweep.gallery import gallery  # noqa: E402
from ffrun.sweep.paper import PAPER  # noqa: E402
from ffrun.sweep.runs import Run  # noqa: E402
from ffrun.sweep.tables import hms, write_table  # noqa: E402

ENCODINGS = ("none", "basic", "posenc", "gauss", "grid")


def rows_of(task: str, folder: Path | None) -> list[dict]:
    metric, paper = PAPER[task][0], PAPER[task][1]
    rows = []
    for enc in ENCODINGS:
        rec = RunRecord.read(folder / enc) if folder else None
        pub = paper.get(enc)
        row = {"task": task, "encoding": enc, "metric": metric, "paper": pub[0] if pub else None}
        if rec is None:
            row.update(status="not run")
        else:
            steps = max(1, int(rec.step or 0))
            row.update(status=str(rec.status), step=rec.step, value=rec.metric(metric), wall_s=rec.wall_s,
                       s_per_step=(rec.wall_s or 0) / steps, device=rec.device)
        rows.append(row)
    return rows


def verdict(rows: list[dict]) -> str:
    done = {r["encoding"]: r["value"] for r in rows if r["status"] == Status.COMPLETED and r["value"] is not None}
    if len(done) < len(rows):
        missing = [r["encoding"] for r in rows if r["encoding"] not in done]
        return f"not all encodings ran to the end ({', '.join(missing)} missing): no verdict on the whole ordering"
    ours = sorted(done, key=done.get)
    theirs = sorted((r["encoding"] for r in rows), key=lambda e: next(r["paper"] for r in rows if r["encoding"] == e))
    if ours == theirs:
        return "the paper's ordering holds: " + " < ".join(ours)
    return f"the paper's ordering does NOT hold: ffrun {' < '.join(ours)}; paper {' < '.join(theirs)}"


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ct", type=Path, default=None)
    ap.add_argument("--mri", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "table1_paper")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    header = ["task", "encoding", "metric", "ffrun", "paper", "difference", "status", "step", "s/step", "wall"]
    md = ["# Table 1 at the paper's scale: CT (512^2) and MRI (96^3)", "",
          "ffrun: one run per encoding (CT: the first test phantom; MRI: the Colin27 brain, the stand-in for the "
          "paper's ATLAS volumes); paper: the authors' notebooks. Seconds per step are wall time over steps on a "
          "2-core CPU, the run niced beside other work, so upper bounds.", "",
          "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    csv_rows, verdicts = [], []
    for task, folder in (("ct", args.ct), ("mri", args.mri)):
        rows = rows_of(task, folder)
        for r in rows:
            diff = r["value"] - r["paper"] if r.get("value") is not None and r["paper"] is not None else None
            cells = [task, r["encoding"], r["metric"], fmt(r.get("value"), ".2f"), fmt(r["paper"], ".2f"),
                     fmt(diff, "+.2f"), r["status"], fmt(r.get("step"), "d"), fmt(r.get("s_per_step"), ".2f"),
                     hms(r["wall_s"]) if r.get("wall_s") else "-"]
            md.append("| " + " | ".join(cells) + " |")
            csv_rows.append(cells)
        verdicts.append(f"- {task}: {verdict(rows)}")
        if folder:
            runs = [Run(task, "first item", r["encoding"], folder / r["encoding"]) for r in rows]
            gallery(args.out, task, runs, PAPER[task][0])
    md += ["", *verdicts, ""]
    write_table(args.out, "table1_paper", header, csv_rows, md)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
