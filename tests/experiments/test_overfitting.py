"""The overfitting study: onsets from the runs' histories, curves, table and verdict."""

import json

import pytest

from jaxreg import cli


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("overfitting")
    return workdir, cli.run("overfitting", ["smoke=true"], workdir=str(workdir))


def test_curve_stats_find_the_onset_and_the_rise():
    mod = cli.load_module("overfitting")
    loss, train = (1.0, 0.6, 0.5, 0.55, 0.7, 0.9), (0.3, 0.6, 0.8, 0.9, 0.95, 1.0)
    h = [
        {"epoch": e + 1, "val_loss": v, "train_accuracy": t, "val_accuracy": 0.7}
        for e, (v, t) in enumerate(zip(loss, train, strict=True))
    ]
    s = mod._curve_stats(h, patience=2)
    assert s["onset"] == 4 and (s["min_epoch"], s["min_val_loss"]) == (3, 0.5)
    assert s["rise"] == pytest.approx(0.4) and s["final_gap"] == pytest.approx(0.3)
    assert s["epochs_run"] == 6 and mod._curve_stats(h, patience=4)["onset"] is None


def test_report_has_onsets_curves_and_protocol(smoke_run):
    workdir, result = smoke_run
    summary = json.loads((workdir / "summary.json").read_text())
    assert {r["variant"] for r in summary["table_rows"]} == {"plain", "early_stopping", "all"}
    for row in summary["table_rows"]:
        assert row["onset epoch (seeds with onset)"].endswith("/2)")
        assert " @ " in row["min val loss @ epoch"]
    assert {"val_loss_curves.png", "curves_plain.png", "curves_all.png"} <= set(summary["figures"])
    for name in summary["figures"]:
        assert (workdir / name).stat().st_size > 1000, name
    assert "## Protocol" in (workdir / "report.md").read_text()
    verdict = result["verdict"]
    assert "Without regularization" in verdict and "all: " in verdict
    assert "this is a report, not a choice" in verdict


def test_unknown_variants_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown variants"):
        cli.run("overfitting", ["smoke=true", "variants=plain,bogus"], workdir=str(tmp_path))
