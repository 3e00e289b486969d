"""Names shared with dm-pix: dm-pix's positional calls give dm-pix's results (random ops too)."""

import functools

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg.augment as A
from jaxreg.augment import _rng, _warp
from tests.augment._util import image, key, reference

P = functools.partial

SHARED = {
    "adjust_brightness",
    "adjust_contrast",
    "adjust_gamma",
    "adjust_hue",
    "adjust_saturation",
    "center_crop",
    "flip_left_right",
    "flip_up_down",
    "gaussian_blur",
    "random_brightness",
    "random_contrast",
    "random_crop",
    "random_flip_left_right",
    "random_flip_up_down",
    "random_gamma",
    "random_hue",
    "random_saturation",
    "rot90",
    "rotate",
    "solarize",
}
SHAPES = [(6, 7, 3), (5, 5, 1), (9, 4, 3)]
RGB_SHAPES = [s for s in SHAPES if s[-1] == 3]


def _inputs(shape, seed=0):
    """An image in [0, 1] and one that strays outside it (as chained dm-pix ops leave it)."""
    x = image(*shape, seed=seed)
    return [x, x * 1.4 - 0.2]


def test_every_shared_name_is_covered():
    assert set(dir(pix)) & set(A.__all__) == SHARED


# ---------------------------------------------------------------------------------------------
# Deterministic colour ops.

COLOR_CASES = [
    ("adjust_brightness", (-0.3,), SHAPES),
    ("adjust_brightness", (0.45,), SHAPES),
    ("adjust_contrast", (-0.5,), SHAPES),
    ("adjust_contrast", (0.3,), SHAPES),
    ("adjust_contrast", (1.7,), SHAPES),
    ("adjust_gamma", (0.5,), SHAPES),
    ("adjust_gamma", (2.2,), SHAPES),
    ("adjust_hue", (-0.7,), RGB_SHAPES),
    ("adjust_hue", (0.1,), RGB_SHAPES),
    ("adjust_hue", (0.5,), RGB_SHAPES),
    ("adjust_hue", (1.3,), RGB_SHAPES),
    ("adjust_saturation", (0.0,), RGB_SHAPES),
    ("adjust_saturation", (0.4,), RGB_SHAPES),
    ("adjust_saturation", (2.5,), RGB_SHAPES),
    ("solarize", (0.3,), SHAPES),
    ("solarize", (0.7,), SHAPES),
]


@pytest.mark.parametrize("name, args, shapes", COLOR_CASES)
def test_colour_ops_match_dm_pix(name, args, shapes):
    ours, ref = getattr(A, name), getattr(pix, name)
    for seed, shape in enumerate(shapes):
        for x in _inputs(shape, seed):
            np.testing.assert_allclose(ours(x, *args), reference(ref, x, *args), atol=2e-6)
    x = image(*shapes[0])
    np.testing.assert_allclose(
        jax.jit(ours)(x, *args), reference(jax.jit(ref), x, *args), atol=2e-6
    )


@pytest.mark.parametrize("gain", [1.0, 1.5])
@pytest.mark.parametrize("assume_in_bounds", [False, True])
def test_adjust_gamma_options_match_dm_pix(gain, assume_in_bounds):
    x = image(6, 5, 3, seed=2) * 1.2  # above 1: dm-pix clips unless assume_in_bounds
    kw = {"gain": gain, "assume_in_bounds": assume_in_bounds}
    np.testing.assert_allclose(
        A.adjust_gamma(x, 0.8, **kw), reference(pix.adjust_gamma, x, 0.8, **kw), atol=2e-6
    )


def test_traced_colour_parameters():
    x = image(6, 6, 3, seed=3)
    fs = jnp.linspace(0.2, 1.8, 4)
    ours = jax.vmap(lambda f: A.adjust_saturation(x, f))(fs)
    ref = reference(jax.vmap(lambda f: pix.adjust_saturation(x, f)), fs)
    np.testing.assert_allclose(ours, ref, atol=2e-6)


def test_one_channel_hue_and_saturation_are_noops():
    g = image(5, 5, 1)
    np.testing.assert_array_equal(A.adjust_hue(g, 0.3), g)
    np.testing.assert_array_equal(A.adjust_saturation(g, 0.2), g)
    np.testing.assert_array_equal(A.random_hue(key(), g, 0.4), g)


# ---------------------------------------------------------------------------------------------
# Random colour ops: dm-pix's draws, so the same key gives the same image.

RANDOM_COLOR = [
    ("random_brightness", (0.3,), {}, SHAPES),
    ("random_contrast", (0.5, 1.5), {}, SHAPES),
    ("random_gamma", (0.5, 1.5), {}, SHAPES),
    ("random_gamma", (0.7, 2.0), {"gain": 1.3, "assume_in_bounds": True}, SHAPES),
    ("random_hue", (0.4,), {}, RGB_SHAPES),
    ("random_saturation", (0.2, 1.8), {}, RGB_SHAPES),
]


@pytest.mark.parametrize("name, args, kw, shapes", RANDOM_COLOR)
def test_random_colour_ops_match_dm_pix_for_the_same_key(name, args, kw, shapes):
    ours, ref = getattr(A, name), getattr(pix, name)
    for seed, shape in enumerate(shapes):
        x = image(*shape, seed=seed)
        for k in (key(seed), jax.random.PRNGKey(seed + 10)):
            np.testing.assert_allclose(
                ours(k, x, *args, **kw), reference(ref, k, x, *args, **kw), atol=2e-6
            )
    x = image(*shapes[0])
    keys = jax.random.split(key(5), 4)
    xs = jnp.stack([x] * 4)
    vmapped = jax.jit(jax.vmap(lambda k, v: ours(k, v, *args, **kw)))(keys, xs)
    ref_v = reference(jax.vmap(lambda k, v: ref(k, v, *args, **kw)), keys, xs)
    np.testing.assert_allclose(vmapped, ref_v, atol=2e-6)
    assert len({np.asarray(v).tobytes() for v in vmapped}) == 4


# ---------------------------------------------------------------------------------------------
# Geometric ops.


def test_flips_and_rot90_match_dm_pix():
    for shape in SHAPES:
        x = image(*shape)
        np.testing.assert_array_equal(A.flip_left_right(x), reference(pix.flip_left_right, x))
        np.testing.assert_array_equal(A.flip_up_down(x), reference(pix.flip_up_down, x))
        for k in range(-2, 5):
            np.testing.assert_array_equal(A.rot90(x, k), reference(pix.rot90, x, k))


@pytest.mark.parametrize(
    "size", [(4, 3), (9, 8), (1, 1), (12, 5), (3, 20), (20, 20), (8, 7), (2, 8)]
)
def test_center_crop_matches_dm_pix_also_when_larger(size):
    for shape in [(9, 8, 3), (6, 7, 1)]:
        x = image(*shape)
        np.testing.assert_array_equal(A.center_crop(x, *size), reference(pix.center_crop, x, *size))


ANGLES = [0.3, -2.1, 4.0, 0.0, np.pi / 2, np.pi, -np.pi / 2, 1e-3]


@pytest.mark.parametrize("mode", ["nearest", "constant", "mirror", "reflect", "wrap"])
@pytest.mark.parametrize("order", [0, 1])
def test_rotate_matches_dm_pix_for_every_mode_and_order(mode, order):
    rng = np.random.default_rng(0)
    angles = ANGLES + list(rng.uniform(-7.0, 7.0, 8))
    kw = {"order": order, "mode": mode, "cval": 0.3}
    ours = jax.jit(lambda v, a: A.rotate(v, a, **kw))
    ref = jax.jit(lambda v, a: pix.rotate(v, a, **kw))
    for shape in [(9, 12, 3), (8, 8, 1), (1, 5, 1), (7, 5, 3)]:
        x = image(*shape, seed=shape[0])
        for a in angles:
            np.testing.assert_allclose(
                ours(x, a), reference(ref, x, a), atol=1e-5, err_msg=f"{shape} {a}"
            )
    x = image(9, 12, 3)
    for a in angles[3:6]:  # eager, with the border cases 0, pi / 2 and pi
        y = A.rotate(x, a, **kw)
        np.testing.assert_allclose(y, reference(pix.rotate, x, a, **kw), atol=1e-5)


def test_rotate_defaults_and_degrees():
    x = image(8, 10, 3)
    np.testing.assert_allclose(A.rotate(x, 0.7), reference(pix.rotate, x, 0.7), atol=1e-5)
    np.testing.assert_allclose(
        A.rotate(x, jnp.deg2rad(25.0)), A.rotate(x, np.deg2rad(25.0)), atol=1e-6
    )
    y = A.rotate(x, 0.5, mode="constant", cval=(0.1, 0.2, 0.3))  # per-channel cval (extension)
    np.testing.assert_allclose(y[0, 0], [0.1, 0.2, 0.3])
    angles = jnp.asarray([0.0, 1e-3, 0.4, -2.0])  # traced angles, one per example
    ours = jax.jit(jax.vmap(lambda a: A.rotate(x, a, mode="constant")))(angles)
    ref = reference(jax.jit(jax.vmap(lambda a: pix.rotate(x, a, mode="constant"))), angles)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("sigma", [0.5, 1.2, 3.0])
@pytest.mark.parametrize("kernel_size", [1, 4, 5, 7.5, 9])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_gaussian_blur_matches_dm_pix(sigma, kernel_size, padding):
    for shape in [(12, 11, 3), (10, 10, 1)]:
        x = image(*shape, seed=shape[1])
        ours = A.gaussian_blur(x, sigma, kernel_size, padding=padding)
        ref = reference(pix.gaussian_blur, x, sigma, kernel_size, padding=padding)
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, atol=2e-6)


def test_gaussian_blur_pad_modes_are_jaxreg_extras():
    x = image(9, 9, 3, seed=1)
    c = jnp.full((8, 8, 1), 0.4)
    np.testing.assert_allclose(A.gaussian_blur(c, 1.5, pad_mode="reflect"), c, atol=1e-6)
    assert float(A.gaussian_blur(c, 1.5)[0, 0, 0]) < 0.35  # zero padding darkens the border
    np.testing.assert_allclose(  # default kernel size: 2 * ceil(3 sigma) + 1
        A.gaussian_blur(x, 1.2), A.gaussian_blur(x, 1.2, 9), atol=0
    )
    np.testing.assert_allclose(
        A.gaussian_blur(x, 1.2, 5, pad_mode="constant"), A.gaussian_blur(x, 1.2, 5), atol=0
    )


@pytest.mark.parametrize("crop", [(5, 4, 3), (9, 8, 3), (1, 1, 3), (5, 4)])
def test_random_crop_matches_dm_pix_for_the_same_key(crop):
    x = image(9, 8, 3)
    full = crop if len(crop) == 3 else (*crop, 3)
    outs = set()
    for s in range(6):
        for k in (key(s), jax.random.PRNGKey(s)):
            ours = A.random_crop(k, x, crop)
            np.testing.assert_array_equal(ours, reference(pix.random_crop, k, x, full))
            outs.add(np.asarray(ours).tobytes())
    assert len(outs) > (1 if crop[0] < 9 else 0)
    g = image(7, 6, 1)
    np.testing.assert_array_equal(
        A.random_crop(key(3), g, (4, 4, 1)), reference(pix.random_crop, key(3), g, (4, 4, 1))
    )


@pytest.mark.parametrize("pad_mode", ["reflect", "constant", "edge", "symmetric", "wrap"])
def test_random_crop_with_padding_is_dm_pix_on_the_padded_image(pad_mode):
    x = image(6, 7, 2)
    padded = jnp.pad(x, ((2, 2), (3, 3), (0, 0)), mode=pad_mode)
    for s in range(5):
        ours = A.random_crop(key(s), x, (5, 4, 2), padding=(2, 3), pad_mode=pad_mode)
        np.testing.assert_array_equal(ours, reference(pix.random_crop, key(s), padded, (5, 4, 2)))


@pytest.mark.parametrize("name", ["random_flip_left_right", "random_flip_up_down"])
@pytest.mark.parametrize("probability", [0.0, 0.3, 0.5, 1.0])
def test_random_flips_match_dm_pix_for_the_same_key(name, probability):
    x = image(5, 6, 3)
    ours, ref = getattr(A, name), getattr(pix, name)
    for s in range(8):
        np.testing.assert_array_equal(
            ours(key(s), x, probability=probability),
            reference(ref, key(s), x, probability=probability),
        )
    np.testing.assert_array_equal(ours(key(1), x), reference(ref, key(1), x))


def test_dm_pix_geometric_ops_merge_into_one_resampling():
    x = image(8, 8, 3)
    fn = A.compose(
        P(A.random_crop, crop_sizes=(6, 6, 3), padding=1),
        A.random_flip_left_right,
        P(A.random_flip_up_down, probability=0.7),
    )
    assert isinstance(fn, _warp.GeometricOp)
    for s in range(4):
        k1, k2, k3 = jax.random.split(key(s), 3)
        y = A.random_crop(k1, x, (6, 6, 3), padding=1)
        y = A.random_flip_left_right(k2, y)
        y = A.random_flip_up_down(k3, y, probability=0.7)
        np.testing.assert_array_equal(fn(key(s), x), y)
        np.testing.assert_array_equal(
            A.batch(fn)(key(s), x[None])[0], fn(jax.random.split(key(s), 1)[0], x)
        )


# ---------------------------------------------------------------------------------------------
# The enhance_* ops (and the spec ops) keep the numbers of the old factor ops.


def _luma(x):
    x = np.asarray(x)
    return x if x.shape[-1] == 1 else 0.299 * x[..., :1] + 0.587 * x[..., 1:2] + 0.114 * x[..., 2:]


@pytest.mark.parametrize("factor", [0.0, 0.4, 1.0, 1.7])
def test_enhance_ops_keep_the_old_formulas(factor):
    for shape in SHAPES:
        x = image(*shape, seed=4)
        xn = np.asarray(x)
        np.testing.assert_allclose(
            A.enhance_brightness(x, factor), np.clip(xn * factor, 0, 1), atol=1e-6
        )
        mean = _luma(xn).mean()
        np.testing.assert_allclose(
            A.enhance_contrast(x, factor), np.clip(mean + factor * (xn - mean), 0, 1), atol=1e-6
        )
        luma = _luma(xn)
        np.testing.assert_allclose(
            A.enhance_saturation(x, factor), np.clip(luma + factor * (xn - luma), 0, 1), atol=1e-6
        )


def test_colour_spec_ops_keep_their_numbers():
    x = image(8, 8, 3, seed=6)
    k = key(4)
    (k1,) = jax.random.split(k, 1)  # a spec is a compose: one key per stage
    for spec, kw in [
        ("brightness", {"brightness": 0.4}),
        ("brightness(strength=(0.5,1.5))", {"brightness": (0.5, 1.5)}),
        ("contrast(strength=0.3)", {"contrast": 0.3}),
        ("saturation", {"saturation": 0.4}),
        ("hue(max_delta=0.2)", {"hue": 0.2}),
    ]:
        np.testing.assert_array_equal(A.from_spec(spec)(k, x), A.color_jitter(k1, x, **kw))
    gamma = _rng.uniform(k1, (), 0.5, 2.0)
    np.testing.assert_allclose(
        A.from_spec("gamma(min_gamma=0.5,max_gamma=2.0)")(k, x),
        np.clip(np.asarray(x), 0, 1) ** float(gamma),
        atol=1e-6,
    )


# ---------------------------------------------------------------------------------------------
# dm-pix's ops (and other foreign functions) inside jaxreg's combinators, strict promotion on.


def test_dm_pix_ops_raise_under_strict_promotion_without_the_guard():
    with pytest.raises(Exception, match="promotion"):
        pix.random_hue(key(), image(), 0.1)


def test_dm_pix_ops_inside_compose_batch_random_apply_one_of():
    assert jax.config.jax_numpy_dtype_promotion == "strict"
    x = image(8, 8, 3, seed=2)
    hue = P(pix.random_hue, max_delta=0.2)  # raises under strict promotion when called bare
    bright = P(pix.random_brightness, max_delta=0.1)
    rot = lambda k, v: pix.rotate(v, jax.random.uniform(k, (), minval=-0.3, maxval=0.3))
    fn = A.compose(
        P(A.random_crop, crop_sizes=(6, 6, 3)), bright, hue, A.random_flip_left_right, rot
    )
    k1, k2, k3, k4, k5 = jax.random.split(key(1), 5)
    y = A.random_crop(k1, x, (6, 6, 3))
    y = reference(bright, k2, y)
    y = reference(hue, k3, y)
    y = A.random_flip_left_right(k4, y)
    y = reference(rot, k5, y)
    np.testing.assert_allclose(fn(key(1), x), y, atol=1e-6)
    np.testing.assert_allclose(jax.jit(fn)(key(1), x), y, atol=1e-5)
    xs = jnp.stack([x] * 4)
    batched = jax.jit(A.batch(fn))(key(2), xs)
    ref = jax.vmap(fn)(jax.random.split(key(2), 4), xs)
    np.testing.assert_allclose(batched, ref, atol=1e-5)
    assert batched.shape == (4, 6, 6, 3)
    _, k_op = jax.random.split(key(3))
    np.testing.assert_allclose(
        A.random_apply(hue, 1.0)(key(3), x), reference(hue, k_op, x), atol=1e-6
    )
    np.testing.assert_array_equal(A.random_apply(hue, 0.0)(key(3), x), x)
    picked = A.one_of(hue, P(A.color_jitter, brightness=0.3), probs=[1.0, 0.0])
    np.testing.assert_allclose(picked(key(3), x), reference(hue, k_op, x), atol=1e-6)
    np.testing.assert_allclose(
        jax.jit(A.batch(picked))(key(4), xs),
        jax.vmap(picked)(jax.random.split(key(4), 4), xs),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        jax.jit(A.batch(hue))(key(4), xs),
        reference(jax.vmap(hue), jax.random.split(key(4), 4), xs),
        atol=1e-6,
    )


def test_dm_pix_ops_in_the_training_loop(tmp_path):
    from jaxreg import data as data_lib
    from jaxreg.train.config import default_config
    from jaxreg.train.loop import train_and_evaluate

    s = data_lib.load_splits("digits")
    data = {
        "train": data_lib.stratified_subset(s["train"], 6, seed=0),
        "val": s["val"].subset(np.arange(40)),
        "test": s["test"].subset(np.arange(40)),
    }
    c = default_config()
    c.data, c.model, c.epochs, c.batch_size, c.progress = "digits", "tiny", 1, 30, False
    fn = A.compose(
        P(pix.random_brightness, max_delta=0.1),
        lambda k, v: pix.rotate(v, jax.random.uniform(k, (), minval=-0.2, maxval=0.2)),
        P(A.random_rotate, max_degrees=10),
    )
    r = train_and_evaluate(c, tmp_path, data=data, augment_fn=fn)
    assert r["epochs_run"] == 1 and 0.0 <= r["test_accuracy"] <= 1.0


# ---------------------------------------------------------------------------------------------
# Bad input: TypeError / ValueError naming the argument and the allowed values.


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: A.adjust_brightness(image(), "a"), TypeError, "delta must be a real number"),
        (lambda: A.adjust_contrast(image(), jnp.ones(3)), ValueError, r"factor must be a scalar"),
        (lambda: A.adjust_hue(image(), float("nan")), ValueError, "delta must be a finite"),
        (lambda: A.adjust_gamma(image(), 0.0), ValueError, "gamma must be > 0"),
        (lambda: A.adjust_gamma(image(), 1.0, assume_in_bounds=1), TypeError, "assume_in_bounds"),
        (lambda: A.adjust_saturation(image(4, 4, 2), 0.5), ValueError, "1 or 3 channels"),
        (lambda: A.adjust_brightness(jnp.zeros((4, 4)), 0.1), ValueError, "rank 3"),
        (lambda: A.random_brightness(key(), image(), -0.1), ValueError, "max_delta must be >= 0"),
        (lambda: A.random_contrast(key(), image(), 1.5, 0.5), ValueError, "lower must be <= upper"),
        (
            lambda: A.random_gamma(key(), image(), 1.5, 0.5),
            ValueError,
            "min_gamma must be <= max_gamma",
        ),
        (lambda: A.random_hue(jnp.zeros(3), image(), 0.1), TypeError, "key must be a JAX PRNG"),
        (lambda: A.rotate(image(), 0.3, mode="edge"), ValueError, "mode must be one of 'nearest'"),
        (lambda: A.rotate(image(), 0.3, order=3), ValueError, "order must be 0 or 1"),
        (lambda: A.rotate(image(), 0.3, cval="x"), ValueError, "cval must be a number"),
        (lambda: A.rotate(image(), "0.3"), TypeError, "angle must be a real number"),
        (lambda: A.center_crop(image(), 0, 3), ValueError, "height must be >= 1"),
        (lambda: A.center_crop(image(), 2.5, 3), TypeError, "height must be an int"),
        (lambda: A.random_crop(key(), image(), (4,)), ValueError, "crop_sizes must have 3"),
        (lambda: A.random_crop(key(), image(), 4), TypeError, "crop_sizes must be a sequence"),
        (lambda: A.random_crop(key(), image(), (9, 4, 3)), ValueError, "must not exceed"),
        (lambda: A.random_crop(key(), image(), (4, 4, 1)), ValueError, "needs images with 1"),
        (
            lambda: A.random_crop(key(), image(), (4, 4), pad_mode="mirror"),
            ValueError,
            "pad_mode must be one of",
        ),
        (lambda: A.gaussian_blur(image(), 1.0, 5, padding="FULL"), ValueError, "padding must be"),
        (lambda: A.gaussian_blur(image(), 0.0, 5), ValueError, "sigma must be > 0"),
        (lambda: A.gaussian_blur(image(), 1.0, 0), ValueError, "kernel_size must be"),
        (
            lambda: A.gaussian_blur(image(), 1.0, 5, padding="VALID", pad_mode="reflect"),
            ValueError,
            "pad_mode must be None",
        ),
        (lambda: A.gaussian_blur(image(4, 4, 3), 1.0, 5, padding="VALID"), ValueError, "VALID"),
        (
            lambda: A.random_flip_left_right(key(), image(), probability=1.5),
            ValueError,
            "probability must be a probability",
        ),
    ],
)
def test_bad_arguments(call, err, match):
    with pytest.raises(err, match=match):
        call()
