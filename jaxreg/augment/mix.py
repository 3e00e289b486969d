"""Batch mixing: Mixup and CutMix with per-batch, per-pair or per-example lambda, and soft labels.

These are batch-level ops: they take (B, H, W, C) images and labels and return
`(images, soft_labels)` with soft labels float32 (B, K). Labels may be integer class ids (B,)
with `num_classes`, or soft labels (B, K). Each example is mixed with its partner in the
reversed batch (example i with example B-1-i, as timm does), so any batch size from 2 works
(a batch of 1 raises ValueError: it would come back unchanged); with an odd size the middle
example is mixed with itself. Label smoothing is applied as timm does: both targets are
smoothed one-hots, then mixed.

Modes: "batch" one lambda (and one box) for the whole batch; "pair" one per pair (i, B-1-i),
so both members of a pair swap the same amounts; "elem" one per example.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxreg import losses
from jaxreg.augment import _core, _rng

__all__ = ["cutmix", "mixup", "mixup_or_cutmix", "soft_labels"]

MODES = ("batch", "pair", "elem")


def _check_alpha(alpha: Any, name: str = "alpha") -> float:
    v = _core.concrete(alpha)
    if v is None:
        raise TypeError(f"{name} must be a Python number; got {alpha!r}.")
    if not v > 0:
        raise ValueError(f"{name} must be > 0; got {alpha!r}.")
    return v


def soft_labels(
    labels: jax.Array, *, num_classes: int | None = None, label_smoothing: float = 0.0
) -> jax.Array:
    """Integer (B,) or soft (B, K) labels -> float32 (B, K), smoothed as y (1 - s) + s / K.

    Args:
      labels: int (B,) class ids in [0, K) (needs `num_classes`) or float (B, K) probabilities.
        Concrete integer labels outside [0, K) raise `ValueError`; traced ones (inside `jit`)
        cannot be checked, and an out-of-range id then gives an all-zero row, as
        `jax.nn.one_hot` does.
      num_classes: K for integer labels.
      label_smoothing: s in [0, 1).

    Returns:
      float32 (B, K).

    Raises:
      ValueError: concrete integer labels out of [0, K), bad shapes or `label_smoothing`.
      TypeError: labels that are not an integer or floating array.
    """
    if not hasattr(labels, "shape") or not hasattr(labels, "dtype"):
        raise TypeError(f"labels must be an array; got {type(labels).__name__}.")
    s = _core.concrete(label_smoothing)
    if s is None or not 0.0 <= s < 1.0:
        raise ValueError(f"label_smoothing must be a number in [0, 1); got {label_smoothing!r}.")
    if jnp.issubdtype(labels.dtype, jnp.integer):
        if len(labels.shape) != 1:
            raise ValueError(f"integer labels must have shape (B,); got {labels.shape}.")
        if num_classes is None:
            raise ValueError("num_classes is required with integer labels.")
        k = _core.check_int(num_classes, "num_classes", minimum=1)
        if not isinstance(labels, jax.core.Tracer) and labels.shape[0]:
            lo, hi = int(jnp.min(labels)), int(jnp.max(labels))
            if lo < 0 or hi >= k:
                raise ValueError(
                    f"labels must be class ids in [0, num_classes={k}); got values in [{lo}, {hi}]."
                )
        y = jax.nn.one_hot(labels, k, dtype=jnp.float32)
    elif jnp.issubdtype(labels.dtype, jnp.floating):
        if len(labels.shape) != 2:
            raise ValueError(f"soft labels must have shape (B, K); got {labels.shape}.")
        k = labels.shape[1]
        if num_classes is not None and num_classes != k:
            raise ValueError(f"num_classes={num_classes} does not match soft labels with K={k}.")
        y = labels.astype(jnp.float32)
    else:
        raise TypeError(
            f"labels must be integer (B,) or floating (B, K); got dtype {labels.dtype}."
        )
    if s > 0:
        y = losses.smooth_labels(y, k, s)
    return y


def _prepare(images, labels, alpha, num_classes, label_smoothing, mode):
    b = _core.check_images(images)[0]
    if b < 2:
        raise ValueError(
            f"batch mixing needs at least 2 examples (each is mixed with its partner in the "
            f"reversed batch); got a batch of {b}, which would come back unchanged."
        )
    _check_alpha(alpha)
    _core.check_in(mode, "mode", MODES)
    y = soft_labels(labels, num_classes=num_classes, label_smoothing=label_smoothing)
    if y.shape[0] != b:
        raise ValueError(f"labels hold {y.shape[0]} examples but images hold {b}.")
    return b, y


def _per_example(values: jax.Array, b: int, mode: str) -> jax.Array:
    """Values (B, ...) drawn per example -> (B, ...) shared as the mode says."""
    if mode == "batch":
        return jnp.broadcast_to(values[0], values.shape)
    if mode == "pair":
        i = jnp.arange(b)
        return values[jnp.minimum(i, b - 1 - i)]
    return values


def _lambdas(key, alpha, b, mode):
    lam = _rng.beta(key, alpha, alpha, (b,))
    return _per_example(lam, b, mode)


def _mix_labels(y, lam):
    lam = lam.reshape(-1, 1)
    return lam * y + (1.0 - lam) * y[::-1]


def mixup(
    key: jax.Array,
    images: jax.Array,
    labels: jax.Array,
    *,
    alpha: float,
    num_classes: int | None = None,
    label_smoothing: float = 0.0,
    mode: str = "batch",
) -> tuple[jax.Array, jax.Array]:
    """Mixup (Zhang et al. 2018), a batch-level op: convex blends of examples and their labels.

    lambda ~ Beta(alpha, alpha); example i becomes lambda x_i + (1 - lambda) x_{B-1-i}, and its
    label the same blend of (smoothed) one-hots.

    Args:
      key: PRNG key.
      images: (B, H, W, C) floating images.
      labels: int (B,) with `num_classes`, or float (B, K).
      alpha: Beta concentration > 0 (0.2 is common).
      num_classes: K for integer labels.
      label_smoothing: in [0, 1), applied before mixing.
      mode: "batch", "pair" or "elem" (see the module docstring).

    Returns:
      (images (B, H, W, C), soft_labels float32 (B, K)); label rows sum to 1.
    """
    _core.check_key(key)
    b, y = _prepare(images, labels, alpha, num_classes, label_smoothing, mode)
    lam = _lambdas(key, alpha, b, mode)
    lx = lam.astype(images.dtype).reshape(b, 1, 1, 1)
    return lx * images + (1.0 - lx) * images[::-1], _mix_labels(y, lam)


def _cutmix_parts(key, images, alpha, mode, correct_lam):
    b, h, w, _ = images.shape
    lam = _lambdas(key, alpha, b, mode)
    cut = jnp.sqrt(1.0 - lam)
    ch = jnp.floor(h * cut).astype(jnp.int32)
    cw = jnp.floor(w * cut).astype(jnp.int32)
    centre = _per_example(_rng.randint(key, (b, 2), 0, jnp.array([[h, w]]), stream=1), b, mode)
    y1 = jnp.clip(centre[:, 0] - ch // 2, 0, h)
    y2 = jnp.clip(centre[:, 0] + ch // 2, 0, h)
    x1 = jnp.clip(centre[:, 1] - cw // 2, 0, w)
    x2 = jnp.clip(centre[:, 1] + cw // 2, 0, w)
    r = jnp.arange(h, dtype=jnp.int32).reshape(1, h, 1, 1)
    c = jnp.arange(w, dtype=jnp.int32).reshape(1, 1, w, 1)
    col = lambda v: v.reshape(b, 1, 1, 1)
    mask = (r >= col(y1)) & (r < col(y2)) & (c >= col(x1)) & (c < col(x2))
    if correct_lam:
        lam = 1.0 - ((y2 - y1) * (x2 - x1)).astype(jnp.float32) / float(h * w)
    return mask, lam


def cutmix(
    key: jax.Array,
    images: jax.Array,
    labels: jax.Array,
    *,
    alpha: float,
    num_classes: int | None = None,
    label_smoothing: float = 0.0,
    mode: str = "batch",
    correct_lam: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """CutMix (Yun et al. 2019), a batch-level op: pastes a box of the partner example.

    lambda ~ Beta(alpha, alpha) sets a box of side ratio sqrt(1 - lambda) at a uniform centre,
    clipped at the border (timm's `rand_bbox`); the partner's pixels replace the box. With
    `correct_lam` the label weight of the partner equals the pasted area fraction exactly.

    Args:
      key: PRNG key.
      images: (B, H, W, C) floating images.
      labels: int (B,) with `num_classes`, or float (B, K).
      alpha: Beta concentration > 0 (1.0 is common).
      num_classes: K for integer labels.
      label_smoothing: in [0, 1), applied before mixing.
      mode: "batch", "pair" or "elem": one box for all, per pair, or per example.
      correct_lam: recompute lambda from the clipped box area.

    Returns:
      (images (B, H, W, C), soft_labels float32 (B, K)).
    """
    _core.check_key(key)
    _b, y = _prepare(images, labels, alpha, num_classes, label_smoothing, mode)
    mask, lam = _cutmix_parts(key, images, alpha, mode, bool(correct_lam))
    return jnp.where(mask, images[::-1], images), _mix_labels(y, lam)


def mixup_or_cutmix(
    key: jax.Array,
    images: jax.Array,
    labels: jax.Array,
    *,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    switch_prob: float = 0.5,
    num_classes: int | None = None,
    label_smoothing: float = 0.0,
    mode: str = "batch",
    correct_lam: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Either CutMix (probability `switch_prob`) or Mixup, chosen per batch/pair/example (timm).

    Args:
      key: PRNG key.
      images: (B, H, W, C) floating images.
      labels: int (B,) with `num_classes`, or float (B, K).
      mixup_alpha: Beta concentration > 0 of the Mixup lambda.
      cutmix_alpha: Beta concentration > 0 of the CutMix lambda (sets the box size).
      switch_prob: probability of CutMix, in [0, 1].
      num_classes: K for integer labels.
      label_smoothing: in [0, 1), applied before mixing.
      mode: "batch", "pair" or "elem": the CutMix/Mixup choice, lambda and box are drawn once
        for the batch, per pair, or per example.
      correct_lam: for CutMix, recompute lambda from the clipped box area.

    Returns:
      (images (B, H, W, C), soft_labels float32 (B, K)).
    """
    _core.check_key(key)
    _core.check_prob(switch_prob, "switch_prob")
    _check_alpha(mixup_alpha, "mixup_alpha")
    b, y = _prepare(images, labels, cutmix_alpha, num_classes, label_smoothing, mode)
    use_cut = _per_example(_rng.uniform(key, (b,), stream=2) < switch_prob, b, mode)
    lam_mix = _rng.beta(key, mixup_alpha, mixup_alpha, (b,))  # gamma streams 1000+
    lam_mix = _per_example(lam_mix, b, mode)
    k_cut = jax.random.fold_in(key, 1)
    mask, lam_cut = _cutmix_parts(k_cut, images, cutmix_alpha, mode, bool(correct_lam))
    lam = jnp.where(use_cut, lam_cut, lam_mix)
    lx = lam_mix.astype(images.dtype).reshape(b, 1, 1, 1)
    partner = images[::-1]
    mixed = lx * images + (1.0 - lx) * partner
    out = jnp.where(use_cut.reshape(b, 1, 1, 1), jnp.where(mask, partner, images), mixed)
    return out, _mix_labels(y, lam)
