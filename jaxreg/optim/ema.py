"""Parameter EMA: an Optax transform (`param_ema`), a pure init/update pair, BatchNorm re-estimation."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "Ema",
    "EmaState",
    "ParamEmaState",
    "ema",
    "ema_decay",
    "ema_params",
    "param_ema",
    "recompute_batch_stats",
]

PyTree = Any

_BATCH_STATS_MODES = ("average", "copy")


class EmaState(NamedTuple):
    """State of `ema`.

    Attributes:
      count: int32 scalar, number of updates applied so far.
      ema_params: averaged parameters (same structure and dtypes as the params).
      ema_batch_stats: averaged or copied BatchNorm statistics, or `None` when none
        were given to `init`.
    """

    count: jax.Array
    ema_params: PyTree
    ema_batch_stats: PyTree | None


class Ema(NamedTuple):
    """A pure `(init, update)` pair returned by `ema`.

    Attributes:
      init: `init(params, batch_stats=None) -> EmaState`.
      update: `update(state, params, batch_stats=None) -> EmaState`.
    """

    init: Callable[..., EmaState]
    update: Callable[..., EmaState]


def ema_decay(decay: float, count: jax.Array | int, *, warmup: bool = False) -> jax.Array:
    """The decay used for the update that follows `count` earlier updates.

    Without warm-up this is `decay`. With warm-up it is
    `min(decay, (1 + count) / (10 + count))`, the `num_updates` rule of TensorFlow's
    `tf.train.ExponentialMovingAverage`: the average follows the weights closely early
    on (0.1 at the first update, 0.5 at count 8, 0.9 at count 80) and settles at `decay`.

    Args:
      decay: the asymptotic decay in `[0, 1]`.
      count: number of updates done before this one (int, scalar).
      warmup: whether to apply the warm-up rule.

    Returns:
      float32 scalar in `[0, 1]`.
    """
    d = jnp.asarray(decay, jnp.float32)
    if not warmup:
        return d
    c = jnp.asarray(count).astype(jnp.float32)
    return jnp.minimum(d, (1.0 + c) / (10.0 + c))


def _blend(avg: Any, new: Any, d: jax.Array) -> Any:
    """`d * avg + (1 - d) * new` for floating leaves (computed in float32); else `new`."""
    avg, new = jnp.asarray(avg), jnp.asarray(new)
    if not jnp.issubdtype(new.dtype, jnp.floating):
        return new
    a32, n32 = avg.astype(jnp.float32), new.astype(jnp.float32)
    return (d * a32 + (1.0 - d) * n32).astype(new.dtype)


def ema(decay: float, *, warmup: bool = False, batch_stats: str = "average") -> Ema:
    """Exponential moving average of parameters (Polyak averaging).

    `update` computes `ema <- d * ema + (1 - d) * params` leaf by leaf, with
    `d = ema_decay(decay, count, warmup=warmup)`; the average starts at the initial
    parameters (no bias correction). Integer leaves are copied. Reference: Polyak &
    Juditsky, 1992, "Acceleration of Stochastic Approximation by Averaging"; the warm-up
    rule follows TensorFlow's `ExponentialMovingAverage(num_updates=...)`.

    BatchNorm statistics are handled on purpose: `batch_stats="average"` averages them
    with the same decay; `"copy"` stores the live statistics. Either may be refined with
    `recompute_batch_stats` for the averaged weights.

    Args:
      decay: float in `[0, 1]`; `0` tracks the params exactly, `1` freezes the average.
      warmup: apply the `min(decay, (1 + count) / (10 + count))` warm-up.
      batch_stats: `"average"` or `"copy"`.

    Returns:
      `Ema` with pure, jit-able `init` and `update`.

    Raises:
      TypeError / ValueError: for a bad `decay`, `warmup` or `batch_stats`.
    """
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real):
        raise TypeError(f"decay must be a float in [0, 1], got {type(decay).__name__} {decay!r}")
    decay = float(decay)
    if not (math.isfinite(decay) and 0.0 <= decay <= 1.0):
        raise ValueError(f"decay must be a float in [0, 1], got {decay!r}")
    if not isinstance(warmup, bool):
        raise TypeError(f"warmup must be True or False, got {warmup!r}")
    if batch_stats not in _BATCH_STATS_MODES:
        raise ValueError(f"batch_stats must be one of {_BATCH_STATS_MODES}, got {batch_stats!r}")
    mode = batch_stats

    def init_fn(params: PyTree, batch_stats: PyTree | None = None) -> EmaState:
        copy = lambda t: jax.tree.map(jnp.asarray, t)
        return EmaState(
            count=jnp.zeros([], jnp.int32),
            ema_params=copy(params),
            ema_batch_stats=None if batch_stats is None else copy(batch_stats),
        )

    def update_fn(state: EmaState, params: PyTree, batch_stats: PyTree | None = None) -> EmaState:
        if (state.ema_batch_stats is None) != (batch_stats is None):
            raise ValueError(
                "batch_stats must be given to update iff it was given to init "
                f"(init had {'none' if state.ema_batch_stats is None else 'some'})"
            )
        d = ema_decay(decay, state.count, warmup=warmup)
        new_params = jax.tree.map(lambda a, p: _blend(a, p, d), state.ema_params, params)
        if batch_stats is None:
            new_stats = None
        elif mode == "copy":
            new_stats = jax.tree.map(jnp.asarray, batch_stats)
        else:
            new_stats = jax.tree.map(
                lambda a, s: _blend(a, s, d), state.ema_batch_stats, batch_stats
            )
        count = jnp.where(state.count < jnp.iinfo(jnp.int32).max, state.count + 1, state.count)
        return EmaState(count=count, ema_params=new_params, ema_batch_stats=new_stats)

    return Ema(init=init_fn, update=update_fn)


class ParamEmaState(NamedTuple):
    """State of `param_ema`.

    Attributes:
      count: int32 scalar, updates averaged so far.
      ema: the averaged parameters (same structure and dtypes as the params).
    """

    count: jax.Array
    ema: PyTree


def param_ema(decay: float, *, warmup: bool = False) -> optax.GradientTransformation:
    """Exponential moving average of the parameters as an Optax transform, last in a chain.

    `optax.chain(..., jaxreg.param_ema(0.999))` passes the updates through unchanged and keeps
    in its state the average of the parameters the step produces:
    `ema <- d * ema + (1 - d) * (params + updates)`, with `d = ema_decay(decay, count,
    warmup=warmup)`, starting at the initial parameters (no bias correction), computed in
    float32 and stored in each leaf's dtype (integer leaves are copied). Put it last: it must
    see the final updates, the ones `optax.apply_updates` adds. Read the averaged parameters
    with `ema_params(opt_state, params)`. Reference: Polyak & Juditsky, 1992, "Acceleration of
    Stochastic Approximation by Averaging"; the warm-up is the `num_updates` rule of
    TensorFlow's `tf.train.ExponentialMovingAverage`.

    Parameters another transform freezes (`optax.set_to_zero` in a `multi_transform`) get zero
    updates, so their average stays equal to their live value. Wrapped in `optax.masked`, the
    transform averages only the masked-in parameters; `ema_params` returns the live values of
    the others.

    Args:
      decay: float in `[0, 1]`; `0` tracks the params exactly, `1` freezes the average.
      warmup: apply the `min(decay, (1 + count) / (10 + count))` warm-up.

    Returns:
      An `optax.GradientTransformation` whose `update` needs `params`.

    Raises:
      TypeError, ValueError: a bad `decay` or `warmup`.
    """
    ema(decay, warmup=warmup)  # the same argument checks

    def init_fn(params: PyTree) -> ParamEmaState:
        return ParamEmaState(count=jnp.zeros([], jnp.int32), ema=jax.tree.map(jnp.asarray, params))

    def update_fn(updates: PyTree, state: ParamEmaState, params: PyTree | None = None):
        if params is None:
            raise ValueError("param_ema needs params: call tx.update(updates, state, params)")
        d = ema_decay(decay, state.count, warmup=warmup)
        new = optax.apply_updates(params, updates)
        avg = jax.tree.map(lambda a, p: _blend(a, p, d), state.ema, new)
        count = jnp.where(state.count < jnp.iinfo(jnp.int32).max, state.count + 1, state.count)
        return updates, ParamEmaState(count=count, ema=avg)

    return optax.GradientTransformation(init_fn, update_fn)


def _is_ema_state(x: Any) -> bool:
    return isinstance(x, ParamEmaState)


def ema_params(opt_state: PyTree, params: PyTree) -> PyTree:
    """The averaged parameters kept by the `param_ema` inside an optimizer state.

    Args:
      opt_state: the state of a chain (or `nnx.Optimizer.opt_state`) holding one
        `param_ema`, possibly inside `optax.chain`, `optax.masked`, `multi_transform` or
        `inject_hyperparams`.
      params: the live parameters, structured like the ones the optimizer was built for; their
        values stand in for parameters the EMA does not cover (masked out or frozen without
        optimizer state).

    Returns:
      A tree like `params`: the averages where `param_ema` keeps one, else the live value.

    Raises:
      ValueError: the state holds no `param_ema`, or more than one.
    """
    found = [x for x in jax.tree.leaves(opt_state, is_leaf=_is_ema_state) if _is_ema_state(x)]
    if len(found) != 1:
        raise ValueError(
            f"opt_state must hold exactly one jaxreg.param_ema state, found {len(found)}"
        )
    avg = found[0].ema
    p_leaves, p_def = jax.tree_util.tree_flatten_with_path(params)
    a_leaves = dict(jax.tree_util.tree_flatten_with_path(avg, is_leaf=_is_masked)[0])
    out = []
    for path, live in p_leaves:
        a = a_leaves.get(path)
        out.append(live if a is None or _is_masked(a) else a)
    return jax.tree_util.tree_unflatten(p_def, out)


def _is_masked(x: Any) -> bool:
    return isinstance(x, optax.MaskedNode)


def recompute_batch_stats(
    stats_fn: Callable[[PyTree, PyTree, jax.Array], PyTree],
    params: PyTree,
    batch_stats: PyTree,
    batches: Iterable[jax.Array],
    *,
    momentum: float = 0.0,
) -> PyTree:
    """Re-estimates BatchNorm statistics for given (e.g. averaged) weights.

    Runs `stats_fn` once per batch and returns the equal-weight cumulative average of the
    per-batch statistics (not a momentum average), as in SWA's BatchNorm update (Izmailov
    et al., 2018, "Averaging Weights Leads to Wider Optima and Better Generalization").
    `stats_fn` runs the model in training mode and returns its updated running
    statistics. If its BatchNorm layers blend with a momentum `m`
    (`new = m * old + (1 - m) * batch`, the Flax convention), pass `momentum=m` and the
    per-batch statistics are recovered as `(new - m * old) / (1 - m)`; with the default
    `momentum=0` the returned statistics are taken as the batch's own.

    With equal-size batches the result's means equal the data mean; its variances are
    the mean of per-batch (biased) variances, which equals the data variance when there is
    a single batch.

    Args:
      stats_fn: `stats_fn(params, batch_stats, images) -> new_batch_stats`; may be jitted.
      params: the weights to estimate statistics for.
      batch_stats: a pytree of statistics with the structure `stats_fn` returns; only its
        structure (and, with `momentum > 0`, its values as `old`) are used.
      batches: an iterable of image batches (e.g. a list, or an array with a leading
        batch-index axis).
      momentum: the BatchNorm momentum `stats_fn` applies, in `[0, 1)`.

    Returns:
      A pytree like `batch_stats` with the re-estimated statistics.

    Raises:
      ValueError: if `batches` is empty or `momentum` is outside `[0, 1)`.
      TypeError: if `stats_fn` is not callable.
    """
    if not callable(stats_fn):
        raise TypeError(f"stats_fn must be callable, got {type(stats_fn).__name__}")
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise TypeError(f"momentum must be a float in [0, 1), got {momentum!r}")
    if not 0.0 <= float(momentum) < 1.0:
        raise ValueError(f"momentum must be a float in [0, 1), got {momentum!r}")
    m = float(momentum)

    def batch_values(new: Any, old: Any) -> Any:
        new = jnp.asarray(new)
        if m == 0.0 or not jnp.issubdtype(new.dtype, jnp.floating):
            return new
        old = jnp.asarray(old).astype(new.dtype)
        return ((new - m * old) / (1.0 - m)).astype(new.dtype)

    avg = None
    n = 0
    for images in batches:
        new_stats = stats_fn(params, batch_stats, images)
        per_batch = jax.tree.map(batch_values, new_stats, batch_stats)
        n += 1
        if avg is None:
            avg = per_batch
        else:
            w = 1.0 / n
            avg = jax.tree.map(
                lambda a, b, w=w: (
                    a + (b - a) * jnp.asarray(w, a.dtype)
                    if jnp.issubdtype(a.dtype, jnp.floating)
                    else b
                ),
                avg,
                per_batch,
            )
    if avg is None:
        raise ValueError("batches must contain at least one batch")
    return avg
