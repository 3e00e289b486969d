"""Convolutional autoencoders (NNX): encoder -> code -> decoder by deconvolution, depooling or resizing.

The encoder is conv-ReLU-2x2 max-pool stages, then a dense layer to a code of `code_size`
numbers. The decoder mirrors it: a dense layer back to the last feature map, then one
upsampling stage per encoder stage, chosen with `upsample`:

- "deconv": a stride-2 transposed convolution ("deconvolution", Zeiler et al., 2010);
- "unpool": max-unpooling ("depooling"): each value goes back to the position its encoder
  max-pool took it from, zeros elsewhere; the positions (the "switches") travel from the
  encoder to the decoder (Zeiler & Fergus, 2014; SegNet, Badrinarayanan et al., 2017), then a
  3x3 convolution;
- "resize": nearest-neighbour upsampling then a 3x3 convolution (Odena et al., 2016,
  "Deconvolution and Checkerboard Artifacts").

Odd input sizes round-trip: each decoder stage crops to the size its encoder stage had before
pooling. The final layer gives one output per input channel (logits for a "bce" loss).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxreg.models.layers import Conv, check_input_shape, max_pool_2x2_with_indices

__all__ = [
    "UPSAMPLE",
    "Autoencoder",
    "Decoder",
    "Encoder",
    "EncoderClassifier",
    "max_unpool_2x2",
]

UPSAMPLE = ("deconv", "unpool", "resize")


def max_unpool_2x2(values: jax.Array, positions: jax.Array, size: Sequence[int]) -> jax.Array:
    """Max-unpooling: each value back at its window's max position, zeros elsewhere.

    The inverse placement of `max_pool_2x2_with_indices`: with fixed positions it is the
    adjoint (transpose) of taking each window's value at that position, so
    `<select(x), y> = <x, unpool(y)>`.

    Args:
      values: (N, h, w, C) floating array (e.g. pooled features, or decoder features of that
        shape).
      positions: (N, h, w, C) integer positions 0..3 in each 2x2 window, row-major (top-left,
        top-right, bottom-left, bottom-right), as `max_pool_2x2_with_indices` returns them
        (ties: the first maximum).
      size: (H, W) of the unpooled output, `2h - 1 <= H <= 2h` (the size before pooling; an
        odd size drops the padded last row or column).

    Returns:
      (N, H, W, C) array of `values`' dtype.

    Raises:
      ValueError: mismatched shapes or a size that does not fit.
    """
    if values.shape != positions.shape or values.ndim != 4:
        raise ValueError(
            f"values and positions must have one (N, h, w, C) shape, got {values.shape} and "
            f"{positions.shape}"
        )
    n, h, w, c = values.shape
    height, width = (int(s) for s in size)
    if not (2 * h - 1 <= height <= 2 * h and 2 * w - 1 <= width <= 2 * w):
        raise ValueError(f"size {tuple(size)} does not fit pooled maps of {h}x{w}")
    hot = positions[..., None] == jnp.arange(4, dtype=positions.dtype).reshape(1, 1, 1, 1, 4)
    out = jnp.where(hot, values[..., None], jnp.zeros((), values.dtype))
    out = out.reshape(n, h, w, c, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(n, 2 * h, 2 * w, c)
    return out[:, :height, :width]


class Encoder(nnx.Module):
    """Conv(3x3)-ReLU-maxpool(2x2) stages, flattened, a dense layer to the code.

    Args:
      input_shape: (H, W, C).
      channels: output channels per stage.
      code_size: length of the code.
      rngs: `nnx.Rngs`.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        *,
        channels: Sequence[int] = (32, 64),
        code_size: int = 32,
        rngs: nnx.Rngs,
    ):
        h, w, c = check_input_shape(input_shape)
        if int(code_size) < 1 or not channels or any(int(x) < 1 for x in channels):
            raise ValueError(
                f"need code_size >= 1 and positive channels, got {code_size}, {channels}"
            )
        convs, sizes = [], []
        for ch in channels:
            convs.append(Conv(c, int(ch), (3, 3), rngs=rngs))
            sizes.append((h, w))
            c, h, w = int(ch), -(-h // 2), -(-w // 2)
        self.convs = nnx.List(convs)
        self.sizes = tuple(sizes)  # each stage's size before pooling (static)
        self.map_shape = (h, w, c)
        self.code = nnx.Linear(h * w * c, int(code_size), rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """`(code (N, code_size), switches)`: the pool positions of every stage, input first."""
        switches = []
        for conv in self.convs:
            x, pos = max_pool_2x2_with_indices(jax.nn.relu(conv(x)))
            switches.append(pos)
        return self.code(x.reshape(x.shape[0], -1)), tuple(switches)


class Decoder(nnx.Module):
    """Dense layer from the code to the encoder's last map, then one upsampling stage per pool.

    Args:
      encoder: the encoder it mirrors (sizes and channels are read from it).
      out_channels: channels of the output image.
      upsample: "deconv", "unpool" or "resize" (see the module docstring).
      rngs: `nnx.Rngs`.
    """

    def __init__(self, encoder: Encoder, out_channels: int, *, upsample: str, rngs: nnx.Rngs):
        if upsample not in UPSAMPLE:
            raise ValueError(f"upsample must be one of {UPSAMPLE}, got {upsample!r}")
        self.upsample = upsample
        h, w, c = encoder.map_shape
        self.map_shape = (h, w, c)
        self.sizes = encoder.sizes
        self.expand = nnx.Linear(encoder.code.out_features, h * w * c, rngs=rngs)
        chans = [conv.kernel[...].shape[-1] for conv in encoder.convs]  # stage outputs
        ins = [conv.kernel[...].shape[-2] for conv in encoder.convs]  # stage inputs
        layers = []
        for i in reversed(range(len(chans))):
            cin, cout = chans[i], ins[i] if i > 0 else int(out_channels)
            if upsample == "deconv":
                layers.append(nnx.ConvTranspose(cin, cout, (3, 3), strides=(2, 2), rngs=rngs))
            else:
                layers.append(Conv(cin, cout, (3, 3), rngs=rngs))
        self.layers = nnx.List(layers)

    def __call__(self, code: jax.Array, switches: Sequence[jax.Array] | None = None) -> jax.Array:
        """The image (N, H, W, out_channels) from a code; "unpool" needs the encoder's switches."""
        if self.upsample == "unpool" and switches is None:
            raise ValueError("upsample='unpool' needs the encoder's switches")
        x = self.expand(code).reshape((code.shape[0], *self.map_shape))
        last = len(self.layers) - 1
        for j, layer in enumerate(self.layers):
            stage = len(self.layers) - 1 - j  # the encoder stage this undoes
            size = self.sizes[stage]
            if self.upsample == "deconv":
                x = layer(x)[:, : size[0], : size[1]]
            elif self.upsample == "unpool":
                x = layer(max_unpool_2x2(x, switches[stage], size))
            else:
                x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)[:, : size[0], : size[1]]
                x = layer(x)
            if j < last:
                x = jax.nn.relu(x)
        return x


class Autoencoder(nnx.Module):
    """Encoder -> code -> decoder; `model(x)` reconstructs (logits for a "bce" loss).

    Input (N, H, W, C) float32 in [0, 1]; output (N, H, W, C) float32.

    Args:
      input_shape: (H, W, C) of one example.
      channels: encoder channels per stage (the decoder mirrors them).
      code_size: length of the code.
      upsample: "deconv", "unpool" or "resize".
      decoders: how many decoders share the encoder (2: the "deepfake" shape, one decoder per
        domain; `model(x)` uses the first, `decode(code, switches, domain=k)` any).
      rngs: `nnx.Rngs`.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        *,
        channels: Sequence[int] = (32, 64),
        code_size: int = 32,
        upsample: str = "deconv",
        decoders: int = 1,
        rngs: nnx.Rngs,
    ):
        _, _, c = check_input_shape(input_shape)
        if int(decoders) < 1:
            raise ValueError(f"decoders must be >= 1, got {decoders}")
        self.encoder = Encoder(input_shape, channels=channels, code_size=code_size, rngs=rngs)
        self.decoders = nnx.List(
            [Decoder(self.encoder, c, upsample=upsample, rngs=rngs) for _ in range(int(decoders))]
        )

    def encode(self, x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """`(code, switches)` of images (N, H, W, C)."""
        return self.encoder(x)

    def decode(self, code: jax.Array, switches=None, *, domain: int = 0) -> jax.Array:
        """The image decoded by decoder `domain` (0-based)."""
        return self.decoders[domain](code, switches)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Reconstruction (N, H, W, C) of images (N, H, W, C) by the first decoder."""
        return self.decode(*self.encode(x))

    def translate(self, x: jax.Array, domain: int) -> jax.Array:
        """Images (N, H, W, C) encoded by the shared encoder and decoded by decoder `domain`.

        With one decoder per domain (the "deepfake" autoencoder, trained with
        `jaxreg.train.tasks.DomainReconstruction`), an image of domain a decoded by decoder b
        is its translation to domain b; with "unpool" decoders the input's own switches are
        used. Outputs follow `model(x)`'s convention (logits for a "bce" loss).

        Raises:
          ValueError: `domain` is not a decoder index.
        """
        if not 0 <= int(domain) < len(self.decoders):
            raise ValueError(f"domain must be in [0, {len(self.decoders)}), got {domain}")
        return self.decode(*self.encode(x), domain=int(domain))

    def param_groups(self) -> list[tuple[str, tuple[str, ...]]]:
        """Encoder stages, the code layer, then the decoders (as the head)."""
        groups = [(f"enc{i}", (f"encoder/convs/{i}",)) for i in range(len(self.encoder.convs))]
        return groups + [("code", ("encoder/code",)), ("head", ("decoders",))]


class EncoderClassifier(nnx.Module):
    """A classifier on the autoencoder's encoder: the code, ReLU, dropout, a linear head.

    Its encoder has the autoencoder's paths (`encoder/...`), so a trained autoencoder's
    encoder loads into it with `jaxreg.transfer.load` (or `config.init_from`).

    The head starts at zero (big_vision's `head_zeroinit`), so the first logits are uniform
    whatever the code's scale. An autoencoder's code is unnormalised (a trained one reaches
    |code| ~ 5-40 where a fresh encoder gives ~0.3); a randomly initialised head on it starts
    at a cross-entropy of 7-11 and a linear probe at Adam's usual rates cannot undo that in a
    few hundred steps.

    Args:
      num_classes: classes (>= 2).
      input_shape: (H, W, C).
      channels, code_size: as the autoencoder's.
      dropout: before the head, in [0, 1).
      rngs: `nnx.Rngs`.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        *,
        channels: Sequence[int] = (32, 64),
        code_size: int = 32,
        dropout: float = 0.0,
        bn_momentum: float = 0.9,
        batch_norm: bool = False,
        rngs: nnx.Rngs,
    ):
        del bn_momentum
        if batch_norm:
            raise ValueError("EncoderClassifier has no BatchNorm; batch_norm=True is not supported")
        self.encoder = Encoder(input_shape, channels=channels, code_size=code_size, rngs=rngs)
        self.dropout = nnx.Dropout(float(dropout), rngs=rngs)
        self.head = nnx.Linear(
            int(code_size), int(num_classes), kernel_init=nnx.initializers.zeros_init(), rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits (N, num_classes)."""
        code, _ = self.encoder(x)
        return self.head(self.dropout(jax.nn.relu(code)))

    def param_groups(self) -> list[tuple[str, tuple[str, ...]]]:
        """Encoder stages, the code layer, then the head."""
        groups = [(f"enc{i}", (f"encoder/convs/{i}",)) for i in range(len(self.encoder.convs))]
        return groups + [("code", ("encoder/code",)), ("head", ("head",))]
