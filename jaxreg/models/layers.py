"""Layers shared by the model zoo: a 2-D convolution and 2x2 max pooling.

The convolution's weight-gradient rule is picked per backend; the max pooling has a cheap
backward pass.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

_DIMS = ("NHWC", "HWIO", "NHWC")
CONV_GRADS = ("auto", "native", "patches")


def _conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: str) -> jax.Array:
    return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_DIMS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_patches_grad(x, kernel, strides, padding):
    return _conv(x, kernel, strides, padding)


def _fwd(x, kernel, strides, padding):
    return _conv(x, kernel, strides, padding), (x, kernel)


def _patches(x, kh, kw, strides, padding):
    """(N, Ho, Wo, kh*kw*cin) patch matrix, features ordered (kh, kw, cin).

    Built from kh*kw strided slices of the padded input and one concatenation: pure data
    movement. `lax.conv_general_dilated_patches` computes the same matrix as a convolution
    with a one-hot kernel (kh*kw*cin times the work of a copy), which inside a `lax.scan`
    body cost more than the weight-gradient matmul itself.
    """
    sh, sw = strides
    (pt, pb), (pl, pr) = lax.padtype_to_pads(x.shape[1:3], (kh, kw), strides, padding)
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    ho = (xp.shape[1] - kh) // sh + 1
    wo = (xp.shape[2] - kw) // sw + 1
    cols = [
        lax.slice(
            xp,
            (0, i, j, 0),
            (xp.shape[0], i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, xp.shape[3]),
            (1, sh, sw, 1),
        )
        for i in range(kh)
        for j in range(kw)
    ]
    return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def _bwd(strides, padding, residuals, g):
    x, kernel = residuals
    kh, kw, cin, cout = kernel.shape
    # Weight gradient as patches^T @ dy: one matmul instead of XLA:CPU's backward-filter
    # convolution, which loses the fast kernel inside a loop body (jax-ml/jax#12868).
    patches = _patches(x, kh, kw, strides, padding)  # (N, Ho, Wo, kh*kw*cin)
    dw = (
        lax.dot_general(
            patches.reshape(-1, kh * kw * cin), g.reshape(-1, cout), (((0,), (0,)), ((), ()))
        )
        .reshape(kh, kw, cin, cout)
        .astype(kernel.dtype)
    )
    dx = _conv_input_grad(g, kernel, x.shape, strides, padding)
    return dx, dw


def _conv_input_grad(g, kernel, x_shape, strides, padding):
    """dL/dx of `_conv` as one canonical NHWC x HWIO convolution.

    JAX's transpose rule emits a convolution whose kernel dimensions are swapped
    (`01oi`); XLA:CPU runs that form off its fast path inside a loop body (~5x slower
    than the same arithmetic with an explicitly flipped and transposed HWIO kernel).
    Strides become input dilation; the padding is the forward's, mirrored.
    """
    kh, kw = kernel.shape[:2]
    pads = lax.padtype_to_pads(x_shape[1:3], (kh, kw), strides, padding)
    tpads = []
    for size, k, s, (lo, _), o in zip(x_shape[1:3], (kh, kw), strides, pads, g.shape[1:3]):
        before = k - 1 - lo
        tpads.append((before, size + k - 1 - (o - 1) * s - 1 - before))
    kt = jnp.transpose(jnp.flip(kernel, (0, 1)), (0, 1, 3, 2))
    return lax.conv_general_dilated(
        g, kt, (1, 1), tpads, lhs_dilation=strides, dimension_numbers=_DIMS
    )


_conv_patches_grad.defvjp(_fwd, _bwd)


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    *,
    strides: Sequence[int] = (1, 1),
    padding: str = "SAME",
    grad: str = "auto",
) -> jax.Array:
    """2-D convolution, NHWC x HWIO -> NHWC, with a choice of weight-gradient rule.

    The forward pass is always XLA's convolution (fast everywhere, also for evaluation).
    Only the backward rule differs: `"patches"` computes the weight gradient as an explicit
    patch matrix times the output gradient, which on XLA:CPU is several times faster than the
    native backward-filter convolution when the step runs inside `lax.scan`
    (see benchmarks/train_loop.py). `"auto"` uses `"patches"` when lowering for CPU and the
    native rule for GPU/TPU, decided where the program is compiled (`lax.platform_dependent`).

    Args:
        x: (N, H, W, Cin) floating array.
        kernel: (kh, kw, Cin, Cout) floating array.
        strides: two positive ints.
        padding: "SAME" or "VALID".
        grad: one of "auto", "native", "patches".

    Returns:
        (N, Ho, Wo, Cout) array of x's dtype.
    """
    if grad not in CONV_GRADS:
        raise ValueError(f"grad must be one of {CONV_GRADS}, got {grad!r}")
    if padding not in ("SAME", "VALID"):
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    strides = tuple(int(s) for s in strides)
    if grad == "native":
        return _conv(x, kernel, strides, padding)
    if grad == "patches":
        return _conv_patches_grad(x, kernel, strides, padding)
    return lax.platform_dependent(
        x,
        kernel,
        cpu=lambda a, b: _conv_patches_grad(a, b, strides, padding),
        default=lambda a, b: _conv(a, b, strides, padding),
    )


class Conv(nnx.Module):
    """2-D convolution layer (NHWC), parameters laid out like `nnx.Conv` (kernel HWIO, bias).

    Args:
        in_features: input channels.
        out_features: output channels.
        kernel_size: (kh, kw).
        strides: (sh, sw).
        padding: "SAME" or "VALID".
        use_bias: add a bias (off before BatchNorm).
        grad: weight-gradient rule, see `conv2d`.
        rngs: `nnx.Rngs` with a `params` stream.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Sequence[int] = (3, 3),
        *,
        strides: Sequence[int] = (1, 1),
        padding: str = "SAME",
        use_bias: bool = True,
        grad: str = "auto",
        rngs: nnx.Rngs,
    ):
        if grad not in CONV_GRADS:
            raise ValueError(f"grad must be one of {CONV_GRADS}, got {grad!r}")
        kh, kw = kernel_size
        init = jax.nn.initializers.lecun_normal()
        self.kernel = nnx.Param(
            init(rngs.params(), (kh, kw, in_features, out_features), jnp.float32)
        )
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None
        self.strides = tuple(strides)
        self.padding = padding
        self.grad = grad

    def __call__(self, x: jax.Array) -> jax.Array:
        """Convolves NHWC `x` with the kernel (weight gradient per `grad`), adding the bias."""
        y = conv2d(x, self.kernel[...], strides=self.strides, padding=self.padding, grad=self.grad)
        if self.bias is not None:
            y = y + self.bias[...].reshape((1,) * (y.ndim - 1) + (-1,))
        return y


def _pool_max_and_index(x):
    # x has even H and W; each 2x2 window lies on axes 2 and 4 of the (N, Ho, 2, Wo, 2, C) view.
    n, h, w, c = x.shape
    v = x.reshape(n, h // 2, 2, w // 2, 2, c)
    a, b, c, d = v[:, :, 0, :, 0], v[:, :, 0, :, 1], v[:, :, 1, :, 0], v[:, :, 1, :, 1]
    m = jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))
    # Row-major position (0..3) of the first maximum of each window.
    idx = jnp.where(a == m, 0, jnp.where(b == m, 1, jnp.where(c == m, 2, 3))).astype(jnp.int8)
    return m, idx


@jax.custom_vjp
def _max_pool_even(x):
    return _pool_max_and_index(x)[0]


def _pool_fwd(x):
    return _pool_max_and_index(x)


def _pool_bwd(idx, g):
    n, ho, wo, ch = g.shape
    pos = 2 * lax.broadcasted_iota(jnp.int8, (1, 1, 2, 1, 2, 1), 2) + lax.broadcasted_iota(
        jnp.int8, (1, 1, 2, 1, 2, 1), 4
    )
    dx = jnp.where(
        idx[:, :, None, :, None, :] == pos, g[:, :, None, :, None, :], jnp.zeros((), g.dtype)
    )
    return (dx.reshape(n, 2 * ho, 2 * wo, ch),)


_max_pool_even.defvjp(_pool_fwd, _pool_bwd)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling with stride 2 on (N, H, W, C); odd sizes are padded ("SAME").

    Same values and gradients as `lax.reduce_window(x, -inf, lax.max, (1,2,2,1), (1,2,2,1),
    "SAME")`: the gradient goes to the first maximum of each window in row-major order (as
    XLA's select_and_scatter does). The forward pass keeps that position as int8 (a quarter of
    the output's size); the backward pass is one broadcast select that writes the input
    gradient once, instead of select_and_scatter, which is slow on XLA:CPU, notably inside
    `lax.scan`.

    Args:
        x: (N, H, W, C) floating array.

    Returns:
        (N, ceil(H/2), ceil(W/2), C) array of x's dtype.

    Raises:
        ValueError: x is not 4-D or not floating.
    """
    if getattr(x, "ndim", None) != 4 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"max_pool_2x2 needs a 4-D floating (N, H, W, C) array, got "
            f"shape {getattr(x, 'shape', None)} dtype {getattr(x, 'dtype', None)}"
        )
    h, w = x.shape[1], x.shape[2]
    if h % 2 or w % 2:
        x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf)
    return _max_pool_even(x)
