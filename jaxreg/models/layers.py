"""Layers shared by the model zoo: a 2-D convolution whose weight gradient is picked per backend."""
from __future__ import annotations

import functools
from typing import Sequence

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


def _bwd(strides, padding, residuals, g):
    x, kernel = residuals
    kh, kw, cin, cout = kernel.shape
    # Weight gradient as patches^T @ dy: one matmul instead of XLA:CPU's backward-filter
    # convolution, which loses the fast kernel inside a loop body (jax-ml/jax#12868).
    patches = lax.conv_general_dilated_patches(
            x, (kh, kw), strides, padding, dimension_numbers=_DIMS)  # (N, Ho, Wo, cin*kh*kw)
    dw = jnp.einsum("nhwk,nhwo->ko", patches, g).reshape(cin, kh, kw, cout).transpose(1, 2, 0, 3)
    # Input gradient: the transpose of the forward conv (a plain, fast conv on CPU).
    _, vjp = jax.vjp(lambda inp: _conv(inp, kernel, strides, padding), x)
    (dx,) = vjp(g)
    return dx, dw


_conv_patches_grad.defvjp(_fwd, _bwd)


def conv2d(x: jax.Array, kernel: jax.Array, *, strides: Sequence[int] = (1, 1),
                      padding: str = "SAME", grad: str = "auto") -> jax.Array:
    """2-D convolution, NHWC x HWIO -> NHWC, with a choice of weight-gradient rule.

    The forward pass is always XLA's convolution (fast everywhere, also for evaluation).
    Only the backward rule differs: ``"patches"`` computes the weight gradient as an explicit
    patch matrix times the output gradient, which on XLA:CPU is several times faster than the
    native backward-filter convolution when the step runs inside ``lax.scan``
    (see benchmarks/train_loop.py). ``"auto"`` uses ``"patches"`` when lowering for CPU and the
    native rule for GPU/TPU, decided where the program is compiled (``lax.platform_dependent``).

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
            x, kernel,
            cpu=lambda a, b: _conv_patches_grad(a, b, strides, padding),
            default=lambda a, b: _conv(a, b, strides, padding))


class Conv(nnx.Module):
    """2-D convolution layer (NHWC), parameters laid out like ``nnx.Conv`` (kernel HWIO, bias).

    Args:
        in_features: input channels.
        out_features: output channels.
        kernel_size: (kh, kw).
        strides: (sh, sw).
        padding: "SAME" or "VALID".
        use_bias: add a bias (off before BatchNorm).
        grad: weight-gradient rule, see :func:`conv2d`.
        rngs: ``nnx.Rngs`` with a ``params`` stream.
    """

    def __init__(self, in_features: int, out_features: int, kernel_size: Sequence[int] = (3, 3),
                              *, strides: Sequence[int] = (1, 1), padding: str = "SAME", use_bias: bool = True,
                              grad: str = "auto", rngs: nnx.Rngs):
        if grad not in CONV_GRADS:
            raise ValueError(f"grad must be one of {CONV_GRADS}, got {grad!r}")
        kh, kw = kernel_size
        init = jax.nn.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (kh, kw, in_features, out_features), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None
        self.strides = tuple(strides)
        self.padding = padding
        self.grad = grad

    def __call__(self, x: jax.Array) -> jax.Array:
        y = conv2d(x, self.kernel[...], strides=self.strides, padding=self.padding, grad=self.grad)
        if self.bias is not None:
            y = y + self.bias[...].reshape((1,) * (y.ndim - 1) + (-1,))
        return y
