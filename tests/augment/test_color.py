"""Colour ops: enhance_* vs dm-pix's adjust_* (the documented difference), 1-channel safety, ranges."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg.augment as A
from tests.augment._util import image, key


def test_enhance_ops_differ_from_dm_pix_adjust_ops_as_documented():
    x = image(6, 6, 3, seed=4)
    xn = np.asarray(x)
    # brightness: PIL / torchvision factor (enhance_*) vs dm-pix additive delta (adjust_*)
    np.testing.assert_allclose(A.enhance_brightness(x, 1.3), np.clip(xn * 1.3, 0, 1), atol=1e-6)
    np.testing.assert_allclose(A.adjust_brightness(x, 0.1), xn + 0.1, atol=1e-6)
    # contrast: one gray mean, clipped (enhance_*) vs per-channel means, not clipped (adjust_*)
    gray_mean = float(np.mean(0.299 * xn[..., 0] + 0.587 * xn[..., 1] + 0.114 * xn[..., 2]))
    np.testing.assert_allclose(
        A.enhance_contrast(x, 0.5), np.clip(gray_mean + 0.5 * (xn - gray_mean), 0, 1), atol=1e-6
    )
    means = xn.mean(axis=(0, 1))
    np.testing.assert_allclose(A.adjust_contrast(x, 1.5), means + 1.5 * (xn - means), atol=1e-6)
    # saturation 0: luma (enhance_*) vs the HSV value channel (adjust_*, dm-pix)
    y = np.asarray(A.enhance_saturation(x, 0.0))
    np.testing.assert_allclose(y[..., 0], y[..., 1], atol=1e-6)
    np.testing.assert_allclose(A.adjust_saturation(x, 0.0)[..., 0], xn.max(axis=-1), atol=1e-6)


def test_one_channel_saturation_and_hue_are_noops():
    g = image(5, 5, 1)
    np.testing.assert_array_equal(A.adjust_saturation(g, 0.2), g)
    np.testing.assert_array_equal(A.enhance_saturation(g, 0.2), g)
    np.testing.assert_array_equal(A.adjust_hue(g, 0.3), g)
    np.testing.assert_array_equal(A.grayscale(g), g)
    y = A.color_jitter(key(), g, saturation=0.9, hue=0.5)
    np.testing.assert_array_equal(y, g)


def test_jitter_identity_and_range():
    x = image(6, 6, 3)
    np.testing.assert_array_equal(A.color_jitter(key(), x), x)
    ys = jax.jit(
        jax.vmap(
            lambda k: A.color_jitter(k, x, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2)
        )
    )(jax.random.split(key(), 16))
    assert float(ys.min()) >= 0.0 and float(ys.max()) <= 1.0
    means = np.asarray(ys.mean(axis=(1, 2, 3)))
    assert np.std(means) > 0.01  # different factors per example


def test_pil_style_ops():
    x = image(8, 8, 3, seed=5)
    y = A.autocontrast(x * 0.5 + 0.2)
    np.testing.assert_allclose(y.min(axis=(0, 1)), 0.0, atol=1e-6)
    np.testing.assert_allclose(y.max(axis=(0, 1)), 1.0, atol=1e-6)
    e = np.asarray(A.equalize(x))
    assert e.max() == pytest.approx(1.0) and e.min() == pytest.approx(0.0)
    flat = np.sort(e[..., 0].ravel())
    np.testing.assert_allclose(flat[1:], np.arange(1, 64) / 63.0, atol=1e-6)  # uniform ranks
    np.testing.assert_array_equal(A.equalize(jnp.full((4, 4, 1), 0.3)), jnp.full((4, 4, 1), 0.3))
    p = np.asarray(A.posterize(x, 2)) * 255
    assert len(np.unique(np.round(p))) <= 4
    np.testing.assert_allclose(A.invert(A.invert(x)), x, atol=1e-6)
    np.testing.assert_allclose(A.adjust_sharpness(x, 1.0), x, atol=1e-6)
    np.testing.assert_allclose(A.grayscale(x)[..., 0], A.grayscale(x)[..., 2])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: A.enhance_brightness(image(), -0.1), "factor must be >= 0"),
        (lambda: A.enhance_contrast(image(), -0.1), "factor must be >= 0"),
        (lambda: A.enhance_saturation(image(), -0.1), "factor must be >= 0"),
        (lambda: A.color_jitter(key(), image(), brightness=-1.0), "brightness must be >= 0"),
        (lambda: A.color_jitter(key(), image(), hue=0.6), r"hue must lie in \[0\.0, 0\.5\]"),
        (
            lambda: A.color_jitter(key(), image(4, 4, 2), brightness=0.2),
            "image must have 1 or 3 channels",
        ),
        (lambda: A.random_grayscale(key(), image(), p=-0.1), "p must be a probability"),
        (lambda: A.posterize(image(), 9), r"bits must lie in \[1, 8\]"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_integer_image_rejected():
    with pytest.raises(TypeError, match="floating"):
        A.color_jitter(key(), jnp.zeros((4, 4, 3), jnp.uint8), brightness=0.2)
