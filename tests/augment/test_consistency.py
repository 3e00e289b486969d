"""Every random op: same result eagerly, under jit and under vmap; split keys vary parameters."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg.augment as A
from tests.augment._util import image, key

P = functools.partial
OPS = {
    "random_flip": P(A.random_flip, horizontal=True, vertical=True),
    "random_rot90": A.random_rot90,
    "random_rotate": P(A.random_rotate, max_degrees=30),
    "random_scale": P(A.random_scale, min_scale=0.7, max_scale=1.3),
    "random_translate": P(A.random_translate, max_fraction=0.3),
    "random_shear": P(A.random_shear, max_degrees=20),
    "random_affine": P(A.random_affine, max_degrees=20, scale=(0.8, 1.2), max_translate=0.1),
    "random_crop": P(A.random_crop, crop_sizes=(6, 6, 3), padding=2),
    "random_flip_left_right": A.random_flip_left_right,
    "random_brightness": P(A.random_brightness, max_delta=0.3),
    "random_contrast": P(A.random_contrast, lower=0.5, upper=1.5),
    "random_saturation": P(A.random_saturation, lower=0.5, upper=1.5),
    "random_hue": P(A.random_hue, max_delta=0.3),
    "random_resized_crop": P(A.random_resized_crop, size=6),
    "color_jitter": P(A.color_jitter, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
    "random_gamma": P(A.random_gamma, min_gamma=0.5, max_gamma=1.5),
    "spec_gamma": A.from_spec("gamma"),
    "random_grayscale": P(A.random_grayscale, p=0.5),
    "gaussian_noise": P(A.gaussian_noise, sigma=(0.05, 0.2)),
    "random_blur": P(A.random_blur, sigma=(0.5, 1.5)),
    "random_downscale": P(A.random_downscale, factors=(2, 4)),
    "random_jpeg": P(A.random_jpeg, quality=(10, 90)),
    "cutout": P(A.cutout, size=4),
    "random_erasing": P(A.random_erasing, p=1.0),
    "corner_patches": P(A.corner_patches, size=3, p=0.8),
    "rand_augment": A.rand_augment(1, 9),
    "trivial_augment": A.trivial_augment(),
    "augmix": A.augmix(width=1, depth=1),
    "cifar": A.from_spec("cifar"),
    "digits": A.from_spec("digits"),
}
# Ops whose outcome may repeat between two examples (few discrete outcomes).
DISCRETE = {
    "random_flip",
    "random_flip_left_right",
    "random_rot90",
    "random_grayscale",
    "random_downscale",
}
# dm-pix's ops do not clip: brightness and contrast may leave [0, 1].
UNCLIPPED = {"rand_augment", "trivial_augment", "augmix", "random_brightness", "random_contrast"}


@pytest.mark.parametrize("name", sorted(OPS))
def test_eager_jit_vmap_agree(name):
    fn = OPS[name]
    x = image(8, 8, 3, seed=1)
    keys = jax.random.split(key(3), 6)
    eager = np.asarray(fn(keys[1], x))[None]
    jitted = np.asarray(jax.jit(fn)(keys[1], x))[None]
    xs = jnp.broadcast_to(x, (6, 8, 8, 3))
    vmapped = np.asarray(jax.jit(jax.vmap(fn))(keys, xs))
    np.testing.assert_allclose(eager, jitted, atol=2e-5)
    np.testing.assert_allclose(eager, vmapped[1:2], atol=2e-5)
    assert vmapped.dtype == np.float32
    distinct = {v.round(5).tobytes() for v in vmapped}
    assert len(distinct) >= (2 if name in DISCRETE else 5), "split keys must vary the parameters"
    if name not in UNCLIPPED:  # the policies' colour ops may overshoot by rounding
        assert vmapped.min() >= -1e-6 and vmapped.max() <= 1 + 1e-6


def test_raw_uint32_keys_work():
    x = image(8, 8, 3)
    for name in ("random_rotate", "gaussian_noise", "cifar", "cutout"):
        y = OPS[name](jax.random.PRNGKey(0), x)
        assert y.shape[-1] == 3
    ys = jax.jit(A.batch(OPS["digits"]))(jax.random.PRNGKey(1), jnp.stack([x] * 3))
    assert ys.shape == (3, 8, 8, 3)
