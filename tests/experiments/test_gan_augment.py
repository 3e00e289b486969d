"""The gan_augment study: a smoke run's stages, pools, variants and report; its settings."""

import json

import numpy as np
import pytest
from ml_collections import ConfigDict

from jaxreg import cli


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gan_augment")
    args = ["smoke=true", "compare_diff_augment=true"]
    return workdir, cli.run("gan_augment", args, workdir=str(workdir))


def test_variants_follow_the_ratios():
    mod = cli.load_module("gan_augment")
    p = ConfigDict({"ratios": (0.25, 0.5), "policy": "digits"})
    v = mod._variants(None, p)
    assert list(v) == ["real", "augment", "gan25", "gan50", "gan25+augment"]
    assert v["gan50"] == {"synthetic_ratio": 0.5}
    assert v["gan25+augment"] == {"synthetic_ratio": 0.25, "augment": "digits"}
    for bad in ((), (0.0,), (0.5, 0.5)):
        with pytest.raises(ValueError, match="'ratios'"):
            mod._variants(None, ConfigDict({"ratios": bad, "policy": "digits"}))


def test_smoke_run_caches_one_pool_per_seed_and_mixes_it(smoke_run):
    workdir, out = smoke_run
    size = workdir / "train_per_class=10"
    for seed in (0, 1):
        with np.load(size / f"seed{seed}" / "gan" / "pool.npz") as z:
            assert z["images"].shape == (100, 8, 8, 1)  # 10 per class, 10 classes
            assert z["labels"].tolist() == np.repeat(np.arange(10), 10).tolist()
        gan = json.loads((size / f"seed{seed}" / "gan" / "result.json").read_text())
        assert 0.0 <= gan["classifier_accuracy"] <= 1.0 and gan["frechet_distance"] >= 0.0
        assert gan["worst_class_accuracy"] <= gan["classifier_accuracy"]
        assert gan["plain_frechet_distance"] >= 0.0  # the GAN without DiffAugment, beside it
        assert (size / f"seed{seed}" / "gan" / "plain_gan" / "results.json").exists()
        assert (size / f"seed{seed}" / "gan" / "grids" / "samples.png").exists()
    rows = [r for r in out["rows"] if r["stage"] == "train"]
    assert {r["variant"] for r in rows} == {"real", "augment", "gan25", "gan50", "gan25+augment"}
    per_batch = {r["variant"]: r["synthetic_per_batch"] for r in rows}
    assert per_batch == {"real": 0, "augment": 0, "gan25": 5, "gan50": 10, "gan25+augment": 5}
    report = (workdir / "report.md").read_text()
    assert "## GAN sample quality" in report and "gan_samples_10.png" in report
    assert "no DiffAugment: judge accuracy" in report
    assert (workdir / "judge" / "results.json").exists()  # one judge for every size


def test_smoke_run_is_read_back_on_rerun(smoke_run):
    workdir, out = smoke_run
    again = cli.run(
        "gan_augment", ["smoke=true", "compare_diff_augment=true"], workdir=str(workdir)
    )
    assert again["table"] == out["table"]
