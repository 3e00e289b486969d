"""Composition, batch, policies and the spec strings the training loop uses."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg.augment as A
from jaxreg.augment import _warp
from tests.augment._util import image, images, key


def test_compose_random_apply_one_of():
    x = image(8, 8, 3)
    noise = functools.partial(A.gaussian_noise, sigma=0.1)
    np.testing.assert_array_equal(A.random_apply(noise, 0.0)(key(), x), x)
    _k_use, k_op = jax.random.split(key())
    np.testing.assert_allclose(A.random_apply(noise, 1.0)(key(), x), noise(k_op, x), atol=1e-6)
    f = A.compose(noise, lambda k, v: A.invert(v))
    k1, _k2 = jax.random.split(key())
    np.testing.assert_allclose(f(key(), x), 1.0 - noise(k1, x), atol=1e-6)
    picked = A.one_of(noise, lambda k, v: v * 0.0, probs=[0.0, 1.0])(key(), x)
    np.testing.assert_array_equal(picked, jnp.zeros_like(x))
    geo = A.one_of(A.random_rot90, functools.partial(A.random_flip, vertical=True))
    assert isinstance(geo, _warp.GeometricOp)
    ra = A.random_apply(functools.partial(A.random_rotate, max_degrees=30), 0.5)
    assert isinstance(ra, _warp.GeometricOp)
    assert isinstance(A.compose(ra, geo), _warp.GeometricOp)


def test_batch_gives_per_example_keys_and_runs_in_scan():
    xs = jnp.broadcast_to(image(8, 8, 3), (5, 8, 8, 3))
    fn = A.batch(A.from_spec("digits"))
    ys = jax.jit(fn)(key(), xs)
    assert len({np.asarray(y).tobytes() for y in ys}) == 5

    def step(carry, k):
        return carry, fn(k, xs).mean()

    _, means = jax.jit(lambda ks: jax.lax.scan(step, 0.0, ks))(jax.random.split(key(), 3))
    assert means.shape == (3,)
    with pytest.raises(ValueError, match="images must have rank 4"):
        fn(key(), image())


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "none",
        "digits",
        "cifar",
        "flip",
        "noise(sigma=0.1)",
        "blur",
        "cutout(size=4)",
        "rotate(max_degrees=10)+scale(min_scale=0.9,max_scale=1.1)+translate(max_fraction=0.1)",
        "crop(padding=4)+flip+jitter(brightness=0.4,contrast=0.4,saturation=0.4)"
        "+noise(sigma=0.05,p=0.5)+cutout(size=4)",
        "rand_augment(n=2,magnitude=9)",
        "corner_patches(size=2, fill='mean')",
        "erasing(p=1.0, fill='noise')",
        "resized_crop(size=(6, 6))+hflip",
        "degrade",
    ],
)
def test_from_spec(spec):
    fn = A.from_spec(spec)
    ys = jax.jit(A.batch(fn))(key(), images(3, 8, 8, 1))
    assert ys.ndim == 4 and ys.shape[0] == 3 and ys.dtype == jnp.float32


def test_every_listed_name_builds_and_runs():
    names = A.list_augmentations()
    assert all(isinstance(v, str) and v for v in names.values())
    mixes = {name for name, text in names.items() if text.startswith("batch")}
    assert mixes == {"mixup", "cutmix", "mixup_or_cutmix", "amplitude_mix"}
    x = image(8, 8, 3)
    for name in names:
        if name in mixes:
            A.mix_from_spec(name)
            continue
        spec = "center_crop(size=4)" if name == "center_crop" else name
        jax.eval_shape(A.from_spec(spec), key(), x)


def test_presets():
    x = image(16, 16, 1)
    d = A.from_spec("digits")
    assert isinstance(d, _warp.GeometricOp) and not d.exact
    c = A.from_spec("cifar")
    assert isinstance(c, _warp.GeometricOp) and c.exact and c.mode == "reflect"
    ys = jax.vmap(c)(jax.random.split(key(), 4), jnp.stack([x] * 4))
    assert ys.shape == (4, 16, 16, 1)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("rotat", "allowed names"),
        ("rotate(10)", "key=value"),
        ("rotate(max_degrees=__import__('os'))", "literal"),
        ("rotate(max_degree=3)", "Allowed options"),
        ("flip+", "empty"),
        ("mixup(alpha=0.2)", "mix_from_spec"),
        ("cifar(size=3)", "no options"),
        ("flip(p=1.5)", "probability"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        A.from_spec(spec)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("mixup(alpha=0)", "alpha must be > 0"),
        ("mixup(beta=2)", "allowed options"),
        ("flip", "unknown mix 'flip'"),
        ("mixup+cutmix", "a mix spec names one op"),
    ],
)
def test_bad_mix_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        A.mix_from_spec(spec)


def test_identity_specs():
    x = image()
    np.testing.assert_array_equal(A.from_spec("none")(key(), x), x)
    xs, _ys = A.mix_from_spec("")(key(), images(2), jnp.ones((2, 3)) / 3)
    np.testing.assert_array_equal(xs, images(2))


def test_policies_keep_range_and_shape():
    x = image(8, 8, 3)
    for fn in (A.rand_augment(3, 10, magnitude_std=0.5),):
        ys = jax.jit(jax.vmap(fn))(jax.random.split(key(), 4), jnp.stack([x] * 4))
        assert ys.shape == (4, 8, 8, 3)
        assert float(ys.min()) >= -1e-5 and float(ys.max()) <= 1 + 1e-5
    np.testing.assert_allclose(A.rand_augment(0, 5)(key(), x), x)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: A.rand_augment(2, 11), r"magnitude must be a number in \[0, 10\]"),
        (lambda: A.rand_augment(-1, 5), "n must be >= 0"),
        (lambda: A.augmix(severity=0), "severity must be >= 1"),
        (lambda: A.augmix(alpha=0.0), "alpha must be > 0"),
        (lambda: A.random_apply(A.identity, 1.2), "p must be a probability"),
        (lambda: A.one_of(A.identity, probs=[-1.0]), "probs must hold 1 non-negative weights"),
    ],
)
def test_bad_policy_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_non_callables_rejected():
    with pytest.raises(TypeError):
        A.compose(A.identity, 3)
    with pytest.raises(TypeError):
        A.batch("flip")


def test_batch_equals_vmap_on_split_keys():
    xs = images(4, 8, 8, 3)
    for fn in (A.from_spec("cifar+jitter+noise(sigma=0.1,p=0.5)+cutout(size=3)"),):
        ref = jax.vmap(fn)(jax.random.split(key(5), 4), xs)
        np.testing.assert_allclose(jax.jit(A.batch(fn))(key(5), xs), ref, atol=1e-6)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("rotate(max_degrees='x')", r"max_degrees='x' of 'rotate' must be float"),
        ("crop(padding=4.5)", r"padding=4.5 of 'crop' must be int"),
        ("noise(sigma='a')", r"sigma='a' of 'noise' must be"),
        ("jitter(brightness='lots')", r"brightness='lots' of 'jitter'"),
        ("cutout(size='big')", r"size='big' of 'cutout' must be"),
        ("rand_augment(n='2')", r"n='2' of 'rand_augment' must be int"),
        ("hflip(p='often')", r"p='often' of 'hflip' must be float"),
        ("jpeg(chroma_subsampling=1)", r"chroma_subsampling=1 of 'jpeg' must be bool"),
    ],
)
def test_option_types_are_checked_when_the_spec_is_parsed(spec, match):
    with pytest.raises(TypeError, match=match):
        A.from_spec(spec)  # no image, no tracing: the spec alone is rejected
