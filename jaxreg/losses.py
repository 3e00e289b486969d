"""Classification and reconstruction losses and metrics: soft-label cross-entropy, label smoothing, accuracy, ECE."""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "SMOOTHING_KINDS",
    "accuracy",
    "expected_calibration_error",
    "reconstruction_loss",
    "smooth_labels",
    "soft_cross_entropy",
]

_RECON_KINDS = ("mse", "bce")


def _check_smoothing(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(value).__name__} {value!r}")
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be a float in [0, 1), got {value!r}")
    return value


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _to_soft(labels: Any, num_classes: int, name: str) -> jax.Array:
    """Int labels (B,) -> one-hot (B, K) float32; soft labels (B, K) -> float32, checked."""
    labels = jnp.asarray(labels)
    if labels.ndim == 1:
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            raise TypeError(
                f"{name} of shape (B,) must be integer class ids, got dtype {labels.dtype}"
            )
        return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if labels.ndim == 2:
        if labels.shape[1] != num_classes:
            raise ValueError(
                f"{name} of shape (B, K) must have K == {num_classes} classes, got shape {labels.shape}"
            )
        return labels.astype(jnp.float32)
    raise ValueError(
        f"{name} must be int class ids of shape (B,) or soft labels of shape (B, K), got shape {labels.shape}"
    )


def _check_logits(logits: Any, name: str = "logits") -> jax.Array:
    logits = jnp.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"{name} must have shape (B, K), got shape {logits.shape}")
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(f"{name} must be floating point, got dtype {logits.dtype}")
    return logits


def _check_batch(a: jax.Array, b: jax.Array, name: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name} has batch size {b.shape[0]} but logits/probs have {a.shape[0]}")


SMOOTHING_KINDS = ("uniform", "wrong_classes")


def smooth_labels(
    labels: Any, num_classes: int, smoothing: float, *, kind: str = "uniform"
) -> jax.Array:
    """Label smoothing of integer or soft labels, the one place jaxreg smooths labels.

    `kind="uniform"` is `optax.smooth_labels`: `y -> (1 - s) * y + s / K` (Szegedy et al.,
    2016, "Rethinking the Inception Architecture for Computer Vision"). `kind="wrong_classes"`
    spreads the mass `s` over the other classes only, as the study note states it:
    `y -> (1 - s) * y + s * (1 - y) / (K - 1)`, so a one-hot label keeps `1 - s` on its class
    and puts `s / (K - 1)` on each wrong one.

    Args:
      labels: int class ids of shape (B,) in `[0, num_classes)`, or soft labels of shape
        (B, K) with rows summing to 1 (e.g. from mixup/cutmix).
      num_classes: K, a positive int (>= 2 for `"wrong_classes"`).
      smoothing: s, a float in `[0, 1)`.
      kind: `"uniform"` or `"wrong_classes"`.

    Returns:
      float32 array of shape (B, K); rows sum to 1 when the input rows do.

    Raises:
      TypeError, ValueError: a bad `num_classes`, `smoothing`, `kind` or label shape.
    """
    return _smooth(labels, num_classes, smoothing, kind, "labels")


def _smooth(labels: Any, num_classes: int, smoothing: float, kind: str, name: str) -> jax.Array:
    import optax

    num_classes = _check_positive_int(num_classes, "num_classes")
    smoothing = _check_smoothing(smoothing, "smoothing")
    if kind not in SMOOTHING_KINDS:
        raise ValueError(f"kind must be one of {SMOOTHING_KINDS}, got {kind!r}")
    soft = _to_soft(labels, num_classes, name)
    if smoothing == 0.0:
        return soft
    if kind == "uniform":
        return optax.smooth_labels(soft, smoothing)
    if num_classes < 2:
        raise ValueError("kind='wrong_classes' needs num_classes >= 2")
    return (1.0 - smoothing) * soft + smoothing * (1.0 - soft) / (num_classes - 1)


def soft_cross_entropy(
    logits: Any, soft_labels: Any, *, label_smoothing: float = 0.0, smoothing_kind: str = "uniform"
) -> jax.Array:
    """Per-example cross-entropy against soft (or integer) labels (`optax.softmax_cross_entropy`).

    `loss_i = -sum_k y_ik * log_softmax(logits_i)_k` in float32; with `label_smoothing > 0`
    the labels first go through `smooth_labels`.

    Args:
      logits: float array of shape (B, K).
      soft_labels: soft labels (B, K) (rows summing to 1, e.g. mixup/cutmix targets) or int
        class ids (B,).
      label_smoothing: float in `[0, 1)`.
      smoothing_kind: `"uniform"` or `"wrong_classes"` (see `smooth_labels`).

    Returns:
      float32 array of shape (B,), non-negative.

    Raises:
      TypeError, ValueError: bad shapes, dtypes, `label_smoothing` or `smoothing_kind`.
    """
    import optax

    logits = _check_logits(logits)
    _check_smoothing(label_smoothing, "label_smoothing")
    num_classes = logits.shape[1]
    targets = _smooth(soft_labels, num_classes, label_smoothing, smoothing_kind, "soft_labels")
    _check_batch(logits, targets, "soft_labels")
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def _hard_labels(labels: Any, num_classes: int, name: str) -> jax.Array:
    labels = jnp.asarray(labels)
    if labels.ndim == 1:
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            raise TypeError(
                f"{name} of shape (B,) must be integer class ids, got dtype {labels.dtype}"
            )
        return labels.astype(jnp.int32)
    if labels.ndim == 2:
        if labels.shape[1] != num_classes:
            raise ValueError(
                f"{name} of shape (B, K) must have K == {num_classes}, got shape {labels.shape}"
            )
        return jnp.argmax(labels, axis=-1).astype(jnp.int32)
    raise ValueError(f"{name} must have shape (B,) or (B, K), got shape {labels.shape}")


def accuracy(logits: Any, labels: Any) -> jax.Array:
    """Top-1 accuracy.

    Args:
      logits: float array of shape (B, K) (logits or probabilities).
      labels: int class ids (B,) or soft labels (B, K), whose argmax is the class.

    Returns:
      float32 scalar in `[0, 1]`: the fraction of rows whose argmax matches.

    Raises:
      TypeError / ValueError: for bad shapes or dtypes.
    """
    logits = _check_logits(logits)
    hard = _hard_labels(labels, logits.shape[1], "labels")
    _check_batch(logits, hard, "labels")
    return jnp.mean((jnp.argmax(logits, axis=-1) == hard).astype(jnp.float32))


def expected_calibration_error(probs: Any, labels: Any, *, num_bins: int = 15) -> jax.Array:
    """Expected calibration error with equal-width confidence bins.

    Confidence is `max_k probs_ik` and the prediction its argmax. Bin `m` (1-based) holds
    confidences in `((m - 1) / M, m / M]` (a confidence of 0 goes to the first bin), and
    `ECE = sum_m |B_m| / N * |acc(B_m) - conf(B_m)|` (Guo et al., 2017, "On Calibration
    of Modern Neural Networks"; Naeini et al., 2015). Jit-able.

    Args:
      probs: float array of shape (N, K), predicted class probabilities in `[0, 1]`.
      labels: int class ids (N,) or soft labels (N, K) (argmax is the class).
      num_bins: M, a positive int.

    Returns:
      float32 scalar in `[0, 1]`.

    Raises:
      TypeError / ValueError: for bad shapes, dtypes or `num_bins`.
    """
    num_bins = _check_positive_int(num_bins, "num_bins")
    probs = _check_logits(probs, "probs")
    hard = _hard_labels(labels, probs.shape[1], "labels")
    _check_batch(probs, hard, "labels")
    p32 = probs.astype(jnp.float32)
    conf = jnp.max(p32, axis=-1)
    correct = (jnp.argmax(p32, axis=-1) == hard).astype(jnp.float32)
    bins = jnp.clip(jnp.ceil(conf * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
    sum_conf = jax.ops.segment_sum(conf, bins, num_segments=num_bins)
    sum_acc = jax.ops.segment_sum(correct, bins, num_segments=num_bins)
    # sum_m |B_m|/N * |acc_m - conf_m| == sum_m |sum_acc_m - sum_conf_m| / N
    return jnp.sum(jnp.abs(sum_acc - sum_conf)) / jnp.asarray(probs.shape[0], jnp.float32)


def reconstruction_loss(
    outputs: Any, targets: Any, *, kind: str = "mse", from_logits: bool = True
) -> jax.Array:
    """Per-example reconstruction loss for autoencoders, averaged over non-batch axes.

    Args:
      outputs: float array (B, ...): reconstructions (`"mse"`), or logits / probabilities
        (`"bce"`, see `from_logits`).
      targets: float array with the shape of `outputs`; for `"bce"` in `[0, 1]`.
      kind: `"mse"` (mean squared error) or `"bce"` (binary cross-entropy).
      from_logits: for `"bce"`, whether `outputs` are logits (stable
        `log_sigmoid` form) or probabilities in `[0, 1]` (clipped to `[1e-7, 1 - 1e-7]`).

    Returns:
      float32 array of shape (B,).

    Raises:
      TypeError / ValueError: for a bad `kind` or mismatched shapes.
    """
    if kind not in _RECON_KINDS:
        raise ValueError(f"kind must be one of {_RECON_KINDS}, got {kind!r}")
    if not isinstance(from_logits, bool):
        raise TypeError(f"from_logits must be True or False, got {from_logits!r}")
    outputs, targets = jnp.asarray(outputs), jnp.asarray(targets)
    if outputs.ndim < 1:
        raise ValueError(f"outputs must have a batch axis, got shape {outputs.shape}")
    if outputs.shape != targets.shape:
        raise ValueError(f"targets shape {targets.shape} must equal outputs shape {outputs.shape}")
    x, y = outputs.astype(jnp.float32), targets.astype(jnp.float32)
    if kind == "mse":
        per = jnp.square(x - y)
    elif from_logits:
        per = -(y * jax.nn.log_sigmoid(x) + (1.0 - y) * jax.nn.log_sigmoid(-x))
    else:
        p = jnp.clip(x, 1e-7, 1.0 - 1e-7)
        per = -(y * jnp.log(p) + (1.0 - y) * jnp.log1p(-p))
    return jnp.mean(per.reshape(per.shape[0], -1), axis=-1)
