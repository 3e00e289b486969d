"""Degradations: noise statistics, blur vs dm-pix, down-up scaling and JPEG-like quantisation."""
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
  ours = A.gaussian_blur(x, 1.2, kernel_size=5, pad_mode="constant")
  ref = reference(pix.gaussian_blur, x, 1.2, 5)
  np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_blur_keeps_constant_images_and_random_blur_smooths():
  c = jnp.full((8, 8, 1), 0.4)
  np.testing.assert_allclose(A.gaussian_blur(c, 1.5), c, atol=1e-6)
  x = image(8, 8, 1)
  y = A.random_blur(key(), x, sigma=(1.0, 2.0))
  assert float(jnp.var(y)) < float(jnp.var(x))


def test_downscale_and_jpeg():
  c = jnp.full((8, 8, 3), 0.25)
  np.testing.assert_allclose(A.downscale(c, 2), c, atol=1e-6)
  x = image(16, 16, 3)
  assert A.downscale(x, 4, method="nearest").shape == x.shape
  np.testing.assert_allclose(A.jpeg_compress(c, 50), c, atol=2 / 255)
  err_hi = float(jnp.abs(A.jpeg_compress(x, 100) - x).mean())
  err_lo = float(jnp.abs(A.jpeg_compress(x, 5) - x).mean())
  assert err_hi < 0.01 < err_lo
  g = image(10, 12, 1)  # not a multiple of 8
  assert A.jpeg_compress(g, 30).shape == g.shape
  y = A.random_jpeg(key(), x, quality=(20, 40))
  assert float(y.min()) >= 0 and float(y.max()) <= 1


@pytest.mark.parametrize("call, err", [
    (lambda: A.gaussian_noise(key(), image(), sigma=-0.1), ValueError),
    (lambda: A.gaussian_blur(image(), 0.0), ValueError),
    (lambda: A.gaussian_blur(image(), 1.0, kernel_size=4), ValueError),
    (lambda: A.downscale(image(), 0), ValueError),
    (lambda: A.jpeg_compress(image(), 0), ValueError),
    (lambda: A.random_jpeg(key(), image(), quality=(50, 120)), ValueError),
    (lambda: A.gaussian_noise(key(), image()[None], sigma=0.1), ValueError),
])
def test_bad_arguments(call, err):
  with pytest.raises(err):
    call()
