"""Augmentations named by strings: `from_spec`, `mix_from_spec`, presets and `list_augmentations`.

Grammar (parsed with `ast`, values must be Python literals, nothing is evaluated):

    spec    := "" | "none" | op ("+" op)*
    op      := NAME | NAME "(" [NAME "=" LITERAL ("," NAME "=" LITERAL)*] ")"

Ops joined by "+" are composed left to right; neighbouring geometric ops are resampled once.
Every per-example op also accepts `p=` (apply with probability p) unless it has its own `p`.
Examples: "cifar", "digits", "rotate(max_degrees=10)+scale(min_scale=0.9,max_scale=1.1)",
"crop(padding=4)+flip+jitter(brightness=0.4)+noise(sigma=0.05,p=0.5)+cutout(size=8)",
"rand_augment(n=2,magnitude=9)", "jpeg(quality=(10,50),chroma_subsampling=False)".
Mix specs: "mixup(alpha=0.2)", "cutmix(alpha=1.0)", "mixup_or_cutmix(switch_prob=0.5)".

Erasing ops ("cutout", "erasing", "corner_patches") take fill=NUMBER, a per-channel tuple,
'noise', 'mean' or 'batch': 'batch' fills the box with the pixels of another example of the
batch (example i - 1) once the fn is lifted with `jaxreg.augment.batch` (as the training loop
does), e.g. "flip+cutout(size=8,fill='batch')"; see `jaxreg.augment.erase`. Bad fill values
raise ValueError when the spec is built.
"""

from __future__ import annotations

import ast
import collections.abc
import functools
import inspect
import numbers
import types
import typing
from collections.abc import Callable
from typing import Any

import jax

from jaxreg.augment import _core, _rng, color, corrupt, geometric, mix, policy
from jaxreg.augment.erase import check_fill_option, corner_patches, cutout, random_erasing

__all__ = ["from_spec", "list_augmentations", "mix_from_spec", "parse_spec"]


def _op(fn, **defaults):
    """Builder that binds keyword options (defaults overridable) to a per-example function."""
    sig = inspect.signature(fn)

    def build(**kw):
        bad = [k for k in kw if k not in sig.parameters or k in ("key", "image")]
        if bad:
            raise TypeError(f"got an unexpected keyword argument {bad[0]!r}")
        return functools.partial(fn, **{**defaults, **kw})

    build.signature = sig
    build.func = fn
    return build


def _erasing(**kw):
    check_fill_option(kw.get("fill", 0.0))
    return _op(random_erasing)(**kw)


_erasing.signature = inspect.signature(random_erasing)


def _keyless(fn, **defaults):
    def build(**kw):
        opts = {**defaults, **kw}

        def apply(key, image):
            del key
            return fn(image, **opts)

        apply.__name__ = fn.__name__
        return apply

    build.func = fn
    return build


def _cutout(size: int | None = None, fill: Any = 0.0):
    check_fill_option(fill)

    def fn(key, image):
        s = size if size is not None else max(1, min(image.shape[0], image.shape[1]) // 2)
        return cutout(key, image, size=s, fill=fill)

    fn.__name__ = "cutout"
    return fn


def _corner(size: int | None = None, p: float = 0.5, fill: Any = "noise"):
    check_fill_option(fill)

    def fn(key, image):
        s = size if size is not None else max(1, min(image.shape[0], image.shape[1]) // 4)
        return corner_patches(key, image, size=s, p=p, fill=fill)

    fn.__name__ = "corner_patches"
    return fn


# The colour spec ops draw as `color_jitter` (jaxreg's draws, torchvision / PIL factors); their
# option names are part of the spec language: "brightness(strength=0.4)", "hue(max_delta=0.1)".


def _brightness(key: jax.Array, image: jax.Array, *, strength: Any) -> jax.Array:
    return color.color_jitter(key, image, brightness=strength)


def _contrast(key: jax.Array, image: jax.Array, *, strength: Any) -> jax.Array:
    return color.color_jitter(key, image, contrast=strength)


def _saturation(key: jax.Array, image: jax.Array, *, strength: Any) -> jax.Array:
    return color.color_jitter(key, image, saturation=strength)


def _hue(key: jax.Array, image: jax.Array, *, max_delta: Any) -> jax.Array:
    return color.color_jitter(key, image, hue=max_delta)


def _gamma(
    key: jax.Array, image: jax.Array, *, min_gamma: float = 0.7, max_gamma: float = 1.5
) -> jax.Array:
    """Gamma uniform in [min_gamma, max_gamma) by jaxreg's draw (`random_gamma` draws as dm-pix)."""
    _core.check_image(image)
    _core.check_key(key)
    lo, hi = _core.check_range((min_gamma, max_gamma), "(min_gamma, max_gamma)", positive=True)
    return color.adjust_gamma(image, _rng.uniform(key, (), lo, hi))


for _fn in (_brightness, _contrast, _saturation, _hue, _gamma):
    _fn.__name__ = _fn.__name__.lstrip("_")  # "brightness(strength=0.4)" in descriptions
del _fn


def _digits():
    return policy.compose(
        geometric.rotate_op(max_degrees=10.0),
        geometric.scale_op(min_scale=0.9, max_scale=1.1),
        geometric.translate_op(max_fraction=0.1),
    )


def _cifar():
    return policy.compose(
        geometric.crop_op(size=None, padding=4, pad_mode="reflect"), geometric.flip_op()
    )


def _imagenet():
    return policy.compose(
        geometric.resized_crop_op(size=None),
        geometric.flip_op(),
        functools.partial(color.color_jitter, brightness=0.4, contrast=0.4, saturation=0.4),
    )


def _degrade():
    return policy.one_of(
        functools.partial(corrupt.random_blur, sigma=(0.5, 2.0)),
        functools.partial(corrupt.random_downscale, factors=(2, 3)),
        functools.partial(corrupt.random_jpeg, quality=(10, 50)),
        functools.partial(corrupt.gaussian_noise, sigma=(0.02, 0.1)),
    )


# name -> (builder(**options) -> fn(key, image), one-line description)
_OPS: dict[str, tuple[Callable[..., Any], str]] = {
    "none": (lambda: policy.identity, "identity (no augmentation)"),
    "flip": (geometric.flip_op, "random flips: horizontal=True, vertical=False, p=0.5"),
    "hflip": (
        functools.partial(geometric.flip_op, horizontal=True, vertical=False),
        "horizontal flip with probability p=0.5",
    ),
    "vflip": (
        functools.partial(geometric.flip_op, horizontal=False, vertical=True),
        "vertical flip with probability p=0.5",
    ),
    "rot90": (geometric.rot90_op, "0/90/180/270 degree rotation of a square image"),
    "rotate": (
        functools.partial(geometric.rotate_op, max_degrees=15.0),
        "rotation uniform in ±max_degrees (default 15); fill=0.0, mode='constant'",
    ),
    "scale": (
        functools.partial(geometric.scale_op, min_scale=0.9, max_scale=1.1),
        "zoom about the centre, factor uniform in [min_scale, max_scale] (0.9, 1.1)",
    ),
    "translate": (
        functools.partial(geometric.translate_op, max_fraction=0.1),
        "shift up to max_fraction (0.1) of the size, sub-pixel",
    ),
    "shear": (
        functools.partial(geometric.shear_op, max_degrees=10.0),
        "shear x and y uniform in ±max_degrees (10)",
    ),
    "affine": (
        geometric.affine_op,
        "rotation+zoom+shift+shear: max_degrees, scale=(lo,hi), max_translate, max_shear",
    ),
    "crop": (
        functools.partial(geometric.crop_op, size=None, padding=4),
        "pad (padding=4, pad_mode='reflect') then random crop to size (default: input size)",
    ),
    "center_crop": (geometric.center_crop_op, "central crop to size"),
    "resized_crop": (
        functools.partial(geometric.resized_crop_op, size=None),
        "Inception crop: scale=(0.08,1), ratio=(3/4,4/3), resized to size (default input)",
    ),
    "noise": (
        _op(corrupt.gaussian_noise, sigma=0.05),
        "Gaussian noise, sigma (0.05) or a (lo, hi) range; clip=True",
    ),
    "blur": (_op(corrupt.random_blur), "Gaussian blur, sigma uniform in (0.1, 2.0)"),
    "downscale": (
        _op(corrupt.random_downscale),
        "down-then-up scaling by a factor from factors=(2,3,4); method='bilinear'",
    ),
    "jpeg": (
        _op(corrupt.random_jpeg),
        "JPEG-like block quantisation, quality in (30, 90); chroma_subsampling=True (4:2:0)",
    ),
    "jitter": (
        _op(color.color_jitter, brightness=0.4, contrast=0.4, saturation=0.4),
        "colour jitter: brightness, contrast, saturation (0.4 each), hue (0)",
    ),
    "brightness": (
        _op(_brightness, strength=0.4),
        "enhance_brightness by a factor 1 ± strength (0.4), as color_jitter(brightness=...)",
    ),
    "contrast": (
        _op(_contrast, strength=0.4),
        "enhance_contrast by a factor 1 ± strength (0.4), as color_jitter(contrast=...)",
    ),
    "saturation": (
        _op(_saturation, strength=0.4),
        "enhance_saturation by a factor 1 ± strength (0.4), as color_jitter(saturation=...)",
    ),
    "hue": (
        _op(_hue, max_delta=0.1),
        "adjust_hue by a shift in ±max_delta turns (0.1), as color_jitter(hue=...)",
    ),
    "gamma": (_op(_gamma), "adjust_gamma, gamma uniform in [min_gamma, max_gamma] (0.7, 1.5)"),
    "grayscale": (_op(color.random_grayscale), "grayscale with probability p (0.1)"),
    "invert": (_keyless(color.invert), "invert (1 - x); use p= to randomise"),
    "solarize": (_keyless(color.solarize), "invert pixels above threshold (0.5)"),
    "posterize": (_keyless(color.posterize, bits=4), "keep the top bits (4) per channel"),
    "autocontrast": (_keyless(color.autocontrast), "stretch each channel to [0, 1]"),
    "equalize": (_keyless(color.equalize), "histogram equalisation per channel"),
    "cutout": (
        _cutout,
        "erase one square of side size (default half the image); "
        "fill=0.0|'noise'|'mean'|'batch' (pixels of another example)",
    ),
    "erasing": (
        _erasing,
        "random erasing: p=0.5, scale=(0.02,1/3), ratio=(0.3,3.3), fill=0.0|'noise'|'mean'|'batch'",
    ),
    "corner_patches": (
        _corner,
        "patches at the corners (size default a quarter), p=0.5, "
        "fill='noise'|'mean'|'batch'|number",
    ),
    "rand_augment": (policy.rand_augment, "RandAugment: n=2 ops at magnitude=9 (0..10)"),
    "trivial_augment": (policy.trivial_augment, "TrivialAugment: one op, random magnitude"),
    "augmix": (policy.augmix, "AugMix: severity=3, width=3, depth=-1, alpha=1.0"),
}
_OPS["random_erasing"] = (_OPS["erasing"][0], "alias of erasing")
_OPS["color_jitter"] = (_OPS["jitter"][0], "alias of jitter")

_PRESETS: dict[str, tuple[Callable[[], Any], str]] = {
    "digits": (_digits, "preset: rotate ±10°, scale 0.9-1.1, shift ±10%, no flips (one warp)"),
    "cifar": (_cifar, "preset: pad 4 (reflect) + random crop + horizontal flip (one gather)"),
    "imagenet": (_imagenet, "preset: resized_crop + horizontal flip + jitter 0.4"),
    "degrade": (_degrade, "preset: one of blur, down-up scaling, JPEG (q 10-50), noise"),
}


def _amplitude_mix(key, images, labels, *, alpha: float = 1.0, low_freq: float = 1.0):
    """`jaxreg.style.amplitude_mix` (imported on first use: it lives with the style ops)."""
    from jaxreg.style import amplitude_mix

    return amplitude_mix(key, images, labels, alpha=alpha, low_freq=low_freq)


_MIX: dict[str, tuple[Callable[..., Any], str]] = {
    "mixup": (mix.mixup, "batch mixing: Mixup, alpha, label_smoothing=0, mode='batch'"),
    "cutmix": (mix.cutmix, "batch mixing: CutMix, alpha, correct_lam=True, mode='batch'"),
    "mixup_or_cutmix": (
        mix.mixup_or_cutmix,
        "batch mixing: CutMix with switch_prob (0.5) else Mixup (mixup_alpha=0.8, "
        "cutmix_alpha=1.0)",
    ),
    "amplitude_mix": (
        _amplitude_mix,
        "batch style mixing: Fourier amplitude mix (FACT), alpha=1.0, low_freq=1.0; labels kept",
    ),
}
_MIX_DEFAULTS = {
    "mixup": {"alpha": 0.2},
    "cutmix": {"alpha": 1.0},
    "mixup_or_cutmix": {},
    "amplitude_mix": {},
}


def list_augmentations() -> dict[str, str]:
    """Names usable in specs -> one-line descriptions (ops, presets, then batch mixing)."""
    out = {name: desc for name, (_, desc) in _OPS.items()}
    out.update({name: desc for name, (_, desc) in _PRESETS.items()})
    out.update({name: desc for name, (_, desc) in _MIX.items()})
    return out


def _split_top(spec: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in spec:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "+" and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def parse_spec(spec: str) -> list[tuple[str, dict[str, Any]]]:
    """Parses a spec into [(name, options)] without evaluating anything.

    Raises:
      TypeError: spec is not a string.
      ValueError: malformed spec (positional arguments, non-literal values, empty ops).
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a string; got {type(spec).__name__}.")
    text = spec.strip()
    if text.lower() in ("", "none"):
        return []
    out = []
    for term in _split_top(text):
        if not term:
            raise ValueError(f"empty op in spec {spec!r}.")
        try:
            node = ast.parse(term, mode="eval").body
        except SyntaxError as e:
            raise ValueError(f"cannot parse {term!r} in spec {spec!r}: {e.msg}.") from None
        if isinstance(node, ast.Name):
            out.append((node.id, {}))
            continue
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            raise ValueError(f"each op must be name or name(key=value, ...); got {term!r}.")
        if node.args:
            raise ValueError(f"options must be given as key=value in {term!r}.")
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise ValueError(f"**options are not allowed in {term!r}.")
            try:
                kwargs[kw.arg] = ast.literal_eval(kw.value)
            except ValueError:
                raise ValueError(
                    f"option {kw.arg} in {term!r} must be a literal "
                    f"(number, string, tuple, bool, None)."
                ) from None
        out.append((node.func.id, kwargs))
    return out


def _target(builder: Any) -> Any:
    """The function whose annotated parameters a builder's options go to."""
    fn = getattr(builder, "func", builder)
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a literal option value fits a type annotation (unknown kinds pass)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin is tuple and args and args[-1] is not Ellipsis:
        return (
            isinstance(value, (tuple, list))
            and len(value) == len(args)
            and all(_conforms(v, a) for v, a in zip(value, args))
        )
    if origin in (tuple, list, collections.abc.Sequence):
        item = args[0] if args else Any
        return isinstance(value, (tuple, list)) and all(_conforms(v, item) for v in value)
    return True  # arrays, callables and other kinds cannot come from a literal: not checked


def _describe_hint(hint: Any) -> str:
    if typing.get_origin(hint) is None and hasattr(hint, "__name__"):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("collections.abc.", "")


def _check_option_types(name: str, builder: Any, kwargs: dict[str, Any]) -> None:
    """Raises `TypeError` when an option's value does not fit the op's annotation."""
    target = _target(builder)
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an op without resolvable annotations is not checked
        return
    for key, value in kwargs.items():
        hint = hints.get(key)
        if hint is not None and not _conforms(value, hint):
            raise TypeError(
                f"option {key}={value!r} of {name!r} must be {_describe_hint(hint)}; "
                f"got a {type(value).__name__}."
            )


def _build(name: str, builder: Callable[..., Any], kwargs: dict[str, Any]):
    _check_option_types(name, builder, kwargs)
    try:
        return builder(**kwargs)
    except TypeError as e:
        if "unexpected keyword" in str(e) or "required" in str(e) or "positional" in str(e):
            target = getattr(builder, "signature", None)
            if target is None:
                try:
                    target = inspect.signature(builder)
                except (TypeError, ValueError):
                    target = None
            allowed = (
                []
                if target is None
                else [p for p in target.parameters if p not in ("key", "image", "images", "labels")]
            )
            raise ValueError(
                f"bad options for {name!r}: {e}. Allowed options: {allowed}."
            ) from None
        raise


def _accepts_p(builder) -> bool:
    sig = getattr(builder, "signature", None)
    if sig is None:
        try:
            sig = inspect.signature(builder)
        except (TypeError, ValueError):
            return False
    return "p" in sig.parameters


def from_spec(spec: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Builds a per-example augmentation `fn(key, image) -> image` from a spec string.

    See the module docstring for the grammar; `list_augmentations()` lists the names, options
    and defaults. "" and "none" give `identity`.

    Args:
      spec: e.g. "digits", "cifar", "rotate(max_degrees=10)+noise(sigma=0.1)".

    Returns:
      `fn(key, image) -> image`; lift to batches with `jaxreg.augment.batch(fn)`.

    Raises:
      ValueError: unknown names (the message lists the allowed ones) or bad options.
    """
    fns = []
    for name, kwargs in parse_spec(spec):
        if name in _MIX:
            raise ValueError(f"{name!r} mixes batches; pass it to mix_from_spec, not from_spec.")
        if name in _PRESETS:
            if kwargs:
                raise ValueError(f"preset {name!r} takes no options; got {kwargs}.")
            fns.append(_PRESETS[name][0]())
            continue
        if name not in _OPS:
            allowed = sorted(set(_OPS) | set(_PRESETS))
            raise ValueError(f"unknown augmentation {name!r}; allowed names: {', '.join(allowed)}.")
        builder = _OPS[name][0]
        p = None
        if "p" in kwargs and not _accepts_p(builder):
            p = kwargs.pop("p")
        fn = _build(name, builder, kwargs)
        if p is not None:
            fn = policy.random_apply(fn, p)
        fns.append(fn)
    if not fns:
        return policy.identity
    return policy.compose(*fns)


def _identity_mix(key, images, labels):
    del key
    return images, labels


def mix_from_spec(
    spec: str,
) -> Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """Builds a batch mixing `mix(key, images, soft_labels) -> (images, soft_labels)` from a spec.

    "mixup(alpha=0.2)", "cutmix(alpha=1.0)", "mixup_or_cutmix(switch_prob=0.5, ...)"; options are
    those of `mixup` / `cutmix` / `mixup_or_cutmix`. "" and "none" give an identity mix that
    returns its inputs.

    Raises:
      ValueError: unknown names (listing the allowed ones), several ops, or bad options.
    """
    ops = parse_spec(spec)
    if not ops:
        return _identity_mix
    if len(ops) != 1:
        raise ValueError(f"a mix spec names one op; got {[n for n, _ in ops]}.")
    name, kwargs = ops[0]
    if name not in _MIX:
        raise ValueError(f"unknown mix {name!r}; allowed names: {', '.join(sorted(_MIX))}, none.")
    fn = _MIX[name][0]
    opts = {**_MIX_DEFAULTS[name], **kwargs}
    sig = inspect.signature(fn)
    bad = [k for k in opts if k not in sig.parameters or k in ("key", "images", "labels")]
    if bad:
        allowed = [k for k in sig.parameters if k not in ("key", "images", "labels")]
        raise ValueError(f"bad options {bad} for {name!r}; allowed options: {allowed}.")
    # Check option values now, on a tiny dummy batch, so bad values fail before training starts.
    import jax.numpy as jnp

    k_classes = opts.get("num_classes") or 3
    jax.eval_shape(
        lambda k: fn(k, jnp.zeros((2, 4, 4, 1)), jnp.zeros((2, k_classes)), **opts),
        jax.random.key(0),
    )
    mixfn = functools.partial(fn, **opts)
    return mixfn
