"""Colour augmentations: brightness, contrast, saturation, hue, gamma, grayscale and PIL-style ops.

Images are (H, W, C) floating in [0, 1] with C = 1 or 3. On 1-channel images saturation and hue
are no-ops (a gray image has no colour to change) and grayscale is the identity. Brightness,
contrast and saturation follow torchvision's ColorJitter (factors, blending towards black, the
mean gray level and the per-pixel gray level); dm-pix's `adjust_brightness` adds a delta instead,
its `adjust_contrast` uses per-channel means and its `adjust_saturation` scales HSV saturation
(tests/augment/test_color.py checks where they agree and documents where they differ).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxreg.augment import _core, _rng

__all__ = [
    "adjust_brightness",
    "adjust_contrast",
    "adjust_gamma",
    "adjust_hue",
    "adjust_saturation",
    "adjust_sharpness",
    "autocontrast",
    "color_jitter",
    "equalize",
    "grayscale",
    "invert",
    "posterize",
    "random_brightness",
    "random_contrast",
    "random_gamma",
    "random_grayscale",
    "random_hue",
    "random_saturation",
    "solarize",
]

_CH = (1, 3)


def _clip(x):
    return jnp.clip(x, 0.0, 1.0)


def _blend(a, b, factor):
    """B + factor * (a - b), clipped: factor 1 gives a, factor 0 gives b."""
    return _clip(b + factor * (a - b))


def adjust_brightness(image: jax.Array, factor: Any) -> jax.Array:
    """Multiplies by `factor` (>= 0) and clips to [0, 1] (torchvision `adjust_brightness`).

    Args:
      image: (H, W, C) floating image in [0, 1], C in {1, 3}.
      factor: 0 gives black, 1 the original (may be traced).

    Returns:
      (H, W, C) image in [0, 1].
    """
    _core.check_image(image, channels=_CH)
    _core.check_positive(factor, "factor", allow_zero=True)
    return _clip(image * jnp.asarray(factor, image.dtype))


def adjust_contrast(image: jax.Array, factor: Any) -> jax.Array:
    """Blends with the image's mean gray level (torchvision); factor 0 gives a flat gray image.

    On 1-channel images this equals `dm_pix.adjust_contrast` followed by clipping.
    """
    _core.check_image(image, channels=_CH)
    _core.check_positive(factor, "factor", allow_zero=True)
    mean = _core.mean_luma(image)
    return _blend(image, mean, jnp.asarray(factor, image.dtype))


def adjust_saturation(image: jax.Array, factor: Any) -> jax.Array:
    """Blends with the per-pixel gray level (torchvision); 0 gives grayscale, >1 oversaturates.

    A no-op on 1-channel images.
    """
    _core.check_image(image, channels=_CH)
    _core.check_positive(factor, "factor", allow_zero=True)
    if image.shape[-1] == 1:
        return image
    return _blend(image, _core.luma(image), jnp.asarray(factor, image.dtype))


def _rgb_to_hsv(image):
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    v = jnp.maximum(jnp.maximum(r, g), b)
    d = v - jnp.minimum(jnp.minimum(r, g), b)
    s = jnp.where(v > 0, d / jnp.where(v > 0, v, 1.0), 0.0)
    dd = jnp.where(d > 0, d, 1.0)
    h = jnp.where(v == r, (g - b) / dd, jnp.where(v == g, 2.0 + (b - r) / dd, 4.0 + (r - g) / dd))
    h = jnp.where(d > 0, jnp.mod(h / 6.0, 1.0), 0.0)
    return h, s, v


def _hsv_to_rgb(h, s, v):
    def channel(n):
        k = jnp.mod(n + 6.0 * h, 6.0)
        return v - v * s * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)

    return jnp.stack([channel(5.0), channel(3.0), channel(1.0)], axis=-1)


def adjust_hue(image: jax.Array, delta: Any) -> jax.Array:
    """Rotates hue by `delta` turns (in [-0.5, 0.5]) in HSV space, as `dm_pix.adjust_hue`.

    A no-op on 1-channel images.
    """
    _core.check_image(image, channels=_CH)
    d = _core.concrete(delta)
    if d is not None and not -0.5 <= d <= 0.5:
        raise ValueError(f"delta must lie in [-0.5, 0.5]; got {delta!r}.")
    if image.shape[-1] == 1:
        return image
    h, s, v = _rgb_to_hsv(image)
    return _hsv_to_rgb(jnp.mod(h + delta, 1.0), s, v).astype(image.dtype)


def adjust_gamma(image: jax.Array, gamma: Any, *, gain: float = 1.0) -> jax.Array:
    """Returns clip(gain * image ** gamma) (as `dm_pix.adjust_gamma`, clipped)."""
    _core.check_image(image)
    _core.check_positive(gamma, "gamma")
    return _clip(gain * _clip(image) ** jnp.asarray(gamma, image.dtype))


def _smooth3(image):
    """PIL's SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13) with the border pixels kept."""
    h, w, _ = image.shape
    p = jnp.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    acc = 4.0 * image
    for dy in range(3):
        for dx in range(3):
            acc = acc + p[dy : dy + h, dx : dx + w]
    out = acc / 13.0
    inner = jnp.zeros((h, w, 1), bool).at[1:-1, 1:-1].set(True)
    return jnp.where(inner, out, image)


def adjust_sharpness(image: jax.Array, factor: Any) -> jax.Array:
    """PIL ImageEnhance.Sharpness: 0 gives a smoothed image, 1 the original, 2 sharpened."""
    _core.check_image(image)
    _core.check_positive(factor, "factor", allow_zero=True)
    return _blend(image, _smooth3(image), jnp.asarray(factor, image.dtype))


def grayscale(image: jax.Array) -> jax.Array:
    """Luma (0.299 R + 0.587 G + 0.114 B) repeated over the channels; identity for 1 channel."""
    _core.check_image(image, channels=_CH)
    return jnp.broadcast_to(_core.luma(image), image.shape)


def invert(image: jax.Array) -> jax.Array:
    """1 - image."""
    _core.check_image(image)
    return 1.0 - image


def solarize(image: jax.Array, threshold: Any = 0.5) -> jax.Array:
    """Inverts pixels at or above `threshold` (as `dm_pix.solarize`)."""
    _core.check_image(image)
    return jnp.where(image < threshold, image, 1.0 - image)


def posterize(image: jax.Array, bits: Any) -> jax.Array:
    """Keeps the top `bits` (1-8, may be traced) of each 8-bit channel value (PIL posterize)."""
    _core.check_image(image)
    b = _core.concrete(bits)
    if b is not None and not 1 <= b <= 8:
        raise ValueError(f"bits must lie in [1, 8]; got {bits!r}.")
    q = jnp.exp2(8.0 - jnp.asarray(bits, jnp.float32))
    v = jnp.round(_clip(image) * 255.0)
    return (jnp.floor(v / q) * q / 255.0).astype(image.dtype)


def autocontrast(image: jax.Array) -> jax.Array:
    """Stretches each channel to span [0, 1]; constant channels are left unchanged."""
    _core.check_image(image)
    lo = jnp.min(image, axis=(0, 1), keepdims=True)
    hi = jnp.max(image, axis=(0, 1), keepdims=True)
    span = hi - lo
    return jnp.where(span > 0, (image - lo) / jnp.where(span > 0, span, 1.0), image)


def equalize(image: jax.Array) -> jax.Array:
    """Histogram equalisation per channel (by ranks, i.e. with one bin per distinct value).

    Each value maps to the fraction of the channel's pixels above the minimum that are <= it;
    constant channels are left unchanged.
    """
    h, w, c = _core.check_image(image)
    n = h * w
    flat = image.reshape(n, c).T  # (C, N)
    srt = jnp.sort(flat, axis=1)
    rank = jax.vmap(lambda s, x: jnp.searchsorted(s, x, side="right"))(srt, flat)
    n_min = jax.vmap(lambda s: jnp.searchsorted(s, s[0], side="right"))(srt)[:, None]
    denom = (n - n_min).astype(jnp.float32)
    out = jnp.where(
        denom > 0, (rank - n_min).astype(jnp.float32) / jnp.where(denom > 0, denom, 1.0), flat
    )
    return out.T.reshape(h, w, c).astype(image.dtype)


# ---------------------------------------------------------------------------------------------
# Random twins.


def _factor_range(strength: Any, name: str) -> tuple[float, float]:
    """Torchvision convention: s -> [max(0, 1 - s), 1 + s]; a pair is a factor range."""
    if isinstance(strength, Sequence) and not isinstance(strength, str):
        return _core.check_range(strength, name, lo=0.0)
    _core.check_positive(strength, name, allow_zero=True)
    s = _core.concrete(strength)
    if s is None:
        raise TypeError(f"{name} must be a Python number or a (low, high) pair; got {strength!r}.")
    return max(0.0, 1.0 - s), 1.0 + s


def _hue_range(hue: Any) -> tuple[float, float]:
    if isinstance(hue, Sequence) and not isinstance(hue, str):
        return _core.check_range(hue, "hue", lo=-0.5, hi=0.5)
    _core.check_range((0.0, hue), "hue", lo=0.0, hi=0.5)
    return -float(hue), float(hue)


def random_brightness(key: jax.Array, image: jax.Array, *, strength: Any) -> jax.Array:
    """Brightness factor uniform in [max(0, 1 - strength), 1 + strength] (or a (lo, hi) pair)."""
    return color_jitter(key, image, brightness=strength)


def random_contrast(key: jax.Array, image: jax.Array, *, strength: Any) -> jax.Array:
    """Contrast factor uniform in [max(0, 1 - strength), 1 + strength] (or a (lo, hi) pair)."""
    return color_jitter(key, image, contrast=strength)


def random_saturation(key: jax.Array, image: jax.Array, *, strength: Any) -> jax.Array:
    """Saturation factor uniform in [max(0, 1 - strength), 1 + strength]; no-op on 1 channel."""
    return color_jitter(key, image, saturation=strength)


def random_hue(key: jax.Array, image: jax.Array, *, max_delta: Any) -> jax.Array:
    """Hue rotation uniform in [-max_delta, max_delta] turns (max_delta <= 0.5); no-op on 1 channel."""
    return color_jitter(key, image, hue=max_delta)


def random_gamma(
    key: jax.Array, image: jax.Array, *, min_gamma: float = 0.7, max_gamma: float = 1.5
) -> jax.Array:
    """Gamma drawn uniformly from [min_gamma, max_gamma]."""
    _core.check_image(image)
    _core.check_key(key)
    lo, hi = _core.check_range((min_gamma, max_gamma), "(min_gamma, max_gamma)", positive=True)
    return adjust_gamma(image, _rng.uniform(key, (), lo, hi))


def random_grayscale(key: jax.Array, image: jax.Array, *, p: float = 0.1) -> jax.Array:
    """Converts to grayscale (channels kept) with probability `p`."""
    _core.check_image(image, channels=_CH)
    _core.check_key(key)
    _core.check_prob(p)
    return jnp.where(_rng.uniform(key, ()) < p, grayscale(image), image)


def color_jitter(
    key: jax.Array,
    image: jax.Array,
    *,
    brightness: float | Sequence[float] = 0.0,
    contrast: float | Sequence[float] = 0.0,
    saturation: float | Sequence[float] = 0.0,
    hue: float | Sequence[float] = 0.0,
) -> jax.Array:
    """Random brightness, contrast, saturation and hue in one fused pass (torchvision ColorJitter).

    Each strength s draws a factor uniformly from [max(0, 1 - s), 1 + s] (a (low, high) pair gives
    the range directly); hue draws a shift from [-hue, hue] turns, hue <= 0.5. The adjustments run
    in the fixed order brightness, contrast, saturation, hue, clipping after each as torchvision
    does (torchvision shuffles the order per call; a fixed order lets XLA fuse the pass).
    Saturation and hue are no-ops on 1-channel images.

    Args:
      key: PRNG key.
      image: (H, W, C) floating image in [0, 1], C in {1, 3}.
      brightness: Strength s >= 0 (factor from [max(0, 1 - s), 1 + s]) or a (low, high) factor
        range with low >= 0; 0 (the default) leaves brightness unchanged.
      contrast: Strength or factor range, as for `brightness`; 0 leaves contrast unchanged.
      saturation: Strength or factor range, as for `brightness`; 0 leaves saturation unchanged.
      hue: strength in [0, 0.5] or a range inside [-0.5, 0.5].

    Returns:
      (H, W, C) image in [0, 1].
    """
    _core.check_image(image, channels=_CH)
    _core.check_key(key)
    b = _factor_range(brightness, "brightness")
    c = _factor_range(contrast, "contrast")
    s = _factor_range(saturation, "saturation")
    hr = _hue_range(hue)
    u = _rng.uniform(key, (4,))
    dt = image.dtype
    x = image
    if b != (1.0, 1.0):
        x = _clip(x * (b[0] + u[0] * (b[1] - b[0])).astype(dt))
    if c != (1.0, 1.0):
        mean = _core.mean_luma(x)
        x = _blend(x, mean, (c[0] + u[1] * (c[1] - c[0])).astype(dt))
    if image.shape[-1] == 3 and s != (1.0, 1.0):
        x = _blend(x, _core.luma(x), (s[0] + u[2] * (s[1] - s[0])).astype(dt))
    if image.shape[-1] == 3 and hr != (0.0, 0.0):
        h_, s_, v_ = _rgb_to_hsv(x)
        x = _hsv_to_rgb(jnp.mod(h_ + hr[0] + u[3] * (hr[1] - hr[0]), 1.0), s_, v_).astype(dt)
    return x
