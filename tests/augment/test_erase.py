"""Erasing ops change only the erased region; fills: constant, noise, mean, another image."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import jaxreg.augment as A
from tests.augment._util import image, key

FAST = settings(max_examples=10, deadline=None)


def _changed(x, y):
  return np.any(np.asarray(x) != np.asarray(y), axis=-1)


def _is_box(mask):
  rows, cols = np.nonzero(mask)
  if rows.size == 0:
    return True, (0, 0)
  h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
  return rows.size == h * w, (h, w)


_cutout = jax.jit(lambda k, x, o: (A.cutout(k, x, size=(3, 4), fill=-1.0),
                                   A.cutout(k, x, size=3, fill="noise"),
                                   A.cutout(k, x, size=3, fill=o)))
_erasing = jax.jit(lambda k, x: A.random_erasing(k, x, p=1.0, scale=(0.1, 0.3), fill=-1.0))


@FAST
@given(st.integers(0, 2**30))
def test_cutout_changes_one_clipped_box(seed):
  x = image(9, 10, 3, seed=seed % 7)
  other = image(9, 10, 3, seed=99)
  a, b, c = _cutout(key(seed), x, other)
  box, (h, w) = _is_box(_changed(x, a))
  assert box and h <= 3 and w <= 4
  assert np.all(np.asarray(a)[_changed(x, a)] == -1.0)
  assert _is_box(_changed(x, b))[0]
  m = _changed(x, c)
  np.testing.assert_array_equal(np.asarray(c)[m], np.asarray(other)[m])


@FAST
@given(st.integers(0, 2**30))
def test_random_erasing_changes_only_a_box_of_the_requested_area(seed):
  x = image(10, 10, 1, seed=seed % 5)
  y = _erasing(key(seed), x)
  mask = _changed(x, y)
  box, (h, w) = _is_box(mask)
  assert box
  if mask.any():
    assert 0.05 <= h * w / 100 <= 0.4  # area fraction in scale, up to rounding
  assert np.all(np.asarray(y)[mask] == -1.0)


def test_random_erasing_p_zero_and_mean_fill():
  x = image(8, 8, 3)
  np.testing.assert_array_equal(A.random_erasing(key(), x, p=0.0), x)
  y = A.random_erasing(key(1), x, p=1.0, fill="mean")
  m = _changed(x, y)
  np.testing.assert_allclose(np.asarray(y)[m][0], np.asarray(x).mean(axis=(0, 1)), atol=1e-6)


def test_corner_patches_touch_only_corners():
  x = image(12, 12, 3)
  ys = jax.jit(jax.vmap(lambda k: A.corner_patches(k, x, size=3, p=0.7)))(
      jax.random.split(key(), 8))
  any_change = False
  for y in ys:
    m = _changed(x, y)
    any_change |= m.any()
    r, c = np.nonzero(m)
    assert np.all(((r < 3) | (r >= 9)) & ((c < 3) | (c >= 9)))
  assert any_change


def test_erase_twin():
  x = image(6, 6, 1)
  y = A.erase(x, 1, 2, 2, 3, fill=0.5)
  np.testing.assert_array_equal(np.asarray(y)[1:3, 2:5], 0.5)
  assert _changed(x, y).sum() == 6


@pytest.mark.parametrize("call", [
    lambda: A.cutout(key(), image(), size=0),
    lambda: A.cutout(key(), image(), size=9),
    lambda: A.cutout(key(), image(), size=3, fill="blue"),
    lambda: A.random_erasing(key(), image(), p=2.0),
    lambda: A.random_erasing(key(), image(), scale=(0.5, 0.1)),
    lambda: A.corner_patches(key(), image(), size=-1),
    lambda: A.cutout(key(), image(), size=3, fill=jnp.zeros((4, 4, 3))),
])
def test_bad_arguments(call):
  with pytest.raises(ValueError):
    call()
