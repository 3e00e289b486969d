"""Geometric ops: involutions, identities, dm-pix agreement, crops, one resampling per chain."""

import functools

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxreg.augment as A
from jaxreg.augment import _warp, geometric
from tests.augment._util import image, key, reference

FAST = settings(max_examples=8, deadline=None)
shapes = st.sampled_from([(1, 5, 1), (5, 7, 1), (8, 8, 3)])  # few shapes: compiled once each


@FAST
@given(shapes, st.integers(0, 2**31 - 1))
def test_flips_are_involutions(shape, seed):
    x = image(*shape, seed=seed)
    np.testing.assert_array_equal(A.flip_left_right(A.flip_left_right(x)), x)
    np.testing.assert_array_equal(A.flip_up_down(A.flip_up_down(x)), x)
    y = _flip_both(key(seed), x)
    assert any(
        np.array_equal(y, f(x))
        for f in (
            lambda v: v,
            A.flip_left_right,
            A.flip_up_down,
            lambda v: A.flip_up_down(A.flip_left_right(v)),
        )
    )


_flip_both = jax.jit(functools.partial(A.random_flip, horizontal=True, vertical=True))


@FAST
@given(shapes, st.integers(0, 1000))
def test_rotate_zero_scale_one_translate_zero_are_identity(shape, seed):
    x = image(*shape, seed=seed)
    for y in _identities(key(seed), x):
        np.testing.assert_allclose(y, x, atol=1e-6)


@jax.jit
def _identities(k, x):
    return (
        A.rotate(x, 0.0),
        A.scale(x, 1.0),
        A.translate(x, 0.0, 0.0),
        A.affine(x),
        A.random_rotate(k, x, max_degrees=0.0),
        A.random_scale(k, x, min_scale=1.0, max_scale=1.0),
    )


def test_flips_and_rot90_match_dm_pix():
    x = image(6, 9, 3)
    np.testing.assert_array_equal(A.flip_left_right(x), reference(pix.flip_left_right, x))
    np.testing.assert_array_equal(A.flip_up_down(x), reference(pix.flip_up_down, x))
    for k in range(-1, 4):
        np.testing.assert_array_equal(A.rot90(x, k), reference(pix.rot90, x, k))


@pytest.mark.parametrize("degrees", [17.0, -151.0])
def test_rotate_takes_radians_as_dm_pix(degrees):
    x = image(9, 12, 3)
    ours = A.rotate(x, np.deg2rad(degrees), mode="constant", cval=0.25)
    ref = reference(pix.rotate, x, np.deg2rad(degrees), order=1, mode="constant", cval=0.25)
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    # the same rotation in degrees, as the random ops and the spec "rotate" draw it
    m = A.warp_affine(x, geometric.rotation_matrix(np.deg2rad(degrees), (9, 12)), fill=0.25)
    np.testing.assert_allclose(ours, m, atol=2e-5)


def test_rotate_quarter_turn_equals_rot90():
    x = image(7, 7, 1)
    np.testing.assert_allclose(A.rotate(x, np.pi / 2), A.rot90(x, 1), atol=1e-5)


def _blob(n=33, radius=12, sigma=2.0):
    """(n, n, 1) Gaussian blob `radius` pixels right of the centre (angle 0)."""
    r, c = np.mgrid[:n, :n] - (n - 1) / 2.0
    return jnp.asarray(np.exp(-(r**2 + (c - radius) ** 2) / (2 * sigma**2))[..., None], jnp.float32)


def _angle(y):
    """Counter-clockwise angle on screen (degrees) of the blob's centroid about the centre."""
    y = np.asarray(y)[..., 0]
    n = y.shape[0]
    r, c = np.mgrid[:n, :n] - (n - 1) / 2.0
    return np.degrees(np.arctan2(-(r * y).sum() / y.sum(), (c * y).sum() / y.sum()))


_rotations = jax.jit(
    jax.vmap(
        lambda k, x: (
            A.random_rotate(k, x, max_degrees=10.0),
            A.random_affine(k, x, max_degrees=10.0),
            A.from_spec("rotate(max_degrees=10)")(k, x),
        ),
        in_axes=(0, None),
    )
)


def test_random_rotation_angles_are_degrees_within_max_degrees():
    # The angle is drawn in degrees from [-10, 10]: recovered from where an off-centre blob
    # lands, every draw stays within 10 degrees (plus centroid error) and the draws fill the
    # range. The deterministic twin (dm-pix's `rotate`) turns by an angle in radians, counter-clockwise.
    x = _blob()
    np.testing.assert_allclose(_angle(x), 0.0, atol=1e-6)
    for deg in (10.0, -7.0, 90.0):
        np.testing.assert_allclose(_angle(A.rotate(x, np.deg2rad(deg))), deg, atol=0.2)
    for ys in _rotations(jax.random.split(key(2), 64), x):
        angles = np.array([_angle(y) for y in ys])
        assert np.all(np.abs(angles) <= 10.2), angles
        assert angles.min() < -7 and angles.max() > 7  # the draws spread over the range


def test_center_crop_matches_dm_pix():
    x = image(9, 8, 3)
    for size in [(4, 3), (9, 8), (1, 1)]:
        np.testing.assert_array_equal(A.center_crop(x, *size), reference(pix.center_crop, x, *size))
        np.testing.assert_array_equal(
            A.from_spec(f"center_crop(size={size})")(key(), x), A.center_crop(x, *size)
        )
    with pytest.raises(ValueError, match="must not exceed"):  # the spec op does not clip
        A.from_spec("center_crop(size=(10,8))")(key(), x)


@pytest.mark.parametrize("mode", ["reflect", "constant", "edge", "symmetric", "wrap"])
def test_spec_crop_is_a_window_of_the_padded_image(mode):
    x = np.asarray(image(6, 7, 2))
    np_mode = {
        "edge": "edge",
        "reflect": "reflect",
        "symmetric": "symmetric",
        "wrap": "wrap",
        "constant": "constant",
    }[mode]
    padded = np.pad(x, ((2, 2), (2, 2), (0, 0)), mode=np_mode)
    windows = {padded[i : i + 5, j : j + 4].tobytes() for i in range(6) for j in range(8)}
    crop = A.from_spec(f"crop(size=(5,4),padding=2,pad_mode={mode!r})")
    seen = set()
    for s in range(12):
        y = np.asarray(crop(key(s), jnp.asarray(x)))
        assert y.shape == (5, 4, 2)
        assert y.tobytes() in windows
        seen.add(y.tobytes())
    assert len(seen) > 3  # different offsets for different keys


def test_random_resized_crop_full_box_is_identity_and_shapes():
    x = image(8, 8, 3)
    y = A.random_resized_crop(key(), x, size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_allclose(y, x, atol=1e-6)
    y = A.random_resized_crop(key(), x, size=(5, 6))
    assert y.shape == (5, 6, 3)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_resize_and_resized_crop_twins():
    x = image(8, 8, 1)
    np.testing.assert_allclose(A.resize(x, 8), x, atol=1e-6)
    np.testing.assert_allclose(A.resized_crop(x, 2, 1, 4, 6, size=(4, 6)), x[2:6, 1:7], atol=1e-6)
    np.testing.assert_array_equal(A.crop(x, 1, 2, size=3), x[1:4, 2:5])


def _count(jaxpr, name):
    n = 0
    for eqn in jaxpr.eqns:
        n += eqn.primitive.name == name
        for p in eqn.params.values():
            if hasattr(p, "jaxpr"):
                n += _count(p.jaxpr, name)
    return n


def test_geometric_chain_resamples_once():
    fn = A.compose(
        functools.partial(A.random_rotate, max_degrees=10),
        functools.partial(A.random_scale, min_scale=0.9, max_scale=1.1),
        functools.partial(A.random_translate, max_fraction=0.1),
        functools.partial(A.random_shear, max_degrees=5),
    )
    assert isinstance(fn, _warp.GeometricOp)
    jaxpr = jax.make_jaxpr(fn)(key(), image(8, 8, 3)).jaxpr
    assert _count(jaxpr, "gather") == 1
    spec_fn = A.from_spec("rotate(max_degrees=10)+scale(min_scale=0.9,max_scale=1.1)+translate")
    assert isinstance(spec_fn, _warp.GeometricOp)
    assert _count(jax.make_jaxpr(A.from_spec("digits"))(key(), image()).jaxpr, "gather") == 1


def test_exact_chain_equals_sequential_application():
    x = image(8, 8, 3)
    fn = A.compose(
        functools.partial(A.random_crop, crop_sizes=(6, 6), padding=2),
        functools.partial(A.random_flip, vertical=True),
        A.random_rot90,
    )
    for s in range(5):
        k1, k2, k3 = jax.random.split(key(s), 3)
        y = A.random_crop(k1, x, (6, 6, 3), padding=2)
        y = A.random_flip(k2, y, vertical=True)
        y = A.random_rot90(k3, y)
        np.testing.assert_array_equal(fn(key(s), x), y)


def test_geometric_ops_with_fill_and_modes():
    x = jnp.ones((6, 6, 3))
    y = A.scale(x, 0.5, fill=(0.1, 0.2, 0.3))
    np.testing.assert_allclose(y[0, 0], [0.1, 0.2, 0.3], atol=1e-6)
    np.testing.assert_allclose(y[3, 3], [1.0, 1.0, 1.0], atol=1e-6)
    for mode in ("nearest", "mirror", "reflect", "wrap"):
        np.testing.assert_allclose(A.rotate(x, np.deg2rad(30.0), mode=mode), x, atol=1e-6)
    for mode in ("edge", "reflect", "symmetric", "wrap"):
        y = A.random_rotate(key(), x, max_degrees=30.0, mode=mode)
        np.testing.assert_allclose(y, x, atol=1e-6)


@pytest.mark.parametrize(
    "call, err",
    [
        (lambda: A.rotate(jnp.zeros((4, 4)), 10.0), ValueError),
        (lambda: A.rotate(jnp.zeros((4, 4, 3), jnp.int32), 10.0), TypeError),
        (lambda: A.random_crop(key(), image(), (9, 9, 3)), ValueError),
        (lambda: A.random_crop(key(), image(), (0, 0, 3)), ValueError),
        (lambda: A.random_crop(key(), image(), (-2, -2)), ValueError),
        (lambda: A.random_crop(key(), image(), (4, 4), pad_mode="mirror"), ValueError),
        (lambda: A.center_crop(image(), 0, 4), ValueError),
        (lambda: A.random_flip(key(), image(), p=1.5), ValueError),
        (lambda: A.random_scale(key(), image(), min_scale=0.0, max_scale=1.0), ValueError),
        (lambda: A.random_scale(key(), image(), min_scale=1.2, max_scale=1.0), ValueError),
        (lambda: A.random_resized_crop(key(), image(), size=4, scale=(0.5, 1.5)), ValueError),
        (lambda: A.random_rot90(key(), image(4, 6)), ValueError),
        (lambda: A.scale(image(), -1.0), ValueError),
        (lambda: A.random_rotate(jnp.zeros(3), image(), max_degrees=3), TypeError),
    ],
)
def test_bad_arguments_raise_before_tracing(call, err):
    with pytest.raises(err):
        call()


# Behaviours a mutation pass (make mutate) found unguarded after the dm-pix and vmap work.


def test_rot90_counts_quarter_turns_modulo_four():
    x = image(5, 4, 2)
    for k in (-1, 4, 5, 6, 7):
        np.testing.assert_allclose(A.rot90(x, k), np.rot90(np.asarray(x), k, axes=(0, 1)))


def test_rotate_and_scale_check_fill_and_mode_before_tracing():
    x = image(6, 6, 3)
    with pytest.raises(ValueError, match="cval"):
        A.rotate(x, 0.1, mode="constant", cval=(0.1, 0.2))  # 2 values for 3 channels
    with pytest.raises(ValueError, match="mode"):
        A.scale(x, 1.2, mode="bogus")


def _ramp(h, w):
    """(h, w, 2) image: channel 0 is the row's fraction of the height, channel 1 the column's."""
    r, c = np.mgrid[:h, :w].astype(np.float32)
    return jnp.asarray(np.stack([r / (h - 1), c / (w - 1)], -1))


def test_random_translate_shifts_both_ways_within_the_fraction():
    # Mode "edge" keeps the ramp's values; the mean of a shifted ramp moves with the shift.
    x = _ramp(21, 21)
    ys = jax.jit(jax.vmap(lambda k: A.random_translate(k, x, max_fraction=0.2, mode="edge")))(
        jax.random.split(key(3), 64)
    )
    shift = np.asarray(ys).mean(axis=(1, 2)) - np.asarray(x).mean(axis=(0, 1))  # (64, 2)
    for axis in (0, 1):
        assert shift[:, axis].min() < -0.05 and shift[:, axis].max() > 0.05, shift[:, axis]


def test_random_crop_reaches_every_offset():
    x = _ramp(6, 5)
    crops = jax.jit(jax.vmap(lambda k: A.random_crop(k, x, (3, 3, 2))))(
        jax.random.split(key(4), 300)
    )
    corners = {tuple(np.round(np.asarray(c[0, 0]) * (5, 4)).astype(int)) for c in crops}
    assert corners == {(i, j) for i in range(4) for j in range(3)}, sorted(corners)


def test_random_resized_crop_areas_follow_scale():
    # On a ramp, each channel's value range is the crop's side as a fraction of the image's.
    x = _ramp(32, 32)
    ys = jax.jit(
        jax.vmap(
            lambda k: A.random_resized_crop(k, x, size=(16, 16), scale=(0.1, 1.0), ratio=(1, 1))
        )
    )(jax.random.split(key(5), 128))
    ys = np.asarray(ys)
    area = np.ptp(ys[..., 0], axis=(1, 2)) * np.ptp(ys[..., 1], axis=(1, 2))
    assert area.min() < 0.3 and area.max() > 0.8, (area.min(), area.max())


def test_random_resized_crop_fallback_is_the_centred_crop_with_the_ratio_clamped():
    # scale (1, 1) on an image whose ratio lies outside `ratio`: no draw fits (torchvision's
    # fallback): the centred crop of the whole width, its height = width / ratio[0].
    x = _ramp(16, 8)  # width / height = 0.5 < 1.25
    y = A.random_resized_crop(key(6), x, size=(6, 8), scale=(1.0, 1.0), ratio=(1.25, 2.0))
    np.testing.assert_allclose(y, x[5:11], atol=1e-6)
    # Inside the range, a draw either fits (the whole image) or falls back to the whole image.
    # (All ten draws miss in about 15 % of the keys: ratios outside (0.886, 1.129) round a side
    # to 9 pixels.)
    x = _ramp(8, 8)
    ys = jax.jit(
        jax.vmap(
            lambda k: A.random_resized_crop(k, x, size=(8, 8), scale=(1.0, 1.0), ratio=(0.5, 2.0))
        )
    )(jax.random.split(key(7), 64))
    np.testing.assert_allclose(ys, jnp.broadcast_to(x, ys.shape), atol=1e-6)


def test_random_rot90_draws_all_four_quarter_turns():
    x = image(5, 5, 1)
    turns = [np.asarray(np.rot90(np.asarray(x), k, axes=(0, 1))) for k in range(4)]
    ys = jax.jit(jax.vmap(lambda k: A.random_rot90(k, x)))(jax.random.split(key(9), 40))
    seen = {next(k for k in range(4) if np.allclose(y, turns[k], atol=1e-6)) for y in ys}
    assert seen == {0, 1, 2, 3}
