"""Pure, jit-compiled training and evaluation steps, and one epoch as a single `lax.scan`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxreg import losses
from jaxreg.train.state import TrainState

AugmentFn = Callable[[jax.Array, jax.Array], jax.Array]  # (key, images) -> images
MixFn = Callable[[jax.Array, jax.Array, jax.Array], tuple]  # (key, images, soft) -> (images, soft)

# Tags that separate the random streams derived from one run key.
_SHUFFLE, _STEP = 0, 1


def step_key(run_key: jax.Array, step: jax.Array) -> jax.Array:
    """The key of optimizer step `step`: `fold_in(fold_in(run_key, STEP), step)`."""
    return jax.random.fold_in(jax.random.fold_in(run_key, _STEP), step)


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


def _apply(graphdef, params, batch_stats, images, *, train: bool, dropout_key=None):
    # copy=True: fresh Variables at this trace level, so BatchNorm may update its statistics
    # inside jax.grad (the caller's State objects are never mutated).
    model = nnx.merge(graphdef, params, batch_stats, copy=True)
    logits = model(images, train=train, dropout_key=dropout_key)
    return logits, nnx.state(model, nnx.BatchStat)


def train_step(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    *,
    num_classes: int,
    augment: AugmentFn | None = None,
    mix: MixFn | None = None,
    label_smoothing: float = 0.0,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step (pure; wrap in `jax.jit`).

    Args:
      state: the training state.
      images: (B, H, W, C) float32 in [0, 1].
      labels: (B,) int32 in [0, num_classes).
      key: this step's PRNG key (split here into augmentation, mixing and dropout keys).
      num_classes: K.
      augment: batched augmentation `(key, images) -> images` (e.g. `jaxreg.batch(fn)`).
      mix: batch mixing `(key, images, soft_labels) -> (images, soft_labels)`.
      label_smoothing: in [0, 1).

    Returns:
      `(new_state, metrics)` with scalar float32 `loss`, `accuracy` (against the
      un-mixed labels), `grad_norm`.
    """
    k_aug, k_mix, k_drop = jax.random.split(key, 3)
    if augment is not None:
        images = augment(k_aug, images)
    soft = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if mix is not None:
        images, soft = mix(k_mix, images, soft)

    def loss_fn(params, batch_stats):
        logits, new_bs = _apply(
            state.graphdef, params, batch_stats, images, train=True, dropout_key=k_drop
        )
        loss = jnp.mean(losses.soft_cross_entropy(logits, soft, label_smoothing=label_smoothing))
        return loss, (logits, new_bs)

    (loss, (logits, new_bs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.batch_stats
    )
    with jax.numpy_dtype_promotion("standard"):  # optax's adam/schedules mix int32 and float
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema
    if state.ema_fn is not None:
        ema = state.ema_fn.update(ema, params, new_bs if ema.ema_batch_stats is not None else None)
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32)),
        "grad_norm": optax.global_norm(grads),
    }
    new_state = state.replace(
        params=params, batch_stats=new_bs, opt_state=opt_state, ema=ema, step=state.step + 1
    )
    return new_state, metrics


def make_train_epoch(
    *,
    batch_size: int,
    num_classes: int,
    augment: AugmentFn | None = None,
    mix: MixFn | None = None,
    label_smoothing: float = 0.0,
) -> Callable:
    """A jitted `epoch(state, images, labels, epoch, weights) -> (state, step_metrics)`.

    The whole epoch (shuffle, gather each batch, augment, mix, step) is one compiled
    `lax.scan` over device-resident data: no host round-trip inside. `step_metrics` holds
    per-step arrays of shape (num_steps,). `images` (N, H, W, C) float32, `labels` (N,)
    int32, `epoch` int32 scalar, `weights` (N,) sampling weights or `None`.
    """

    def epoch_fn(state: TrainState, images, labels, epoch, weights=None):
        n = images.shape[0]
        steps = n // batch_size
        if steps < 1:
            raise ValueError(f"batch_size {batch_size} is larger than the training set ({n})")
        perm = epoch_permutation(state.key, epoch, n, steps, batch_size, weights)

        def body(st, idx):
            return train_step(
                st,
                images[idx],
                labels[idx],
                step_key(st.key, st.step),
                num_classes=num_classes,
                augment=augment,
                mix=mix,
                label_smoothing=label_smoothing,
            )

        return jax.lax.scan(body, state, perm)

    return jax.jit(epoch_fn)


def make_train_step(
    *,
    num_classes: int,
    augment: AugmentFn | None = None,
    mix: MixFn | None = None,
    label_smoothing: float = 0.0,
) -> Callable:
    """A jitted `step(state, images, labels) -> (state, metrics)` for host-fed batches.

    Uses the same per-step key rule as the scan epoch, so both loops see the same randomness.
    """

    def step_fn(state, images, labels):
        return train_step(
            state,
            images,
            labels,
            step_key(state.key, state.step),
            num_classes=num_classes,
            augment=augment,
            mix=mix,
            label_smoothing=label_smoothing,
        )

    return jax.jit(step_fn)


def make_host_epoch(
    *,
    batch_size: int,
    num_classes: int,
    augment: AugmentFn | None = None,
    mix: MixFn | None = None,
    label_smoothing: float = 0.0,
) -> Callable:
    """`epoch(state, images, labels, epoch, weights) -> (state, step_metrics)` fed from host.

    For training sets too large for device memory: the same permutation and step keys as
    `make_train_epoch` (so the same numbers), but each batch is gathered on the host
    (numpy) and passed to one jitted step. `images`/`labels` are numpy arrays.
    """
    step = make_train_step(
        num_classes=num_classes, augment=augment, mix=mix, label_smoothing=label_smoothing
    )

    def epoch_fn(state: TrainState, images, labels, epoch, weights=None):
        n = images.shape[0]
        steps = n // batch_size
        if steps < 1:
            raise ValueError(f"batch_size {batch_size} is larger than the training set ({n})")
        perm = np.asarray(epoch_permutation(state.key, epoch, n, steps, batch_size, weights))
        metrics = []
        for idx in perm:
            state, m = step(state, images[idx], labels[idx])
            metrics.append(m)
        return state, jax.tree.map(lambda *xs: jnp.stack(xs), *metrics)

    return epoch_fn


@jax.jit
def _eval_batch(graphdef, params, batch_stats, images, labels):
    logits, _ = _apply(graphdef, params, batch_stats, images, train=False)
    return logits, losses.soft_cross_entropy(logits, labels)


def predict(
    state: TrainState, images: Any, *, batch_size: int = 1000, use_ema: bool = False
) -> jax.Array:
    """Logits (N, K) float32 for `images` (N, H, W, C) in eval mode (running BN statistics)."""
    params, bs = state.eval_variables(use_ema=use_ema)
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = jnp.asarray(images[i : i + batch_size])
        dummy = jnp.zeros((x.shape[0],), jnp.int32)
        out.append(_eval_batch(state.graphdef, params, bs, x, dummy)[0])
    return jnp.concatenate(out, axis=0)


def evaluate(
    state: TrainState, images: Any, labels: Any, *, batch_size: int = 1000, use_ema: bool = False
) -> dict[str, float]:
    """Loss, accuracy and expected calibration error on a labelled set, in eval mode.

    Args:
      state: training state.
      images: (N, H, W, C) float32 in [0, 1].
      labels: (N,) int in [0, K).
      batch_size: evaluation chunk size.
      use_ema: evaluate the EMA weights.

    Returns:
      dict with float `loss`, `accuracy`, `ece`.
    """
    logits = predict(state, images, batch_size=batch_size, use_ema=use_ema)
    labels = jnp.asarray(labels, jnp.int32)
    loss = jnp.mean(losses.soft_cross_entropy(logits, labels))
    acc = losses.accuracy(logits, labels)
    ece = losses.expected_calibration_error(jax.nn.softmax(logits), labels)
    return {"loss": float(loss), "accuracy": float(acc), "ece": float(ece)}
