"""The 2-D convolution with XLA:CPU backward rules: a patch-matrix weight gradient, one HWIO conv.

The forward pass is always XLA's convolution. Lowered for the CPU (workarounds on), the backward
pass computes the weight gradient as patches^T @ dy (one matmul, where XLA:CPU's backward-filter
convolution loses its fast kernel inside a loop body, jax-ml/jax#12868) and the input gradient as
one canonical NHWC x HWIO convolution with the flipped kernel (JAX's transpose rule emits a
kernel layout that XLA:CPU runs off its fast path inside a loop body). Elsewhere, and with the
workarounds off, JAX's own transpose rules run.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxreg._cpu import switch

__all__ = []  # private module

DIMS = ("NHWC", "HWIO", "NHWC")
SCOPE = "jaxreg_cpu_conv_backward"  # name scope of the CPU rule (visible in lowered programs)


def conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: str) -> jax.Array:
    """XLA's convolution, NHWC x HWIO -> NHWC, with JAX's own derivatives."""
    return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=DIMS)


def conv2d(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: str) -> jax.Array:
    """`conv(x, kernel, strides, padding)`; lowered for the CPU, with `conv_cpu_backward`'s rules.

    The choice is made per lowering platform (`lax.platform_dependent`); with
    `JAXREG_CPU_WORKAROUNDS=0` at trace time it is `conv` everywhere.
    """
    if not switch.enabled():
        return conv(x, kernel, strides, padding)

    def cpu(a, b):
        with jax.named_scope(SCOPE):
            return conv_cpu_backward(a, b, strides, padding)

    return lax.platform_dependent(
        x, kernel, cpu=cpu, default=lambda a, b: conv(a, b, strides, padding)
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_cpu_backward(x, kernel, strides, padding):
    """`conv` whose backward pass is the patch-matrix weight gradient and one HWIO input conv."""
    return conv(x, kernel, strides, padding)


def _fwd(x, kernel, strides, padding):
    return conv(x, kernel, strides, padding), (x, kernel)


def patches(x, kh, kw, strides, padding):
    """(N, Ho, Wo, kh*kw*cin) patch matrix, features ordered (kh, kw, cin).

    Built from kh*kw strided slices of the padded input and one concatenation: pure data
    movement, where `lax.conv_general_dilated_patches` computes the same matrix as a
    convolution with a one-hot kernel (kh*kw*cin times the work of a copy).
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
    with jax.named_scope(SCOPE):
        cols = patches(x, kh, kw, strides, padding)  # (N, Ho, Wo, kh*kw*cin)
        dw = (
            lax.dot_general(
                cols.reshape(-1, kh * kw * cin), g.reshape(-1, cout), (((0,), (0,)), ((), ()))
            )
            .reshape(kh, kw, cin, cout)
            .astype(kernel.dtype)
        )
        dx = input_grad(g, kernel, x.shape, strides, padding)
    return dx, dw


def input_grad(g, kernel, x_shape, strides, padding):
    """dL/dx of `conv` as one canonical NHWC x HWIO convolution.

    The kernel is flipped and its in/out axes swapped explicitly (HWIO, not JAX's `01oi`);
    strides become input dilation; the padding is the forward's, mirrored.
    """
    kh, kw = kernel.shape[:2]
    pads = lax.padtype_to_pads(x_shape[1:3], (kh, kw), strides, padding)
    tpads = []
    for size, k, s, (lo, _), o in zip(x_shape[1:3], (kh, kw), strides, pads, g.shape[1:3]):
        before = k - 1 - lo
        tpads.append((before, size + k - 1 - (o - 1) * s - 1 - before))
    kt = jnp.transpose(jnp.flip(kernel, (0, 1)), (0, 1, 3, 2))
    return lax.conv_general_dilated(
        g, kt, (1, 1), tpads, lhs_dilation=strides, dimension_numbers=DIMS
    )


conv_cpu_backward.defvjp(_fwd, _bwd)
