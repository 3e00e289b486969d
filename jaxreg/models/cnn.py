"""Small convolutional classifiers: the default CNN for the digit sets and a tiny model for tests."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from jaxreg.models.layers import Conv, check_input_shape, check_rate, max_pool_2x2


class CNN(nnx.Module):
    """Conv-[BN]-ReLU-MaxPool blocks, then Dense-ReLU-[Dropout]-Dense.

    Input (N, H, W, C) float32 in [0, 1]; output logits (N, num_classes) float32.

    Args:
        num_classes: number of output classes (>= 2).
        input_shape: (H, W, C) of one example.
        channels: output channels of each conv block (each block halves H and W).
        hidden: width of the hidden dense layer.
        batch_norm: BatchNorm after every conv and the hidden dense layer (Ioffe & Szegedy, 2015).
        dropout: dropout rate before the last layer, in [0, 1) (Srivastava et al., 2014).
        bn_momentum: running-statistics momentum. 0.9 rather than flax's 0.99: runs on small data
            take only ~100 steps, after which 0.99 leaves the statistics far from the data.
        mixstyle_after: indices of the conv blocks followed by a `jaxreg.style.MixStyle` layer
            (Zhou et al., 2021: after the early blocks, never the last one); empty: none.
        mixstyle_p: MixStyle's probability of mixing a batch.
        mixstyle_alpha: MixStyle's Beta concentration (0.1 in the paper).
        rngs: `nnx.Rngs` (a `params` stream, and a `dropout` stream or a default one).

    Training and evaluation behave as any Flax NNX model: `model.train()` (batch statistics,
    dropout on) and `model.eval()` (running statistics, no dropout).
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        *,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        batch_norm: bool = False,
        dropout: float = 0.0,
        bn_momentum: float = 0.9,
        mixstyle_after: Sequence[int] = (),
        mixstyle_p: float = 0.5,
        mixstyle_alpha: float = 0.1,
        rngs: nnx.Rngs,
    ):
        h, w, c = check_input_shape(input_shape)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not channels or any(int(ch) <= 0 for ch in channels):
            raise ValueError(
                f"channels must be a non-empty sequence of positive ints, got {channels}"
            )
        after = sorted({int(i) for i in mixstyle_after})
        if any(not 0 <= i < len(channels) for i in after):
            raise ValueError(
                f"mixstyle_after must index the {len(channels)} conv blocks, got {mixstyle_after}"
            )
        self.dropout_rate = check_rate("dropout", dropout)
        self.batch_norm = bool(batch_norm)
        convs, norms = [], []
        for ch in channels:
            convs.append(Conv(c, int(ch), (3, 3), use_bias=not batch_norm, rngs=rngs))
            norms.append(
                nnx.BatchNorm(int(ch), momentum=bn_momentum, rngs=rngs) if batch_norm else None
            )
            c = int(ch)
            h, w = -(-h // 2), -(-w // 2)
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)
        self.hidden = nnx.Linear(h * w * c, hidden, use_bias=not batch_norm, rngs=rngs)
        self.hidden_norm = (
            nnx.BatchNorm(hidden, momentum=bn_momentum, rngs=rngs) if batch_norm else None
        )
        self.dropout = nnx.Dropout(self.dropout_rate, rngs=rngs)
        self.head = nnx.Linear(hidden, int(num_classes), rngs=rngs)
        if after:
            from jaxreg.style import MixStyle
        self.mixstyles = nnx.List(
            [
                MixStyle(p=mixstyle_p, alpha=mixstyle_alpha, rngs=rngs) if i in after else None
                for i in range(len(channels))
            ]
        )

    def param_groups(self) -> list[tuple[str, tuple[str, ...]]]:
        """Parameter path groups from input to output (conv blocks, hidden layer, head)."""
        norm = self.batch_norm
        groups = [
            (f"conv{i}", (f"convs/{i}",) + ((f"norms/{i}",) if norm else ()))
            for i in range(len(self.convs))
        ]
        groups.append(("hidden", ("hidden",) + (("hidden_norm",) if norm else ())))
        groups.append(("head", ("head",)))
        return groups

    def features(self, x: jax.Array) -> jax.Array:
        """Flattened conv features (N, D) before the dense layers."""
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = conv(x)
            if norm is not None:
                x = norm(x)
            x = jax.nn.relu(max_pool_2x2(x))  # = pool(relu(x)), on a quarter of the values
            if self.mixstyles[i] is not None:
                x = self.mixstyles[i](x)
        return x.reshape(x.shape[0], -1)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits (N, num_classes) of images (N, H, W, C)."""
        x = self.hidden(self.features(x))
        if self.hidden_norm is not None:
            x = self.hidden_norm(x)
        return self.head(self.dropout(jax.nn.relu(x)))


class TinyCNN(nnx.Module):
    """The smallest useful classifier, for tests: one 8-channel conv, BatchNorm optional, a head.

    Input (N, H, W, C) float32 in [0, 1]; output (N, num_classes) float32. `train()` /
    `eval()` switch BatchNorm and dropout, as in any Flax NNX model.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        *,
        batch_norm: bool = False,
        dropout: float = 0.0,
        bn_momentum: float = 0.9,
        rngs: nnx.Rngs,
    ):
        h, w, c = check_input_shape(input_shape)
        self.dropout_rate = check_rate("dropout", dropout)
        self.conv = Conv(c, 8, (3, 3), use_bias=not batch_norm, rngs=rngs)
        self.norm = nnx.BatchNorm(8, momentum=bn_momentum, rngs=rngs) if batch_norm else None
        self.dropout = nnx.Dropout(self.dropout_rate, rngs=rngs)
        self.head = nnx.Linear(-(-h // 2) * -(-w // 2) * 8, int(num_classes), rngs=rngs)

    def param_groups(self) -> list[tuple[str, tuple[str, ...]]]:
        """Parameter path groups from input to output: the conv block, then the head."""
        return [
            ("conv", ("conv",) + (("norm",) if self.norm is not None else ())),
            ("head", ("head",)),
        ]

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits (N, num_classes) of images (N, H, W, C)."""
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        x = self.dropout(jax.nn.relu(max_pool_2x2(x)).reshape(x.shape[0], -1))
        return self.head(x)
