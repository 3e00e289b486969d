"""domain_fit on the study runner: corrupted test sets, confusions, the 1-NN check, textures."""

import json

import numpy as np
import pytest
from ml_collections import ConfigDict

from jaxreg import cli
from jaxreg import data as data_lib

CORRUPTION = {"noise_sigma": 0.25, "blur_sigma": 1.5, "lowres_factor": 3, "jpeg_quality": 15}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run of domain_fit (seconds per run)."""
    root = tmp_path_factory.mktemp("domain_fit")
    module = cli.load_module("domain_fit")
    config = module.get_config()
    config.smoke = True
    return root, module.run(config, str(root))


def test_smoke_report_keeps_the_digit_table_and_adds_the_textures_part(smoke):
    root, out = smoke
    summary = json.loads((root / "summary.json").read_text())
    assert summary["smoke"] is True
    rows = {r["variant"]: r for r in summary["table_rows"]}
    assert set(rows) == {"none", "digits", "degrade", "1-NN reference"}
    for name in ("none", "digits", "degrade"):
        assert "±" in rows[name]["corrupted test acc"]
        assert "6→9" in rows[name]["watched confusions (true→pred: count over seeds)"]
    assert rows["degrade"]["augmentation"] == "noise(sigma=(0.0,0.3))"  # the smoke spec
    for fig in summary["figures"]:
        assert (root / fig).stat().st_size > 1000, fig
    assert {"clean_vs_corrupted.png", "corruption_examples.png", "textures.png"} <= set(
        summary["figures"]
    )
    md = (root / "report.md").read_text()
    for heading in ("## Question", "## Expectation", "## Results", "## Verdict"):
        assert heading in md
    assert "## Textures: the helpful side" in md and "## Protocol" in md
    assert "6↔9 confusions" in out["verdict"] and "On textures" in out["verdict"]
    assert "1-nearest-neighbour" in out["verdict"]


def test_confusions_cover_every_test_image_of_both_seeds(smoke):
    root, _ = smoke
    test = data_lib.load_splits("digits")["test"]
    conf = json.loads((root / "confusion.json").read_text())
    assert set(conf) == {"none", "digits", "degrade"}
    assert sum(map(sum, conf["none"])) == 2 * len(test)


def test_textures_runs_pair_by_seed_on_textures_crops(smoke):
    _, out = smoke
    tex = [r for r in out["rows"] if r["stage"] == "textures"]
    assert {r["variant"] for r in tex} == {"none", "hflip", "rotate_large", "dihedral"}
    assert sorted({r["seed"] for r in tex}) == [0, 1]
    assert {r["train_size"] for r in tex} == {10 * 10}  # smoke: 10 crops per class


def test_corrupted_sets_are_deterministic_mixed_and_keep_the_class():
    mod = cli.load_module("domain_fit")
    splits = data_lib.load_splits("mnist5k")
    test = splits["test"]
    a = mod.corrupt_test_set(test, **CORRUPTION, key=7)
    b = mod.corrupt_test_set(test, **CORRUPTION, key=7)
    for k, ds in a.items():
        np.testing.assert_array_equal(ds.images, b[k].images)
        np.testing.assert_array_equal(ds.labels, test.labels)
        assert ds.images.shape == test.images.shape and not np.array_equal(ds.images, test.images)
        assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
    for i in range(8):  # image i gets corruption i mod 4
        np.testing.assert_array_equal(
            a["test_corrupt"].images[i], a[f"test_{mod.CORRUPTIONS[i % 4]}"].images[i]
        )
    # The class is still in the blurred and low-resolution digits: 1-NN on 100 clean
    # training digits per class reads them far above chance (the CNN's collapse is its own).
    train = data_lib.stratified_subset(splits["train"], 100, seed=0)
    xt = train.images.reshape(len(train), -1)
    for name in ("test_blur", "test_lowres"):
        x = a[name].images.reshape(len(test), -1)
        d = (x**2).sum(1)[:, None] - 2 * x @ xt.T + (xt**2).sum(1)[None]
        assert np.mean(train.labels[d.argmin(1)] == test.labels) > 0.6, name


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("textures_per_class", 0, "'textures_per_class' must be >= 1"),
        ("corruption.blur_sigma", 0.0, "'corruption.blur_sigma'"),
        ("degrade_spec", "blurr", "config key 'degrade_spec'"),
    ],
)
def test_bad_study_settings_are_rejected_in_smoke_mode_too(key, value, needle):
    mod = cli.load_module("domain_fit")
    for smoke in (False, True):
        config = mod.get_config()
        config.smoke = smoke
        *path, field = key.split(".")
        node = config
        for part in path:
            node = node[part]
        node[field] = value
        with pytest.raises(ValueError, match=needle):
            mod.validate(config)


def test_variants_keep_the_old_names_and_smoke_settings():
    mod = cli.load_module("domain_fit")
    config = mod.get_config()
    params = ConfigDict({"degrade_spec": config.degrade_spec})
    full = mod.STUDY.variants(config, params)
    assert set(full) == {
        "none", "digits", "rotate_large", "hflip", "vflip", "degrade", "digits_degrade",
        "none_no_bn",
    }  # fmt: skip
    assert full["degrade"] == {"augment": config.degrade_spec}
    config.smoke = True
    smoke = mod.STUDY.variants(config, params)
    assert smoke["none"] == {"augment": "", "learning_rate": 3e-3}
