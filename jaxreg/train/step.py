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
    "train_step",
]

# Tags that separate the random streams derived from one run key.
_SHUFFLE, _STEP, _EVAL = 0, 1, 2


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


def make_train_epoch(
    *,
    batch_size: int,
    task: Any,
    ema: EmaStats | None = None,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> Callable:
    """A jitted `epoch(state, images, labels, epoch, weights) -> (state, step_metrics)`.

    The whole epoch (shuffle, gather each batch, the task's augmentation, the step) is one
    compiled `lax.scan` over device-resident data: no host round-trip inside. `step_metrics`
    holds per-step arrays of shape (num_steps,). `images` (N, H, W, C) float32, `labels` (N,)
    int32, `epoch` int32 scalar, `weights` (N,) sampling weights or `None`.
    `batch_sharding` (e.g. `jaxreg.train.parallel.batch_sharding(mesh)`) splits each gathered
    batch over devices (data parallel); None leaves the placement to XLA.
    """

    def epoch_fn(state: TrainState, images, labels, epoch, weights=None):
        n = images.shape[0]
        steps = n // batch_size
        if steps < 1:
            raise ValueError(f"batch_size {batch_size} is larger than the training set ({n})")
        perm = epoch_permutation(state.key, epoch, n, steps, batch_size, weights)

        def body(st, idx):
            key = step_key(st.key, st.step)
            x, y = images[idx], labels[idx]
            if batch_sharding is not None:
                x, y = jax.lax.with_sharding_constraint((x, y), batch_sharding)
            return train_step(st, x, y, key, task=task, ema=ema)

        return jax.lax.scan(body, state, perm)

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
    load_batch: Callable | None = None,
) -> Callable:
    """`epoch(state, images, labels, epoch, weights) -> (state, step_metrics)` fed from host.

    For training sets too large for device memory: the same permutation and step keys as
    `make_train_epoch` (so the same numbers), but each batch is gathered on the host
    (numpy) and passed to one jitted step. `images`/`labels` are numpy arrays.
    `load_batch(images, labels, idx) -> (images, labels)` gathers a batch (default
    `images[idx], labels[idx]`; `jaxreg.train.parallel.batch_loader` shards it over devices
    and processes).
    """
    step = make_train_step(task=task, ema=ema)
    if load_batch is None:
        load_batch = lambda images, labels, idx: (images[idx], labels[idx])

    def epoch_fn(state: TrainState, images, labels, epoch, weights=None):
        n = images.shape[0]
        steps = n // batch_size
        if steps < 1:
            raise ValueError(f"batch_size {batch_size} is larger than the training set ({n})")
        perm = np.asarray(epoch_permutation(state.key, epoch, n, steps, batch_size, weights))
        metrics = []
        for idx in perm:
            state, m = step(state, *load_batch(images, labels, idx))
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
