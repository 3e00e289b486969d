"""The autoencoder study: smoke run (report, grids, transfer), validation, domains, verdict rules."""

import json
from pathlib import Path

import numpy as np
import pytest

from jaxreg import cli

MOD = cli.load_module("autoencoder")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("autoencoder")
    return workdir, cli.run("autoencoder", ["smoke=true"], workdir=str(workdir))


def test_smoke_report_has_every_part(smoke_run):
    workdir, result = smoke_run
    summary = json.loads((workdir / "summary.json").read_text())
    assert [r["variant"] for r in summary["table_rows"]] == ["scratch", "pretrained", "probe"]
    figures = {"reconstructions.png", "code_size.png", "denoising.png", "translation.png"}
    assert figures <= set(summary["figures"])
    for name in summary["figures"]:
        assert (workdir / name).stat().st_size > 1000, name
    text = (workdir / "report.md").read_text()
    for heading in (
        "## Reconstruction per decoder type",
        "## Code-size sweep",
        "## Denoising",
        "## Pretraining runs",
        "## Translation with two decoders",
        "## Protocol",
    ):
        assert heading in text, heading
    verdict = result["verdict"]
    assert "Denoising Gaussian noise" in verdict and "Translating mnist5k" in verdict
    assert "A linear probe" in verdict


def test_smoke_pretrained_classifiers_start_from_their_seeds_encoder(smoke_run):
    workdir, result = smoke_run
    for row in (r for r in result["rows"] if r["stage"] == "classify"):
        config = json.loads((Path(row["dir"]) / "config.json").read_text())
        if row["variant"] == "scratch":
            assert config["init_from"] == ""
        else:
            assert config["init_from"] == str(workdir / f"seed{row['seed']}" / "pretrain" / "ae")
            assert config["finetune"] == ("linear_probe" if row["variant"] == "probe" else "full")
    t = next(r for r in result["rows"] if r["stage"] == "translate")["translation"]
    assert set(t) == {"mnist5k_to_digits", "digits_to_mnist5k"}
    for v in t.values():
        assert all(0.0 <= v[k] <= 1.0 for k in v if k != "own_psnr")


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("decoders", "deconv,pixelshuffle", "'decoders' must name decoders"),
        ("sweep_decoders", "", "'sweep_decoders' must name decoders"),
        ("code_sizes", (4, 0), "'code_sizes' must hold ints >= 1"),
        ("noise_levels", (0.1, 1.5), "'noise_levels\\[1\\]' must be <= 1.0"),
        ("other_corruptions", ("blurr",), "'other_corruptions\\[0\\]': unknown augmentation"),
        ("pretrain_corrupt", "noisy", "'pretrain_corrupt': unknown augmentation"),
        ("translate_per_class", 105, "'translate_per_class' must be <= 104"),
        ("ae_steps", 0, "'ae_steps' must be >= 1"),
        ("ae_learning_rate", 0.0, "'ae_learning_rate' must be > 0"),
        ("ae_batch_size", 0, "'ae_batch_size' must be >= 1"),
    ],
)
@pytest.mark.parametrize("smoke", [False, True])
def test_validate_rejects_bad_values(key, value, needle, smoke):
    config = MOD.get_config()
    config.smoke = smoke
    config[key] = value
    with pytest.raises((ValueError, TypeError), match=needle):
        MOD.validate(config)


def test_the_digits_domain_is_framed_like_mnist():
    data, digits = MOD.domain_data(28, 2, seed=0)
    train = data["train"]
    assert train.images.shape == (40, 28, 28, 1) and train.class_names == ("mnist5k", "digits")
    np.testing.assert_array_equal(train.labels, np.repeat([0, 1], 20))
    np.testing.assert_array_equal(np.bincount(digits["train"][20:]), [2] * 10)
    sk = train.images[20:]  # 8x8 digits resized into MNIST's central 20x20 box
    assert sk[:, :4].max() == 0 and sk[:, -4:].max() == 0 and sk[:, :, :4].max() == 0
    assert sk[:, 4:24, 4:24].max() > 0.5 and 0.0 <= train.images.min() <= train.images.max() <= 1.0
    assert len(data["test"]) == 1000 + 357


def _rec(decoder, size, psnr, shuffled, mse=0.01):
    return {
        "decoder": decoder,
        "code_size": size,
        "psnr": psnr,
        "shuffled_psnr": shuffled,
        "mse": mse,
    }


def test_decoder_sentences_say_when_the_switches_carry_the_image():
    at = [_rec("deconv", 32, 18.0, 10.0), _rec("unpool", 32, 22.0, 21.0)]
    text = " ".join(MOD._decoder_sentences(at))
    assert "unpool lost only 1.0 dB (the others at least 8.0 dB)" in text
    assert "not a bottleneck" in text and "unpool reconstructed best" in text
    at = [_rec("deconv", 32, 18.0, 17.8), _rec("unpool", 32, 17.0, 16.9)]
    text = " ".join(MOD._decoder_sentences(at))
    assert "no decoder lost 1 dB" in text and "Unlike the expectation, deconv" in text


def test_sweep_and_denoise_sentences_come_from_the_numbers():
    sweep = {
        "deconv": [_rec("deconv", s, 0, 0, m) for s, m in ((4, 0.08), (32, 0.02), (128, 0.03))]
    }
    assert "×2.7, not monotone" in MOD._sweep_sentences(sweep)[0]
    den = [
        {"corruption": "noise σ=0.1", "decoder": "deconv", "psnr": 18.0, "input_psnr": 22.6,
         "ssim": 0.6, "input_ssim": 0.8, "spec": "noise(sigma=0.1)"},
        {"corruption": "noise σ=0.5", "decoder": "deconv", "psnr": 14.0, "input_psnr": 9.4,
         "ssim": 0.5, "input_ssim": 0.4, "spec": "noise(sigma=0.5)"},
    ]  # fmt: skip
    text = " ".join(MOD._denoise_sentences(den, {"deconv": {"psnr": 19.0}}))
    assert "beat the noisy input's in 1 of 2 runs" in text
    assert "clean reconstruction reaches only 19.0 dB" in text
    assert "SSIM rose over the input's in 1 of 2" in text
    assert "The gain grew with the noise level for deconv, as expected." in text
