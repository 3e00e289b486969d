"""The batch-level resampling that `batch` uses for geometric stages equals vmapping the op."""

import functools

import jax
import numpy as np
import pytest

import jaxreg.augment as A
from jaxreg.augment import _warp, geometric
from tests.augment._util import images, key

P = functools.partial

BILINEAR = {
    "rotate+scale+resized_crop+flip": A.compose(
        P(A.random_rotate, max_degrees=15),
        P(A.random_scale, min_scale=0.8, max_scale=1.2),
        P(A.random_resized_crop, size=6, scale=(0.08, 1.0)),
        A.random_flip,
    ),
    "rotate_fill_to_rectangle": A.compose(
        P(A.random_rotate, max_degrees=40, fill=0.25),
        P(A.random_resized_crop, size=(5, 9), scale=(0.3, 1.0)),
    ),
    **{
        f"affine_{mode}": P(A.random_affine, max_degrees=60, scale=(0.5, 1.5), mode=mode)
        for mode in ("constant", "edge", "reflect", "symmetric", "wrap")
    },
}
EXACT = {
    "crop_reflect+flip": A.compose(
        P(A.random_crop, crop_sizes=(6, 5), padding=3, pad_mode="reflect"),
        P(A.random_flip, horizontal=True, vertical=True),
    ),
    "crop_constant": P(
        A.random_crop, crop_sizes=(7, 7, 2), padding=(2, 4), pad_mode="constant", fill=0.5
    ),
    "crop_wrap": P(A.random_crop, crop_sizes=(5, 5), padding=4, pad_mode="wrap"),
    "spec_crop+dm_pix_flips": A.compose(
        A.from_spec("crop(size=(6,5),padding=2)"),
        A.random_flip_left_right,
        P(A.random_flip_up_down, probability=0.3),
    ),
    "rot90+flip": A.compose(A.random_rot90, A.random_flip),
}


def _check(fn, shape):
    op = geometric.as_geometric(fn)
    assert isinstance(op, _warp.GeometricOp)
    xs = images(*shape, seed=1)
    keys = jax.random.split(key(7), shape[0])
    ref = jax.jit(jax.vmap(op))(keys, xs)
    # Same arithmetic; XLA may contract multiply-adds differently in the two programs (1 ulp).
    np.testing.assert_allclose(jax.jit(op.batched)(keys, xs), ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(jax.jit(A.batch(fn))(key(7), xs), ref, rtol=0, atol=1e-5)
    return op


@pytest.mark.parametrize("name", sorted(BILINEAR))
def test_bilinear_batched_equals_vmap(name):
    op = _check(BILINEAR[name], (3, 7, 8, 3))
    assert not op.exact and not op.axis_aligned


@pytest.mark.parametrize("shape", [(2, 1, 6, 2), (2, 5, 1, 1)])
def test_bilinear_batched_equals_vmap_on_single_row_or_column(shape):
    _check(BILINEAR["affine_constant"], shape)


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_batched_equals_vmap(name):
    op = _check(EXACT[name], (3, 8, 8, 2))
    assert op.exact


def test_batched_checks_keys_like_the_op():
    op = geometric.as_geometric(P(A.random_rotate, max_degrees=15))
    with pytest.raises(TypeError):
        op.batched(np.zeros((2, 2), np.float32), images(2, 6, 6, 3))


# Angles at which, before source coordinates were computed once, an output pixel of this image
# took its tap index from one rounding of its coordinate and its weight from another (jit only).
ANGLES = np.linspace(-3, 3, 601, dtype=np.float32)
ROUNDING_ANGLES = ANGLES[[296, 297, 298, 303, 305, 306, 307]]


def _edge_bilinear(x, m):
    """float64 bilinear resampling of x (H, W, C) at the coordinates of map m, edge rule."""
    h, w, _ = x.shape
    m = np.asarray(m, np.float64)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    y = np.clip(m[0, 0] * yy + m[0, 1] * xx + m[0, 2], 0, h - 1)
    x_ = np.clip(m[1, 0] * yy + m[1, 1] * xx + m[1, 2], 0, w - 1)
    y0 = np.minimum(np.floor(y), h - 2).astype(int)
    x0 = np.minimum(np.floor(x_), w - 2).astype(int)
    fy, fx = (y - y0)[..., None], (x_ - x0)[..., None]
    v = np.asarray(x, np.float64)
    top = v[y0, x0] + fx * (v[y0, x0 + 1] - v[y0, x0])
    bot = v[y0 + 1, x0] + fx * (v[y0 + 1, x0 + 1] - v[y0 + 1, x0])
    return top + fy * (bot - top)


def test_affine_index_and_weight_come_from_one_coordinate():
    x = images(1, 9, 12, 3)[0]
    ref = np.stack(
        [
            _edge_bilinear(x, geometric.affine_matrix(d, 1.0, (0.0, 0.0), (0.0, 0.0), (9, 12)))
            for d in ANGLES
        ]
    )
    affine = lambda d: A.affine(x, degrees=d, mode="edge")
    np.testing.assert_allclose(jax.jit(lambda ds: jax.lax.map(affine, ds))(ANGLES), ref, atol=1e-5)
    np.testing.assert_allclose(jax.jit(jax.vmap(affine))(ANGLES), ref, atol=1e-5)
    jitted = jax.jit(affine)
    for d in ROUNDING_ANGLES:
        np.testing.assert_allclose(affine(d), jitted(d), rtol=0, atol=1e-5)
