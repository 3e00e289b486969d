"""One-pass resampling of an image through an affine map, and composable geometric ops.

A geometric op is described by a 3x3 matrix that maps homogeneous output coordinates
(y, x, 1) -- pixel centres at integers -- to input coordinates, plus a static output size.
Applying op A then op B is the single map M_A @ M_B, so a chain of geometric ops costs one
interpolation. Interpolation is bilinear from 2x2 neighbourhoods fetched as one gather slice
(or two 1-D gathers when the map is axis-aligned), or nearest (exact copies) when every op in
the chain maps integer pixels to integer pixels (crops, flips, rot90).

Under `jax.vmap` (and so under `jaxreg.augment.batch`) `warp` and `warp_ndimage` resample the
whole batch at once, by a batching rule (`_batching.vmappable`): XLA:CPU runs a gather as a
scalar loop whose cost grows with the index arity, and vmapping `apply` gives a (batch, y, x)
index; indexing the batch as one array of pixels (bilinear: two (2, C) tap pairs at one flat
index) or as rows of one (B * H, W, C) array (exact copies) keeps the index at one or two
components (same arithmetic). The bilinear batch form is `apply_batch_xla`, which on the CPU
`jaxreg._cpu.warp` may replace by a native kernel (same arithmetic).

Source coordinates are matrix products (`_coords`, `_line`), computed once and read by the tap
index, the tap weight and the validity alike: computed elementwise, XLA recomputes them inside
every fusion that reads them and may round them differently there (a multiply-add contracted
in one fusion and not in another), so that under `jit` a coordinate within an ulp of an
integer took its tap from one pixel and its weight from the next.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxreg._cpu import warp as _cpu_warp
from jaxreg.augment import _batching, _core

__all__ = []  # private module

_EPS = 1e-3  # coordinates this far outside the border still count as inside (float round-off)


def matrix(a, b, c, d, e, f) -> jax.Array:
    """[[a, b, c], [d, e, f], [0, 0, 1]] as float32 (entries may be traced scalars)."""
    rows = [jnp.asarray(v, jnp.float32) for v in (a, b, c, d, e, f)]
    zero, one = jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32)
    return jnp.stack(rows + [zero, zero, one]).reshape(3, 3)


def identity_matrix() -> jax.Array:
    return jnp.eye(3, dtype=jnp.float32)


def _fold(t: jax.Array, n: int, mode: str, exact: bool):
    """Maps coordinates along one axis of size n into range; returns (t, valid or None)."""
    if exact:
        if mode == "constant":
            return jnp.clip(t, 0, n - 1), (t >= 0) & (t <= n - 1)
        if mode == "edge" or n == 1:
            return jnp.clip(t, 0, n - 1), None
        if mode == "reflect":
            p = 2 * (n - 1)
            t = jnp.mod(t, p)
            return jnp.where(t >= n, p - t, t), None
        if mode == "symmetric":
            t = jnp.mod(t, 2 * n)
            return jnp.where(t >= n, 2 * n - 1 - t, t), None
        return jnp.mod(t, n), None  # wrap
    hi = float(n - 1)
    if mode == "constant":
        return jnp.clip(t, 0.0, hi), (t >= -_EPS) & (t <= hi + _EPS)
    if mode == "edge" or n == 1:
        return jnp.clip(t, 0.0, hi), None
    if mode == "reflect":
        p = 2.0 * hi
        t = jnp.mod(t, p)
        t = jnp.where(t > hi, p - t, t)
    elif mode == "symmetric":
        t = jnp.mod(t + 0.5, 2.0 * n)
        t = jnp.where(t > n, 2.0 * n - t, t) - 0.5
    else:  # wrap
        t = jnp.mod(t + 0.5, float(n)) - 0.5
    return jnp.clip(t, 0.0, hi), None


def _and(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def _take(a: jax.Array, idx: jax.Array, axis: int) -> jax.Array:
    """a[idx] along axis 0 or 1 for indices known to be in range (no clamping work)."""
    if axis == 0:
        return a.at[idx].get(mode="promise_in_bounds")
    return a.at[:, idx].get(mode="promise_in_bounds")


def _taps(t: jax.Array, n: int):
    """Clamped start index of a 2-tap window and the weight of its second tap."""
    start = jnp.minimum(jnp.floor(t), float(n - 2))
    return start.astype(jnp.int32), t - start


def _coords(m: jax.Array, out_hw: tuple[int, int]):
    """Input coordinates (y, x), each (ho, wo), of every output pixel under the map m.

    One matrix product (as dm-pix computes them), so each coordinate is computed once (see the
    module docstring).
    """
    ho, wo = out_hw
    yy, xx = jnp.meshgrid(
        jnp.arange(ho, dtype=jnp.float32), jnp.arange(wo, dtype=jnp.float32), indexing="ij"
    )
    c = jnp.matmul(jnp.stack([yy, xx], axis=-1), m[:2, :2].T) + m[:2, 2].reshape(1, 1, 2)
    return c[..., 0], c[..., 1]


def _line(scale: jax.Array, offset: jax.Array, n: int) -> jax.Array:
    """`scale * i + offset` for i in [0, n), as one matrix product (computed once, as `_coords`)."""
    ii = jnp.stack([jnp.arange(n, dtype=jnp.float32), jnp.ones((n,), jnp.float32)], axis=-1)
    return jnp.matmul(ii, jnp.stack([scale, offset]).astype(jnp.float32))


def _bilinear_taps(m, in_hw, padded_hw, out_hw, mode):
    """Top-left taps (y0, x0), second-tap weights (fy, fx), validity (or None) per output pixel."""
    h, w = in_hw
    y, x = _coords(m, out_hw)
    y, vy = _fold(y, h, mode, False)
    x, vx = _fold(x, w, mode, False)
    y0, fy = _taps(y, padded_hw[0])
    x0, fx = _taps(x, padded_hw[1])
    return y0, x0, fy, fx, _and(vy, vx)


def _blend(p00, p01, p10, p11, fy, fx, dtype):
    """Bilinear mix of four (..., C) taps with (...) weights of the second tap along y and x."""
    fy = fy.astype(dtype)[..., None]
    fx = fx.astype(dtype)[..., None]
    top = p00 + fx * (p01 - p00)
    bot = p10 + fx * (p11 - p10)
    return top + fy * (bot - top)


def _pad_for_bilinear(image: jax.Array, h: int, w: int) -> jax.Array:
    if h == 1 or w == 1:  # bilinear needs two taps per axis
        pads = [(0, 0)] * (image.ndim - 3) + [(0, int(h == 1)), (0, int(w == 1)), (0, 0)]
        image = jnp.pad(image, pads, mode="edge")
    return image


def apply_batch(
    images: jax.Array,
    ms: jax.Array,
    out_hw: tuple[int, int],
    *,
    mode: str = "constant",
    fill: Any = 0.0,
    native: bool | None = None,
) -> jax.Array:
    """`jax.vmap(apply)(images, ms)` for the bilinear, general (rotated or sheared) case.

    This is `apply_batch_xla`; float32 batches go through `jaxreg._cpu.warp.bilinear_warp`,
    which on the CPU may compute it with a native kernel (same arithmetic; gradients and
    forward-mode derivatives always come from `apply_batch_xla`).

    Args:
      images: (B, H, W, C) floating images.
      ms: (B, 3, 3) float32 output-to-input maps (pixel centres at integers, (y, x) order).
      out_hw: static output size (Ho, Wo).
      mode: border rule where a map leaves the image, one of `_core.PAD_MODES`.
      fill: constant for `mode="constant"`: a scalar or one value per channel.
      native: None uses the native kernel on the CPU when it is available; False always uses
        the XLA path; True requires the native kernel (RuntimeError when the program is
        lowered for the CPU and the kernel is not available, or at once for non-float32
        images or with `JAXREG_CPU_WORKAROUNDS=0`).

    Returns:
      (B, Ho, Wo, C) images of the input's dtype.

    Raises:
      RuntimeError: `native=True` and the native kernel cannot be used.
    """
    fillv = _core.fill_value(fill, images.shape[-1]).astype(images.dtype)
    return _cpu_warp.bilinear_warp(
        apply_batch_xla, images, ms, fillv, out_hw=out_hw, mode=mode, native_kernel=native
    )


def apply_batch_xla(
    images: jax.Array, ms: jax.Array, fillv: jax.Array, *, out_hw: tuple[int, int], mode: str
) -> jax.Array:
    """`apply_batch` in XLA ops: the batch as one (B * H * W, C) array of pixels.

    Each output pixel reads two (2, C) slices (its top and bottom tap pairs) at one flat index
    and that index + W, instead of the 3-component (batch, y, x) index that vmapping `apply`
    produces. XLA:CPU runs gathers as scalar loops whose cost grows with the index arity, and a
    1-component index needs no stacked index array.
    """
    h, w = images.shape[1:3]
    images = _pad_for_bilinear(images, h, w)
    hp, wp = images.shape[1], images.shape[2]
    y0, x0, fy, fx, valid = jax.vmap(lambda m: _bilinear_taps(m, (h, w), (hp, wp), out_hw, mode))(
        ms
    )
    out = _gather_bilinear_batch(images, y0, x0, fy, fx)
    if valid is not None:
        out = jnp.where(valid[..., None], out, fillv)
    return out


def _gather_bilinear_batch(images: jax.Array, y0, x0, fy, fx) -> jax.Array:
    """Bilinear mix, per example, of the 2x2 windows at top-left taps (y0, x0), each (B, ho, wo).

    The batch is one (B * H * W, C) array of pixels: each output pixel reads two (2, C) slices
    (its top and bottom tap pairs) at one flat index and that index + W.
    """
    b, hp, wp, c = images.shape
    base = ((y0 + (jnp.arange(b, dtype=jnp.int32) * hp).reshape(b, 1, 1)) * wp + x0)[..., None]
    pixels = images.reshape(b * hp * wp, c)
    dnums = lax.GatherDimensionNumbers(
        offset_dims=(3, 4), collapsed_slice_dims=(), start_index_map=(0,)
    )

    def pair(idx):  # pixels idx and idx + 1: (b, ho, wo, 2, c)
        return lax.gather(
            pixels, idx, dnums, slice_sizes=(2, c), mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS
        )

    top, bot = pair(base), pair(base + wp)
    return _blend(
        top[..., 0, :], top[..., 1, :], bot[..., 0, :], bot[..., 1, :], fy, fx, images.dtype
    )


def _gather_pixels_batch(images: jax.Array, y: jax.Array, x: jax.Array) -> jax.Array:
    """Pixel (y, x) of each example, y and x (B, ho, wo) in range: the batch as (B * H) rows."""
    b, h, w, c = images.shape
    rows = y + (jnp.arange(b, dtype=jnp.int32) * h).reshape(b, 1, 1)
    dnums = lax.GatherDimensionNumbers(
        offset_dims=(3,), collapsed_slice_dims=(0, 1), start_index_map=(0, 1)
    )
    return lax.gather(
        images.reshape(b * h, w, c),
        jnp.stack([rows, x], axis=-1),
        dnums,
        slice_sizes=(1, 1, c),
        mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS,
    )


def _exact_taps(m, in_hw, out_hw, axis_aligned, mode):
    """Integer source pixel (y, x), each (ho, wo), and validity (or None) for an exact map."""
    h, w = in_hw
    ho, wo = out_hw
    if axis_aligned:
        y, x = _line(m[0, 0], m[0, 2], ho), _line(m[1, 1], m[1, 2], wo)
        y, vy = _fold(jnp.round(y).astype(jnp.int32), h, mode, True)
        x, vx = _fold(jnp.round(x).astype(jnp.int32), w, mode, True)
        y, x = jnp.broadcast_to(y[:, None], out_hw), jnp.broadcast_to(x[None, :], out_hw)
        vy = None if vy is None else jnp.broadcast_to(vy[:, None], out_hw)
        vx = None if vx is None else jnp.broadcast_to(vx[None, :], out_hw)
    else:
        y, x = _coords(m, out_hw)
        y, vy = _fold(jnp.round(y).astype(jnp.int32), h, mode, True)
        x, vx = _fold(jnp.round(x).astype(jnp.int32), w, mode, True)
    return y, x, _and(vy, vx)


def apply_batch_exact(
    images: jax.Array,
    ms: jax.Array,
    out_hw: tuple[int, int],
    *,
    axis_aligned: bool = False,
    mode: str = "constant",
    fill: Any = 0.0,
) -> jax.Array:
    """`jax.vmap(apply)(images, ms)` for exact maps (crops, flips, rot90): one copy per pixel.

    Every output pixel is one C-vector gathered from the batch seen as (B * H, W, C) rows, in
    place of the vmapped per-example row and column gathers with a (batch, y, x) index.
    """
    _, h, w, c = images.shape
    fillv = _core.fill_value(fill, c).astype(images.dtype)
    y, x, valid = jax.vmap(lambda m: _exact_taps(m, (h, w), out_hw, axis_aligned, mode))(ms)
    out = _gather_pixels_batch(images, y, x)
    if valid is not None:
        out = jnp.where(valid[..., None], out, fillv)
    return out


def _gather_bilinear(image: jax.Array, y0, x0, fy, fx) -> jax.Array:
    """Bilinear mix of the 2x2 windows at top-left taps (y0, x0), fetched as one gather slice."""
    idx = jnp.stack([y0, x0], axis=-1)
    dnums = lax.GatherDimensionNumbers(
        offset_dims=(2, 3, 4), collapsed_slice_dims=(), start_index_map=(0, 1)
    )
    p = lax.gather(
        image,
        idx,
        dnums,
        slice_sizes=(2, 2, image.shape[-1]),
        mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS,
    )
    return _blend(p[:, :, 0, 0], p[:, :, 0, 1], p[:, :, 1, 0], p[:, :, 1, 1], fy, fx, image.dtype)


def apply(
    image: jax.Array,
    m: jax.Array,
    out_hw: tuple[int, int],
    *,
    exact: bool = False,
    axis_aligned: bool = False,
    mode: str = "constant",
    fill: Any = 0.0,
) -> jax.Array:
    """Resamples `image` (H, W, C) at `m @ (y, x, 1)` for every output pixel (y, x)."""
    h, w, c = image.shape
    ho, wo = out_hw
    dtype = image.dtype
    if not exact:
        image = _pad_for_bilinear(image, h, w)
    hp, wp = image.shape[0], image.shape[1]
    fillv = _core.fill_value(fill, c).astype(dtype)
    if axis_aligned:
        y, x = _line(m[0, 0], m[0, 2], ho), _line(m[1, 1], m[1, 2], wo)
        if exact:
            y, vy = _fold(jnp.round(y).astype(jnp.int32), h, mode, True)
            x, vx = _fold(jnp.round(x).astype(jnp.int32), w, mode, True)
            out = _take(_take(image, y, 0), x, 1)
        else:
            y, vy = _fold(y, h, mode, False)
            x, vx = _fold(x, w, mode, False)
            y0, fy = _taps(y, hp)
            x0, fx = _taps(x, wp)
            fy = fy.astype(dtype).reshape(ho, 1, 1)
            fx = fx.astype(dtype).reshape(1, wo, 1)
            rows = _take(image, jnp.stack([y0, y0 + 1], axis=1).reshape(-1), 0).reshape(
                ho, 2, wp, c
            )
            r = rows[:, 0] + fy * (rows[:, 1] - rows[:, 0])
            cols = _take(r, jnp.stack([x0, x0 + 1], axis=1).reshape(-1), 1).reshape(ho, wo, 2, c)
            out = cols[:, :, 0] + fx * (cols[:, :, 1] - cols[:, :, 0])
        valid = _and(
            None if vy is None else vy.reshape(ho, 1, 1),
            None if vx is None else vx.reshape(1, wo, 1),
        )
    else:
        if exact:
            y, x = _coords(m, out_hw)
            y, vy = _fold(jnp.round(y).astype(jnp.int32), h, mode, True)
            x, vx = _fold(jnp.round(x).astype(jnp.int32), w, mode, True)
            out = image[y, x]
            valid = _and(vy, vx)
        else:
            y0, x0, fy, fx, valid = _bilinear_taps(m, (h, w), (hp, wp), out_hw, mode)
            out = _gather_bilinear(image, y0, x0, fy, fx)
        if valid is not None:
            valid = valid[:, :, None]
    if valid is not None:
        out = jnp.where(valid, out, fillv)
    return out


# scipy.ndimage / dm-pix border modes -> the border rules above (scipy's "reflect" is the
# half-sample "symmetric" rule, its "mirror" the whole-sample "reflect").
NDIMAGE_MODES = {
    "nearest": "edge",
    "constant": "constant",
    "mirror": "reflect",
    "reflect": "symmetric",
    "wrap": "wrap",
}


def apply_ndimage(
    image: jax.Array,
    m: jax.Array,
    out_hw: tuple[int, int],
    *,
    order: int,
    mode: str,
    fill: Any = 0.0,
) -> jax.Array:
    """`apply` with the rules of `dm_pix.affine_transform` (scipy.ndimage modes, orders 0 and 1).

    The differences from `apply`: with `mode="constant"` an output pixel is inside when its
    source coordinate lies in [0, n - 1] exactly (no tolerance; scipy's grid-constant rule, as
    `dm_pix` uses it); `order=0` rounds source coordinates half away from zero (`lax.round`,
    as `jax.scipy.ndimage.map_coordinates`); `mode="wrap"` is periodic for bilinear taps too,
    interpolating across the seam between the last and the first row or column (`apply`'s
    "wrap" holds the edge pixel within half a pixel of the seam).

    Args:
      image: (H, W, C) floating image.
      m: (3, 3) float32 output-to-input map, pixel centres at integers, (y, x) order.
      out_hw: static output size (Ho, Wo).
      order: 0 (nearest) or 1 (bilinear).
      mode: one of `NDIMAGE_MODES`.
      fill: constant for `mode="constant"`: a scalar or one value per channel.

    Returns:
      (Ho, Wo, C) image of the input dtype.
    """
    h, w, c = image.shape
    fillv = _core.fill_value(fill, c).astype(image.dtype)
    image = _ndimage_pad(image, order, mode)
    taps = _ndimage_taps(m, (h, w), image.shape[:2], out_hw, order, mode)
    if order == 0:
        y, x, valid = taps
        out = image[y, x]
    else:
        y0, x0, fy, fx, valid = taps
        out = _gather_bilinear(image, y0, x0, fy, fx)
    if valid is not None:
        out = jnp.where(valid[:, :, None], out, fillv)
    return out


def apply_ndimage_batch(
    images: jax.Array,
    ms: jax.Array,
    out_hw: tuple[int, int],
    *,
    order: int,
    mode: str,
    fill: Any = 0.0,
) -> jax.Array:
    """`jax.vmap(apply_ndimage)(images, ms)`, the batch gathered as one array (same values).

    Args:
      images: (B, H, W, C) floating images.
      ms: (B, 3, 3) float32 output-to-input maps.
      out_hw: static output size (Ho, Wo).
      order: 0 (nearest) or 1 (bilinear).
      mode: one of `NDIMAGE_MODES`.
      fill: constant for `mode="constant"`: a scalar or one value per channel.

    Returns:
      (B, Ho, Wo, C) images of the input dtype.
    """
    _, h, w, c = images.shape
    fillv = _core.fill_value(fill, c).astype(images.dtype)
    images = _ndimage_pad(images, order, mode)
    padded = images.shape[1:3]
    taps = jax.vmap(lambda m: _ndimage_taps(m, (h, w), padded, out_hw, order, mode))(ms)
    if order == 0:
        y, x, valid = taps
        out = _gather_pixels_batch(images, y, x)
    else:
        y0, x0, fy, fx, valid = taps
        out = _gather_bilinear_batch(images, y0, x0, fy, fx)
    if valid is not None:
        out = jnp.where(valid[..., None], out, fillv)
    return out


def _ndimage_pad(image: jax.Array, order: int, mode: str) -> jax.Array:
    """Pads the last three axes (H, W, C) for bilinear taps under `mode` (none for order 0)."""
    if order == 0:
        return image
    if mode == "wrap":  # one wrapped row and column let the taps straddle the seam
        pads = [(0, 0)] * (image.ndim - 3) + [(0, 1), (0, 1), (0, 0)]
        return jnp.pad(image, pads, mode="wrap")
    return _pad_for_bilinear(image, image.shape[-3], image.shape[-2])


def _ndimage_taps(m, in_hw, padded_hw, out_hw, order, mode):
    """`apply_ndimage`'s taps for one map: (y, x, valid) for order 0, else (y0, x0, fy, fx, valid).

    `valid` is None where every output pixel is inside.
    """
    h, w = in_hw
    rule = NDIMAGE_MODES[mode]
    y, x = _coords(m, out_hw)
    if order == 0:
        y, vy = _fold(lax.round(y).astype(jnp.int32), h, rule, True)
        x, vx = _fold(lax.round(x).astype(jnp.int32), w, rule, True)
        return y, x, _and(vy, vx)
    if mode == "wrap":
        y, x, valid = jnp.mod(y, float(h)), jnp.mod(x, float(w)), None
    elif mode == "constant":
        valid = (y >= 0.0) & (y <= h - 1.0) & (x >= 0.0) & (x <= w - 1.0)
        y, x = jnp.clip(y, 0.0, h - 1.0), jnp.clip(x, 0.0, w - 1.0)
    else:
        (y, _), (x, _) = _fold(y, h, rule, False), _fold(x, w, rule, False)
        valid = None
    y0, fy = _taps(y, padded_hw[0])
    x0, fx = _taps(x, padded_hw[1])
    return y0, x0, fy, fx, valid


def warp(
    image: jax.Array,
    m: jax.Array,
    out_hw: tuple[int, int],
    *,
    exact: bool = False,
    axis_aligned: bool = False,
    mode: str = "constant",
    fill: Any = 0.0,
) -> jax.Array:
    """`apply(image, m, ...)` for one image; under `jax.vmap` the batch is resampled at once.

    The batching rule (`_batching.vmappable`) resamples a batch of images and maps by
    `apply_batch_exact` (exact maps) or `apply_batch` (general bilinear maps; the native kernel
    on the CPU), or vmaps the separable path of `apply` (axis-aligned bilinear maps, whose
    gathers index whole rows and columns); gradients flow to `image` and `m`.

    Args:
      image: (H, W, C) floating image.
      m: (3, 3) float32 output-to-input map.
      out_hw: static output size (Ho, Wo).
      exact: the map sends integer pixels to integer pixels (exact copies, no interpolation).
      axis_aligned: the map has no rotation or shear (separable resampling).
      mode: border rule where the map leaves the image, one of `_core.PAD_MODES`.
      fill: constant for `mode="constant"`: a number or one per channel.

    Returns:
      (Ho, Wo, C) image of the input dtype.
    """
    opts = {"exact": exact, "axis_aligned": axis_aligned, "mode": mode, "fill": fill}
    if isinstance(fill, jax.core.Tracer):  # a traced fill: JAX's own batching of `apply`
        return apply(image, m, out_hw, **opts)
    return _batching.vmappable(
        functools.partial(apply, out_hw=out_hw, **opts),
        image,
        m,
        batched=functools.partial(_apply_many, out_hw=out_hw, **opts),
    )


def _apply_many(images, ms, *, out_hw, exact, axis_aligned, mode, fill):
    """`jax.vmap(apply)(images, ms)` by the batch forms (see `warp`)."""
    if exact:
        return apply_batch_exact(
            images, ms, out_hw, axis_aligned=axis_aligned, mode=mode, fill=fill
        )
    if axis_aligned:
        per_example = functools.partial(
            apply, out_hw=out_hw, exact=False, axis_aligned=True, mode=mode, fill=fill
        )
        return jax.vmap(per_example)(images, ms)
    return apply_batch(images, ms, out_hw, mode=mode, fill=fill)


def warp_ndimage(
    image: jax.Array, m: jax.Array, out_hw: tuple[int, int], *, order: int, mode: str, fill: Any
) -> jax.Array:
    """`apply_ndimage` for one image; under `jax.vmap` by `apply_ndimage_batch` (see `warp`)."""
    opts = {"order": order, "mode": mode, "fill": fill}
    if isinstance(fill, jax.core.Tracer):
        return apply_ndimage(image, m, out_hw, **opts)
    return _batching.vmappable(
        functools.partial(apply_ndimage, out_hw=out_hw, **opts),
        image,
        m,
        batched=functools.partial(apply_ndimage_batch, out_hw=out_hw, **opts),
    )


class GeometricOp:
    """A per-example geometric augmentation `op(key, image)` backed by a sampled affine map.

    Attributes:
      name: short description.
      exact: maps integer pixels to integer pixels (resampled by exact copies).
      axis_aligned: the map has no rotation or shear (resampled separably).
      mode: border rule where the map leaves the source, or None when it never does.
      fill: constant for `mode="constant"`.
      channels: channel counts the op requires of its input (all of them, e.g. (3,) for a crop
        given as (height, width, 3)); () accepts any.
    """

    def __init__(
        self,
        name: str,
        sample: Callable[[jax.Array, tuple[int, int]], jax.Array],
        *,
        out_hw: Callable[[tuple[int, int]], tuple[int, int]] | None = None,
        exact: bool = False,
        axis_aligned: bool = False,
        mode: str | None = "constant",
        fill: Any = 0.0,
        keyless: bool = False,
        channels: Sequence[int] = (),
    ):
        self.name = name
        self._sample = sample
        self._out_hw = out_hw
        self.exact = exact
        self.axis_aligned = axis_aligned
        self.mode = mode
        self.fill = fill
        self.keyless = keyless
        self.channels = tuple(channels)

    __name__ = "geometric_op"  # short: jit uses it in cache file names

    def __repr__(self):
        return f"GeometricOp({self.name})"

    def output_hw(self, in_hw: tuple[int, int]) -> tuple[int, int]:
        return tuple(in_hw) if self._out_hw is None else tuple(self._out_hw(tuple(in_hw)))

    def check_channels(self, c: int) -> None:
        """Raises ValueError when the op needs another channel count than the input's `c`."""
        for need in self.channels:
            if need != c:
                raise ValueError(
                    f"{self.name} needs images with {need} channels (geometric ops keep the "
                    f"channels); got {c}."
                )

    def matrix(self, key: jax.Array, in_hw: tuple[int, int]) -> jax.Array:
        """Samples the (3, 3) output-to-input map for one example."""
        return self._sample(key, tuple(in_hw))

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        """Resamples one (H, W, C) image through the map sampled from `key` (see `warp`)."""
        h, w, c = _core.check_image(image)
        self.check_channels(c)
        if not self.keyless:
            _core.check_key(key)
        return warp(
            image,
            self.matrix(key, (h, w)),
            self.output_hw((h, w)),
            exact=self.exact,
            axis_aligned=self.axis_aligned,
            mode=self.mode or "edge",
            fill=self.fill,
        )

    def batched(self, keys: jax.Array, images: jax.Array) -> jax.Array:
        """`jax.vmap(self)(keys, images)`: the maps sampled per example, one batch resampling."""
        return jax.vmap(self)(keys, images)


def chain(ops: Sequence[GeometricOp]) -> GeometricOp:
    """Composes geometric ops (applied first to last) into one op with a single resampling.

    The border rule and fill are those of the first op that can leave the source image; the
    composed map is checked against the source only (as torchvision's RandomAffine does).
    """
    ops = list(ops)
    if len(ops) == 1:
        return ops[0]

    def out_hw(in_hw):
        for op in ops:
            in_hw = op.output_hw(in_hw)
        return in_hw

    def sample(key, in_hw):
        keys = jax.random.split(key, len(ops))
        m = None
        for i, op in enumerate(ops):
            mi = op.matrix(keys[i], in_hw)
            m = mi if m is None else m @ mi
            in_hw = op.output_hw(in_hw)
        return m

    first = next((op for op in ops if op.mode is not None), None)
    return GeometricOp(
        " + ".join(op.name for op in ops),
        sample,
        out_hw=out_hw,
        exact=all(op.exact for op in ops),
        axis_aligned=all(op.axis_aligned for op in ops),
        mode=None if first is None else first.mode,
        fill=0.0 if first is None else first.fill,
        keyless=all(op.keyless for op in ops),
        channels=sorted({c for op in ops for c in op.channels}),
    )
