"""A table's note is cut at a word boundary, so a number in it is never shortened into another number."""
from ffrun.sweep.tables import clipped


def test_a_long_reason_is_cut_between_words_and_marked():
    reason = ("stopped by SIGTERM at step 295; resume with: ffrun experiment=grids_div2k method=grids/ingp "
              "'task.image=div2k_grids\\:x4/06' task.protocol=fit model.params=100000 trainer.progress=False")
    out = clipped(reason)
    assert len(out) <= 160 and out.endswith(" ...")
    assert "model.params=10000" not in out.replace("model.params=100000", "")  # no number cut short
    assert reason.startswith(out[:-4])


def test_a_short_reason_is_kept_on_one_line():
    assert clipped("diverged:\n  loss nan at step 12") == "diverged: loss nan at step 12"
    assert clipped("x" * 200, 50) == "x" * 46 + " ..."
