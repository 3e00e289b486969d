"""The regularization study smoke-runs end to end and writes a complete report."""

import json
import re

import pytest

from jaxreg import cli


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("regularization")
    result = cli.run("regularization", ["smoke=true"], workdir=str(workdir))
    return workdir, result


def test_report_summary_and_figures_exist(smoke_run):
    workdir, _result = smoke_run
    assert (workdir / "report.md").is_file()
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["smoke"] is True
    assert {"val_curves.png", "test_ece.png", "primary.png"} <= set(summary["figures"])
    for name in summary["figures"]:
        assert (workdir / name).stat().st_size > 1000, name
    for variant in ("none", "l1_prox", "early_stopping"):
        assert (workdir / variant / "seed0" / "metrics.jsonl").is_file()
        assert (workdir / variant / "seed1" / "metrics.jsonl").is_file()


def test_table_has_every_variant_with_mean_and_std(smoke_run):
    workdir, _result = smoke_run
    summary = json.loads((workdir / "summary.json").read_text())
    rows = {r["variant"]: r for r in summary["table_rows"]}
    assert set(rows) == {"none", "l1_prox", "early_stopping"}
    assert rows["l1_prox"]["settings"] == "l1_prox=1" and rows["none"]["settings"] == "-"
    for row in rows.values():
        assert row["n"] == 2
        for key in ("test_accuracy", "test_ece", "zero_fraction", "best_epoch"):
            assert re.fullmatch(r"-?\d+\.\d+ ± \d+\.\d+", row[key]), (key, row[key])
    assert re.fullmatch(r"0\.\d{4} ± 0\.\d{4}", rows["l1_prox"]["zero_fraction"])
    assert rows["l1_prox"]["expected"] == "no change beyond noise"
    md = (workdir / "report.md").read_text()
    for name in rows:
        assert f"| {name} |" in md
    for heading in ("## Expectation vs measurement", "## Protocol", "Per-seed results"):
        assert heading in md


def test_zero_fraction_prox_positive_baseline_zero(smoke_run):
    _, result = smoke_run
    per_variant = {}
    for r in result["rows"]:
        per_variant.setdefault(r["variant"], []).append(r["zero_fraction"])
    assert all(z > 0 for z in per_variant["l1_prox"]), per_variant
    assert all(z == 0 for z in per_variant["none"]), per_variant


def test_verdict_is_generated_from_the_numbers(smoke_run):
    workdir, result = smoke_run
    verdict = result["verdict"]
    base = next(t for t in result["table"] if t["variant"] == "none")
    prox = next(t for t in result["table"] if t["variant"] == "l1_prox")
    assert "(vs none)" in verdict and prox["delta_test_accuracy"] in verdict
    assert f"the baseline has {base['test_ece_mean']:.3f}" in verdict
    assert f"l1_prox {prox['zero_fraction_mean'] * 100:.1f} %" in verdict
    # two epochs: the side checks of none and early_stopping cannot hold, and say so
    assert "side checks disagree with the expectation for none" in verdict
    assert json.loads((workdir / "summary.json").read_text())["verdict"].endswith(verdict)


def test_unknown_variant_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown variants"):
        cli.run("regularization", ["smoke=true", "variants=none,bogus"], workdir=str(tmp_path))
