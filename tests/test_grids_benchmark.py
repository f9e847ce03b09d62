"""`ffrun-compare --benchmark grids`: the arguments and refusals, the plan (runs, overrides, folders; superres on
the images with originals alone), and the table written from fake run folders (means, the benchmark's
final/best rule, the tolerance verdict, the subset flag, the superres fit column, the files). Nothing trains."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import SHARED_DATA

from ffrun.apps import compare
from ffrun.run.record import RunRecord, Status
from ffrun.sweep import grids
from ffrun.sweep.commands import ffrun_command
from ffrun.sweep.grids import GridsPlan
from ffrun.util.atomic import write_png

# ---- arguments --------------------------------------------------------------------------------------------


def refused(capsys, *argv: str) -> str:
    """Run the command expecting a refusal: exit status 2 and one line on stderr, which is returned."""
    assert compare.main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("ffrun-compare: error: ")
    return err[0]


@pytest.fixture
def no_runs(monkeypatch):
    monkeypatch.setattr(compare, "execute", lambda *a, **k: pytest.fail("a run started"))
    monkeypatch.setattr(grids, "check_composes", lambda plan: pytest.fail("composed"))


@pytest.mark.parametrize("argv, says", [
    (["--benchmark", "fourier"], "--benchmark 'fourier': choose from grids"),
    (["--benchmark", "grids", "--protocols", "fit,inpaint"], "--protocols 'fit,inpaint': choose from"),
    (["--benchmark", "grids", "--protocols", ""], "--protocols '': choose from"),
    (["--benchmark", "grids", "--images", "0,10"], "--images '0,10': give image numbers 0..9"),
    (["--benchmark", "grids", "--images", "-1"], "--images '-1': give image numbers 0..9"),
    (["--benchmark", "grids", "--images", "zero"], "--images 'zero': give image numbers 0..9"),
    (["--benchmark", "grids", "--methods", "gauss,siren"], "--methods 'gauss,siren': the grids benchmark's methods"),
    (["--benchmark", "grids", "--methods", "hashgrid"], "are grid,siren,wire,ffn,ingp"),
    (["--benchmark", "grids", "--budgets", "1e4,x"], "--budgets '1e4,x': give numbers"),
    (["--benchmark", "grids", "--noise", "0"], "--noise '0': give the noise std"),
    (["--benchmark", "grids", "--noise", "nan"], "--noise 'nan': give the noise std"),
    (["--benchmark", "grids", "--protocols", "superres", "--images", "1,2"],
     "--protocols superres: the benchmark has originals only for images 0,6,7,9"),
    (["--benchmark", "grids", "--tasks", "image"], "--tasks does not apply to --benchmark grids"),
    (["--benchmark", "grids", "--scale", "cpu"], "--scale does not apply to --benchmark grids"),
    (["--benchmark", "grids", "method=grids/siren"], "'method=grids/siren': the grids benchmark sets this itself"),
    (["--benchmark", "grids", "model.params=5000"], "'model.params=5000': the grids benchmark sets this itself"),
    (["--benchmark", "grids", "task.noise_std=0.1"], "'task.noise_std=0.1': the grids benchmark sets this itself"),
    (["--benchmark", "grids", "device"], "'device' is not a Hydra override"),
    (["--protocols", "fit"], "--protocols applies only with --benchmark grids"),
    (["--images", "0"], "--images applies only with --benchmark grids"),
    (["--noise", "0.1"], "--noise applies only with --benchmark grids"),
    (["--tasks", "nope"], "--tasks 'nope': choose from image,"),  # without --benchmark: as before
])
def test_bad_arguments_get_one_line_and_exit_2(capsys, no_runs, argv, says):
    assert says in refused(capsys, *argv)


def test_missing_images_are_refused_before_any_run(capsys, no_runs, tmp_path):
    line = refused(capsys, "--benchmark", "grids", "--images", "3", "--data", str(tmp_path), "--out",
                   str(tmp_path / "out"))
    assert "images are missing" in line and "div2k_grids/x4/03.png" in line
    assert not (tmp_path / "out").exists()


def test_help_names_the_benchmark(capsys):
    with pytest.raises(SystemExit) as e:
        compare.main(["--help"])
    assert e.value.code == 0
    shown = capsys.readouterr().out
    assert "--benchmark" in shown and "--protocols" in shown and "--images" in shown and "--noise" in shown
    assert "--benchmark grids" in compare.__doc__


def test_defaults_and_choices():
    plan = compare.grids_plan(compare.parse(["--benchmark", "grids"]))
    assert plan == GridsPlan(("fit",), grids.METHODS, tuple(range(10)), (10_000, 30_000, 100_000), 0.05, ())
    args = compare.parse(["--benchmark", "grids", "--protocols", "denoise,fit,superres", "--methods", "siren,grid",
                          "--images", "9,0,6,6", "--budgets", "3e4,1e4", "--noise", "0.1", "device=cpu"])
    plan = compare.grids_plan(args)
    # the benchmark's order: fit first (superres reads the fit runs beside it)
    assert plan.protocols == ("fit", "superres", "denoise") and plan.methods == ("grid", "siren")
    assert plan.images == (0, 6, 9) and plan.budgets == (10_000, 30_000) and plan.noise == 0.1
    assert plan.extra == ("device=cpu",) and plan.subset


# ---- the plan ---------------------------------------------------------------------------------------------


def test_the_plan_runs_superres_only_on_images_with_originals(tmp_path):
    plan = GridsPlan(("fit", "superres", "denoise"), ("grid", "siren"), (0, 1, 6), (10_000, 100_000), 0.1,
                     ("device=cpu",))
    runs = grids.grids_runs(plan, tmp_path)
    per = {p: [r for r in runs if r.task == f"grids/{p}"] for p in plan.protocols}
    assert len(per["fit"]) == len(per["denoise"]) == 3 * 2 * 2
    assert len(per["superres"]) == 2 * 2 * 2
    assert {r.item.split("@")[0] for r in per["superres"]} == {"00", "06"}
    assert {r.item.split("@")[0] for r in per["fit"]} == {"00", "01", "06"}
    assert plan.images_of("superres") == (0, 6)
    by = {(r.task, r.item, r.encoding): r for r in runs}
    fit = by[("grids/fit", "01@10000", "siren")]
    assert fit.dir == tmp_path / "runs" / "grids" / "fit" / "01@10000" / "siren"
    assert fit.overrides == ["experiment=grids_div2k", "method=grids/siren", "task.image=div2k_grids:x4/01",
                             "task.protocol=fit", "model.params=10000", "trainer.progress=false", "device=cpu"]
    sr = by[("grids/superres", "06@100000", "grid")]
    assert sr.dir == tmp_path / "runs" / "grids" / "superres" / "06@100000" / "grid"
    assert sr.overrides == ["experiment=grids_div2k", "method=grids/grid", "task.image=div2k_grids:x4/06",
                            "task.protocol=superres", "model.params=100000", "trainer.progress=false",
                            "task.reference=div2k_grids:hr/06", "device=cpu"]
    dn = by[("grids/denoise", "00@10000", "grid")]
    assert dn.overrides[3:] == ["task.protocol=denoise", "model.params=10000", "trainer.progress=false",
                                "task.noise_std=0.1", "device=cpu"]
    assert not any("task.reference" in o or "noise_std" in o for r in per["fit"] for o in r.overrides)
    summary = "\n".join(grids.plan_summary(plan))
    assert "superres runs only on the images whose originals" in summary and "here 00, 06" in summary
    assert "a quick look" in summary


def test_a_group_launches_each_method_into_its_own_folder(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(grids.plans, "run_ffrun", lambda args, what: calls.append(args) or 0)
    plan = GridsPlan(("superres",), ("grid", "wire"), (7,), (30_000,))
    where = grids.sweep_dir(tmp_path, "superres", 7, 30_000)
    assert grids.launch_grids(plan, "superres", 7, 30_000, ["grid", "wire"], where, "basic") == 0
    assert len(calls) == 2
    for args, m in zip(calls, ("grid", "wire")):
        assert args[len(ffrun_command())] == "-m" and f"method=grids/{m}" in args
        assert "task.reference=div2k_grids:hr/07" in args
        assert f"hydra.sweep.dir={where}" in args and f"hydra.sweep.subdir={m}" in args
        # what Hydra runs is what the Run records (resume and the stale check compare these)
        assert grids.run_of(tmp_path, plan, "superres", 7, 30_000, m).overrides == \
            args[len(ffrun_command()) + 1:args.index(f"hydra.sweep.dir={where}")]
    calls.clear()
    monkeypatch.setattr(grids.plans, "run_ffrun", lambda args, what: calls.append(args) or 130)
    assert grids.launch_grids(plan, "superres", 7, 30_000, ["grid", "wire"], where, "basic") == 130
    assert len(calls) == 1  # a Ctrl-C stops the group


def test_missing_data_lists_the_files_the_plan_needs(tmp_path):
    plan = GridsPlan(("fit", "superres"), images=(0, 3))
    assert [p.relative_to(tmp_path).as_posix() for p in grids.missing_data(plan, tmp_path)] == [
        "images/div2k_grids/x4/00.png", "images/div2k_grids/x4/03.png", "images/div2k_grids/hr/00.png"]
    fake_images(tmp_path, (0, 3), (0,))
    assert grids.missing_data(plan, tmp_path) == []


def fake_images(data: Path, images, originals) -> None:
    for sub, which in (("x4", images), ("hr", originals)):
        for i in which:
            write_png(data / "images" / "div2k_grids" / sub / f"{i:02d}.png", np.zeros((4, 4, 3)))


# ---- the table --------------------------------------------------------------------------------------------


def fake_run(out: Path, plan: GridsPlan, protocol: str, image: int, budget: int, method: str, final: float | None,
             best: float | None, status: Status = Status.COMPLETED, reason: str | None = None,
             pictures: bool = False) -> None:
    """A finished run's folder as the job leaves it: metrics.json (through RunRecord) and the overrides Hydra
    records."""
    run = grids.run_of(out, plan, protocol, image, budget, method)
    extra = {"protocol": protocol}
    if best is not None:
        extra["best"] = {"step": 700, "test_psnr": best}
    RunRecord(status=status, reason=reason, task="image", params=budget - 7, wall_s=60.0 + image,
              sizes={"params": budget - 7, "benchmark_params": budget - 3},
              metrics={} if final is None else {"test_psnr": final}, primary_metric="test_psnr",
              extra=extra).write(run.dir)
    (run.dir / ".hydra").mkdir(exist_ok=True)
    (run.dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(run.overrides))
    if pictures:
        write_png(run.dir / "ground_truth.png", np.full((8, 8, 3), 0.5))
        write_png(run.dir / "reconstruction.png", np.full((8, 8, 3), 0.4))


FIT_GRID_10K = [21.82 + 0.02 * i for i in range(10)]  # mean 21.91, published 21.92: within 0.15
FIT_SIREN_BEST_10K = [21.0 + 0.1 * i for i in range(10)]  # mean 21.45, published 21.98: within 1
SR_GRID = {0: 19.0, 6: 19.5, 7: 20.0, 9: 20.5}  # mean 19.75


@pytest.fixture
def sweep(tmp_path):
    """Fake runs of fit (ten images) and superres (the four with originals) at 1e4 and 3e4, grid/siren/wire."""
    out = tmp_path / "out"
    plan = GridsPlan(("fit", "superres"), ("grid", "siren", "wire"), tuple(range(10)), (10_000, 30_000))
    for i in range(10):
        # grid: scored by its final iterate (its best is higher and must not count)
        fake_run(out, plan, "fit", i, 10_000, "grid", FIT_GRID_10K[i], FIT_GRID_10K[i] + 1.0)
        # the gallery: the first image at the largest budget
        fake_run(out, plan, "fit", i, 30_000, "grid", 23.80, 23.90, pictures=i == 0)  # 24.06 - 0.26: outside 0.15
        # siren: scored by its best evaluation (its final is lower and must not count)
        fake_run(out, plan, "fit", i, 10_000, "siren", 15.0, FIT_SIREN_BEST_10K[i])
        fake_run(out, plan, "fit", i, 30_000, "siren", 20.0, 23.0, pictures=i == 0)  # 23.93 - 0.93: within 1
        fake_run(out, plan, "fit", i, 10_000, "wire", 25.0, 19.0)  # 21.58 - 2.58: outside 1
        if i != 3:  # image 03 failed at 3e4: nine images scored, no verdict
            fake_run(out, plan, "fit", i, 30_000, "wire", 24.0, 24.1)
        else:
            fake_run(out, plan, "fit", i, 30_000, "wire", None, None, status=Status.FAILED, reason="out of memory")
    for i, v in SR_GRID.items():
        fake_run(out, plan, "superres", i, 10_000, "grid", v, v + 0.5)
        fake_run(out, plan, "superres", i, 10_000, "siren", v - 1.0, v)
        fake_run(out, plan, "superres", i, 10_000, "wire", v, None)  # an INR without `best`: not scored
    return out, plan


def rows_of(table, protocol):
    return {(r.method, r.budget): r for r in table[protocol]}


def test_the_table_scores_grid_by_final_and_inrs_by_best(sweep):
    out, plan = sweep
    runs = grids.grids_runs(plan, out)
    table = grids.collect_grids(runs, plan, out)
    fit = rows_of(table, "fit")
    grid = fit[("grid", 10_000)]
    assert len(grid.images) == 10
    assert grid.final == pytest.approx(21.91) and grid.best == pytest.approx(22.91)
    assert grid.score == pytest.approx(21.91) and grid.published == 21.92
    assert grid.difference == pytest.approx(-0.01) and grid.verdict == "yes"
    assert fit[("grid", 30_000)].score == pytest.approx(23.80) and fit[("grid", 30_000)].verdict == "no"
    siren = fit[("siren", 10_000)]
    assert siren.final == pytest.approx(15.0) and siren.best == pytest.approx(21.45)
    assert siren.score == pytest.approx(21.45) and siren.difference == pytest.approx(21.45 - 21.98)
    assert siren.verdict == "yes"
    assert fit[("siren", 30_000)].verdict == "yes"  # 0.93 below, within 1 dB
    assert fit[("wire", 10_000)].score == pytest.approx(19.0) and fit[("wire", 10_000)].verdict == "no"
    wire = fit[("wire", 30_000)]
    assert wire.images == [i for i in range(10) if i != 3] and wire.score == pytest.approx(24.1)
    assert wire.verdict == "-"  # nine of the ten images: no verdict
    assert any("03: failed: out of memory" in n for n in wire.notes)


def test_superres_shows_the_fit_score_on_the_same_four_images(sweep):
    out, plan = sweep
    table = grids.collect_grids(grids.grids_runs(plan, out), plan, out)
    sr = rows_of(table, "superres")
    grid = sr[("grid", 10_000)]
    assert sorted(grid.images) == [0, 6, 7, 9]
    assert grid.score == pytest.approx(19.75) and grid.published == 19.70
    assert grid.verdict == "-"  # the published mean covers ten images, the originals four
    fit_mean, n = grid.fit_same
    assert n == 4 and fit_mean == pytest.approx(statistics.fmean(FIT_GRID_10K[i] for i in (0, 6, 7, 9)))
    siren = sr[("siren", 10_000)]
    assert siren.score == pytest.approx(19.75) and siren.final == pytest.approx(18.75)
    assert siren.fit_same[0] == pytest.approx(statistics.fmean(FIT_SIREN_BEST_10K[i] for i in (0, 6, 7, 9)))
    wire = sr[("wire", 10_000)]
    assert wire.images == [] and wire.score is None and wire.verdict == "-"
    assert any("without a best evaluation" in n for n in wire.notes)
    assert sr[("grid", 30_000)].images == []  # not run: an empty row


def test_a_subset_of_images_gets_no_verdict(sweep):
    out, _ = sweep
    plan = GridsPlan(("fit",), ("grid", "siren"), (0, 6), (10_000,))
    table = grids.collect_grids(grids.grids_runs(plan, out), plan, out)
    grid = rows_of(table, "fit")[("grid", 10_000)]
    assert grid.images == [0, 6] and grid.score == pytest.approx((21.82 + 21.94) / 2)
    assert grid.difference is not None and grid.verdict == "-"
    md = grids.write_grids_tables(out, table, plan)
    assert "a quick look at a subset" in md


def test_a_run_of_another_protocol_is_not_scored(tmp_path):
    plan = GridsPlan(("fit",), ("grid",), (0,), (10_000,))
    fake_run(tmp_path, plan, "fit", 0, 10_000, "grid", 30.0, 30.0)
    rec_dir = grids.run_of(tmp_path, plan, "fit", 0, 10_000, "grid").dir
    rec = RunRecord.read(rec_dir)
    rec.extra["protocol"] = "denoise"
    rec.write(rec_dir)
    row = rows_of(grids.collect_grids(grids.grids_runs(plan, tmp_path), plan, tmp_path), "fit")[("grid", 10_000)]
    assert row.images == [] and "recorded protocol 'denoise'" in row.notes[0]


def test_the_files_md_csv_plot_and_gallery(sweep):
    out, plan = sweep
    text = grids.report(out, plan, grids.grids_runs(plan, out), wall_s=12.0)
    for name in ("grids_fit.md", "grids_fit.csv", "grids_superres.md", "grids_superres.csv",
                 "grids_budget_fit.png", "grids_budget_superres.png", "gallery_grids_fit.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*.tmp"))  # written atomically, nothing left behind
    assert not (out / "gallery_grids_superres.png").exists()  # its runs have no pictures
    md = (out / "grids_fit.md").read_text()
    assert md in text and "voilalab/INR-benchmark" in md
    assert "| Grid | 10,000 | 10/10 | 21.91 | 22.91 | 21.91 (final) | 21.92 | -0.01 | yes | 9993 / 9997 |" in md
    assert "| SIREN | 10,000 | 10/10 | 15.00 | 21.45 | 21.45 (best) | 21.98 | -0.53 | yes |" in md
    assert "| WIRE | 30,000 | 9/10 |" in md and "out of memory" in md
    sr_md = (out / "grids_superres.md").read_text()
    assert "fit, same images" in sr_md and "originals" in sr_md
    rows = list(csv.DictReader((out / "grids_fit.csv").open()))
    assert list(rows[0]) == grids.HEADER
    got = {(r["method"], int(r["budget"])): r for r in rows}
    assert len(got) == 6
    g = got[("grid", 10_000)]
    assert (g["images"], g["scored_by"], g["within_tolerance"], g["tolerance"]) == ("10", "final", "yes", "0.15")
    assert float(g["ffrun_score"]) == pytest.approx(21.91) and float(g["published"]) == 21.92
    assert float(g["difference"]) == pytest.approx(-0.01, abs=1e-4)
    assert g["params"] == "9993" and g["benchmark_params"] == "9997" and g["fit_score_same_images"] == ""
    assert got[("siren", 10_000)]["scored_by"] == "best" and got[("wire", 10_000)]["within_tolerance"] == "no"
    assert got[("wire", 30_000)]["within_tolerance"] == ""  # no verdict (a leading - would be quoted in CSV)
    sr = {(r["method"], int(r["budget"])): r for r in csv.DictReader((out / "grids_superres.csv").open())}
    assert sr[("grid", 10_000)]["fit_images"] == "4" and sr[("grid", 10_000)]["within_tolerance"] == ""
    assert float(sr[("grid", 10_000)]["fit_score_same_images"]) == pytest.approx(
        statistics.fmean(FIT_GRID_10K[i] for i in (0, 6, 7, 9)), abs=1e-4)


def test_denoise_has_no_published_column(tmp_path):
    plan = GridsPlan(("denoise",), ("grid",), tuple(range(10)), (10_000,), 0.1)
    for i in range(10):
        fake_run(tmp_path, plan, "denoise", i, 10_000, "grid", 25.0, 25.5)
    text = grids.report(tmp_path, plan, grids.grids_runs(plan, tmp_path))
    assert "noise std 0.1" in text and "No published denoising numbers" in text
    assert "| Grid | 10,000 | 10/10 | 25.00 | 25.50 | 25.00 (final) | - | - | - |" in text
    assert (tmp_path / "grids_budget_denoise.png").is_file()


def test_the_published_table_is_the_papers():
    assert grids.PUBLISHED["fit"]["grid"][1_000_000] == 149.73
    assert grids.PUBLISHED["fit"]["ingp"][3_000_000] == 63.21
    assert grids.PUBLISHED["superres"]["wire"][10_000] == 19.45
    assert grids.PUBLISHED["superres"]["ffn"][3_000_000] == 22.78
    assert grids.PUBLISHED["denoise"] == {}
    for protocol in ("fit", "superres"):
        assert set(grids.PUBLISHED[protocol]) == set(grids.METHODS)
        assert all(list(v) == list(grids.PUBLISHED_BUDGETS) for v in grids.PUBLISHED[protocol].values())
    assert grids.tolerance("grid") == 0.15 and grids.tolerance("ffn") == 1.0
    assert [grids.scored_by(m) for m in grids.METHODS] == ["final", "best", "best", "best", "best"]


def test_the_command_end_to_end_without_training(tmp_path, monkeypatch, capsys):
    """main(): the plan's runs go to execute() with a launcher per group; the tables are printed and written."""
    data = tmp_path / "data"
    fake_images(data, range(10), grids.ORIGINALS)
    monkeypatch.setattr(grids, "check_composes", lambda plan: None)
    monkeypatch.setenv("FFRUN_DATA", str(data))  # restored after the test (--data sets it)
    seen = {}

    def execute(runs, launch_group, what):
        seen["runs"] = runs
        launched = []
        monkeypatch.setattr(grids.plans, "run_ffrun", lambda args, what: launched.append(args) or 0)
        first = runs[0]
        assert launch_group(first.task, first.item, [r for r in runs if r.item == first.item
                                                     and r.task == first.task]) == 0
        seen["launched"] = launched
        plan = GridsPlan(("fit", "superres"), ("grid", "siren"), (0, 6), (10_000,))
        for r in runs:  # the runs finish
            image, budget = grids.image_budget(r)
            fake_run(tmp_path / "out", plan, grids.protocol_of(r), image, budget, r.encoding, 20.0, 21.0)
        return [], False, 1.0

    monkeypatch.setattr(compare, "execute", execute)
    code = compare.main(["--benchmark", "grids", "--protocols", "superres,fit", "--methods", "siren,grid",
                         "--images", "0,6", "--budgets", "1e4", "--data", str(data), "--out", str(tmp_path / "out")])
    assert code == 0
    runs = seen["runs"]
    assert [(r.task, r.item, r.encoding) for r in runs] == [
        ("grids/fit", "00@10000", "grid"), ("grids/fit", "00@10000", "siren"),
        ("grids/fit", "06@10000", "grid"), ("grids/fit", "06@10000", "siren"),
        ("grids/superres", "00@10000", "grid"), ("grids/superres", "00@10000", "siren"),
        ("grids/superres", "06@10000", "grid"), ("grids/superres", "06@10000", "siren")]
    assert len(seen["launched"]) == 2
    shown = capsys.readouterr().out
    assert "superres runs only on the images whose originals" in shown
    assert "| SIREN | 10,000 | 2/2 | 20.00 | 21.00 | 21.00 (best) | 21.98 | -0.98 | - |" in shown
    assert (tmp_path / "out" / "grids.json").is_file() and (tmp_path / "out" / "grids_superres.md").is_file()


def test_report_only_trains_nothing_and_needs_runs(tmp_path, capsys):
    from ffrun.apps import compare

    assert compare.main(["--benchmark", "grids", "--report-only", "--data", str(SHARED_DATA), "--out",
                         str(tmp_path / "none")]) == 2
    assert "holds no runs" in capsys.readouterr().err or not (SHARED_DATA / "images" / "div2k_grids").is_dir()
    assert compare.main(["--report-only", "--out", str(tmp_path / "none")]) == 2  # only with --benchmark
    assert "--report-only applies only with --benchmark" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED_DATA / "images" / "div2k_grids").is_dir(), reason="needs the benchmark's images")
def test_report_only_over_runs_made_with_other_settings_is_refused_naming_them(tmp_path, capsys):
    plan = GridsPlan(("denoise",), ("grid",), (0,), (10_000,), 0.05)
    out = tmp_path / "out"
    fake_run(out, plan, "denoise", 0, 10_000, "grid", 25.0, 25.0)
    args = ["--benchmark", "grids", "--report-only", "--protocols", "denoise", "--methods", "grid", "--images", "0",
            "--budgets", "1e4", "--data", str(SHARED_DATA), "--out", str(out)]
    assert compare.main([*args, "--noise", "0.05"]) == 0  # the settings the run was made with
    assert "25.00" in capsys.readouterr().out
    assert compare.main([*args, "--noise", "0.1"]) == 2  # another noise level: its score is not of this table
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 of 1 runs" in err[0] and "made with other settings" in err[0], err
    assert "task.noise_std=0.05 -> task.noise_std=0.1" in err[0], err


# ---- earlier results (--results) ----------------------------------------------------------------------------


def test_a_table_assembled_from_two_sittings_equals_the_one_of_all_runs(sweep, tmp_path):
    """The per-image file of a first sitting, read back beside the runs of a second, gives the same rows as all
    the runs in one folder; the table names the file of each earlier cell."""
    out, plan = sweep
    whole = grids.collect_grids(grids.grids_runs(plan, out), plan, out)
    grids.write_grids_tables(out, whole, plan)
    lines = list(csv.DictReader(open(out / "grids_fit_images.csv")))
    assert len(lines) == 10 * 5 + 9  # every scored image; wire's failed 03 @ 3e4 holds no line
    siren0 = next(r for r in lines if r["method"] == "siren" and r["budget"] == "10000" and r["image"] == "00")
    assert float(siren0["final"]) == 15.0 and float(siren0["best"]) == 21.0 and siren0["overrides"] == ""
    # the second sitting: images 05..09 of siren @ 1e4 only, in a fresh folder
    second = tmp_path / "second"
    for i in range(5, 10):
        fake_run(second, plan, "fit", i, 10_000, "siren", 14.0, FIT_SIREN_BEST_10K[i])  # finals differ: runs win
    earlier = grids.load_earlier([out / "grids_fit_images.csv"], plan.noise, plan.extra)
    part = grids.collect_grids(grids.grids_runs(plan, second), plan, second, earlier)
    a, b = rows_of(whole, "fit"), rows_of(part, "fit")
    for key in a:
        assert b[key].images == a[key].images and b[key].score == pytest.approx(a[key].score), key
    assert b[("siren", 10_000)].final == pytest.approx((15.0 * 5 + 14.0 * 5) / 10)  # 05..09 from the runs
    assert b[("siren", 10_000)].sources == ["grids_fit_images.csv: 00, 01, 02, 03, 04"]
    assert b[("siren", 10_000)].wall_s == pytest.approx(sum(60.0 + i for i in range(10)))  # earlier times kept
    md, _ = grids.protocol_table("fit", part["fit"], plan)
    assert "- SIREN @ 10,000: grids_fit_images.csv: 00, 01, 02, 03, 04" in md
    # a run here wins even when it failed: its reason shows, not the earlier result
    fake_run(second, plan, "fit", 0, 10_000, "siren", None, None, status=Status.FAILED, reason="diverged")
    again = rows_of(grids.collect_grids(grids.grids_runs(plan, second), plan, second, earlier), "fit")
    assert 0 not in again[("siren", 10_000)].images and any("diverged" in n for n in again[("siren", 10_000)].notes)
    # other overrides measured something else: not taken
    other = grids.load_earlier([out / "grids_fit_images.csv"], plan.noise, ("trainer.steps=10",))
    assert other.images == {} and other.rows == {}


def test_an_earlier_table_fills_only_rows_with_no_image_run(sweep, tmp_path):
    out, plan = sweep
    grids.write_grids_tables(out, grids.collect_grids(grids.grids_runs(plan, out), plan, out), plan)
    second = tmp_path / "second"
    fake_run(second, plan, "fit", 0, 10_000, "grid", 30.0, 30.0)  # one image run: the row is this folder's
    earlier = grids.load_earlier([out / "grids_fit.csv"], plan.noise, plan.extra)
    fit = rows_of(grids.collect_grids(grids.grids_runs(plan, second), plan, second, earlier), "fit")
    assert fit[("grid", 10_000)].images == [0] and fit[("grid", 10_000)].score == 30.0
    siren = fit[("siren", 10_000)]  # nothing run: the earlier row, its means and verdict
    assert siren.images == list(range(10)) and siren.score == pytest.approx(21.45) and siren.verdict == "yes"
    assert siren.notes == [] and siren.sources[0].startswith("grids_fit.csv: the whole row")
    assert fit[("wire", 30_000)].images == [i for i in range(10) if i != 3]


@pytest.mark.parametrize("text, says", [
    ("protocol,method\nfit,grid\n", "neither a grids_<protocol>_images.csv nor a grids_<protocol>.csv"),
    (",".join(grids.IMAGE_HEADER) + "\nfit,grid,1e4,11,,20,20,1,1,1,\n", "image '11' is not one of"),
    (",".join(grids.IMAGE_HEADER) + "\nfit,grid,10000,00,,twenty,20,1,1,1,\n", "line 2 final: 'twenty' is not a"),
    (",".join(grids.IMAGE_HEADER) + "\ninpaint,grid,10000,00,,20,20,1,1,1,\n", "protocol 'inpaint' is not one"),
    (",".join(grids.IMAGE_HEADER) + "\nfit,grid,10000,00,,nan,20,1,1,1,\n", "'nan' is not a finite number"),
])
@pytest.mark.skipif(not (SHARED_DATA / "images" / "div2k_grids").is_dir(), reason="needs the benchmark's images")
def test_bad_earlier_results_get_one_line(tmp_path, capsys, no_runs, text, says):
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    line = refused(capsys, "--benchmark", "grids", "--report-only", "--results", str(bad), "--data",
                   str(SHARED_DATA), "--out", str(tmp_path / "out"))
    assert says in line and str(bad) in line, line


@pytest.mark.skipif(not (SHARED_DATA / "images" / "div2k_grids").is_dir(), reason="needs the benchmark's images")
def test_report_only_from_earlier_results_alone(sweep, tmp_path, capsys, monkeypatch):
    out, plan = sweep
    grids.write_grids_tables(out, grids.collect_grids(grids.grids_runs(plan, out), plan, out), plan)
    monkeypatch.setattr(grids, "check_composes", lambda plan: None)
    assert refused(capsys, "--benchmark", "grids", "--report-only", "--results", str(tmp_path / "nope.csv"),
                   "--data", str(SHARED_DATA), "--out", str(tmp_path / "x")).endswith("nope.csv: no such file")
    new = tmp_path / "assembled"
    assert compare.main(["--benchmark", "grids", "--report-only", "--methods", "grid,siren,wire", "--budgets",
                         "1e4,3e4", "--results", str(out / "grids_fit_images.csv"), "--data", str(SHARED_DATA),
                         "--out", str(new)]) == 0
    shown = capsys.readouterr().out
    assert "| SIREN | 10,000 | 10/10 | 15.00 | 21.45 | 21.45 (best) | 21.98 | -0.53 | yes |" in shown
    assert (new / "grids_fit_images.csv").read_text() == (out / "grids_fit_images.csv").read_text()
    assert "| 9747" not in shown and "| 0:10:45 |" in shown  # 10 x 60 s + 0..9 s: the row's run time


def test_runs_with_earlier_results_are_not_trained_again(sweep, tmp_path):
    out, plan = sweep
    grids.write_grids_tables(out, grids.collect_grids(grids.grids_runs(plan, out), plan, out), plan)
    lines = (out / "grids_fit_images.csv").read_text().splitlines()
    part = tmp_path / "part_images.csv"  # siren @ 1e4, images 00..04 only
    part.write_text("\n".join([lines[0], *[x for x in lines[1:] if x.startswith("fit,siren,10000,0")
                                           and int(x.split(",")[3]) < 5]]) + "\n")
    table = tmp_path / "table.csv"  # the whole fit table: rows count whole
    table.write_text((out / "grids_fit.csv").read_text())
    second = tmp_path / "second"
    fake_run(second, plan, "fit", 9, 10_000, "grid", 30.0, 30.0)  # the grid row has a run here: not carried
    fit_plan = GridsPlan(("fit",), plan.methods, plan.images, plan.budgets)
    runs = grids.grids_runs(fit_plan, second)
    earlier = grids.load_earlier([part, table], fit_plan.noise, fit_plan.extra)
    todo = {(r.encoding, r.item) for r in grids.to_run(runs, earlier, fit_plan)}
    assert ("grid", "09@10000") in todo  # its own run (done: execute skips it)
    assert {("grid", f"{i:02d}@10000") for i in range(9)} <= todo  # its row is this folder's now
    # siren @ 1e4: 00-04 from the per-image file; the row then is per-image, so 05-09 are run (not the table's)
    assert {item for m, item in todo if m == "siren"} == {f"{i:02d}@10000" for i in range(5, 10)}
    assert ("wire", "03@30000") in todo  # the table's wire row at 3e4 lacks image 03
    assert not any(m == "wire" and item != "03@30000" for m, item in todo)
    assert grids.to_run(runs, grids.Earlier.none(), fit_plan) == runs
    # a subset of the images: a ten-image row stands for none of them, in the table and in what is run
    quick = GridsPlan(("fit",), ("siren",), (0, 6), (10_000,))
    table_only = grids.load_earlier([table], quick.noise, quick.extra)
    quick_runs = grids.grids_runs(quick, tmp_path / "third")
    assert grids.to_run(quick_runs, table_only, quick) == quick_runs
    assert rows_of(grids.collect_grids(quick_runs, quick, tmp_path / "third", table_only), "fit")[
        ("siren", 10_000)].images == []
