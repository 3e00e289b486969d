"""Parameter exponential moving average (pure init/update pair) and BatchNorm statistics re-estimation."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Ema", "EmaState", "ema", "ema_decay", "recompute_batch_stats"]

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
