"""Pure training and evaluation steps for any task, and one epoch as a single `lax.scan`."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxreg.optim.ema import ema_decay
from jaxreg.train.state import TrainState, reseed

__all__ = [
    "EmaStats",
    "epoch_permutation",
    "evaluate",
    "make_host_epoch",
    "make_train_epoch",
    "make_train_step",
    "predict",
    "step_key",
    "synthetic_indices",
    "train_step",
]

# Tags that separate the random streams derived from one run key.
_SHUFFLE, _STEP, _EVAL, _SYNTHETIC = 0, 1, 2, 3


def step_key(run_key: jax.Array, step: jax.Array) -> jax.Array:
    """The key of optimizer step `step`: `fold_in(fold_in(run_key, STEP), step)`."""
    return jax.random.fold_in(jax.random.fold_in(run_key, _STEP), step)


def eval_key(run_key: jax.Array) -> jax.Array:
    """The key evaluation uses (the same for every epoch, so validation numbers compare)."""
    return jax.random.fold_in(run_key, _EVAL)


def epoch_permutation(
    run_key: jax.Array,
    epoch: jax.Array,
    num_examples: int,
    num_steps: int,
    batch_size: int,
    weights: jax.Array | None = None,
) -> jax.Array:
    """Example indices of one epoch, (num_steps, batch_size) int32.

    Without `weights` a random permutation (the remainder is dropped); with `weights`
    (N,) float32 summing to 1, `num_steps * batch_size` draws with replacement
    (class-balanced sampling).
    """
    key = jax.random.fold_in(jax.random.fold_in(run_key, _SHUFFLE), epoch)
    if weights is None:
        idx = jax.random.permutation(key, num_examples)[: num_steps * batch_size]
    else:
        idx = jax.random.choice(key, num_examples, (num_steps * batch_size,), p=weights)
    return idx.astype(jnp.int32).reshape(num_steps, batch_size)


def synthetic_indices(
    run_key: jax.Array, epoch: jax.Array, pool_size: int, num_steps: int, per_batch: int
) -> jax.Array:
    """Indices into a synthetic pool for one epoch's batches, (num_steps, per_batch) int32.

    Without replacement within a pass over the pool: consecutive random permutations of the
    pool (each from its own key) are laid end to end and cut into `num_steps` rows of
    `per_batch`, so every pooled example is used once before any is used twice. The stream is
    separate from the real examples' shuffle (`epoch_permutation`), so adding a pool leaves
    the order of the real examples unchanged.
    """
    key = jax.random.fold_in(jax.random.fold_in(run_key, _SYNTHETIC), epoch)
    need = num_steps * per_batch
    passes = -(-need // pool_size)
    perms = [jax.random.permutation(jax.random.fold_in(key, i), pool_size) for i in range(passes)]
    return jnp.concatenate(perms)[:need].astype(jnp.int32).reshape(num_steps, per_batch)


@dataclasses.dataclass(frozen=True)
class EmaStats:
    """How BatchNorm statistics follow the EMA weights: `mode` "average" (same decay) or "copy"."""

    decay: float
    warmup: bool = False
    mode: str = "average"


def _blend_stats(ema: EmaStats, avg: Any, new: Any, count: jax.Array) -> Any:
    if ema.mode == "copy":
        return jax.tree.map(jnp.asarray, new)
    d = ema_decay(ema.decay, count, warmup=ema.warmup)
    return jax.tree.map(lambda a, n: (d * a + (1.0 - d) * n).astype(n.dtype), avg, new)


def train_step(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    task: Any,
    ema: EmaStats | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step of `task` (pure; wrap in `jax.jit`).

    Args:
      state: the training state.
      images: (B, H, W, C) float32 in [0, 1].
      labels: (B,) int32.
      key: this step's key (`step_key`): split into the task's key and the model's key, from
        which every RNG stream of the model is reseeded.
      task: a `jaxreg.train.tasks.Task`.
      ema: how BatchNorm statistics follow the EMA weights (when `state.ema_batch_stats`).

    Returns:
      `(new_state, metrics)`: the task's scalars plus `grad_norm`.
    """
    k_task, k_model = jax.random.split(key)
    rngs = reseed(state.rngs, k_model)

    def loss_fn(params):
        model = nnx.merge(state.graphdef, params, state.batch_stats, rngs, state.other, copy=True)
        loss, metrics = task.loss(model, k_task, images, labels)
        _, _, new_bs, new_rngs, new_other = nnx.split(
            model, nnx.Param, nnx.BatchStat, nnx.RngState, ...
        )
        return loss, (metrics, new_bs, new_rngs, new_other)

    (_, (metrics, new_bs, new_rngs, new_other)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    with jax.numpy_dtype_promotion("standard"):  # optax's adam/schedules mix int32 and float
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_bs = state.ema_batch_stats
    if ema_bs is not None and ema is not None:
        ema_bs = _blend_stats(ema, ema_bs, new_bs, state.step)
    metrics = dict(metrics)
    metrics["grad_norm"] = optax.tree.norm(grads)
    new_state = state.replace(
        params=params,
        batch_stats=new_bs,
        rngs=new_rngs,
        other=new_other,
        opt_state=opt_state,
        ema_batch_stats=ema_bs,
        step=state.step + 1,
    )
    return new_state, metrics


def _check_split(n: int, batch_size: int, synthetic_batch: int) -> tuple[int, int]:
    """(real examples per batch, steps per epoch) for `n` real examples."""
    real = batch_size - synthetic_batch
    if not 0 <= synthetic_batch < batch_size:
        raise ValueError(
            f"synthetic_batch must be in [0, batch_size={batch_size}), got {synthetic_batch}"
        )
    steps = n // real
    if steps < 1:
        raise ValueError(
            f"batch_size {batch_size} is larger than the training set ({n})"
            if not synthetic_batch
            else f"batch_size {batch_size} leaves {real} real examples per batch, more than "
            f"the training set ({n})"
        )
    return real, steps


def make_train_epoch(
    *,
    batch_size: int,
    task: Any,
    ema: EmaStats | None = None,
    synthetic_batch: int = 0,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> Callable:
    """A jitted `epoch(state, images, labels, epoch, weights, synthetic) -> (state, metrics)`.

    The whole epoch (shuffle, gather each batch, the task's augmentation, the step) is one
    compiled `lax.scan` over device-resident data: no host round-trip inside. `step_metrics`
    holds per-step arrays of shape (num_steps,). `images` (N, H, W, C) float32, `labels` (N,)
    int32, `epoch` int32 scalar, `weights` (N,) sampling weights or `None`.
    `batch_sharding` (e.g. `jaxreg.train.parallel.batch_sharding(mesh)`) splits each gathered
    batch over devices (data parallel); None leaves the placement to XLA.

    With `synthetic_batch` = s > 0, `synthetic` is a pool `(images, labels)` and every batch
    is `batch_size - s` real examples followed by s pooled ones (`synthetic_indices`); an
    epoch is one pass over the real examples, `N // (batch_size - s)` steps.
    """

    def epoch_fn(state: TrainState, images, labels, epoch, weights=None, synthetic=None):
        real, steps = _check_split(images.shape[0], batch_size, synthetic_batch)
        perm = epoch_permutation(state.key, epoch, images.shape[0], steps, real, weights)
        if synthetic_batch:
            syn_x, syn_y = synthetic
            syn = synthetic_indices(state.key, epoch, syn_x.shape[0], steps, synthetic_batch)
        else:
            syn = jnp.zeros((steps, 0), jnp.int32)

        def body(st, idx):
            i, j = idx
            x, y = images[i], labels[i]
            if synthetic_batch:
                x = jnp.concatenate([x, syn_x[j]])
                y = jnp.concatenate([y, syn_y[j]])
            if batch_sharding is not None:
                x, y = jax.lax.with_sharding_constraint((x, y), batch_sharding)
            return train_step(st, x, y, step_key(st.key, st.step), task=task, ema=ema)

        return jax.lax.scan(body, state, (perm, syn))

    return jax.jit(epoch_fn)


def make_train_step(*, task: Any, ema: EmaStats | None = None) -> Callable:
    """A jitted `step(state, images, labels) -> (state, metrics)` for host-fed batches.

    Uses the same per-step key rule as the scan epoch, so both loops see the same randomness.
    """

    def step_fn(state, images, labels):
        key = step_key(state.key, state.step)
        return train_step(state, images, labels, key, task=task, ema=ema)

    return jax.jit(step_fn)


def make_host_epoch(
    *,
    batch_size: int,
    task: Any,
    ema: EmaStats | None = None,
    synthetic_batch: int = 0,
    load_batch: Callable | None = None,
) -> Callable:
    """`epoch(state, images, labels, epoch, weights, synthetic) -> (state, metrics)` from host.

    For training sets too large for device memory: the same permutation, synthetic indices and
    step keys as `make_train_epoch` (so the same numbers), but each batch is gathered on the
    host (numpy) and passed to one jitted step. `images`/`labels` (and the `synthetic` pool)
    are numpy arrays. `load_batch(images, labels, idx) -> (images, labels)` gathers a batch
    (default `images[idx], labels[idx]`; `jaxreg.train.parallel.batch_loader` shards it over
    devices and processes); with a pool it is given the assembled batch and `arange(B)`.
    """
    step = make_train_step(task=task, ema=ema)
    if load_batch is None:
        load_batch = lambda images, labels, idx: (images[idx], labels[idx])

    def epoch_fn(state: TrainState, images, labels, epoch, weights=None, synthetic=None):
        real, steps = _check_split(images.shape[0], batch_size, synthetic_batch)
        perm = np.asarray(
            epoch_permutation(state.key, epoch, images.shape[0], steps, real, weights)
        )
        syn = None
        if synthetic_batch:
            syn_x, syn_y = synthetic
            syn = np.asarray(
                synthetic_indices(state.key, epoch, syn_x.shape[0], steps, synthetic_batch)
            )
        metrics = []
        for s, idx in enumerate(perm):
            x, y, rows = images, labels, idx
            if syn is not None:  # the assembled batch: real rows, then pooled ones
                x = np.concatenate([images[idx], syn_x[syn[s]]])
                y = np.concatenate([labels[idx], syn_y[syn[s]]])
                rows = np.arange(len(x))
            state, m = step(state, *load_batch(x, y, rows))
            metrics.append(m)
        return state, jax.tree.map(lambda *xs: jnp.stack(xs), *metrics)

    return epoch_fn


@functools.partial(jax.jit, static_argnames=("graphdef", "task"))
def _eval_batch(graphdef, params, batch_stats, rngs, other, key, images, labels, *, task):
    model = nnx.merge(graphdef, params, batch_stats, rngs, other, copy=True)
    return task.evaluate(model, key, images, labels)


def _batches(n: int, batch_size: int):
    for i in range(0, n, batch_size):
        yield i, min(i + batch_size, n)


def evaluate(
    state: TrainState,
    task: Any,
    images: Any,
    labels: Any,
    *,
    batch_size: int = 1000,
    use_ema: bool = False,
) -> dict[str, float]:
    """The task's metrics on a split, with the model in evaluation mode.

    Args:
      state: training state.
      task: a `jaxreg.train.tasks.Task`.
      images: (N, H, W, C) float32 in [0, 1].
      labels: (N,) int.
      batch_size: evaluation chunk size.
      use_ema: evaluate the EMA weights (and their BatchNorm statistics).

    Returns:
      `task.summarize(...)`: metric name -> float.
    """
    params, bs = state.variables(use_ema=use_ema)
    labels = np.asarray(labels, np.int32)
    key = eval_key(state.key)
    chunks = []
    for lo, hi in _batches(images.shape[0], batch_size):
        chunks.append(
            jax.device_get(
                _eval_batch(
                    state.eval_graphdef,
                    params,
                    bs,
                    state.rngs,
                    state.other,
                    jax.random.fold_in(key, lo),
                    jnp.asarray(images[lo:hi]),
                    jnp.asarray(labels[lo:hi]),
                    task=task,
                )
            )
        )
    outputs = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    return task.summarize(outputs, labels)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _apply_batch(graphdef, params, batch_stats, rngs, other, images):
    return nnx.merge(graphdef, params, batch_stats, rngs, other, copy=True)(images)


def predict(
    state: TrainState, images: Any, *, batch_size: int = 1000, use_ema: bool = False
) -> jax.Array:
    """The model's outputs (e.g. logits (N, K)) for `images` (N, H, W, C), in evaluation mode."""
    params, bs = state.variables(use_ema=use_ema)
    out = [
        _apply_batch(
            state.eval_graphdef, params, bs, state.rngs, state.other, jnp.asarray(images[lo:hi])
        )
        for lo, hi in _batches(images.shape[0], batch_size)
    ]
    return jnp.concatenate(out, axis=0)
