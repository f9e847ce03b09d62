"""Fuzz ffrun's command-line tools and Python API as a hostile or careless user would, and classify each outcome.

    python scripts/fuzz.py                       # every case; writes the table to docs/fuzz.md
    python scripts/fuzz.py --only ffrun-export   # the cases whose command starts so
    python scripts/fuzz.py --section careless    # the cases of one section of scripts/fuzz_cases.py
    python scripts/fuzz.py --out /tmp/fuzz.md --limit 10

Each case (scripts/fuzz_cases.py) is a command (`ffrun ...`, `ffrun-summary ...`, ..., or `python: <call>` for
the API) and the class expected of it: `refuse` (exit status 2 and one line on stderr naming the problem; for
the API, an FfrunError), `complete` (exit status 0 and the outputs the command promises) or `interrupt` (exit
status 130 after Ctrl-C, its checkpoint and record kept). Outcomes:

- ok: as expected
- traceback: "Traceback" on stderr (or, for the API, an exception other than FfrunError)
- wrong: a refusal was expected and the command succeeded (a bad value accepted silently)
- lost: an output the command promises (or a refusal or interruption must keep) is missing
- unclear: the expected outcome, but the line the user saw lacks what it must say (the fix, the syntax)
- exit N: another exit status than the expected one

Cases run one at a time, each in a child forked from one process that has imported ffrun and torch (a fresh
interpreter per case would spend most of the time importing torch), in its own temporary folder, on one
CPU thread, with sizes small enough that the whole table takes minutes on a 2-core CPU. A case about how a
process ends (signals, the interpreter's shutdown) runs the real console script from its child instead.
The files the cases craft, and the helpers that make them, are in scripts/fuzz_files.py.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from fuzz_cases import SECTIONS, Case, cases
from fuzz_files import entry

ROOT = Path(__file__).resolve().parents[1]
__all__ = ["Case", "cases", "classify", "remove_case_files", "run_case"]


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
            os.environ.update(case.env)
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
            elif case.runner:
                code = case.runner(folder, _argv(case))
            else:
                argv = _argv(case)
                sys.argv = argv
                try:
                    ret = entry(argv[0])()
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
    expected = {"refuse": 2, "complete": 0, "interrupt": 130}[case.expect]
    if case.expect == "refuse" and r["rc"] == 0:
        shown = said or "".join(r["stdout"].strip().splitlines()[-1:]) or "accepted"
        return "wrong", f"exit 0: {shown[:150]}"
    if r["rc"] != expected:
        return f"exit {r['rc']}", said
    missing = [g for g in case.outputs if not any(r["folder"].glob(g))]
    if missing:
        return "lost", "missing " + ", ".join(missing)
    status = {"complete": "completed", "interrupt": "interrupted"}.get(case.expect)
    if case.tool == "ffrun" and status:
        for m in r["folder"].glob("**/metrics.json"):
            if json.loads(m.read_text()).get("status") != status:
                return "lost", f"{m.relative_to(r['folder'])}: status {json.loads(m.read_text()).get('status')}"
    if case.says and case.says not in (lines[-1] if lines else ""):
        return "unclear", said
    return "ok", said


# Why a case still fails, where that is known (shown under "Remaining").
NOTES: dict[str, str] = {}


def table(results: list[tuple[Case, str, str, dict]]) -> str:
    counts: dict[str, int] = {}
    for _, outcome, _, _ in results:
        key = outcome if outcome in ("ok", "traceback", "wrong", "lost", "unclear", "timeout") else "other exit"
        counts[key] = counts.get(key, 0) + 1
    tools = sorted({c.tool for c, *_ in results})
    lines = ["# Fuzz table", "",
             "Generated by `python scripts/fuzz.py` (every case run one after another on a 2-core CPU, one thread; "
             "`tests/test_fuzz.py` reruns a sample of it). Expected: `refuse` = exit status 2 with one line naming "
             "the problem (the API: an FfrunError), `complete` = exit 0 with the promised outputs, `interrupt` = "
             "exit 130 after Ctrl-C with the checkpoint kept.", "",
             f"Cases: {len(results)} over {', '.join(tools)}. "
             f"ok: {counts.get('ok', 0)}, tracebacks: {counts.get('traceback', 0)}, wrong results: "
             f"{counts.get('wrong', 0)}, lost outputs: {counts.get('lost', 0)}, unclear messages: "
             f"{counts.get('unclear', 0)}, timeouts: {counts.get('timeout', 0)}, "
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
    """A case's folder and its captured output, once classified: a run of the table leaves nothing in /tmp
    (folders a case made read-only are made writable again first)."""

    def writable_again(func, path, exc_info) -> None:
        os.chmod(os.path.dirname(path), 0o755)
        func(path)

    shutil.rmtree(result["folder"], onerror=writable_again)
    for suffix in (".out", ".err"):
        Path(str(result["folder"]) + suffix).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "fuzz.md")
    p.add_argument("--only", default=None, help="only the cases whose command starts with this")
    p.add_argument("--section", default=None, choices=sorted(SECTIONS),
                   help="only the cases of one section (careless: the mistakes of issue 28, item 7)")
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

    selected = [c for c in cases(args.section) if not args.only or c.command.startswith(args.only)][: args.limit]
    results = []
    for i, case in enumerate(selected):
        r = run_case(case, args.timeout)
        outcome, said = classify(case, r)
        results.append((case, outcome, said, r))
        remove_case_files(r)
        print(f"[{i + 1}/{len(selected)}] {outcome:9s} {r['seconds']:5.1f}s {case.command[:90]} -> {said[:100]}",
              flush=True)
    if own_cache:
        shutil.rmtree(own_cache, ignore_errors=True)
    args.out.write_text(table(results))
    bad = sum(o != "ok" for _, o, _, _ in results)
    print(f"{len(results)} cases, {bad} not ok; table in {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
