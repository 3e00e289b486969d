"""ResNet-20-style networks for 32x32 colour images (He et al., 2016, CIFAR variant)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxreg.models.layers import Conv, check_input_shape, check_rate


class BasicBlock(nnx.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        *,
        bn_momentum: float,
        rngs: nnx.Rngs,
    ):
        s = (stride, stride)
        self.conv1 = Conv(cin, cout, (3, 3), strides=s, use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(cout, momentum=bn_momentum, rngs=rngs)
        self.conv2 = Conv(cout, cout, (3, 3), use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(
            cout, momentum=bn_momentum, scale_init=nnx.initializers.zeros, rngs=rngs
        )
        if stride != 1 or cin != cout:
            self.proj = Conv(cin, cout, (1, 1), strides=s, use_bias=False, rngs=rngs)
            self.proj_bn = nnx.BatchNorm(cout, momentum=bn_momentum, rngs=rngs)
        else:
            self.proj = None
            self.proj_bn = None

    def __call__(self, x: jax.Array) -> jax.Array:
        """Returns relu(shortcut(x) + bn2(conv2(relu(bn1(conv1(x)))))), NHWC.

        BatchNorm uses batch statistics (and updates its running averages) in training mode
        (`train()`), the running averages in evaluation mode (`eval()`).
        """
        y = jax.nn.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.proj is not None:
            x = self.proj_bn(self.proj(x))
        return jax.nn.relu(x + y)


class ResNet(nnx.Module):
    """CIFAR-style ResNet: a 3x3 stem, three stages of basic blocks, global average pool, head.

    `depth = 6 * blocks_per_stage + 2` (ResNet-20: 3 blocks per stage, widths 16/32/64).
    Input (N, H, W, C) float32 in [0, 1]; output logits (N, num_classes).

    Args:
        num_classes: classes (>= 2).
        input_shape: (H, W, C), e.g. (32, 32, 3).
        blocks_per_stage: basic blocks in each stage.
        widths: channels of the three stages.
        dropout: dropout rate before the head, in [0, 1).
        bn_momentum: BatchNorm running-statistics momentum (0.9 suits short runs).
        rngs: `nnx.Rngs` with a `params` stream.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        *,
        blocks_per_stage: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        dropout: float = 0.0,
        bn_momentum: float = 0.9,
        batch_norm: bool = True,
        rngs: nnx.Rngs,
    ):
        _, _, c = check_input_shape(input_shape)
        if not batch_norm:
            raise ValueError("ResNet always uses BatchNorm; batch_norm=False is not supported")
        if int(blocks_per_stage) < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        self.dropout_rate = check_rate("dropout", dropout)
        self.stem = Conv(c, widths[0], (3, 3), use_bias=False, rngs=rngs)
        self.stem_bn = nnx.BatchNorm(widths[0], momentum=bn_momentum, rngs=rngs)
        blocks, cin = [], widths[0]
        for i, width in enumerate(widths):
            for j in range(int(blocks_per_stage)):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(cin, width, stride, bn_momentum=bn_momentum, rngs=rngs))
                cin = width
        self.blocks = nnx.List(blocks)
        self.dropout = nnx.Dropout(self.dropout_rate, rngs=rngs)
        self.head = nnx.Linear(cin, int(num_classes), rngs=rngs)

    def param_groups(self) -> list[tuple[str, tuple[str, ...]]]:
        """Parameter path groups from input to output: the stem, each block, the head."""
        groups = [("stem", ("stem", "stem_bn"))]
        groups += [(f"block{i}", (f"blocks/{i}",)) for i in range(len(self.blocks))]
        return groups + [("head", ("head",))]

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits (N, num_classes) of images (N, H, W, C)."""
        x = jax.nn.relu(self.stem_bn(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.dropout(jnp.mean(x, axis=(1, 2))))
