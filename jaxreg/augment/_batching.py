"""Batching rules for per-example ops: under `jax.vmap` an op runs its batched form.

    op(*args) = fn(*args)        jax.vmap(op)(*xs) = fence(batched or jax.vmap(fn), *xs)

`vmappable(fn, *args, batched=...)` computes `fn(*args)` for one example. Under `jax.vmap` (and
so under `jaxreg.augment.batch`) a `jax.custom_batching.custom_vmap` rule replaces the vmapped
per-example program by `batched` (a batch-level implementation with the same values, e.g. a
warp whose gather indexes the batch as one array) or, without one, by `jax.vmap(fn)` itself;
on the CPU either runs behind a fusion fence (`jaxreg._cpu.fence`), so the op's result is
materialised once instead of being recomputed inside every consumer that reads it.

`custom_vmap` alone blocks reverse-mode differentiation, so the op is a `jax.custom_vjp` whose
forward pass is that `custom_vmap` function and whose backward pass is another one: the vector-
Jacobian product of `fn`, batched as the vector-Jacobian product of the batched form. Gradients
flow to every floating input (images, traced parameters, values a function closes over) in both
orders, `jax.grad` of a loss of `jax.vmap(op)` and `jax.vmap(jax.grad(...))`, under `jit` and
`lax.scan`; PRNG keys and integer inputs get none. Forward-mode (`jax.jvp`, `jax.jacfwd`) is
not available through a `custom_vjp` (JAX raises TypeError): ops that rely on JAX's own
batching (deterministic colour ops, flips, crops) keep it.

Which ops carry a rule: every op that resamples through an affine map (`_warp.warp`,
`_warp.warp_ndimage`: the random geometric ops, `affine`, `warp_affine`, `rotate`, `scale`,
`translate`, `shear`, `resize`, `resized_crop`), since XLA:CPU runs a gather as a scalar loop
whose cost grows with the index arity and vmapping adds a batch component to every pixel's
index; every random op and policy, whose vmapped code is already batched (elementwise draws
and pixels) but which, fused into each consumer that reads them, were recomputed per read (the
rule adds the fence `batch` added per stage); foreign stages of `compose`. The others rely on
JAX's batching: deterministic colour ops, `add_noise`, `erase` (elementwise arithmetic and
per-example reductions), `gaussian_blur`, `downscale`, `jpeg_compress` (static shifts, resizes
and block transforms), flips, `rot90`, `center_crop` (static slices) and `crop` (one window
per example): their vmapped code is the batched code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import custom_vmap

from jaxreg._cpu.fence import fence

__all__ = ["vmappable"]


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def _differentiable(x: Any) -> bool:
    """Whether `x` takes a cotangent: a floating (or complex) array that is not a PRNG key."""
    dtype = getattr(x, "dtype", None)
    return (
        dtype is not None
        and not jnp.issubdtype(dtype, jax.dtypes.prng_key)
        and jnp.issubdtype(dtype, jnp.inexact)
    )


def _broadcast(x: jax.Array, size: int) -> jax.Array:
    return jnp.broadcast_to(x, (size, *x.shape))


def _all_true(tree: Any) -> Any:
    return jax.tree.map(lambda _: True, tree)


def vmappable(
    fn: Callable[..., Any],
    *args: Any,
    batched: Callable[..., Any] | None = None,
    fenced: bool = True,
) -> Any:
    """`fn(*args)` for one example, computed by `batched` (or `jax.vmap(fn)`) under `jax.vmap`.

    Args:
      fn: the per-example computation; it may close over anything (captured arrays and tracers
        are passed through the rule as arguments).
      *args: its arguments, a pytree whose array leaves are the operands (a PRNG key, an (H, W,
        C) image, traced parameters); other leaves (Python numbers, strings, None) are static.
      batched: optional batch-level form, `batched(*args)` with every array leaf of `args`
        carrying a leading batch axis, returning the batch of `fn`'s outputs with the same
        values (to float rounding). It must not close over traced values of `fn`'s caller.
        Without it the rule runs `jax.vmap(fn)`.
      fenced: run the batch form behind a fusion fence on the CPU (its backward pass too).

    Returns:
      `fn(*args)`.
    """
    leaves, tree = jax.tree.flatten(args)
    where = [i for i, leaf in enumerate(leaves) if _is_array(leaf)]
    operands = [leaves[i] for i in where]

    def rebuild(arrays: Sequence[Any]) -> Any:
        full = list(leaves)
        for i, a in zip(where, arrays):
            full[i] = a
        return jax.tree.unflatten(tree, full)

    if batched is None:
        # Closure conversion: values `fn` closes over (a user's function capturing a batched
        # tracer, constant tables) become operands, so the rule sees which are batched.
        closed, out_shape = jax.make_jaxpr(lambda *a: fn(*rebuild(a)), return_shape=True)(*operands)
        out_tree = jax.tree.structure(out_shape)
        n_args = len(operands)
        consts = list(closed.consts)
        operands = operands + consts

        def per_example(*xs):
            out = jax.core.eval_jaxpr(closed.jaxpr, xs[n_args:], *xs[:n_args])
            return jax.tree.unflatten(out_tree, out)

        def batch_form(in_batched, xs):
            axes = [0 if b else None for b in in_batched]
            return jax.vmap(per_example, in_axes=axes)(*xs)

        # Concrete constants (tables, weights) are never differentiated: they stay unbatched.
        needs_ct = [
            _differentiable(x) and (i < n_args or _traced(x)) for i, x in enumerate(operands)
        ]
    else:

        def per_example(*xs):
            return fn(*rebuild(xs))

        def batch_form(in_batched, xs):
            size = _size(in_batched, xs)
            xs = [x if b else _broadcast(x, size) for x, b in zip(xs, in_batched)]
            return batched(*rebuild(xs))

        needs_ct = [_differentiable(x) for x in operands]

    diff = [i for i, need in enumerate(needs_ct) if need]
    _fence = fence if fenced else (lambda f, *a: f(*a))

    prim = custom_vmap(per_example)

    @prim.def_vmap
    def _rule(axis_size, in_batched, *xs):
        del axis_size
        out = _fence(lambda *ys: batch_form(in_batched, ys), *xs)
        return out, _all_true(out)

    def per_example_vjp(*xs_and_g):
        *xs, g = xs_and_g

        def of_diff(*ds):
            full = list(xs)
            for i, d in zip(diff, ds):
                full[i] = d
            return per_example(*full)

        _, pullback = jax.vjp(of_diff, *(xs[i] for i in diff))
        return pullback(g)

    bwd_prim = custom_vmap(per_example_vjp)

    @bwd_prim.def_vmap
    def _bwd_rule(axis_size, in_batched, *xs_and_g):
        *xs, g = xs_and_g
        *xs_batched, g_batched = in_batched
        if not g_batched:
            g = jax.tree.map(lambda t: _broadcast(t, axis_size), g)
        # Per-example cotangents: inputs shared by the batch are broadcast first, so that each
        # example gets its own (JAX's custom_vjp batching sums them where the input was shared).
        xs = [
            _broadcast(x, axis_size) if (i in diff and not b) else x
            for i, (x, b) in enumerate(zip(xs, xs_batched))
        ]
        flags = [b or i in diff for i, b in enumerate(xs_batched)]

        def cotangents(*ys):
            *zs, gb = ys

            def of_diff(*ds):
                full = list(zs)
                for i, d in zip(diff, ds):
                    full[i] = d
                return batch_form(flags, full)

            _, pullback = jax.vjp(of_diff, *(zs[i] for i in diff))
            return pullback(gb)

        cts = _fence(cotangents, *xs, g)
        return cts, _all_true(cts)

    @jax.custom_vjp
    def op(*xs):
        return prim(*xs)

    def op_fwd(*xs):
        return prim(*xs), xs

    def op_bwd(xs, g):
        cts = bwd_prim(*xs, g) if diff else ()
        out: list[Any] = [None] * len(xs)
        for i, ct in zip(diff, cts):
            out[i] = ct
        return tuple(out)

    op.defvjp(op_fwd, op_bwd)
    return op(*operands)


def _traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _size(in_batched: Sequence[bool], xs: Sequence[Any]) -> int:
    return next(x.shape[0] for x, b in zip(xs, in_batched) if b)
