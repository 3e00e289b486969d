"""Issue #5 experiments smoke-run in-process, write complete reports, and the HTML index lists them."""

import json
import re

import numpy as np
import pytest

from jaxreg import cli, report

# how_many, overfitting and domain_fit have their own test modules (tests/experiments/test_<name>.py)
EXPERIMENTS = ("augmentation_ablation", "when_to_augment")
NUMBER = re.compile(r"[-+]?\d+\.\d+")


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    """One smoke run of every experiment under a shared root (they share the XLA cache there)."""
    root = tmp_path_factory.mktemp("issue5")
    results = {}
    for name in EXPERIMENTS:
        module = cli.load_module(name)
        config = module.get_config()
        config.smoke = True
        results[name] = module.run(config, str(root / name))
    return root, results


def _summary(root, name):
    return json.loads((root / name / "summary.json").read_text())


def test_listed_with_first_docstring_line():
    listed = cli.list_experiments()
    for name in EXPERIMENTS:
        assert name in listed and len(listed[name]) > 20, (name, listed.get(name))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_full_config_has_three_seeds_and_smoke_switch(name):
    config = cli.load_module(name).get_config()
    assert len(config.seeds) >= 3
    assert config.smoke is False
    assert config.checkpoint.enabled is False or config.checkpoint.enabled is True


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_report_summary_and_figures_exist(smoke_root, name):
    root, _ = smoke_root
    assert (root / name / "report.md").is_file()
    summary = _summary(root, name)
    assert summary["figures"], "no figures"
    for fig in summary["figures"]:
        assert (root / name / fig).stat().st_size > 1000, fig
    md = (root / name / "report.md").read_text()
    for heading in ("## Question", "## Expectation", "## Results", "## Verdict"):
        assert heading in md


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_verdict_is_generated_from_the_measured_numbers(smoke_root, name):
    root, results = smoke_root
    verdict = results[name]["verdict"]
    summary = _summary(root, name)  # a smoke run's summary marks its verdict
    assert verdict and summary["verdict"] in (verdict, f"{report.SMOKE_MARK} {verdict}")
    assert len(NUMBER.findall(verdict)) >= 3, verdict


def _variants(summary):
    return {r.get("variant") for r in summary["table_rows"]}


def test_ablation_table_covers_every_variant_with_mean_std(smoke_root):
    root, results = smoke_root
    summary = _summary(root, "augmentation_ablation")
    assert _variants(summary) == {"none", "mixup", "digits"}
    for row in summary["table_rows"]:
        assert row["n"] == 2
        assert re.fullmatch(r"\d\.\d+ ± \d\.\d+", row["test_accuracy"]), row
    base = next(r for r in summary["table_rows"] if r["variant"] == "none")
    assert base["test_accuracy"] in results["augmentation_ablation"]["verdict"]


def test_ablation_top_combinations_are_picked_on_validation():
    mod = cli.load_module("augmentation_ablation")
    rows = []
    for seed in (0, 1):
        for name, val, test in (
            ("none", 0.5, 0.5),
            ("rotate", 0.6, 0.1),
            ("scale", 0.55, 0.9),
            ("mixup", 0.58, 0.2),
            ("cutmix", 0.57, 0.9),
        ):
            rows.append({"variant": name, "seed": seed, "val_accuracy": val, "test_accuracy": test})
    singles = ("none", "rotate", "scale", "mixup", "cutmix")
    # ranked on validation only (test would pick scale and cutmix); one mix op at most
    assert mod._top_singles(rows, singles, 3) == ["rotate", "mixup", "scale"]
    aug, mix = mod._combine(["rotate", "mixup", "scale"])
    assert aug == "rotate(max_degrees=15)+scale(min_scale=0.85,max_scale=1.15)"
    assert mix == "mixup(alpha=0.2)"


def test_when_to_augment_covers_three_parts(smoke_root):
    root, results = smoke_root
    summary = _summary(root, "when_to_augment")
    parts = {r["part"] for r in summary["table_rows"]}
    assert parts == {"a", "b", "c"}
    by_part = {p: {r["variant"] for r in summary["table_rows"] if r["part"] == p} for p in parts}
    assert by_part["a"] == {"none", "augmented"}
    assert by_part["b"] == {"baseline", "balanced_augment"}
    assert by_part["c"] == {"random", "narrow", "narrow_digits"}
    md = (root / "when_to_augment" / "report.md").read_text()
    assert "per-class recall" in md
    verdict = results["when_to_augment"]["verdict"]
    assert "(a)" in verdict and "(b)" in verdict and "(c)" in verdict
    # balanced accuracy = mean per-class recall, computed from predictions
    for r in results["when_to_augment"]["parts"]["b"]["rows"]:
        assert r["test_balanced_accuracy"] == pytest.approx(float(np.nanmean(r["recall"])))


def test_unknown_variants_are_rejected(tmp_path):
    for name in ("augmentation_ablation", "domain_fit"):
        with pytest.raises(ValueError, match="unknown variants"):
            cli.run(name, ["smoke=true", "variants=none,bogus"], workdir=str(tmp_path / name))


def test_html_index_contains_every_experiment(smoke_root):
    root, _ = smoke_root
    out = root / "index.html"
    assert cli.main(["report", "--root", str(root), "--out", str(out)]) == 0
    page = out.read_text()
    for name in EXPERIMENTS:
        assert _summary(root, name)["title"] in page
