"""Pure per-example image augmentations, their batch forms, batch mixing and policies."""
from jaxreg.augment.color import (adjust_brightness, adjust_contrast, adjust_gamma, adjust_hue,
                                  adjust_saturation, adjust_sharpness, autocontrast,
                                  color_jitter, equalize, grayscale, invert, posterize,
                                  random_brightness, random_contrast, random_gamma,
                                  random_grayscale, random_hue, random_saturation, solarize)
from jaxreg.augment.corrupt import (add_noise, downscale, gaussian_blur, gaussian_noise,
                                    jpeg_compress, random_blur, random_downscale, random_jpeg)
from jaxreg.augment.erase import corner_patches, cutout, erase, random_erasing
from jaxreg.augment.geometric import (affine, center_crop, crop, flip_left_right, flip_up_down,
                                      random_affine, random_crop, random_flip,
                                      random_resized_crop, random_rot90, random_rotate,
                                      random_scale, random_shear, random_translate, resize,
                                      resized_crop, rot90, rotate, scale, shear, translate,
                                      warp_affine)
from jaxreg.augment.mix import cutmix, mixup, mixup_or_cutmix, soft_labels
from jaxreg.augment.policy import (augmix, batch, compose, identity, one_of, rand_augment,
                                   random_apply, trivial_augment)
from jaxreg.augment.show import save_grid
from jaxreg.augment.spec import from_spec, list_augmentations, mix_from_spec, parse_spec

__all__ = [
    # geometric
    "flip_left_right", "flip_up_down", "random_flip", "rot90", "random_rot90", "rotate",
    "random_rotate", "scale", "random_scale", "translate", "random_translate", "shear",
    "random_shear", "affine", "random_affine", "warp_affine", "resize", "crop", "center_crop",
    "random_crop", "resized_crop", "random_resized_crop",
    # colour
    "adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue", "adjust_gamma",
    "adjust_sharpness", "grayscale", "invert", "solarize", "posterize", "autocontrast",
    "equalize", "random_brightness", "random_contrast", "random_saturation", "random_hue",
    "random_gamma", "random_grayscale", "color_jitter",
    # degradation
    "add_noise", "gaussian_noise", "gaussian_blur", "random_blur", "downscale",
    "random_downscale", "jpeg_compress", "random_jpeg",
    # erasing
    "erase", "cutout", "random_erasing", "corner_patches",
    # batch mixing
    "mixup", "cutmix", "mixup_or_cutmix", "soft_labels",
    # composition and policies
    "identity", "compose", "random_apply", "one_of", "batch", "rand_augment",
    "trivial_augment", "augmix",
    # specs and a look
    "from_spec", "mix_from_spec", "list_augmentations", "parse_spec", "save_grid",
]
