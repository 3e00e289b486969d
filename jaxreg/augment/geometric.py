"""Geometric augmentations: flips, rotations, scaling, translation, shear, crops, resized crops.

Every op works on one HWC floating image; random ops take the PRNG key first. Random geometric
ops are backed by sampled affine maps, so `jaxreg.augment.compose` chains them into a single
resampling (see `_warp.py`). The names jaxreg shares with dm-pix (`flip_left_right`,
`flip_up_down`, `rot90`, `rotate`, `center_crop`, `random_crop`, `random_flip_left_right`,
`random_flip_up_down`) take dm-pix's positional arguments and give dm-pix's results, random ones
with dm-pix's draws for the same key.

Coordinates: pixel centres sit at integers, (0, 0) is the top-left pixel. Positive angles turn
counter-clockwise on screen (as dm-pix, torchvision and PIL); `rotate` takes radians (dm-pix),
the random ops and `affine` / `shear` take degrees. Bilinear resampling of the jaxreg ops uses
the dm-pix rule at the border with `mode="constant"`: an output pixel whose source coordinate
falls outside [0, H-1] x [0, W-1] (give or take 1e-3 of round-off) takes `fill`, one inside is
interpolated. Their `mode` names are numpy's padding names ("constant", "edge", "reflect",
"symmetric", "wrap"); `rotate` takes scipy.ndimage's names as dm-pix does ("nearest",
"constant", "mirror", "reflect", "wrap").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxreg.augment import _core, _rng, _warp
from jaxreg.augment._warp import GeometricOp

__all__ = [
    "affine",
    "center_crop",
    "crop",
    "flip_left_right",
    "flip_up_down",
    "random_affine",
    "random_crop",
    "random_flip",
    "random_flip_left_right",
    "random_flip_up_down",
    "random_resized_crop",
    "random_rot90",
    "random_rotate",
    "random_scale",
    "random_shear",
    "random_translate",
    "resize",
    "resized_crop",
    "rot90",
    "rotate",
    "scale",
    "shear",
    "translate",
    "warp_affine",
]

Fill = Any

# Random geometric functions -> builders of GeometricOp with the same keyword options.
_BUILDERS: dict[Callable, Callable[..., GeometricOp]] = {}


def _register(builder):
    def deco(fn):
        _BUILDERS[fn] = builder
        fn.geometric_op = builder  # e.g. random_rotate.geometric_op(max_degrees=10)
        return fn

    return deco


def as_geometric(fn: Any) -> GeometricOp | None:
    """Returns the GeometricOp behind `fn` (an op, a registered function or a keyword partial)."""
    if isinstance(fn, GeometricOp):
        return fn
    func, keywords = fn, {}
    if isinstance(fn, functools.partial) and not fn.args:
        func, keywords = fn.func, fn.keywords
    if not _hashable(func) or func not in _BUILDERS:
        return None
    try:
        return _BUILDERS[func](**keywords)
    except TypeError:  # required options missing: leave it to a direct call to report
        return None


def _hashable(x):
    try:
        hash(x)
        return True
    except TypeError:
        return False


def _check_mode(mode, name="mode"):
    _core.check_in(mode, name, _core.PAD_MODES)


def _check_fill(fill):
    if isinstance(fill, str):
        raise ValueError(
            f"fill must be a number or one number per channel for geometric ops; got {fill!r}."
        )


def _centre(n):
    return (n - 1) / 2.0


# ---------------------------------------------------------------------------------------------
# Maps (output -> input) for one image size. Public names shared inside jaxreg.augment (the
# policies build their geometric layers from them); the user API is `__all__`.


def rotation_matrix(radians, hw):
    h, w = hw
    cy, cx = _centre(h), _centre(w)
    c, s = jnp.cos(radians), jnp.sin(radians)
    return _warp.matrix(c, s, cy - c * cy - s * cx, -s, c, cx + s * cy - c * cx)


def scale_matrix(fy, fx, hw):
    h, w = hw
    cy, cx = _centre(h), _centre(w)
    iy, ix = 1.0 / fy, 1.0 / fx
    return _warp.matrix(iy, 0.0, cy - cy * iy, 0.0, ix, cx - cx * ix)


def translate_matrix(dy, dx):
    return _warp.matrix(1.0, 0.0, -dy, 0.0, 1.0, -dx)


def shear_matrix(tan_x, tan_y, hw):
    h, w = hw
    cy, cx = _centre(h), _centre(w)
    return _warp.matrix(1.0, -tan_y, tan_y * cx, -tan_x, 1.0, tan_x * cy)


def flip_matrix(flip_y, flip_x, hw):
    """flip_y, flip_x: booleans (traced or static)."""
    h, w = hw
    sy = jnp.where(flip_y, -1.0, 1.0)
    sx = jnp.where(flip_x, -1.0, 1.0)
    return _warp.matrix(
        sy, 0.0, jnp.where(flip_y, h - 1.0, 0.0), 0.0, sx, jnp.where(flip_x, w - 1.0, 0.0)
    )


def rot90_matrix(k, hw):
    """Counter-clockwise k quarter turns (np.rot90 on axes (0, 1)); k static."""
    h, w = hw
    k %= 4
    if k == 0:
        return _warp.identity_matrix()
    if k == 1:
        return _warp.matrix(0.0, 1.0, 0.0, -1.0, 0.0, w - 1.0)
    if k == 2:
        return _warp.matrix(-1.0, 0.0, h - 1.0, 0.0, -1.0, w - 1.0)
    return _warp.matrix(0.0, -1.0, h - 1.0, 1.0, 0.0, 0.0)


def resized_crop_matrix(top, left, height, width, out_hw):
    oh, ow = out_hw
    sy, sx = height / oh, width / ow
    return _warp.matrix(sy, 0.0, top + 0.5 * sy - 0.5, 0.0, sx, left + 0.5 * sx - 0.5)


def affine_matrix(degrees, scale_, translate_, shear_, hw):
    """Shear, then scale, then rotate about the centre, then translate (pixels)."""
    tx = jnp.tan(jnp.deg2rad(jnp.asarray(shear_[0], jnp.float32)))
    ty = jnp.tan(jnp.deg2rad(jnp.asarray(shear_[1], jnp.float32)))
    m = shear_matrix(tx, ty, hw)
    m = m @ scale_matrix(scale_, scale_, hw)
    m = m @ rotation_matrix(jnp.deg2rad(jnp.asarray(degrees, jnp.float32)), hw)
    return m @ translate_matrix(translate_[0], translate_[1])


# ---------------------------------------------------------------------------------------------
# Deterministic ops.


def flip_left_right(image: jax.Array) -> jax.Array:
    """Mirrors an image horizontally.

    Args:
      image: (H, W, C) floating image.

    Returns:
      (H, W, C) image with columns reversed; same as `dm_pix.flip_left_right`.
    """
    _core.check_image(image)
    return image[:, ::-1, :]


def flip_up_down(image: jax.Array) -> jax.Array:
    """Mirrors an image vertically. (H, W, C) -> (H, W, C) with rows reversed."""
    _core.check_image(image)
    return image[::-1, :, :]


def rot90(image: jax.Array, k: int = 1) -> jax.Array:
    """Rotates by k quarter turns counter-clockwise (as `np.rot90` / `dm_pix.rot90`).

    Args:
      image: (H, W, C) image.
      k: number of quarter turns (static int, any sign).

    Returns:
      (H, W, C) for even k, (W, H, C) for odd k.
    """
    _core.check_image(image)
    k = _core.check_int(k, "k", minimum=-(2**31))
    return jnp.rot90(image, k, axes=(0, 1))


def warp_affine(
    image: jax.Array,
    matrix: jax.Array,
    *,
    size: int | Sequence[int] | None = None,
    mode: str = "constant",
    fill: Fill = 0.0,
    order: int = 1,
) -> jax.Array:
    """Resamples an image through an affine map in one pass.

    Args:
      image: (H, W, C) floating image.
      matrix: (3, 3) or (2, 3) float map from output (y, x, 1) to input (y, x) coordinates,
        pixel centres at integers.
      size: output (height, width); default the input size.
      mode: border rule outside the source: "constant" (fill), "edge", "reflect" (mirror about
        the edge pixel), "symmetric" (mirror including the edge pixel) or "wrap".
      fill: constant for mode "constant": a number or one per channel.
      order: 1 bilinear, 0 nearest.

    Returns:
      (size[0], size[1], C) image of the input dtype.
    """
    h, w, _ = _core.check_image(image)
    _check_mode(mode)
    _check_fill(fill)
    _core.check_in(order, "order", (0, 1))
    out_hw = (h, w) if size is None else _core.check_size(size)
    m = jnp.asarray(matrix, jnp.float32)
    if m.shape == (2, 3):
        m = jnp.concatenate([m, jnp.array([[0.0, 0.0, 1.0]], jnp.float32)], axis=0)
    if m.shape != (3, 3):
        raise ValueError(f"matrix must have shape (3, 3) or (2, 3); got {m.shape}.")
    if order == 0:
        m = jnp.round(m)  # nearest: integer map of rounded coordinates
    return _warp.warp(image, m, out_hw, exact=order == 0, mode=mode, fill=fill)


def _pix_rotation_matrix(angle, hw):
    """dm-pix's rotation map, with its float operations (so the same source coordinates)."""
    h, w = hw
    cy, cx = _centre(h), _centre(w)
    a = jnp.asarray(angle, jnp.float32)
    c, s = jnp.cos(a), jnp.sin(a)
    return _warp.matrix(c, s, cy - (c * cy + s * cx), -s, c, cx - (-s * cy + c * cx))


def rotate(
    image: jax.Array, angle: Any, *, order: int = 1, mode: str = "nearest", cval: Fill = 0.0
) -> jax.Array:
    """Rotates an image about its centre by `angle` radians counter-clockwise (`dm_pix.rotate`).

    Same arguments and results as `dm_pix.rotate`, in one resampling pass: the border modes are
    scipy.ndimage's as dm-pix uses them, "nearest" (repeat the edge pixel; jaxreg's "edge"),
    "constant" (`cval` where the source coordinate leaves [0, H-1] x [0, W-1]), "mirror"
    (d c b | a b c d | c b a; jaxreg's "reflect"), "reflect" (d c b a | a b c d | d c b a;
    jaxreg's "symmetric") and "wrap" (periodic: bilinear taps straddle the seam, where the
    random ops' "wrap" holds the edge pixel within half a pixel of it). For degrees use
    `rotate(image, jnp.deg2rad(degrees))`; `random_rotate` draws degrees.

    Args:
      image: (H, W, C) floating image.
      angle: counter-clockwise angle in radians, a real scalar (may be traced).
      order: 1 bilinear, 0 nearest (source coordinates rounded half away from zero).
      mode: "nearest" (default, as dm-pix), "constant", "mirror", "reflect" or "wrap".
      cval: value for mode "constant": a number, or one per channel (a jaxreg extension).

    Returns:
      (H, W, C) rotated image of the input dtype.
    """
    h, w, c = _core.check_image(image)
    _core.check_scalar(angle, "angle")
    if isinstance(order, bool) or order not in (0, 1):
        raise ValueError(f"order must be 0 or 1; got {order!r}.")
    _core.check_in(mode, "mode", tuple(_warp.NDIMAGE_MODES))
    if isinstance(cval, str):
        raise ValueError(f"cval must be a number or one number per channel; got {cval!r}.")
    _core.fill_value(cval, c, "cval")
    m = _pix_rotation_matrix(angle, (h, w))
    return _warp.warp_ndimage(image, m, (h, w), order=order, mode=mode, fill=cval)


def scale(image: jax.Array, factor: Any, *, fill: Fill = 0.0, mode: str = "constant") -> jax.Array:
    """Zooms about the centre, keeping the output size: factor > 1 zooms in, < 1 zooms out.

    Args:
      image: (H, W, C) floating image.
      factor: scale factor > 0 (scalar, may be traced).
      fill: value where zooming out reveals the outside (mode "constant").
      mode: border rule, see `warp_affine`.

    Returns:
      (H, W, C) image.
    """
    h, w, _ = _core.check_image(image)
    _core.check_positive(factor, "factor")
    _check_mode(mode)
    _check_fill(fill)
    f = jnp.asarray(factor, jnp.float32)
    return _warp.warp(
        image, scale_matrix(f, f, (h, w)), (h, w), axis_aligned=True, mode=mode, fill=fill
    )


def translate(
    image: jax.Array, dy: Any, dx: Any, *, fill: Fill = 0.0, mode: str = "constant"
) -> jax.Array:
    """Shifts content down by `dy` and right by `dx` pixels (fractional shifts interpolate).

    Returns:
      (H, W, C) image.
    """
    h, w, _ = _core.check_image(image)
    _check_mode(mode)
    _check_fill(fill)
    return _warp.warp(
        image, translate_matrix(dy, dx), (h, w), axis_aligned=True, mode=mode, fill=fill
    )


def shear(
    image: jax.Array,
    degrees_x: Any = 0.0,
    degrees_y: Any = 0.0,
    *,
    fill: Fill = 0.0,
    mode: str = "constant",
) -> jax.Array:
    """Shears about the centre: rows below the centre move right by tan(degrees_x) per row.

    Returns:
      (H, W, C) image.
    """
    h, w, _ = _core.check_image(image)
    _check_mode(mode)
    _check_fill(fill)
    tx = jnp.tan(jnp.deg2rad(jnp.asarray(degrees_x, jnp.float32)))
    ty = jnp.tan(jnp.deg2rad(jnp.asarray(degrees_y, jnp.float32)))
    return _warp.warp(image, shear_matrix(tx, ty, (h, w)), (h, w), mode=mode, fill=fill)


def affine(
    image: jax.Array,
    *,
    degrees: Any = 0.0,
    scale: Any = 1.0,
    translate: Sequence[Any] = (0.0, 0.0),
    shear: Sequence[Any] = (0.0, 0.0),
    fill: Fill = 0.0,
    mode: str = "constant",
) -> jax.Array:
    """Shear, scale, rotation (about the centre) and translation in one resampling.

    Args:
      image: (H, W, C) floating image.
      degrees: counter-clockwise rotation.
      scale: zoom factor (> 1 zooms in).
      translate: (dy, dx) shift in pixels.
      shear: (degrees_x, degrees_y) shear angles.
      fill: value for pixels that come from outside the image (mode "constant"): a number or
        one per channel.
      mode: border rule, one of "constant", "edge", "reflect", "symmetric", "wrap"; see
        `warp_affine`.

    Returns:
      (H, W, C) image.
    """
    h, w, _ = _core.check_image(image)
    _core.check_positive(scale, "scale")
    _check_mode(mode)
    _check_fill(fill)
    m = affine_matrix(degrees, jnp.asarray(scale, jnp.float32), translate, shear, (h, w))
    return _warp.warp(image, m, (h, w), mode=mode, fill=fill)


def resize(image: jax.Array, size: int | Sequence[int]) -> jax.Array:
    """Bilinear resize with half-pixel centres and no antialiasing (output (size, C))."""
    h, w, _ = _core.check_image(image)
    out_hw = _core.check_size(size)
    m = resized_crop_matrix(0.0, 0.0, float(h), float(w), out_hw)
    return _warp.warp(image, m, out_hw, axis_aligned=True, mode="edge")


def crop(image: jax.Array, top: Any, left: Any, *, size: int | Sequence[int]) -> jax.Array:
    """Crops a (height, width) window whose top-left pixel is (top, left) (may be traced).

    Offsets are clamped so that the window stays inside the image.
    """
    h, w, c = _core.check_image(image)
    ch, cw = _core.check_size(size)
    if ch > h or cw > w:
        raise ValueError(f"size {(ch, cw)} must not exceed the image size {(h, w)}.")
    return jax.lax.dynamic_slice(
        image,
        (jnp.asarray(top, jnp.int32), jnp.asarray(left, jnp.int32), jnp.zeros((), jnp.int32)),
        (ch, cw, c),
    )


def center_crop(image: jax.Array, height: int, width: int) -> jax.Array:
    """Crops the central (height, width) window (`dm_pix.center_crop`).

    The window starts at H // 2 - height // 2 (odd leftovers go to the bottom / right); a size
    larger than the image keeps the whole image along that axis (no padding), as dm-pix does.

    Args:
      image: (H, W, C) image.
      height: static int >= 1.
      width: static int >= 1.

    Returns:
      (min(height, H), min(width, W), C) image.
    """
    h, w, _ = _core.check_image(image)
    ch = _core.check_int(height, "height", minimum=1)
    cw = _core.check_int(width, "width", minimum=1)
    top, left = max(h // 2 - ch // 2, 0), max(w // 2 - cw // 2, 0)
    return image[top : min(top + ch, h), left : min(left + cw, w), :]


def resized_crop(
    image: jax.Array, top: Any, left: Any, height: Any, width: Any, *, size: int | Sequence[int]
) -> jax.Array:
    """Crops the box (top, left, height, width) (floats, may be traced) and resizes it to `size`.

    Bilinear with half-pixel centres, no antialiasing (torchvision's `antialias=False`).
    """
    _core.check_image(image)
    out_hw = _core.check_size(size)
    m = resized_crop_matrix(
        jnp.asarray(top, jnp.float32),
        jnp.asarray(left, jnp.float32),
        jnp.asarray(height, jnp.float32),
        jnp.asarray(width, jnp.float32),
        out_hw,
    )
    return _warp.warp(image, m, out_hw, axis_aligned=True, mode="edge")


# ---------------------------------------------------------------------------------------------
# Random ops: builders of GeometricOp (checked before tracing; `*_op` names are shared inside
# jaxreg.augment, the spec ops and presets are built from them) and the public functions.


def flip_op(*, horizontal: bool = True, vertical: bool = False, p: float = 0.5) -> GeometricOp:
    _core.check_prob(p)
    if not isinstance(horizontal, bool) or not isinstance(vertical, bool):
        raise TypeError("horizontal and vertical must be bools.")

    def sample(key, hw):
        u = _rng.uniform(key, (2,))
        fy = (u[0] < p) if vertical else False
        fx = (u[1] < p) if horizontal else False
        return flip_matrix(fy, fx, hw)

    return GeometricOp(
        f"flip(h={horizontal}, v={vertical}, p={p})",
        sample,
        exact=True,
        axis_aligned=True,
        mode=None,
    )


@_register(flip_op)
def random_flip(
    key: jax.Array,
    image: jax.Array,
    *,
    horizontal: bool = True,
    vertical: bool = False,
    p: float = 0.5,
) -> jax.Array:
    """Mirrors horizontally and/or vertically, each with probability `p`.

    Args:
      key: PRNG key.
      image: (H, W, C) floating image.
      horizontal: allow left-right flips.
      vertical: allow up-down flips.
      p: probability of each enabled flip, in [0, 1].

    Returns:
      (H, W, C) image (exact copy of pixels).
    """
    return flip_op(horizontal=horizontal, vertical=vertical, p=p)(key, image)


def _pix_flip_op(*, axis: int, probability: Any = 0.5) -> GeometricOp:
    """dm-pix's random flip of one axis (1: left-right, 0: up-down) as a geometric op."""
    _core.check_scalar(probability, "probability")
    _core.check_prob(probability, "probability")

    def sample(key, hw):
        flip = jax.random.bernoulli(key, p=probability)  # dm-pix's draw
        return flip_matrix(flip if axis == 0 else False, flip if axis == 1 else False, hw)

    name = "flip_left_right" if axis == 1 else "flip_up_down"
    return GeometricOp(
        f"random_{name}(p={probability})", sample, exact=True, axis_aligned=True, mode=None
    )


@_register(functools.partial(_pix_flip_op, axis=1))
def random_flip_left_right(
    key: jax.Array, image: jax.Array, *, probability: Any = 0.5
) -> jax.Array:
    """Mirrors horizontally with probability `probability` (`dm_pix.random_flip_left_right`).

    Draws `jax.random.bernoulli(key, probability)` as dm-pix does (same key, same outcome).

    Args:
      key: PRNG key.
      image: (H, W, C) floating image.
      probability: in [0, 1] (may be traced).

    Returns:
      (H, W, C) image (exact copy of pixels).
    """
    return _pix_flip_op(axis=1, probability=probability)(key, image)


@_register(functools.partial(_pix_flip_op, axis=0))
def random_flip_up_down(key: jax.Array, image: jax.Array, *, probability: Any = 0.5) -> jax.Array:
    """Mirrors vertically with probability `probability` (`dm_pix.random_flip_up_down`).

    Draws `jax.random.bernoulli(key, probability)` as dm-pix does (same key, same outcome).

    Args:
      key: PRNG key.
      image: (H, W, C) floating image.
      probability: in [0, 1] (may be traced).

    Returns:
      (H, W, C) image (exact copy of pixels).
    """
    return _pix_flip_op(axis=0, probability=probability)(key, image)


def rot90_op() -> GeometricOp:
    def sample(key, hw):
        if hw[0] != hw[1]:
            raise ValueError(f"random_rot90 needs a square image; got {hw}.")
        k = _rng.randint(key, (), 0, 4)
        ms = jnp.stack([rot90_matrix(i, hw) for i in range(4)])
        return ms[k]

    return GeometricOp("rot90", sample, exact=True, mode=None)


@_register(rot90_op)
def random_rot90(key: jax.Array, image: jax.Array) -> jax.Array:
    """Rotates a square image by 0, 90, 180 or 270 degrees, uniformly. (H, H, C) -> (H, H, C)."""
    return rot90_op()(key, image)


def rotate_op(*, max_degrees: float, fill: Fill = 0.0, mode: str = "constant") -> GeometricOp:
    _core.check_positive(max_degrees, "max_degrees", allow_zero=True)
    _check_mode(mode)
    _check_fill(fill)

    def sample(key, hw):
        deg = _rng.uniform(key, (), -max_degrees, max_degrees)
        return rotation_matrix(jnp.deg2rad(deg), hw)

    return GeometricOp(f"rotate(±{max_degrees}°)", sample, mode=mode, fill=fill)


@_register(rotate_op)
def random_rotate(
    key: jax.Array,
    image: jax.Array,
    *,
    max_degrees: float,
    fill: Fill = 0.0,
    mode: str = "constant",
) -> jax.Array:
    """Rotates by an angle drawn uniformly from [-max_degrees, max_degrees].

    Args:
      key: PRNG key.
      image: (H, W, C) floating image.
      max_degrees: largest rotation (>= 0).
      fill: value for pixels that come from outside the image (mode "constant"): a number or
        one per channel.
      mode: border rule, one of "constant", "edge", "reflect", "symmetric", "wrap"; see
        `warp_affine`.

    Returns:
      (H, W, C) image (bilinear).
    """
    return rotate_op(max_degrees=max_degrees, fill=fill, mode=mode)(key, image)


def scale_op(
    *, min_scale: float, max_scale: float, fill: Fill = 0.0, mode: str = "constant"
) -> GeometricOp:
    lo, hi = _core.check_range((min_scale, max_scale), "(min_scale, max_scale)", positive=True)
    _check_mode(mode)
    _check_fill(fill)

    def sample(key, hw):
        f = _rng.uniform(key, (), lo, hi)
        return scale_matrix(f, f, hw)

    return GeometricOp(f"scale({lo}-{hi})", sample, axis_aligned=True, mode=mode, fill=fill)


@_register(scale_op)
def random_scale(
    key: jax.Array,
    image: jax.Array,
    *,
    min_scale: float,
    max_scale: float,
    fill: Fill = 0.0,
    mode: str = "constant",
) -> jax.Array:
    """Zooms about the centre by a factor drawn uniformly from [min_scale, max_scale].

    Factors above 1 zoom in, below 1 zoom out (revealing `fill`); the output size is unchanged.

    Returns:
      (H, W, C) image.
    """
    return scale_op(min_scale=min_scale, max_scale=max_scale, fill=fill, mode=mode)(key, image)


def translate_op(
    *, max_fraction: float | Sequence[float], fill: Fill = 0.0, mode: str = "constant"
) -> GeometricOp:
    fy, fx = (
        (max_fraction, max_fraction) if not isinstance(max_fraction, Sequence) else max_fraction
    )
    _core.check_range((0.0, fy), "max_fraction", lo=0.0, hi=1.0)
    _core.check_range((0.0, fx), "max_fraction", lo=0.0, hi=1.0)
    _check_mode(mode)
    _check_fill(fill)

    def sample(key, hw):
        u = _rng.uniform(key, (2,), -1.0, 1.0)
        return translate_matrix(u[0] * fy * hw[0], u[1] * fx * hw[1])

    return GeometricOp(
        f"translate(±{max_fraction})", sample, axis_aligned=True, mode=mode, fill=fill
    )


@_register(translate_op)
def random_translate(
    key: jax.Array,
    image: jax.Array,
    *,
    max_fraction: float | Sequence[float],
    fill: Fill = 0.0,
    mode: str = "constant",
) -> jax.Array:
    """Shifts by up to `max_fraction` of the height/width in each direction (uniform, sub-pixel).

    Args:
      key: PRNG key.
      image: (H, W, C) floating image.
      max_fraction: in [0, 1]; a number or a (vertical, horizontal) pair.
      fill: value for pixels that come from outside the image (mode "constant"): a number or
        one per channel.
      mode: border rule, one of "constant", "edge", "reflect", "symmetric", "wrap"; see
        `warp_affine`.

    Returns:
      (H, W, C) image.
    """
    return translate_op(max_fraction=max_fraction, fill=fill, mode=mode)(key, image)


def shear_op(*, max_degrees: float, fill: Fill = 0.0, mode: str = "constant") -> GeometricOp:
    _core.check_range((0.0, max_degrees), "max_degrees", lo=0.0, hi=89.0)
    _check_mode(mode)
    _check_fill(fill)

    def sample(key, hw):
        u = _rng.uniform(key, (2,), -max_degrees, max_degrees)
        t = jnp.tan(jnp.deg2rad(u))
        return shear_matrix(t[0], t[1], hw)

    return GeometricOp(f"shear(±{max_degrees}°)", sample, mode=mode, fill=fill)


@_register(shear_op)
def random_shear(
    key: jax.Array,
    image: jax.Array,
    *,
    max_degrees: float,
    fill: Fill = 0.0,
    mode: str = "constant",
) -> jax.Array:
    """Shears along x and y by angles drawn uniformly from [-max_degrees, max_degrees] (< 89)."""
    return shear_op(max_degrees=max_degrees, fill=fill, mode=mode)(key, image)


def affine_op(
    *,
    max_degrees: float = 0.0,
    scale: Sequence[float] = (1.0, 1.0),
    max_translate: float = 0.0,
    max_shear: float = 0.0,
    fill: Fill = 0.0,
    mode: str = "constant",
) -> GeometricOp:
    _core.check_positive(max_degrees, "max_degrees", allow_zero=True)
    lo, hi = _core.check_range(scale, "scale", positive=True)
    _core.check_range((0.0, max_translate), "max_translate", lo=0.0, hi=1.0)
    _core.check_range((0.0, max_shear), "max_shear", lo=0.0, hi=89.0)
    _check_mode(mode)
    _check_fill(fill)

    def sample(key, hw):
        u = _rng.uniform(key, (6,))
        deg = (2.0 * u[0] - 1.0) * max_degrees
        s = lo + u[1] * (hi - lo)
        t = ((2.0 * u[2] - 1.0) * max_translate * hw[0], (2.0 * u[3] - 1.0) * max_translate * hw[1])
        sh = ((2.0 * u[4] - 1.0) * max_shear, (2.0 * u[5] - 1.0) * max_shear)
        return affine_matrix(deg, s, t, sh, hw)

    return GeometricOp("affine", sample, mode=mode, fill=fill)


@_register(affine_op)
def random_affine(
    key: jax.Array,
    image: jax.Array,
    *,
    max_degrees: float = 0.0,
    scale: Sequence[float] = (1.0, 1.0),
    max_translate: float = 0.0,
    max_shear: float = 0.0,
    fill: Fill = 0.0,
    mode: str = "constant",
) -> jax.Array:
    """Random rotation, zoom, shift and shear in one resampling (torchvision RandomAffine-like).

    Args:
      key: PRNG key.
      image: (H, W, C) floating image.
      max_degrees: rotation drawn from [-max_degrees, max_degrees].
      scale: (low, high) zoom range.
      max_translate: shift up to this fraction of height/width.
      max_shear: shear angles drawn from [-max_shear, max_shear].
      fill: value for pixels that come from outside the image (mode "constant"): a number or
        one per channel.
      mode: border rule, one of "constant", "edge", "reflect", "symmetric", "wrap"; see
        `warp_affine`.

    Returns:
      (H, W, C) image.
    """
    return affine_op(
        max_degrees=max_degrees,
        scale=scale,
        max_translate=max_translate,
        max_shear=max_shear,
        fill=fill,
        mode=mode,
    )(key, image)


def crop_op(
    *,
    size: int | Sequence[int] | None,
    padding: int | Sequence[int] = 0,
    pad_mode: str = "reflect",
    fill: Fill = 0.0,
) -> GeometricOp:
    if size is not None:
        size = _core.check_size(size)
    if isinstance(padding, Sequence) and len(padding) == 2:
        py, px = (_core.check_int(v, "padding") for v in padding)
    else:
        py = px = _core.check_int(padding, "padding")
    _core.check_in(pad_mode, "pad_mode", _core.PAD_MODES)
    _check_fill(fill)

    def out_hw(hw):
        ch, cw = hw if size is None else size
        if ch > hw[0] + 2 * py or cw > hw[1] + 2 * px:
            raise ValueError(
                f"size {(ch, cw)} must not exceed the padded image size "
                f"{(hw[0] + 2 * py, hw[1] + 2 * px)}."
            )
        if pad_mode == "reflect" and (py >= hw[0] or px >= hw[1]):
            raise ValueError(f"padding {(py, px)} must be smaller than the image {hw} for reflect.")
        return ch, cw

    def sample(key, hw):
        ch, cw = out_hw(hw)
        oy = _rng.randint(
            key, (2,), 0, jnp.array([hw[0] + 2 * py - ch + 1, hw[1] + 2 * px - cw + 1])
        )
        return translate_matrix((py - oy[0]).astype(jnp.float32), (px - oy[1]).astype(jnp.float32))

    return GeometricOp(
        f"crop(size={size}, padding={padding}, {pad_mode})",
        sample,
        out_hw=out_hw,
        exact=True,
        axis_aligned=True,
        mode=pad_mode if (py or px) else None,
        fill=fill,
    )


def _padding(padding: Any) -> tuple[int, int]:
    if isinstance(padding, Sequence) and not isinstance(padding, str) and len(padding) == 2:
        return tuple(_core.check_int(v, "padding") for v in padding)
    p = _core.check_int(padding, "padding")
    return p, p


def _pix_crop_op(
    *,
    crop_sizes: Sequence[int],
    padding: int | Sequence[int] = 0,
    pad_mode: str = "reflect",
    fill: Fill = 0.0,
) -> GeometricOp:
    """dm-pix's random crop (its draws) of the optionally padded image, as a geometric op."""
    if isinstance(crop_sizes, (str, bytes)) or not isinstance(crop_sizes, Sequence):
        raise TypeError(
            f"crop_sizes must be a sequence (height, width, channels) or (height, width) of "
            f"ints; got {crop_sizes!r}."
        )
    if len(crop_sizes) not in (2, 3):
        raise ValueError(
            f"crop_sizes must have 3 entries (height, width, channels), one per image axis as in "
            f"dm-pix, or 2 (height, width); got {crop_sizes!r}."
        )
    sizes = tuple(_core.check_int(v, "crop_sizes", minimum=1) for v in crop_sizes)
    py, px = _padding(padding)
    _core.check_in(pad_mode, "pad_mode", _core.PAD_MODES)
    _check_fill(fill)
    ch, cw = sizes[:2]

    def out_hw(hw):
        if ch > hw[0] + 2 * py or cw > hw[1] + 2 * px:
            raise ValueError(
                f"crop_sizes {tuple(crop_sizes)} must not exceed the (padded) image size "
                f"{(hw[0] + 2 * py, hw[1] + 2 * px)}."
            )
        if pad_mode == "reflect" and (py >= hw[0] or px >= hw[1]):
            raise ValueError(f"padding {(py, px)} must be smaller than the image {hw} for reflect.")
        return ch, cw

    def sample(key, hw):
        out_hw(hw)
        # dm-pix: one key per image axis, an offset drawn by randint per axis.
        ky, kx, _ = jax.random.split(key, 3)
        oy = jax.random.randint(ky, (), 0, hw[0] + 2 * py - ch + 1)
        ox = jax.random.randint(kx, (), 0, hw[1] + 2 * px - cw + 1)
        return translate_matrix((py - oy).astype(jnp.float32), (px - ox).astype(jnp.float32))

    return GeometricOp(
        f"random_crop({tuple(crop_sizes)}, padding={padding}, {pad_mode})",
        sample,
        out_hw=out_hw,
        exact=True,
        axis_aligned=True,
        mode=pad_mode if (py or px) else None,
        fill=fill,
        channels=sizes[2:],
    )


@_register(_pix_crop_op)
def random_crop(
    key: jax.Array,
    image: jax.Array,
    crop_sizes: Sequence[int],
    *,
    padding: int | Sequence[int] = 0,
    pad_mode: str = "reflect",
    fill: Fill = 0.0,
) -> jax.Array:
    """Crops a (height, width) window at a random offset (`dm_pix.random_crop`).

    Draws the offsets as dm-pix does (`jax.random.split(key, 3)`, then
    `jax.random.randint(k, (), 0, size - crop + 1)` per axis), so the same key gives dm-pix's
    window. jaxreg's extras (keyword-only): `padding` pads each side first (the padded image is
    never built: crop and padding are one integer map of exact copies), as the CIFAR recipe
    does; the spec op "crop" is this crop with jaxreg's own draws.

    Args:
      key: PRNG key.
      image: (H, W, C) floating image.
      crop_sizes: (height, width, channels) as in dm-pix, channels equal to C (jaxreg crops
        height and width only), or (height, width); at most the (padded) image size.
      padding: pixels added on each side: an int or (vertical, horizontal); default 0.
      pad_mode: "reflect" (default), "constant", "edge", "symmetric" or "wrap" (numpy's names).
      fill: value of "constant" padding: a number or one per channel.

    Returns:
      (height, width, C) image.
    """
    op = _pix_crop_op(crop_sizes=crop_sizes, padding=padding, pad_mode=pad_mode, fill=fill)
    return op(key, image)


def center_crop_op(*, size: int | Sequence[int]) -> GeometricOp:
    size = _core.check_size(size)

    def out_hw(hw):
        if size[0] > hw[0] or size[1] > hw[1]:
            raise ValueError(f"size {size} must not exceed the image size {hw}.")
        return size

    def sample(key, hw):
        return translate_matrix(-(hw[0] // 2 - size[0] // 2), -(hw[1] // 2 - size[1] // 2))

    return GeometricOp(
        f"center_crop({size})",
        sample,
        out_hw=out_hw,
        exact=True,
        axis_aligned=True,
        mode=None,
        keyless=True,
    )


def _resized_crop_sampler(key, hw, scale_, ratio):
    h, w = hw
    area = float(h * w)
    tries = 10
    u = _rng.uniform(key, (4, tries))
    target = area * (scale_[0] + u[0] * (scale_[1] - scale_[0]))
    log_r = math.log(ratio[0]) + u[1] * (math.log(ratio[1]) - math.log(ratio[0]))
    aspect = jnp.exp(log_r)
    cw = jnp.round(jnp.sqrt(target * aspect))
    ch = jnp.round(jnp.sqrt(target / aspect))
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    top = jnp.floor(u[2] * (h - ch + 1.0))
    left = jnp.floor(u[3] * (w - cw + 1.0))
    # Fallback (torchvision): a centred crop of the whole image with the ratio clamped.
    in_ratio = w / h
    if in_ratio < ratio[0]:
        fw, fh = w, round(w / ratio[0])
    elif in_ratio > ratio[1]:
        fh, fw = h, round(h * ratio[1])
    else:
        fw, fh = w, h
    i = jnp.argmax(ok)
    found = jnp.any(ok)
    pick = lambda v, fb: jnp.where(found, v[i], jnp.float32(fb))
    return (pick(top, (h - fh) // 2), pick(left, (w - fw) // 2), pick(ch, fh), pick(cw, fw))


def resized_crop_op(
    *,
    size: int | Sequence[int] | None,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> GeometricOp:
    if size is not None:
        size = _core.check_size(size)
    scale_ = _core.check_range(scale, "scale", lo=0.0, hi=1.0, positive=True)
    ratio_ = _core.check_range(ratio, "ratio", positive=True)

    def out_hw(hw):
        return hw if size is None else size

    def sample(key, hw):
        top, left, ch, cw = _resized_crop_sampler(key, hw, scale_, ratio_)
        return resized_crop_matrix(top, left, ch, cw, out_hw(hw))

    return GeometricOp(
        f"resized_crop({size}, scale={scale}, ratio={ratio})",
        sample,
        out_hw=out_hw,
        axis_aligned=True,
        mode="edge",
    )


@_register(resized_crop_op)
def random_resized_crop(
    key: jax.Array,
    image: jax.Array,
    *,
    size: int | Sequence[int],
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> jax.Array:
    """Inception-style crop: random area fraction and aspect ratio, resized to `size`.

    torchvision `RandomResizedCrop` semantics (Szegedy et al. 2015): up to 10 draws of an area
    fraction in `scale` and a log-uniform aspect ratio in `ratio`; the first box that fits is used,
    else a centred crop with the ratio clamped. Bilinear resize without antialiasing.

    Args:
      key: PRNG key.
      image: (H, W, C) floating image.
      size: output int or (height, width).
      scale: (low, high) area fraction in (0, 1].
      ratio: (low, high) width / height.

    Returns:
      (height, width, C) image.
    """
    return resized_crop_op(size=size, scale=scale, ratio=ratio)(key, image)
