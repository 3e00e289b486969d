"""A fusion fence for XLA:CPU: a result computed behind an always-true conditional.

XLA fuses a cheap-looking computation into every consumer that reads it and recomputes it per
value read (a blur's taps, the next colour op, mixup's partner lookup). A conditional is a
fusion boundary: behind one, the result is materialised once. Lowered for the CPU
(workarounds on), `fence(fn, *args)` puts `fn` behind a conditional whose predicate is always
true but computed from the data, so XLA cannot remove it; lowered for any other platform, and
with the workarounds off, it is `fn(*args)` with no conditional.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxreg._cpu import switch

__all__ = []  # private module

SCOPE = "jaxreg_cpu_fence"  # name scope of the fenced computation (visible in lowered programs)

_UNSIGNED = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}


def fence(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)`, materialised once on the CPU instead of fused into its consumers.

    Args:
      fn: a function of arrays (pytrees in, pytree out).
      *args: its arguments; the first array among them (e.g. a batch of keys) feeds the
        always-true predicate.

    Returns:
      `fn(*args)`: the same values on every path.
    """
    if not switch.enabled():
        return fn(*args)
    return lax.platform_dependent(*args, cpu=functools.partial(_fenced, fn), default=fn)


def _fenced(fn, *args):
    with jax.named_scope(SCOPE):
        out = jax.eval_shape(fn, *args)

        def skipped(*_):  # never runs; gives the conditional a second branch
            return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out)

        return lax.cond(_opaque_true(args), fn, skipped, *args)


def _opaque_true(args) -> jax.Array:
    """True, computed from the first element of the first array in `args` (`(bits | 1) != 0`)."""
    leaves = [a for a in jax.tree.leaves(args) if getattr(a, "size", 0)]
    if not leaves:
        return jnp.bool_(True)  # nothing to compute it from: XLA drops the conditional
    a = leaves[0]
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
        a = jax.random.key_data(a)
    v = jnp.ravel(a)[0]
    if jnp.issubdtype(v.dtype, jnp.complexfloating):
        v = jnp.real(v)
    if v.dtype == jnp.bool_:
        v = v.astype(jnp.uint8)
    bits = lax.bitcast_convert_type(v, _UNSIGNED[v.dtype.itemsize])
    return (bits | jnp.ones((), bits.dtype)) != jnp.zeros((), bits.dtype)
