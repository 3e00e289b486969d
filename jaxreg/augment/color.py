"""Colour augmentations: dm-pix's colour ops, PIL-style enhance factors, colour jitter and more.

Images are (H, W, C) floating in [0, 1]. The names jaxreg shares with dm-pix (`adjust_brightness`,
`adjust_contrast`, `adjust_gamma`, `adjust_hue`, `adjust_saturation`, `random_brightness`,
`random_contrast`, `random_gamma`, `random_hue`, `random_saturation`, `solarize`) take dm-pix's
positional arguments and give dm-pix's results, random ones with dm-pix's draws
(`jax.random.uniform(key, (), minval, maxval)`) for the same key; like dm-pix they do not clip.
The `enhance_*` ops are PIL's ImageEnhance / torchvision's factors (factor 1 is the original,
results clipped to [0, 1]): `enhance_brightness` multiplies, `enhance_contrast` blends with the
mean gray level, `enhance_saturation` with the per-pixel gray level; `color_jitter`, the policies
and the spec ops "brightness", "contrast", "saturation", "hue" use those. On 1-channel images
saturation and hue are no-ops (a gray image has no colour to change) and grayscale is the
identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dm_pix
import jax
import jax.numpy as jnp

from jaxreg.augment import _batching, _core, _rng

__all__ = [
    "adjust_brightness",
    "adjust_contrast",
    "adjust_gamma",
    "adjust_hue",
    "adjust_saturation",
    "adjust_sharpness",
    "autocontrast",
    "color_jitter",
    "enhance_brightness",
    "enhance_contrast",
    "enhance_saturation",
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


def _ordered(lo: Any, hi: Any, lo_name: str, hi_name: str) -> None:
    a, b = _core.concrete(lo), _core.concrete(hi)
    if a is not None and b is not None and a > b:
        raise ValueError(f"{lo_name} must be <= {hi_name}; got {lo_name}={lo!r}, {hi_name}={hi!r}.")


# ---------------------------------------------------------------------------------------------
# dm-pix's colour ops (same names, arguments and results as `dm_pix`).


def adjust_brightness(image: jax.Array, delta: Any) -> jax.Array:
    """Adds `delta` to every channel (`dm_pix.adjust_brightness`, tf.image.adjust_brightness).

    Not clipped (as dm-pix). The multiplicative torchvision/PIL brightness is
    `enhance_brightness`.

    Args:
      image: (H, W, C) floating image in [0, 1].
      delta: additive shift, a real scalar (may be traced).

    Returns:
      (H, W, C) image of the input dtype, `image + delta` (may leave [0, 1]).
    """
    _core.check_image(image)
    _core.check_scalar(delta, "delta")
    return image + jnp.asarray(delta, image.dtype)


def adjust_contrast(image: jax.Array, factor: Any) -> jax.Array:
    """Scales each channel's deviation from its mean (`dm_pix.adjust_contrast`).

    `factor * (image - mean) + mean` with the per-channel mean over the pixels
    (tf.image.adjust_contrast); not clipped. The torchvision/PIL contrast that blends with the mean
    gray level is `enhance_contrast`. Calls dm-pix.

    Args:
      image: (H, W, C) floating image in [0, 1].
      factor: contrast factor, a real scalar (may be traced; 1 is the original, 0 flat, < 0
        inverts about the mean).

    Returns:
      (H, W, C) image of the input dtype (may leave [0, 1]).
    """
    _core.check_image(image)
    _core.check_scalar(factor, "factor")
    with _core.default_promotion():
        return dm_pix.adjust_contrast(image, factor)


def adjust_saturation(image: jax.Array, factor: Any) -> jax.Array:
    """Scales the HSV saturation, clipped to [0, 1] (`dm_pix.adjust_saturation`).

    tf.image.adjust_saturation: RGB -> HSV, S <- clip(S * factor, 0, 1), HSV -> RGB. Calls
    dm-pix. A no-op on 1-channel images. The torchvision/PIL saturation that blends with the
    per-pixel gray level is `enhance_saturation`.

    Args:
      image: (H, W, C) floating image in [0, 1], C in {1, 3}.
      factor: saturation factor, a real scalar (may be traced; 0 gives gray, 1 the original).

    Returns:
      (H, W, C) image of the input dtype.
    """
    _core.check_image(image, channels=_CH)
    _core.check_scalar(factor, "factor")
    if image.shape[-1] == 1:
        return image
    with _core.default_promotion():
        return dm_pix.adjust_saturation(image, factor).astype(image.dtype)


def adjust_hue(image: jax.Array, delta: Any) -> jax.Array:
    """Rotates the hue by `delta` turns in HSV space (`dm_pix.adjust_hue`).

    Hue is periodic: any real delta works, 0.5 is the opposite colour, 1 the original. Calls
    dm-pix. A no-op on 1-channel images.

    Args:
      image: (H, W, C) floating image in [0, 1], C in {1, 3}.
      delta: hue shift in turns, a real scalar (may be traced).

    Returns:
      (H, W, C) image of the input dtype.
    """
    _core.check_image(image, channels=_CH)
    _core.check_scalar(delta, "delta")
    if image.shape[-1] == 1:
        return image
    with _core.default_promotion():
        return dm_pix.adjust_hue(image, delta).astype(image.dtype)


def adjust_gamma(
    image: jax.Array, gamma: Any, *, gain: Any = 1.0, assume_in_bounds: bool = False
) -> jax.Array:
    """Returns `gain * image ** gamma` (`dm_pix.adjust_gamma`, tf.image.adjust_gamma).

    Args:
      image: (H, W, C) floating image in [0, 1].
      gamma: exponent > 0, a real scalar (may be traced).
      gain: multiplier, a real scalar (may be traced); the result leaves [0, 1] when gain > 1.
      assume_in_bounds: skip clipping the input to [0, 1] first (dm-pix clips unless True;
        values below 0 then give NaN for non-integer gamma).

    Returns:
      (H, W, C) image of the input dtype.
    """
    _core.check_image(image)
    _core.check_scalar(gamma, "gamma", positive=True)
    _core.check_scalar(gain, "gain")
    if not isinstance(assume_in_bounds, bool):
        raise TypeError(f"assume_in_bounds must be True or False; got {assume_in_bounds!r}.")
    x = image if assume_in_bounds else _clip(image)
    return jnp.asarray(gain, image.dtype) * x ** jnp.asarray(gamma, image.dtype)


def solarize(image: jax.Array, threshold: Any = 0.5) -> jax.Array:
    """Inverts pixels at or above `threshold` (`dm_pix.solarize`; jaxreg adds the default 0.5).

    Args:
      image: (H, W, C) floating image in [0, 1].
      threshold: real scalar (may be traced).

    Returns:
      (H, W, C) image, `where(image < threshold, image, 1 - image)`.
    """
    _core.check_image(image)
    _core.check_scalar(threshold, "threshold")
    return jnp.where(image < threshold, image, 1.0 - image)


def _draw(key, lo, hi):
    """dm-pix's draw of a random parameter: `jax.random.uniform(key, (), minval, maxval)`."""
    with _core.default_promotion():
        return jax.random.uniform(key, (), minval=lo, maxval=hi)


def random_brightness(key: jax.Array, image: jax.Array, max_delta: Any) -> jax.Array:
    """`adjust_brightness` with delta uniform in [-max_delta, max_delta) (`dm_pix.random_brightness`).

    Draws as dm-pix does (same key, same delta). The multiplicative brightness jitter is
    `color_jitter(key, image, brightness=strength)`.

    Args:
      key: PRNG key.
      image: (H, W, C) floating image in [0, 1].
      max_delta: largest shift >= 0 (may be traced).

    Returns:
      (H, W, C) image, not clipped.
    """
    _core.check_key(key)
    _core.check_image(image)
    _core.check_scalar(max_delta, "max_delta")
    _core.check_positive(max_delta, "max_delta", allow_zero=True)
    return _batching.vmappable(
        lambda k, x, d: adjust_brightness(x, _draw(k, -d, d)), key, image, max_delta
    )


def random_contrast(key: jax.Array, image: jax.Array, lower: Any, upper: Any) -> jax.Array:
    """`adjust_contrast` with factor uniform in [lower, upper) (`dm_pix.random_contrast`).

    Draws as dm-pix does. The torchvision contrast jitter is
    `color_jitter(key, image, contrast=strength)`.

    Args:
      key: PRNG key.
      image: (H, W, C) floating image in [0, 1].
      lower: smallest factor (may be traced).
      upper: largest factor, >= lower (may be traced).

    Returns:
      (H, W, C) image, not clipped.
    """
    _core.check_key(key)
    _core.check_image(image)
    _core.check_scalar(lower, "lower")
    _core.check_scalar(upper, "upper")
    _ordered(lower, upper, "lower", "upper")
    return _batching.vmappable(
        lambda k, x, lo, hi: adjust_contrast(x, _draw(k, lo, hi)), key, image, lower, upper
    )


def random_saturation(key: jax.Array, image: jax.Array, lower: Any, upper: Any) -> jax.Array:
    """`adjust_saturation` with factor uniform in [lower, upper) (`dm_pix.random_saturation`).

    Draws as dm-pix does; a no-op on 1-channel images. The torchvision saturation jitter is
    `color_jitter(key, image, saturation=strength)`.

    Args:
      key: PRNG key.
      image: (H, W, C) floating image in [0, 1], C in {1, 3}.
      lower: smallest factor (may be traced).
      upper: largest factor, >= lower (may be traced).

    Returns:
      (H, W, C) image.
    """
    _core.check_key(key)
    _core.check_image(image, channels=_CH)
    _core.check_scalar(lower, "lower")
    _core.check_scalar(upper, "upper")
    _ordered(lower, upper, "lower", "upper")
    return _batching.vmappable(
        lambda k, x, lo, hi: adjust_saturation(x, _draw(k, lo, hi)), key, image, lower, upper
    )


def random_hue(key: jax.Array, image: jax.Array, max_delta: Any) -> jax.Array:
    """`adjust_hue` with delta uniform in [-max_delta, max_delta) turns (`dm_pix.random_hue`).

    Draws as dm-pix does; a no-op on 1-channel images. The jitter of `color_jitter(hue=...)`
    is the same rotation with jaxreg's draw.

    Args:
      key: PRNG key.
      image: (H, W, C) floating image in [0, 1], C in {1, 3}.
      max_delta: largest shift in turns, >= 0 (may be traced).

    Returns:
      (H, W, C) image.
    """
    _core.check_key(key)
    _core.check_image(image, channels=_CH)
    _core.check_scalar(max_delta, "max_delta")
    _core.check_positive(max_delta, "max_delta", allow_zero=True)
    return _batching.vmappable(
        lambda k, x, d: adjust_hue(x, _draw(k, -d, d)), key, image, max_delta
    )


def random_gamma(
    key: jax.Array,
    image: jax.Array,
    min_gamma: Any,
    max_gamma: Any,
    *,
    gain: Any = 1.0,
    assume_in_bounds: bool = False,
) -> jax.Array:
    """`adjust_gamma` with gamma uniform in [min_gamma, max_gamma) (`dm_pix.random_gamma`).

    Draws as dm-pix does.

    Args:
      key: PRNG key.
      image: (H, W, C) floating image in [0, 1].
      min_gamma: smallest gamma > 0 (may be traced).
      max_gamma: largest gamma, >= min_gamma (may be traced).
      gain: multiplier, as `adjust_gamma`.
      assume_in_bounds: as `adjust_gamma`.

    Returns:
      (H, W, C) image.
    """
    _core.check_key(key)
    _core.check_image(image)
    _core.check_scalar(min_gamma, "min_gamma", positive=True)
    _core.check_scalar(max_gamma, "max_gamma", positive=True)
    _ordered(min_gamma, max_gamma, "min_gamma", "max_gamma")
    return _batching.vmappable(
        lambda k, x, lo, hi, g: adjust_gamma(
            x, _draw(k, lo, hi), gain=g, assume_in_bounds=assume_in_bounds
        ),
        key,
        image,
        min_gamma,
        max_gamma,
        gain,
    )


# ---------------------------------------------------------------------------------------------
# PIL ImageEnhance / torchvision factors (factor 1 is the original; clipped to [0, 1]).


def enhance_brightness(image: jax.Array, factor: Any) -> jax.Array:
    """Multiplies by `factor` and clips (PIL ImageEnhance.Brightness, torchvision).

    Args:
      image: (H, W, C) floating image in [0, 1], C in {1, 3}.
      factor: >= 0 (may be traced); 0 gives black, 1 the original.

    Returns:
      (H, W, C) image in [0, 1].
    """
    _core.check_image(image, channels=_CH)
    _core.check_positive(factor, "factor", allow_zero=True)
    return _clip(image * jnp.asarray(factor, image.dtype))


def enhance_contrast(image: jax.Array, factor: Any) -> jax.Array:
    """Blends with the image's mean gray level and clips (PIL ImageEnhance.Contrast, torchvision).

    `clip(mean + factor * (image - mean))` with one mean, of the luma (0.299 R + 0.587 G +
    0.114 B), for all channels; `adjust_contrast` (dm-pix) uses per-channel means and no clip.

    Args:
      image: (H, W, C) floating image in [0, 1], C in {1, 3}.
      factor: >= 0 (may be traced); 0 gives a flat gray image, 1 the original.

    Returns:
      (H, W, C) image in [0, 1].
    """
    _core.check_image(image, channels=_CH)
    _core.check_positive(factor, "factor", allow_zero=True)
    mean = _core.mean_luma(image)
    return _blend(image, mean, jnp.asarray(factor, image.dtype))


def enhance_saturation(image: jax.Array, factor: Any) -> jax.Array:
    """Blends with the per-pixel gray level and clips (PIL ImageEnhance.Color, torchvision).

    `clip(luma + factor * (image - luma))`: 0 gives grayscale, > 1 oversaturates; a no-op on
    1-channel images. `adjust_saturation` (dm-pix) scales HSV saturation instead.

    Args:
      image: (H, W, C) floating image in [0, 1], C in {1, 3}.
      factor: >= 0 (may be traced).

    Returns:
      (H, W, C) image in [0, 1].
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


def random_grayscale(key: jax.Array, image: jax.Array, *, p: float = 0.1) -> jax.Array:
    """Converts to grayscale (channels kept) with probability `p`."""
    _core.check_image(image, channels=_CH)
    _core.check_key(key)
    _core.check_prob(p)
    return _batching.vmappable(
        lambda k, x: jnp.where(_rng.uniform(k, ()) < p, grayscale(x), x), key, image
    )


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
    the range directly) for `enhance_brightness`, `enhance_contrast` and `enhance_saturation`;
    hue draws a shift from [-hue, hue] turns, hue <= 0.5, as `adjust_hue`. One option alone is
    the random twin of its op, e.g. `color_jitter(key, image, brightness=0.4)` (the spec op
    "brightness(strength=0.4)"). Parameters come from jaxreg's counter-based draws. The
    adjustments run in the fixed order brightness, contrast, saturation, hue, clipping after each
    as torchvision does (torchvision shuffles the order per call; a fixed order lets XLA fuse
    the pass).
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
    return _batching.vmappable(_jitter, key, image, b, c, s, hr)


def _jitter(key, image, b, c, s, hr):
    """`color_jitter` for checked factor ranges b, c, s and hue range hr (static pairs)."""
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
