"""Small helpers shared by the augment tests (tiny images keep the suite fast)."""

import jax
import numpy as np


def image(h=8, w=8, c=3, seed=0):
    return jax.numpy.asarray(np.random.default_rng(seed).random((h, w, c), dtype=np.float32))


def images(b=4, h=8, w=8, c=3, seed=0):
    return jax.numpy.asarray(np.random.default_rng(seed).random((b, h, w, c), dtype=np.float32))


def key(seed=0):
    return jax.random.key(seed)


def reference(fn, *args, **kwargs):
    """Calls a reference library (dm-pix) with JAX's default promotion rules, which it needs."""
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        return fn(*args, **kwargs)
