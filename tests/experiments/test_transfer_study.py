"""The transfer study smoke-runs end to end (both parts), caches its features, reads back."""

import json

import numpy as np
import pytest

from jaxreg import cli
from jaxreg.experiments import transfer as study


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("transfer")
    result = cli.run("transfer", ["smoke=true"], workdir=str(workdir))
    return workdir, result


def test_report_parts_and_figures(smoke_run):
    workdir, result = smoke_run
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["smoke"] is True and summary["verdict"].endswith(result["verdict"])
    for name in summary["figures"]:
        assert (workdir / name).stat().st_size > 1000, name
    assert {"a_digits/accuracy_vs_labels.png", "b_photos/accuracy_vs_labels.png"} <= set(
        summary["figures"]
    )
    rows = summary["table_rows"]
    assert {(r["part"], r["variant"]) for r in rows} == {
        ("a", v) for v in ("scratch", "linear_probe", "last", "full", "layerwise")
    } | {("b", v) for v in ("scratch", "linear_probe", "full")}
    assert all(r["n"] == 2 for r in rows)
    md = (workdir / "report.md").read_text()
    for heading in ("## Details per part", "#### Protocol (a)", "#### Protocol (b)"):
        assert heading in md
    assert result["verdict"].count("Ceiling check") == 2


def test_stages_cache_features_and_the_pretrained_source(smoke_run):
    workdir, _ = smoke_run
    a, b = workdir / "a_digits", workdir / "b_photos"
    assert (a / "seed1" / "pretrain" / "run" / "checkpoints" / "best").is_dir()
    assert (a / "seed1" / "eval_features" / "features.npz").is_file()  # one per source net
    assert (b / "eval_features" / "features.npz").is_file()  # VGG16: once for the study
    assert (b / "ceiling" / "result.json").is_file()
    with np.load(b / "train_per_class=2" / "seed0" / "probe" / "features.npz") as z:
        assert z["train"].shape == (20, 512)  # 2 per class x 10 photos, VGG16's pooled features
    with np.load(b / "train_per_class=2" / "seed0" / "probe" / "probe.npz") as z:
        assert z["kernel"].shape == (512, 10) and float(z["l2"]) > 0


def test_the_probe_row_is_the_probe_stage_and_fine_tuning_starts_from_its_head(smoke_run):
    _, result = smoke_run
    rows = result["parts"]["b"]["rows"]
    probe = {r["seed"]: r for r in rows if r["stage"] == "probe"}
    for r in rows:
        if r["stage"] == "train" and r["variant"] == "linear_probe":
            assert r["test_accuracy"] == probe[r["seed"]]["test_accuracy"]
    full = [r for r in rows if r["stage"] == "train" and r["variant"] == "full"]
    assert all(r["train_size"] == 20 and r["best_epoch"] >= 1 for r in full)


def test_a_rerun_reads_everything_back(smoke_run, monkeypatch):
    workdir, result = smoke_run
    import jaxreg.train.loop
    import jaxreg.transfer

    def fail(*args, **kwargs):
        raise AssertionError("a rerun recomputed something")

    monkeypatch.setattr(jaxreg.train.loop, "train_and_evaluate", fail)
    monkeypatch.setattr(jaxreg.transfer, "head_features", fail)
    again = cli.run("transfer", ["smoke=true"], workdir=str(workdir))
    assert again["table"] == result["table"]


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["parts=c"], "'parts' must be letters from 'ab'"),
        (["digits.source_digits=0125"], "must not share a digit"),
        (["digits.target_digits=5"], "at least 2 digits"),
        (["photos.ft_steps=0"], r"part b \(photos\): config key 'ft_steps' must be >= 1"),
        (["photos.image_size=8"], "'image_size' must be >= 16"),
        (["photos.sizes=(5, 0)"], "sizes=0: config key 'train_per_class'"),
        (["variants=scratch,bogus"], "unknown variants"),
        (["smoke=true", "digits.data=nope"], r"'data'.*nope.*checked as given"),
        (["smoke=true", "photos.ft_learning_rate=-1.0"], "'ft_learning_rate' must be > 0"),
    ],
)
def test_validate_rejects_bad_values_before_training(overrides, needle, tmp_path, monkeypatch):
    import jaxreg.train.loop

    monkeypatch.setattr(jaxreg.train.loop, "train_and_evaluate", lambda *a, **k: 1 / 0)
    with pytest.raises((ValueError, TypeError), match=needle):
        cli.run("transfer", overrides, workdir=str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_relabel_keeps_only_the_named_digits_in_their_order():
    from jaxreg import data as data_lib

    ds = data_lib.load("digits", split="val")
    sub = study.relabel(ds, (7, 5))
    assert sub.num_classes == 2 and sub.class_names == ("7", "5")
    assert len(sub) == int(np.isin(ds.labels, (5, 7)).sum())
    np.testing.assert_array_equal(
        np.where(ds.labels[np.isin(ds.labels, (5, 7))] == 7, 0, 1), sub.labels
    )
