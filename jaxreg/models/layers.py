"""Layers shared by the model zoo: a 2-D convolution and 2x2 max pooling (with first-max positions).

Both are XLA's own operations; on the CPU their backward passes come from `jaxreg._cpu`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxreg import _cpu


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    *,
    strides: Sequence[int] = (1, 1),
    padding: str = "SAME",
) -> jax.Array:
    """2-D convolution, NHWC x HWIO -> NHWC: XLA's convolution.

    Lowered for the CPU, the backward pass uses the rules of `jaxreg._cpu.conv` (same
    gradients to float rounding); elsewhere JAX's own.

    Args:
        x: (N, H, W, Cin) floating array.
        kernel: (kh, kw, Cin, Cout) floating array.
        strides: two positive ints.
        padding: "SAME" or "VALID".

    Returns:
        (N, Ho, Wo, Cout) array of x's dtype.
    """
    if padding not in ("SAME", "VALID"):
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    return _cpu.conv2d(x, kernel, tuple(int(s) for s in strides), padding)


class Conv(nnx.Module):
    """2-D convolution layer (NHWC), parameters laid out like `nnx.Conv` (kernel HWIO, bias).

    Args:
        in_features: input channels.
        out_features: output channels.
        kernel_size: (kh, kw).
        strides: (sh, sw).
        padding: "SAME" or "VALID".
        use_bias: add a bias (off before BatchNorm).
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
        rngs: nnx.Rngs,
    ):
        kh, kw = kernel_size
        init = jax.nn.initializers.lecun_normal()
        self.kernel = nnx.Param(
            init(rngs.params(), (kh, kw, in_features, out_features), jnp.float32)
        )
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None
        self.strides = tuple(strides)
        self.padding = padding

    def __call__(self, x: jax.Array) -> jax.Array:
        """Convolves NHWC `x` with the kernel, adding the bias."""
        y = conv2d(x, self.kernel[...], strides=self.strides, padding=self.padding)
        if self.bias is not None:
            y = y + self.bias[...].reshape((1,) * (y.ndim - 1) + (-1,))
        return y


def _window_max_and_index(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Maxima and row-major first-max positions (int8, 0..3) of the 2x2 windows of even-sized x."""
    n, h, w, c = x.shape
    v = x.reshape(n, h // 2, 2, w // 2, 2, c)  # each window lies on axes 2 and 4
    a, b, c, d = v[:, :, 0, :, 0], v[:, :, 0, :, 1], v[:, :, 1, :, 0], v[:, :, 1, :, 1]
    m = jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))
    idx = jnp.where(a == m, 0, jnp.where(b == m, 1, jnp.where(c == m, 2, 3))).astype(jnp.int8)
    return m, idx


def _check_and_pad(x: jax.Array) -> jax.Array:
    if getattr(x, "ndim", None) != 4 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"max_pool_2x2 needs a 4-D floating (N, H, W, C) array, got "
            f"shape {getattr(x, 'shape', None)} dtype {getattr(x, 'dtype', None)}"
        )
    h, w = x.shape[1], x.shape[2]
    if h % 2 or w % 2:
        x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf)
    return x


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling with stride 2 on (N, H, W, C); odd sizes are padded ("SAME").

    Same values and gradients as `lax.reduce_window(x, -inf, lax.max, (1,2,2,1), (1,2,2,1),
    "SAME")`: the gradient goes to the first maximum of each window in row-major order (as
    XLA's select_and_scatter does). Lowered for the CPU, the backward pass is that of
    `jaxreg._cpu.pool`.

    Args:
        x: (N, H, W, C) floating array.

    Returns:
        (N, ceil(H/2), ceil(W/2), C) array of x's dtype.

    Raises:
        ValueError: x is not 4-D or not floating.
    """
    return _cpu.max_pool_2x2(_check_and_pad(x), _window_max_and_index)


def max_pool_2x2_with_indices(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`max_pool_2x2(x)` and the position of each window's first maximum, on every platform.

    Args:
        x: (N, H, W, C) floating array; odd sizes are padded with -inf ("SAME").

    Returns:
        `(pooled, positions)`: `max_pool_2x2(x)` (differentiable, same gradient) and, per
        output value, the row-major position 0..3 (top-left, top-right, bottom-left,
        bottom-right) of the first maximum in its 2x2 window, as int8 of the same shape; ties
        go to the first maximum, as the gradient does.

    Raises:
        ValueError: x is not 4-D or not floating.
    """
    x = _check_and_pad(x)
    positions = _window_max_and_index(jax.lax.stop_gradient(x))[1]
    return _cpu.max_pool_2x2(x, _window_max_and_index), positions


def check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    """(H, W, C) of positive ints, or ValueError naming `input_shape`."""
    if len(input_shape) != 3 or any(int(s) <= 0 for s in input_shape):
        raise ValueError(
            f"input_shape must be (H, W, C) of positive ints, got {tuple(input_shape)}"
        )
    return tuple(int(s) for s in input_shape)  # type: ignore[return-value]


def check_rate(name: str, value: float) -> float:
    """A rate in [0, 1) as a float, or ValueError naming it."""
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)
