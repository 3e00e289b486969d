"""Degradations: Gaussian noise, blur, down-then-up scaling and JPEG-like compression.

For training models that must work on poor images (e.g. licence plates from bad cameras):
sensor noise, defocus, low resolution and compression artefacts. One HWC floating image in
[0, 1] per call; random ops take the key first and have deterministic twins.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg.augment import _batching, _core, _rng

__all__ = [
    "add_noise",
    "downscale",
    "gaussian_blur",
    "gaussian_noise",
    "jpeg_compress",
    "random_blur",
    "random_downscale",
    "random_jpeg",
]


def _sigma_range(sigma: Any, name: str = "sigma") -> tuple[float, float]:
    if isinstance(sigma, Sequence) and not isinstance(sigma, str):
        return _core.check_range(sigma, name, lo=0.0)
    v = _core.concrete(sigma)
    if v is None:
        raise TypeError(f"{name} must be a Python number or a (low, high) pair; got {sigma!r}.")
    _core.check_positive(v, name, allow_zero=True)
    return v, v


def add_noise(image: jax.Array, noise: jax.Array, *, clip: bool = True) -> jax.Array:
    """Adds a noise field (same shape as the image), clipping to [0, 1] when `clip`."""
    _core.check_image(image)
    if tuple(noise.shape) != tuple(image.shape):
        raise ValueError(f"noise must have the image's shape {image.shape}; got {noise.shape}.")
    out = image + noise.astype(image.dtype)
    return jnp.clip(out, 0.0, 1.0) if clip else out


def gaussian_noise(
    key: jax.Array,
    image: jax.Array,
    *,
    sigma: float | Sequence[float],
    clip: bool = True,
    p: float = 1.0,
) -> jax.Array:
    """Adds i.i.d. Gaussian noise N(0, sigma^2) per pixel and channel.

    The noise field comes from jaxreg's counter-based generator (`_rng.py`), drawn as one flat
    stream from the key.

    Args:
      key: PRNG key.
      image: (H, W, C) floating image in [0, 1].
      sigma: standard deviation >= 0, or a (low, high) range drawn uniformly per call.
      clip: clip the result to [0, 1].
      p: probability of adding noise, in [0, 1] (cheaper than `random_apply`: the noise level is
        set to 0 instead of selecting between two images).

    Returns:
      (H, W, C) image.
    """
    h, w, c = _core.check_image(image)
    _core.check_key(key)
    _core.check_prob(p)
    lo, hi = _sigma_range(sigma)

    def noisy(key, image):
        s = jnp.float32(lo) if lo == hi else _rng.uniform(key, (), lo, hi, stream=1)
        if p < 1.0:
            s = jnp.where(_rng.uniform(key, (), stream=2) < p, s, 0.0)
        noise = _rng.normal(key, (h * w * c,)).reshape(h, w, c)
        return add_noise(image, s * noise, clip=clip)

    return _batching.vmappable(noisy, key, image)


def _kernel_size(max_sigma: float, kernel_size: int | None) -> int:
    if kernel_size is None:
        return max(3, 2 * math.ceil(3.0 * max_sigma) + 1)
    k = _core.check_int(kernel_size, "kernel_size", minimum=1)
    if k % 2 == 0:
        raise ValueError(f"kernel_size must be odd; got {k}.")
    return k


def _blur(image, sigma, k, pad_mode):
    r = k // 2
    h, w, _ = image.shape
    x = jnp.arange(-r, r + 1, dtype=jnp.float32)
    s = jnp.maximum(jnp.asarray(sigma, jnp.float32), 1e-6)
    wts = jnp.exp(-0.5 * (x / s) ** 2)
    wts = (wts / jnp.sum(wts)).astype(image.dtype)
    mode = "constant" if pad_mode == "constant" else pad_mode
    if (r >= h or r >= w) and pad_mode in ("reflect", "symmetric"):
        mode = "edge"  # the kernel is wider than the image: reflection is undefined
    p = jnp.pad(image, ((r, r), (0, 0), (0, 0)), mode=mode)
    out = sum(wts[i] * p[i : i + h] for i in range(k))
    p = jnp.pad(out, ((0, 0), (r, r), (0, 0)), mode=mode)
    return sum(wts[i] * p[:, i : i + w] for i in range(k))


def gaussian_blur(
    image: jax.Array,
    sigma: Any,
    kernel_size: float | None = None,
    *,
    padding: str = "SAME",
    pad_mode: str | None = None,
) -> jax.Array:
    """Separable Gaussian blur (`dm_pix.gaussian_blur`).

    As dm-pix: the kernel has 2 * int(kernel_size / 2) + 1 taps (an even size rounds up to the
    next odd one) with weights exp(-x^2 / (2 sigma^2)) normalised to sum 1, and the image is
    padded with zeros ("SAME", which darkens the border) or not padded ("VALID", the output
    shrinks by the kernel radius on each side). jaxreg's extras: `kernel_size` may be omitted
    (2 * ceil(3 sigma) + 1 taps), and `pad_mode` pads by another rule instead of zeros.

    Args:
      image: (H, W, C) floating image.
      sigma: standard deviation in pixels > 0 (may be traced when kernel_size is given).
      kernel_size: kernel size > 0 (static), as dm-pix; default 2 * ceil(3 sigma) + 1.
      padding: "SAME" (output H x W) or "VALID" (output (H - 2r) x (W - 2r), r the radius).
      pad_mode: None (zeros, as dm-pix) or "reflect", "symmetric", "edge", "wrap", "constant"
        (numpy's names; "constant" is zeros) with `padding="SAME"`.

    Returns:
      (H, W, C) image ("SAME") or (H - 2r, W - 2r, C) ("VALID"), the input dtype.
    """
    h, w, _ = _core.check_image(image)
    _core.check_scalar(sigma, "sigma", positive=True)
    _core.check_in(padding, "padding", ("SAME", "VALID"))
    if pad_mode is not None:
        _core.check_in(pad_mode, "pad_mode", (None, *_core.PAD_MODES))
        if padding == "VALID":
            raise ValueError(f'pad_mode must be None with padding="VALID"; got {pad_mode!r}.')
    if kernel_size is None:
        if _core.concrete(sigma) is None:
            raise TypeError("kernel_size is required when sigma is traced.")
        k = _kernel_size(_core.concrete(sigma), None)
    else:
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, float)):
            raise TypeError(f"kernel_size must be a Python number (static); got {kernel_size!r}.")
        if not math.isfinite(kernel_size) or kernel_size <= 0:
            raise ValueError(f"kernel_size must be a finite number > 0; got {kernel_size!r}.")
        k = 2 * int(kernel_size / 2) + 1
    r = k // 2
    if padding == "VALID":
        if h < k or w < k:
            raise ValueError(
                f'padding="VALID" needs an image of at least the kernel size {k} x {k}; '
                f"got {(h, w)}."
            )
        return _blur(image, sigma, k, "constant")[r : h - r, r : w - r]
    return _blur(image, sigma, k, pad_mode or "constant")


def random_blur(
    key: jax.Array,
    image: jax.Array,
    *,
    sigma: Sequence[float] = (0.1, 2.0),
    kernel_size: int | None = None,
) -> jax.Array:
    """Gaussian blur with sigma drawn uniformly from the (low, high) range (defocus).

    Returns:
      (H, W, C) image.
    """
    _core.check_image(image)
    _core.check_key(key)
    lo, hi = _core.check_range(sigma, "sigma", positive=True)
    k = _kernel_size(hi, kernel_size)
    return _batching.vmappable(
        lambda key, x: _blur(x, _rng.uniform(key, (), lo, hi), k, "reflect"), key, image
    )


def downscale(image: jax.Array, factor: int, *, method: str = "bilinear") -> jax.Array:
    """Shrinks by an integer `factor` (antialiased) and scales back up (lost resolution).

    Args:
      image: (H, W, C) floating image.
      factor: static int >= 1.
      method: upscaling "bilinear" (soft) or "nearest" (pixelated).

    Returns:
      (H, W, C) image.
    """
    h, w, c = _core.check_image(image)
    f = _core.check_int(factor, "factor", minimum=1)
    _core.check_in(method, "method", ("bilinear", "nearest"))
    if f == 1:
        return image
    small = jax.image.resize(
        image, (max(1, -(-h // f)), max(1, -(-w // f)), c), "linear", antialias=True
    )
    up = "linear" if method == "bilinear" else "nearest"
    return jnp.clip(jax.image.resize(small, (h, w, c), up), 0.0, 1.0).astype(image.dtype)


def random_downscale(
    key: jax.Array,
    image: jax.Array,
    *,
    factors: Sequence[int] = (2, 3, 4),
    method: str = "bilinear",
) -> jax.Array:
    """`downscale` by a factor drawn uniformly from `factors` (static ints >= 1).

    Under `vmap` every listed factor is computed and selected per example.
    """
    _core.check_image(image)
    _core.check_key(key)
    if isinstance(factors, (int, str)) or not factors:
        raise TypeError(f"factors must be a non-empty sequence of ints; got {factors!r}.")
    fs = [_core.check_int(f, "factors", minimum=1) for f in factors]
    _core.check_in(method, "method", ("bilinear", "nearest"))
    if len(fs) == 1:
        return downscale(image, fs[0], method=method)

    def scaled(key, image):
        i = _rng.randint(key, (), 0, len(fs))
        branches = [lambda x, f=f: downscale(x, f, method=method) for f in fs]
        return jax.lax.switch(i, branches, image)

    return _batching.vmappable(scaled, key, image)


# JPEG (ITU T.81 Annex K) base quantisation tables for luminance and chrominance.
_Q_LUMA = np.array(
    [
        16,
        11,
        10,
        16,
        24,
        40,
        51,
        61,
        12,
        12,
        14,
        19,
        26,
        58,
        60,
        55,
        14,
        13,
        16,
        24,
        40,
        57,
        69,
        56,
        14,
        17,
        22,
        29,
        51,
        87,
        80,
        62,
        18,
        22,
        37,
        56,
        68,
        109,
        103,
        77,
        24,
        35,
        55,
        64,
        81,
        104,
        113,
        92,
        49,
        64,
        78,
        87,
        103,
        121,
        120,
        101,
        72,
        92,
        95,
        98,
        112,
        100,
        103,
        99,
    ],
    np.float32,
).reshape(8, 8)
_Q_CHROMA = np.full((8, 8), 99.0, np.float32)
_Q_CHROMA[:4, :4] = np.array(
    [17, 18, 24, 47, 18, 21, 26, 66, 24, 26, 56, 99, 47, 66, 99, 99], np.float32
).reshape(4, 4)


def _dct_matrix():
    u = np.arange(8)[:, None]
    i = np.arange(8)[None, :]
    d = np.cos((2 * i + 1) * u * np.pi / 16) * np.sqrt(2.0 / 8)
    d[0] /= np.sqrt(2.0)
    return d.astype(np.float32)


_DCT = _dct_matrix()
_RGB_TO_YCC = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32
)
_YCC_TO_RGB = np.linalg.inv(_RGB_TO_YCC).astype(np.float32)
_LEVEL_SHIFT = np.array([128.0, 0.0, 0.0], np.float32).reshape(1, 1, 3)  # Y - 128, Cb, Cr


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False; got {value!r}.")
    return bool(value)


def _block_quantise(x: jax.Array, qt: jax.Array) -> jax.Array:
    """DCT-quantises level-shifted planes (h, w, c) in 8x8 blocks with tables qt (8, 8, c).

    The planes are padded to a multiple of 8 by repeating the last row / column (as libjpeg
    does) and cropped back.
    """
    h, w, c = x.shape
    x = jnp.pad(x, ((0, -h % 8), (0, -w % 8), (0, 0)), mode="edge")
    hb, wb = x.shape[0] // 8, x.shape[1] // 8
    blocks = x.reshape(hb, 8, wb, 8, c)
    coef = jnp.einsum("ui,aibjc,vj->aubvc", _DCT, blocks, _DCT)
    qb = qt.reshape(1, 8, 1, 8, c)
    coef = jnp.round(coef / qb) * qb
    return jnp.einsum("ui,aubvc,vj->aibjc", _DCT, coef, _DCT).reshape(hb * 8, wb * 8, c)[:h, :w]


def _downsample_2x2(x: jax.Array) -> jax.Array:
    """(h, w, c) -> (ceil(h/2), ceil(w/2), c) by 2x2 box averaging (libjpeg's h2v2 downsampling)."""
    h, w, c = x.shape
    x = jnp.pad(x, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2, c).mean(axis=(1, 3))


def _upsample_2x(x: jax.Array, axis: int) -> jax.Array:
    """Doubles one axis with libjpeg's "fancy" triangle filter: 3/4 nearer + 1/4 farther sample.

    Output sample 2i is 0.75 x[i] + 0.25 x[i-1] and 2i+1 is 0.75 x[i] + 0.25 x[i+1], the edges
    repeated (bilinear interpolation with centred samples).
    """
    n = x.shape[axis]
    cut = functools.partial(jax.lax.slice_in_dim, x, axis=axis)
    prev = jnp.concatenate([cut(0, 1), cut(0, n - 1)], axis=axis)
    nxt = jnp.concatenate([cut(1, n), cut(n - 1, n)], axis=axis)
    even = 0.75 * x + 0.25 * prev
    odd = 0.75 * x + 0.25 * nxt
    out = jnp.stack([even, odd], axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = 2 * n
    return out.reshape(shape)


def jpeg_compress(image: jax.Array, quality: Any, *, chroma_subsampling: bool = True) -> jax.Array:
    """JPEG-like compression: YCbCr, 4:2:0 chroma subsampling, 8x8 block DCT quantisation.

    Baseline JPEG as libjpeg (IJG) encodes it for a quality setting, without entropy coding
    (which is lossless): colour is converted to YCbCr (JFIF, full range); with
    `chroma_subsampling` (the default of cjpeg, Pillow and OpenCV) Cb and Cr are halved in each
    direction by 2x2 averaging (4:2:0); each 8x8 block's DCT coefficients are rounded to
    multiples of the Annex K tables scaled by `quality` (IJG scaling); then the planes are
    transformed back, the chroma doubled again with libjpeg's "fancy" triangle filter
    (bilinear), and converted to RGB. Blocking and ringing artefacts appear at low quality;
    subsampling also blurs colour edges (colour bleeding) while keeping luma detail, even at
    quality 100. Computed in float32 (libjpeg works in integers), so values agree with a real
    encoder up to a few 1/255 steps.

    Args:
      image: (H, W, C) floating image in [0, 1], C in {1, 3}; any H, W >= 1 (the image is
        padded to whole blocks by edge repetition and cropped back).
      quality: 1 (worst) to 100 (best); may be traced.
      chroma_subsampling: subsample Cb and Cr 4:2:0 (default True). A no-op for 1-channel
        images, which have no chroma. False keeps chroma at full resolution (4:4:4).

    Returns:
      (H, W, C) image in [0, 1], the input's dtype.
    """
    h, w, c = _core.check_image(image, channels=(1, 3))
    q = _core.concrete(quality)
    if q is not None and not 1 <= q <= 100:
        raise ValueError(f"quality must lie in [1, 100]; got {quality!r}.")
    subsample = _check_flag(chroma_subsampling, "chroma_subsampling") and c == 3
    q = jnp.clip(jnp.asarray(quality, jnp.float32), 1.0, 100.0)
    s = jnp.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)
    tables = [_Q_LUMA, _Q_CHROMA, _Q_CHROMA][:c]
    qt = jnp.clip(jnp.floor((jnp.stack(tables, axis=-1) * s + 50.0) / 100.0), 1.0, 255.0)
    x = image.astype(jnp.float32) * 255.0
    if c == 3:
        # Level-shifted YCbCr: Y - 128, Cb, Cr (the +128 chroma offset and the shift cancel).
        x = jnp.einsum("hwc,dc->hwd", x, _RGB_TO_YCC) - _LEVEL_SHIFT
    else:
        x = x - 128.0
    if subsample:
        y = _block_quantise(x[..., :1], qt[..., :1])
        cc = _block_quantise(_downsample_2x2(x[..., 1:]), qt[..., 1:])
        cc = _upsample_2x(_upsample_2x(cc, 0), 1)[:h, :w]
        x = jnp.concatenate([y, cc], axis=-1)
    else:
        x = _block_quantise(x, qt)
    if c == 3:
        x = jnp.einsum("hwc,dc->hwd", x + _LEVEL_SHIFT, _YCC_TO_RGB)
    else:
        x = x + 128.0
    return jnp.clip(x / 255.0, 0.0, 1.0).astype(image.dtype)


def random_jpeg(
    key: jax.Array,
    image: jax.Array,
    *,
    quality: Sequence[float] = (30, 90),
    chroma_subsampling: bool = True,
) -> jax.Array:
    """`jpeg_compress` with an integer quality drawn uniformly from the (low, high) range.

    Args:
      key: PRNG key.
      image: (H, W, C) floating image in [0, 1], C in {1, 3}.
      quality: (low, high) range inside [1, 100].
      chroma_subsampling: 4:2:0 chroma subsampling (default True; no-op on 1 channel), see
        `jpeg_compress`.

    Returns:
      (H, W, C) image in [0, 1].
    """
    _core.check_image(image, channels=(1, 3))
    _core.check_key(key)
    lo, hi = _core.check_range(quality, "quality", lo=1.0, hi=100.0)
    _check_flag(chroma_subsampling, "chroma_subsampling")
    return _batching.vmappable(
        lambda key, x: jpeg_compress(
            x, jnp.round(_rng.uniform(key, (), lo, hi)), chroma_subsampling=chroma_subsampling
        ),
        key,
        image,
    )
