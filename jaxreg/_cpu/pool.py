"""2x2 max pooling with an XLA:CPU backward pass: one broadcast select from the first-max positions.

XLA's gradient of a max `reduce_window` is `select_and_scatter`, which XLA:CPU runs slowly (more
so inside `lax.scan`). Lowered for the CPU (workarounds on), the forward pass keeps the position
of each window's first maximum as int8 and the backward pass writes the input gradient with one
broadcast select: the same values and gradients. Elsewhere, and with the workarounds off, it is
XLA's `reduce_window` with JAX's own gradient.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxreg._cpu import switch

__all__ = []  # private module

SCOPE = "jaxreg_cpu_pool_backward"  # name scope of the CPU rule (visible in lowered programs)

# (N, H, W, C) with even H and W -> ((N, H/2, W/2, C) maxima, int8 first-max positions 0..3)
MaxAndIndex = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


def reduce_window_max(x: jax.Array) -> jax.Array:
    """XLA's 2x2, stride-2 max `reduce_window` of NHWC `x` (gradient: `select_and_scatter`)."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def max_pool_2x2(x: jax.Array, max_and_index: MaxAndIndex) -> jax.Array:
    """`reduce_window_max(x)` for even H and W; lowered for the CPU, with the select backward.

    Args:
      x: (N, H, W, C) floating array, H and W even.
      max_and_index: the window maxima and row-major first-max positions of `x` (computed
        once, in the forward pass, on the CPU path).

    Returns:
      (N, H/2, W/2, C) maxima; the gradient goes to the first maximum of each window in
      row-major order on every path.
    """
    if not switch.enabled():
        return reduce_window_max(x)

    def cpu(v):
        with jax.named_scope(SCOPE):
            return _max_pool_cpu_backward(max_and_index, v)

    return lax.platform_dependent(x, cpu=cpu, default=reduce_window_max)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _max_pool_cpu_backward(max_and_index, x):
    return max_and_index(x)[0]


def _fwd(max_and_index, x):
    return max_and_index(x)


def _bwd(max_and_index, idx, g):
    del max_and_index
    n, ho, wo, ch = g.shape
    with jax.named_scope(SCOPE):
        shape = (1, 1, 2, 1, 2, 1)
        pos = 2 * lax.broadcasted_iota(jnp.int8, shape, 2) + lax.broadcasted_iota(
            jnp.int8, shape, 4
        )
        dx = jnp.where(
            idx[:, :, None, :, None, :] == pos, g[:, :, None, :, None, :], jnp.zeros((), g.dtype)
        )
    return (dx.reshape(n, 2 * ho, 2 * wo, ch),)


_max_pool_cpu_backward.defvjp(_fwd, _bwd)
