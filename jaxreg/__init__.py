"""jaxreg: data augmentation and regularization for small vision models in JAX/Flax.

The namespaces are the API: `jaxreg.augment` (per-example image ops, policies, batch mixing),
`jaxreg.optim` (Optax regularizers), `jaxreg.losses`, `jaxreg.data`, `jaxreg.models`,
`jaxreg.train` (the loop, tasks, checkpoints, `restore`), `jaxreg.report` and
`jaxreg.experiment` (the study runner). The flat top level holds only the pieces people
compose into their own code: the augmentation ops and policies, batch mixing and the Optax
transforms, e.g. `jax.vmap(jaxreg.random_rotate)` or
`optax.chain(jaxreg.add_l2(1e-4), optax.adam(1e-3), jaxreg.param_ema(0.999))`.
Heavier namespaces (the loop imports Orbax, the report matplotlib) load on first use.
"""

import importlib

from jaxreg import augment, losses, optim
from jaxreg.augment import (
    add_noise,
    adjust_brightness,
    adjust_contrast,
    adjust_gamma,
    adjust_hue,
    adjust_saturation,
    adjust_sharpness,
    affine,
    augmix,
    autocontrast,
    center_crop,
    color_jitter,
    compose,
    corner_patches,
    crop,
    cutmix,
    cutout,
    downscale,
    enhance_brightness,
    enhance_contrast,
    enhance_saturation,
    equalize,
    erase,
    flip_left_right,
    flip_up_down,
    from_spec,
    gaussian_blur,
    gaussian_noise,
    grayscale,
    invert,
    jpeg_compress,
    mix_from_spec,
    mixup,
    mixup_or_cutmix,
    one_of,
    posterize,
    rand_augment,
    random_affine,
    random_apply,
    random_blur,
    random_brightness,
    random_contrast,
    random_crop,
    random_downscale,
    random_erasing,
    random_flip,
    random_flip_left_right,
    random_flip_up_down,
    random_gamma,
    random_grayscale,
    random_hue,
    random_jpeg,
    random_resized_crop,
    random_rot90,
    random_rotate,
    random_saturation,
    random_scale,
    random_shear,
    random_translate,
    resize,
    resized_crop,
    rot90,
    rotate,
    shear,
    solarize,
    translate,
    trivial_augment,
    warp_affine,
)
from jaxreg.optim import (
    add_l1,
    add_l2,
    decay_mask,
    decoupled_weight_decay,
    ema_params,
    param_ema,
    path_mask,
    prox_l1,
)

__version__ = "0.2.0"

_LAZY = ("data", "experiment", "experiments", "models", "report", "train")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"jaxreg.{name}")
    raise AttributeError(f"module 'jaxreg' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


# namespaces
_NAMESPACES = [
    "augment",
    "data",
    "experiment",
    "experiments",
    "losses",
    "models",
    "optim",
    "report",
    "train",
]

# augmentation ops and policies (per example: fn(key, image) or fn(image, ...))
_AUGMENTATIONS = [
    "add_noise",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_gamma",
    "adjust_hue",
    "adjust_saturation",
    "adjust_sharpness",
    "affine",
    "augmix",
    "autocontrast",
    "center_crop",
    "color_jitter",
    "compose",
    "corner_patches",
    "crop",
    "cutout",
    "downscale",
    "enhance_brightness",
    "enhance_contrast",
    "enhance_saturation",
    "equalize",
    "erase",
    "flip_left_right",
    "flip_up_down",
    "from_spec",
    "gaussian_blur",
    "gaussian_noise",
    "grayscale",
    "invert",
    "jpeg_compress",
    "one_of",
    "posterize",
    "rand_augment",
    "random_affine",
    "random_apply",
    "random_blur",
    "random_brightness",
    "random_contrast",
    "random_crop",
    "random_downscale",
    "random_erasing",
    "random_flip",
    "random_flip_left_right",
    "random_flip_up_down",
    "random_gamma",
    "random_grayscale",
    "random_hue",
    "random_jpeg",
    "random_resized_crop",
    "random_rot90",
    "random_rotate",
    "random_saturation",
    "random_scale",
    "random_shear",
    "random_translate",
    "resize",
    "resized_crop",
    "rot90",
    "rotate",
    "shear",
    "solarize",
    "translate",
    "trivial_augment",
    "warp_affine",
]

# batch mixing (batch-level: (key, images, labels) -> (images, soft labels))
_MIXING = [
    "cutmix",
    "mix_from_spec",
    "mixup",
    "mixup_or_cutmix",
]

# Optax transforms
_OPTAX = [
    "add_l1",
    "add_l2",
    "decay_mask",
    "decoupled_weight_decay",
    "ema_params",
    "param_ema",
    "path_mask",
    "prox_l1",
]

__all__ = [*_NAMESPACES, *_AUGMENTATIONS, *_MIXING, *_OPTAX]
