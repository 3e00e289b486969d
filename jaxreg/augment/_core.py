"""Shared helpers for jaxreg.augment: argument checks (run before tracing) and key handling."""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = []  # private module

PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")


def concrete(value: Any) -> float | None:
    """Returns `value` as a Python float when it is known at trace time, else None."""
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def check_image(image: Any, name: str = "image", *, channels: Sequence[int] | None = None):
    """Checks a single HWC floating image and returns its static shape (H, W, C)."""
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        raise TypeError(f"{name} must be an array of shape (H, W, C); got {type(image).__name__}.")
    if len(image.shape) != 3:
        raise ValueError(
            f"{name} must have rank 3 (H, W, C), one example; got shape {tuple(image.shape)}. "
            "Batches go through jaxreg.augment.batch(fn) or jax.vmap."
        )
    check_float(image, name)
    h, w, c = (int(d) for d in image.shape)
    if h < 1 or w < 1 or c < 1:
        raise ValueError(f"{name} must have non-empty dimensions; got shape {tuple(image.shape)}.")
    if channels is not None and c not in channels:
        raise ValueError(f"{name} must have {' or '.join(map(str, channels))} channels; got {c}.")
    return h, w, c


def check_images(images: Any, name: str = "images"):
    """Checks a batch of NHWC floating images and returns its static shape (B, H, W, C)."""
    if not hasattr(images, "shape") or not hasattr(images, "dtype"):
        raise TypeError(
            f"{name} must be an array of shape (B, H, W, C); got {type(images).__name__}."
        )
    if len(images.shape) != 4:
        raise ValueError(f"{name} must have rank 4 (B, H, W, C); got shape {tuple(images.shape)}.")
    check_float(images, name)
    if images.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one example; got shape {tuple(images.shape)}.")
    return tuple(int(d) for d in images.shape)


def check_float(x: Any, name: str):
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} must have a floating dtype (float32 images in [0, 1]); got {x.dtype}. "
            "Convert with images.astype(jnp.float32) / 255."
        )


def check_prob(p: Any, name: str = "p") -> None:
    v = concrete(p)
    if v is not None and not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1]; got {p!r}.")


def check_positive(x: Any, name: str, *, allow_zero: bool = False) -> None:
    v = concrete(x)
    if v is None:
        return
    if not np.isfinite(v) or (v < 0 if allow_zero else v <= 0):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}; got {x!r}.")


def check_scalar(x: Any, name: str, *, positive: bool = False) -> None:
    """Checks a real scalar parameter: a Python number or a 0-d real array (may be traced)."""
    if isinstance(x, (bool, np.bool_)) or not (
        isinstance(x, numbers.Real)
        or (
            hasattr(x, "shape")
            and hasattr(x, "dtype")
            and (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer))
        )
    ):
        raise TypeError(f"{name} must be a real number or a scalar array; got {x!r}.")
    if hasattr(x, "shape") and tuple(x.shape) != ():
        raise ValueError(f"{name} must be a scalar (shape ()); got shape {tuple(x.shape)}.")
    v = concrete(x)
    if v is not None and not np.isfinite(v):
        raise ValueError(f"{name} must be a finite number; got {x!r}.")
    if positive:
        check_positive(x, name)


def check_in(value: Any, name: str, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}.")


def check_range(
    pair: Any,
    name: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    positive: bool = False,
) -> tuple[float, float]:
    """Checks a static (low, high) pair with low <= high inside [lo, hi]."""
    if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
        raise TypeError(f"{name} must be a (low, high) pair of numbers; got {pair!r}.")
    a, b = (concrete(v) for v in pair)
    if a is None or b is None:
        raise TypeError(f"{name} must hold Python numbers; got {pair!r}.")
    if a > b:
        raise ValueError(f"{name} must satisfy low <= high; got {pair!r}.")
    if positive and a <= 0:
        raise ValueError(f"{name} must be > 0; got {pair!r}.")
    if (lo is not None and a < lo) or (hi is not None and b > hi):
        raise ValueError(f"{name} must lie in [{lo}, {hi}]; got {pair!r}.")
    return a, b


def check_size(size: Any, name: str = "size") -> tuple[int, int]:
    """Checks an int or (height, width) pair of positive ints."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (int(size), int(size))
    if (
        isinstance(size, (str, bytes))
        or not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in size)
    ):
        raise TypeError(
            f"{name} must be a positive int or a (height, width) pair of ints; got {size!r}."
        )
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive; got {size!r}.")
    return h, w


def check_int(x: Any, name: str, *, minimum: int = 0) -> int:
    if not isinstance(x, numbers.Integral) or isinstance(x, bool):
        raise TypeError(f"{name} must be an int; got {x!r}.")
    if x < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {x!r}.")
    return int(x)


def check_key(key: Any, name: str = "key") -> None:
    """Checks a single PRNG key (typed `jax.random.key` or raw uint32 `PRNGKey`)."""
    if not hasattr(key, "dtype"):
        raise TypeError(
            f"{name} must be a JAX PRNG key (jax.random.key(0)); got {type(key).__name__}."
        )
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(
                f"{name} must be a single key, shape (); got shape {key.shape}. "
                "Batched keys go through jax.vmap or jaxreg.augment.batch."
            )
    elif key.dtype != jnp.uint32 or len(key.shape) != 1:
        raise TypeError(
            f"{name} must be a JAX PRNG key (jax.random.key(0) or PRNGKey(0)); "
            f"got dtype {key.dtype}, shape {key.shape}."
        )


def key_words(key: jax.Array) -> jax.Array:
    """Returns the raw uint32 words of one key as a 1-D array."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return jnp.reshape(key, (-1,)).astype(jnp.uint32)


def fill_value(fill: Any, channels: int, name: str = "fill") -> jax.Array:
    """Checks a constant fill (scalar or one value per channel) and returns shape (1, 1, C)."""
    if isinstance(fill, str):
        raise ValueError(f"{name} must be a number or one number per channel here; got {fill!r}.")
    arr = jnp.asarray(fill, dtype=jnp.float32)
    if arr.ndim == 0:
        return jnp.broadcast_to(arr, (1, 1, channels))
    if arr.shape != (channels,):
        raise ValueError(f"{name} must be a scalar or have shape ({channels},); got {arr.shape}.")
    return arr.reshape(1, 1, channels)


def as_float(x: Any) -> jax.Array:
    return jnp.asarray(x, dtype=jnp.float32)


def mean_luma(image: jax.Array) -> jax.Array:
    """Mean gray level of an HWC image (scalar), as one dot product over the flat image.

    XLA:CPU runs a reduction over the (H, W) axes of a batch as a slow scalar loop; a dot of the
    flat image with tiled weights runs as a fast matrix-vector product.
    """
    h, w, c = image.shape
    wts = np.array([0.299, 0.587, 0.114] if c == 3 else [1.0] * c, np.float32) / (h * w)
    return jnp.dot(image.reshape(-1), jnp.asarray(np.tile(wts, h * w), image.dtype))


def luma(image: jax.Array) -> jax.Array:
    """Grayscale (ITU-R 601 luma) of an HWC image as (H, W, 1); 1-channel images pass through."""
    if image.shape[-1] == 1:
        return image
    r, g, b = image[..., 0:1], image[..., 1:2], image[..., 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


@contextlib.contextmanager
def default_promotion() -> Iterator[None]:
    """JAX's default promotion rules (dtype "standard", rank "allow") inside the block.

    dm-pix (and user code) mixes bool, int and Python float operands, which
    `jax_numpy_dtype_promotion="strict"` rejects; jaxreg's own code runs under strict rules.
    """
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        yield
