"""Degradations: noise statistics, blur vs dm-pix, down-up scaling and JPEG-like quantisation."""

import io

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg.augment as A
from tests.augment._util import image, key, reference


def test_gaussian_noise_statistics_and_clip():
    x = jnp.full((32, 32, 3), 0.5)
    y = np.asarray(A.gaussian_noise(key(), x, sigma=0.1, clip=False)) - 0.5
    assert abs(y.mean()) < 0.01 and abs(y.std() - 0.1) < 0.01
    y = A.gaussian_noise(key(), x, sigma=2.0)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    np.testing.assert_array_equal(A.gaussian_noise(key(), x, sigma=0.0), x)
    np.testing.assert_allclose(A.add_noise(x, jnp.full(x.shape, 0.7)), jnp.ones(x.shape))


def test_blur_matches_dm_pix_with_zero_padding():
    x = image(9, 9, 3, seed=1)
    ref = reference(pix.gaussian_blur, x, 1.2, 5)
    np.testing.assert_allclose(A.gaussian_blur(x, 1.2, 5), ref, atol=1e-5)
    ours = A.gaussian_blur(x, 1.2, kernel_size=5, pad_mode="constant")
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_blur_keeps_constant_images_and_random_blur_smooths():
    c = jnp.full((8, 8, 1), 0.4)
    np.testing.assert_allclose(A.gaussian_blur(c, 1.5, pad_mode="reflect"), c, atol=1e-6)
    x = image(8, 8, 1)
    y = A.random_blur(key(), x, sigma=(1.0, 2.0))
    assert float(jnp.var(y)) < float(jnp.var(x))


def test_downscale_and_jpeg():
    c = jnp.full((8, 8, 3), 0.25)
    np.testing.assert_allclose(A.downscale(c, 2), c, atol=1e-6)
    x = image(16, 16, 3)
    assert A.downscale(x, 4, method="nearest").shape == x.shape
    np.testing.assert_allclose(A.jpeg_compress(c, 50), c, atol=2 / 255)
    err_hi = float(jnp.abs(A.jpeg_compress(x, 100, chroma_subsampling=False) - x).mean())
    err_lo = float(jnp.abs(A.jpeg_compress(x, 5, chroma_subsampling=False) - x).mean())
    assert err_hi < 0.01 < err_lo
    g = image(10, 12, 1)  # not a multiple of 8
    assert A.jpeg_compress(g, 30).shape == g.shape
    y = A.random_jpeg(key(), x, quality=(20, 40))
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def _photo():
    """A colourful 96x128 crop of scikit-image's astronaut photo (ships with the package)."""
    from skimage import data

    return np.asarray(data.astronaut()[100:196, 150:278], np.float32) / 255.0


def _pillow_jpeg(img, quality, subsampling):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(
        buf, "JPEG", quality=quality, subsampling=subsampling
    )
    return np.asarray(Image.open(buf), np.float32) / 255.0


@pytest.mark.parametrize("quality", [20, 75])
def test_jpeg_matches_libjpeg_420_and_444(quality):
    # Pillow's libjpeg: subsampling=2 is 4:2:0 (its default), 0 is 4:4:4. Ours agrees with the
    # matching mode to about one 1/255 step on average (float vs integer DCT), and clearly
    # worse with the other mode, so the subsampling is what a real encoder does.
    x = _photo()
    ours_420 = np.asarray(A.jpeg_compress(jnp.asarray(x), quality))  # the default
    ours_444 = np.asarray(A.jpeg_compress(jnp.asarray(x), quality, chroma_subsampling=False))
    for ref, same, other in (
        (_pillow_jpeg(x, quality, 2), ours_420, ours_444),
        (_pillow_jpeg(x, quality, 0), ours_444, ours_420),
    ):
        err_same = np.abs(same - ref).mean() * 255
        err_other = np.abs(other - ref).mean() * 255
        assert err_same < 1.5 and err_other > 1.5 * err_same, (err_same, err_other)


def _ycc(x):
    x = np.asarray(x, np.float64)
    y = x @ np.array([0.299, 0.587, 0.114])
    cb = x @ np.array([-0.168736, -0.331264, 0.5])
    cr = x @ np.array([0.5, -0.418688, -0.081312])
    return y, cb, cr


def test_chroma_subsampling_loses_colour_detail_keeps_luma():
    # A 1-pixel checkerboard of two colours with equal luma: all detail is in the chroma.
    a = np.array([0.1, 0.6, 0.2])
    b = np.array([0.7, 0.25, 0.8])
    b = b * (a @ [0.299, 0.587, 0.114]) / (b @ [0.299, 0.587, 0.114])
    checker = (np.indices((16, 16)).sum(0) % 2).astype(bool)[..., None]
    x = jnp.asarray(np.where(checker, a, b), jnp.float32)
    y_in, cb_in, cr_in = _ycc(x)
    y_sub, cb_sub, cr_sub = _ycc(A.jpeg_compress(x, 100))
    _y_full, cb_full, cr_full = _ycc(A.jpeg_compress(x, 100, chroma_subsampling=False))
    detail = lambda c: np.abs(c - c.mean()).mean()
    assert detail(cb_in) > 0.05 and detail(cr_in) > 0.05
    assert detail(cb_sub) < 0.02 * detail(cb_in) and detail(cr_sub) < 0.02 * detail(cr_in)
    assert detail(cb_full) > 0.9 * detail(cb_in) and detail(cr_full) > 0.9 * detail(cr_in)
    np.testing.assert_allclose(y_sub, y_in, atol=3 / 255)  # luma kept at full resolution
    # A luma checkerboard (gray) keeps its detail with subsampling on.
    g = jnp.asarray(np.where(checker, 0.2, 0.8) * np.ones(3), jnp.float32)
    np.testing.assert_allclose(A.jpeg_compress(g, 100), g, atol=3 / 255)


def test_jpeg_one_channel_ignores_chroma_subsampling():
    g = image(13, 10, 1, seed=3)  # odd sizes: padding and cropping
    np.testing.assert_array_equal(
        A.jpeg_compress(g, 40), A.jpeg_compress(g, 40, chroma_subsampling=False)
    )
    np.testing.assert_array_equal(
        A.random_jpeg(key(), g, quality=(10, 50)),
        A.random_jpeg(key(), g, quality=(10, 50), chroma_subsampling=False),
    )


@pytest.mark.parametrize("shape", [(16, 16, 3), (13, 11, 3), (1, 1, 3), (9, 17, 1)])
def test_jpeg_shape_dtype_range_and_jit(shape):
    x = image(*shape, seed=2)
    for sub in (True, False):
        y = A.jpeg_compress(x, 30, chroma_subsampling=sub)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        jitted = jax.jit(A.jpeg_compress, static_argnames="chroma_subsampling")(
            x, 30.0, chroma_subsampling=sub
        )
        np.testing.assert_allclose(jitted, y, atol=1e-6)
    fn = lambda k, v: A.random_jpeg(k, v, quality=(10, 60))
    keys = jax.random.split(key(5), 3)
    xs = jnp.stack([x, x, x])
    ys = jax.vmap(fn)(keys, xs)
    np.testing.assert_allclose(jax.jit(jax.vmap(fn))(keys, xs), ys, atol=1e-6)
    np.testing.assert_allclose(ys[1], fn(keys[1], x), atol=1e-6)
    h = np.asarray(A.jpeg_compress(x.astype(jnp.float16), 50))
    assert h.dtype == np.float16


def test_jpeg_spec_option():
    x = image(16, 16, 3, seed=4)
    k = key(2)
    on, off = (
        A.from_spec("jpeg(quality=(40,40))"),
        A.from_spec("jpeg(quality=(40,40),chroma_subsampling=False)"),
    )
    np.testing.assert_allclose(on(k, x), A.jpeg_compress(x, 40), atol=1e-6)
    np.testing.assert_allclose(
        off(k, x), A.jpeg_compress(x, 40, chroma_subsampling=False), atol=1e-6
    )
    assert "chroma_subsampling" in A.list_augmentations()["jpeg"]
    with pytest.raises(TypeError, match="chroma_subsampling"):
        A.from_spec("jpeg(chroma_subsampling='yes')")  # rejected when parsed


@pytest.mark.parametrize(
    "call, err",
    [
        (lambda: A.gaussian_noise(key(), image(), sigma=-0.1), ValueError),
        (lambda: A.gaussian_blur(image(), 0.0), ValueError),
        (lambda: A.gaussian_blur(image(), 1.0, kernel_size=-4), ValueError),
        (lambda: A.gaussian_blur(image(), 1.0, pad_mode="mirror"), ValueError),
        (lambda: A.random_blur(key(), image(), kernel_size=4), ValueError),
        (lambda: A.downscale(image(), 0), ValueError),
        (lambda: A.jpeg_compress(image(), 0), ValueError),
        (lambda: A.random_jpeg(key(), image(), quality=(50, 120)), ValueError),
        (lambda: A.jpeg_compress(image(), 50, chroma_subsampling=1), ValueError),
        (lambda: A.random_jpeg(key(), image(), chroma_subsampling="4:2:0"), ValueError),
        (lambda: A.gaussian_noise(key(), image()[None], sigma=0.1), ValueError),
    ],
)
def test_bad_arguments(call, err):
    with pytest.raises(err):
        call()
