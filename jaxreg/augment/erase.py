"""Erasing: cutout, random erasing and corner patches, filled with a constant, noise, the mean or another image.

`fill` everywhere accepts:
  - a number, or one number per channel;
  - "noise": uniform [0, 1) pixels, new per call (timm's per-pixel random erasing, in [0, 1]);
  - "mean": the image's per-channel mean;
  - "batch": pixels of another example of the same batch, at the same positions. A per-example
    function cannot see the batch, so this fill is resolved where the batch is, by a custom
    batching rule (`jaxreg.augment._batching`): under `jaxreg.augment.batch(fn)` or
    `jax.vmap(fn)` (the training loop's `augment` hook; specs such as
    "cutout(size=8,fill='batch')"), example i takes the pixels of example i - 1 (example 0
    those of example B - 1), as that example stands at this point of the chain (after the ops
    that come before the erasing); the data loader's shuffling makes the pairs random across
    steps. With B = 1 the partner is the image itself and the box keeps its pixels. An image that is not batched (one image
    outside `vmap`, or one image shared by all keys under `vmap`) has no other example: as a
    concrete array it raises ValueError; traced (under `jit`) this cannot be detected, and the
    box keeps its own pixels;
  - an (H, W, C) array: pixels of that image, e.g. a partner chosen by hand under
    `jax.vmap(fn)(keys, images, partners)`.
Only pixels inside the erased boxes change; the output has the input's shape and dtype.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg.augment import _batching, _core, _rng

__all__ = ["corner_patches", "cutout", "erase", "random_erasing"]

FILL_WORDS = ("noise", "mean", "batch")
_FILL_HELP = (
    "a number, one number per channel, 'noise', 'mean', 'batch' (another example of "
    "the batch) or an (H, W, C) image"
)


def check_fill_option(fill: Any) -> None:
    """Checks a `fill` given without an image (e.g. from a spec string), before any tracing.

    Accepts a finite number, a non-empty sequence of finite numbers (one per channel, checked
    against the image later), one of `FILL_WORDS`, or an (H, W, C) array.

    Raises:
      ValueError: anything else; the message names the allowed values.
    """
    if isinstance(fill, str):
        if fill not in FILL_WORDS:
            raise ValueError(f"fill must be {_FILL_HELP}; got {fill!r}.")
        return
    if hasattr(fill, "shape") and len(fill.shape) == 3:
        return
    if isinstance(fill, numbers.Real) and not isinstance(fill, bool):
        values = [fill]
    elif (
        isinstance(fill, (tuple, list))
        and fill
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in fill)
    ):
        values = list(fill)
    else:
        raise ValueError(f"fill must be {_FILL_HELP}; got {fill!r}.")
    if not np.all(np.isfinite(np.asarray(values, np.float64))):
        raise ValueError(f"fill must hold finite numbers; got {fill!r}.")


def _partner(image: jax.Array) -> jax.Array:
    """Another example of the batch: outside `vmap` (no batch) the image itself.

    Under `vmap` example i gets example i - 1 (a roll of the batch); gradients flow back to
    the partner.
    """
    return _batching.vmappable(
        lambda x: x, image, batched=lambda xs: jnp.roll(xs, 1, axis=0), fenced=False
    )


def _check_fill(fill: Any, shape: tuple[int, int, int], image: Any = None) -> None:
    if isinstance(fill, str):
        if fill not in FILL_WORDS:
            raise ValueError(f"fill must be {_FILL_HELP}; got {fill!r}.")
        if fill == "batch" and image is not None and not isinstance(image, jax.core.Tracer):
            raise ValueError(
                "fill='batch' takes pixels from another example of the batch, and this image is "
                "not batched: apply the op to a batch with jaxreg.augment.batch(fn)(key, images) "
                "or jax.vmap over the images."
            )
    elif hasattr(fill, "shape") and len(fill.shape) == 3:
        if tuple(fill.shape) != tuple(shape):
            raise ValueError(
                f"fill image must have the image's shape {tuple(shape)}; got {fill.shape}."
            )
    else:
        _core.fill_value(fill, shape[-1])


def _fill_pixels(key: jax.Array | None, image: jax.Array, fill: Any) -> jax.Array:
    if isinstance(fill, str):
        if fill == "noise":
            if key is None:
                raise ValueError(
                    'fill="noise" needs a key: use cutout, random_erasing or corner_patches.'
                )
            h, w, c = image.shape
            return _rng.uniform(key, (h * w * c,), stream=1).reshape(h, w, c).astype(image.dtype)
        if fill == "batch":
            return _partner(image)
        return jnp.mean(image, axis=(0, 1), keepdims=True)
    if hasattr(fill, "shape") and len(fill.shape) == 3:
        return fill.astype(image.dtype)
    return _core.fill_value(fill, image.shape[-1]).astype(image.dtype)


def _box_mask(shape, top, left, height, width):
    """(H, W, 1) mask of rows [top, top + height) and columns [left, left + width)."""
    h, w = shape[0], shape[1]
    r = jnp.arange(h, dtype=jnp.int32).reshape(h, 1, 1)
    c = jnp.arange(w, dtype=jnp.int32).reshape(1, w, 1)
    top, left, height, width = (jnp.asarray(v, jnp.int32) for v in (top, left, height, width))
    return (r >= top) & (r < top + height) & (c >= left) & (c < left + width)


def _check_patch_size(size: Any, shape: tuple[int, int, int]) -> tuple[int, int]:
    sh, sw = _core.check_size(size)
    if sh > shape[0] or sw > shape[1]:
        raise ValueError(f"size {(sh, sw)} must not exceed the image size {shape[:2]}.")
    return sh, sw


def erase(
    image: jax.Array, top: Any, left: Any, height: Any, width: Any, *, fill: Any = 0.0
) -> jax.Array:
    """Replaces the box rows [top, top+height) x columns [left, left+width) by `fill`.

    Deterministic twin of the random erasing ops (box values may be traced; parts outside the
    image are ignored). `fill`: number, per-channel values, "mean", "batch" (under `vmap`, see
    the module docstring) or an (H, W, C) image.

    Returns:
      (H, W, C) image.
    """
    shape = _core.check_image(image)
    _check_fill(fill, shape, image)
    mask = _box_mask(shape, top, left, height, width)
    return jnp.where(mask, _fill_pixels(None, image, fill), image)


def cutout(
    key: jax.Array, image: jax.Array, *, size: int | Sequence[int], fill: Any = 0.0
) -> jax.Array:
    """Cutout (DeVries & Taylor 2017): erases one (size x size) square at a uniform centre.

    The centre is uniform over the image and the square is clipped at the border, so boxes near
    the edge erase less (as in the paper).

    Args:
      key: PRNG key.
      image: (H, W, C) floating image.
      size: side, an int or (height, width), at most the image size.
      fill: see the module docstring.

    Returns:
      (H, W, C) image.
    """
    shape = _core.check_image(image)
    _core.check_key(key)
    sh, sw = _check_patch_size(size, shape)
    _check_fill(fill, shape, image)

    def erased(key, image, fill):
        k_box = k_fill = key  # the fill noise uses its own stream of the key
        cy, cx = _rng.randint(k_box, (2,), 0, jnp.array(shape[:2]))
        top, left = cy - sh // 2, cx - sw // 2
        mask = _box_mask(shape, top, left, sh, sw)
        return jnp.where(mask, _fill_pixels(k_fill, image, fill), image)

    return _batching.vmappable(erased, key, image, fill)


def random_erasing(
    key: jax.Array,
    image: jax.Array,
    *,
    p: float = 0.5,
    scale: Sequence[float] = (0.02, 1 / 3),
    ratio: Sequence[float] = (0.3, 3.3),
    fill: Any = 0.0,
) -> jax.Array:
    """Random Erasing (Zhong et al. 2020), torchvision `RandomErasing` semantics.

    With probability `p`, up to 10 boxes are drawn with area fraction uniform in `scale` and a
    log-uniform aspect ratio (height / width) in `ratio`; the first that fits strictly inside the
    image is erased at a uniform position; if none fits nothing is erased. `fill="noise"` gives
    timm's per-pixel mode (uniform in [0, 1) here, since images are in [0, 1]).

    Args:
      key: PRNG key.
      image: (H, W, C) floating image.
      p: probability of erasing, in [0, 1].
      scale: (low, high) area fraction in (0, 1].
      ratio: (low, high) aspect ratio > 0.
      fill: see the module docstring.

    Returns:
      (H, W, C) image.
    """
    shape = _core.check_image(image)
    _core.check_key(key)
    _core.check_prob(p)
    s_lo, s_hi = _core.check_range(scale, "scale", lo=0.0, hi=1.0, positive=True)
    r_lo, r_hi = _core.check_range(ratio, "ratio", positive=True)
    _check_fill(fill, shape, image)
    h, w = shape[:2]

    def erased(key, image, fill):
        k_box = k_fill = key  # the fill noise uses its own stream of the key
        tries = 10
        u = _rng.uniform(k_box, (5, tries))
        area = h * w * (s_lo + u[0] * (s_hi - s_lo))
        aspect = jnp.exp(math.log(r_lo) + u[1] * (math.log(r_hi) - math.log(r_lo)))
        eh = jnp.round(jnp.sqrt(area * aspect))
        ew = jnp.round(jnp.sqrt(area / aspect))
        ok = (eh < h) & (ew < w) & (eh > 0) & (ew > 0)
        i = jnp.argmax(ok)
        do = jnp.any(ok) & (u[4, 0] < p)
        eh, ew = eh[i], ew[i]
        top = jnp.floor(u[2, i] * (h - eh + 1.0))
        left = jnp.floor(u[3, i] * (w - ew + 1.0))
        mask = _box_mask(shape, top, left, jnp.where(do, eh, 0.0), ew)
        return jnp.where(mask, _fill_pixels(k_fill, image, fill), image)

    return _batching.vmappable(erased, key, image, fill)


def corner_patches(
    key: jax.Array,
    image: jax.Array,
    *,
    size: int | Sequence[int],
    p: float = 0.5,
    fill: Any = "noise",
) -> jax.Array:
    """Cuts rectangles at the image's corners and fills them with something new.

    Each of the four corners, independently with probability `p`, loses a rectangle anchored at
    that corner whose height and width are uniform in [1, size]. Models that read text or objects
    near the frame (e.g. plates cut by the photo's border) learn not to rely on the corners.

    Args:
      key: PRNG key.
      image: (H, W, C) floating image.
      size: largest patch side, an int or (height, width), at most the image size.
      p: probability per corner, in [0, 1].
      fill: see the module docstring (default "noise").

    Returns:
      (H, W, C) image.
    """
    shape = _core.check_image(image)
    _core.check_key(key)
    sh, sw = _check_patch_size(size, shape)
    _core.check_prob(p)
    _check_fill(fill, shape, image)
    h, w = shape[:2]

    def patched(key, image, fill):
        k_box = k_fill = key  # the fill noise uses its own stream of the key
        u = _rng.uniform(k_box, (3, 4))
        ph = jnp.where(u[0] < p, 1 + jnp.floor(u[1] * sh), 0.0)
        pw = 1 + jnp.floor(u[2] * sw)
        tops = jnp.array([0.0, 0.0, h, h]) - jnp.array([0.0, 0.0, 1.0, 1.0]) * ph
        lefts = jnp.array([0.0, w, 0.0, w]) - jnp.array([0.0, 1.0, 0.0, 1.0]) * pw
        mask = jnp.zeros((h, w, 1), bool)
        for j in range(4):
            mask = mask | _box_mask(shape, tops[j], lefts[j], ph[j], pw[j])
        return jnp.where(mask, _fill_pixels(k_fill, image, fill), image)

    return _batching.vmappable(patched, key, image, fill)
