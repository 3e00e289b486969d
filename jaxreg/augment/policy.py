"""Composition and policies: compose, random_apply, one_of, batch, RandAugment, TrivialAugment, AugMix.

All combinators return per-example functions `fn(key, image) -> image`; `batch(fn)` lifts one to
`batched(key, images)` with one key per example, as `jax.vmap(fn)` on split keys. Geometric ops
that meet in `compose` (and geometric ops wrapped by `random_apply` / `one_of`) are merged into
a single affine map, so the chain resamples the image once.

Under `jax.vmap` every stage runs its batched form through its own batching rule (see
`_batching`): a merged geometric run resamples the batch in one gather, each stage is fenced on
the CPU, and foreign stages get a fence rule too, so `jax.vmap(compose(...))` is the program of
`batch(compose(...))`. `random_apply` and `one_of` of non-geometric functions compute each
branch for the batch (by its rule) and select per example; `rand_augment`, `trivial_augment`
and `augmix` carry a rule that runs their vmapped body behind one fence.

Any `fn(key, image) -> image` can be a stage: jaxreg's ops, dm-pix's (e.g.
`functools.partial(dm_pix.random_brightness, max_delta=0.1)`) and your own. Stages that are not
jaxreg's own ops run under JAX's default promotion rules (`jax.numpy_dtype_promotion("standard")`,
`jax.numpy_rank_promotion("allow")`) even when the caller set stricter ones: dm-pix mixes bool,
int and Python float operands, which `jax_numpy_dtype_promotion="strict"` rejects. jaxreg's ops
run under the caller's rules.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxreg.augment import _batching, _core, _rng, _warp, color, geometric
from jaxreg.augment._warp import GeometricOp

__all__ = [
    "augmix",
    "batch",
    "compose",
    "identity",
    "one_of",
    "rand_augment",
    "random_apply",
    "trivial_augment",
]

Augmentation = Callable[[jax.Array, jax.Array], jax.Array]


def identity(key: jax.Array, image: jax.Array) -> jax.Array:
    """Returns the image unchanged (the augmentation for spec "none")."""
    del key
    _core.check_image(image)
    return image


def _check_fn(fn: Any, name: str = "fn") -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be a callable fn(key, image) -> image; got {fn!r}.")


class _Composed:
    """Stages applied in order, each with its own key; merged geometric runs are one stage."""

    __name__ = "compose"

    def __init__(self, stages: Sequence[Augmentation]):
        self.stages = list(stages)

    def __repr__(self):
        return "compose(" + ", ".join(map(_name, self.stages)) + ")"

    def __call__(self, key: jax.Array, image: jax.Array) -> jax.Array:
        _core.check_key(key)
        _core.check_image(image)
        keys = jax.random.split(key, len(self.stages))
        for i, stage in enumerate(self.stages):
            image = stage(keys[i], image)
        return image


def _own(fn: Any) -> bool:
    """Whether `fn` is one of jaxreg's ops (written for strict promotion rules)."""
    if isinstance(fn, (GeometricOp, _Composed)):
        return True
    while isinstance(fn, functools.partial):
        fn = fn.func
    module = getattr(fn, "__module__", None) or ""
    return module == "jaxreg" or module.startswith("jaxreg.")


def _guarded(fn: Augmentation) -> Augmentation:
    """`fn`, run under JAX's default promotion rules unless it is one of jaxreg's ops."""
    if _own(fn):
        return fn

    def run(key: jax.Array, image: jax.Array) -> jax.Array:
        with _core.default_promotion():
            return fn(key, image)

    def foreign(key: jax.Array, image: jax.Array) -> jax.Array:
        # The batching rule fences the stage on the CPU, as jaxreg's own ops are fenced.
        return _batching.vmappable(run, key, image)

    foreign.__name__ = "foreign"  # short: jit uses it in cache file names
    foreign.description = _name(fn)
    foreign.wrapped = fn
    return foreign


def _name(fn):
    if isinstance(fn, (GeometricOp, _Composed)):
        return repr(fn)
    if hasattr(fn, "description"):
        return fn.description
    if isinstance(fn, functools.partial):
        opts = ", ".join(f"{k}={v!r}" for k, v in fn.keywords.items())
        return f"{getattr(fn.func, '__name__', fn.func)}({opts})"
    return getattr(fn, "__name__", None) or repr(fn)


def compose(*fns: Augmentation) -> Augmentation:
    """Chains per-example augmentations: `compose(f, g)(key, x) == g(k2, f(k1, x))`.

    Consecutive geometric ops (the random geometric functions of `jaxreg.augment`, directly or as
    `functools.partial` with keyword options, or ops built by `from_spec`) are merged into one
    affine map and resampled once; the border rule is that of the first of them that can leave
    the image. dm-pix's ops and your own functions work as stages; they run under JAX's default
    promotion rules (see the module docstring), as they do in `random_apply`, `one_of` and
    `batch`.

    Args:
      *fns: callables `fn(key, image) -> image`.

    Returns:
      A callable `fn(key, image) -> image`.
    """
    for i, fn in enumerate(fns):
        _check_fn(fn, f"fns[{i}]")
    items = []
    for fn in fns:
        items.extend(fn.stages if isinstance(fn, _Composed) else [fn])
    stages: list[Any] = []
    for fn in items:
        g = geometric.as_geometric(fn)
        if g is None:
            stages.append(_guarded(fn))
        elif stages and isinstance(stages[-1], list):
            stages[-1].append(g)
        else:
            stages.append([g])
    stages = [_warp.chain(s) if isinstance(s, list) else s for s in stages]
    if not stages:
        return identity
    if len(stages) == 1 and isinstance(stages[0], GeometricOp):
        return stages[0]
    return _Composed(stages)


def random_apply(fn: Augmentation, p: float) -> Augmentation:
    """Applies `fn` with probability `p`, else returns the image unchanged.

    A geometric `fn` stays geometric (its map is replaced by the identity with probability
    1 - p), so it still merges into one resampling in `compose`. Under `vmap` both outcomes of a
    non-geometric `fn` are computed and selected per example.

    Args:
      fn: `fn(key, image) -> image` keeping the image shape.
      p: probability in [0, 1].

    Returns:
      `fn(key, image) -> image`.
    """
    _check_fn(fn)
    _core.check_prob(p)
    g = geometric.as_geometric(fn)
    if g is not None:

        def sample(key, hw):
            if g.output_hw(hw) != tuple(hw):
                raise ValueError(
                    f"random_apply needs an op that keeps the image size; {g.name} does not."
                )
            k_use, k_op = jax.random.split(key)
            use = _rng.uniform(k_use, ()) < p
            return jnp.where(use, g.matrix(k_op, hw), _warp.identity_matrix())

        return GeometricOp(
            f"random_apply({g.name}, p={p})",
            sample,
            exact=g.exact,
            axis_aligned=g.axis_aligned,
            mode=g.mode,
            fill=g.fill,
            channels=g.channels,
        )

    run = _guarded(fn)

    def applied(key: jax.Array, image: jax.Array) -> jax.Array:
        _core.check_key(key)
        _core.check_image(image)
        k_use, k_op = jax.random.split(key)
        use = _rng.uniform(k_use, ()) < p
        return lax.cond(use, lambda x: run(k_op, x).astype(x.dtype), lambda x: x, image)

    applied.__name__ = "random_apply"  # short: jit uses it in cache file names
    applied.description = f"random_apply({_name(fn)}, p={p})"
    return applied


def _choice(key, probs, n):
    if probs is None:
        return _rng.randint(key, (), 0, n)
    cum = np.cumsum(np.asarray(probs, np.float64))
    cum = (cum / cum[-1]).astype(np.float32)
    return jnp.minimum(jnp.sum(_rng.uniform(key, ()) >= jnp.asarray(cum[:-1])), n - 1).astype(
        jnp.int32
    )


def one_of(*fns: Augmentation, probs: Sequence[float] | None = None) -> Augmentation:
    """Applies exactly one of `fns`, chosen with probabilities `probs` (default uniform).

    All `fns` must return the same shape. When every fn is geometric the choice is made between
    maps and the result is again geometric (one resampling). Under `vmap` every branch of a
    non-geometric choice is computed and selected per example.

    Args:
      *fns: callables `fn(key, image) -> image`.
      probs: non-negative weights, one per fn, not all zero.

    Returns:
      `fn(key, image) -> image`.
    """
    if not fns:
        raise ValueError("one_of needs at least one fn.")
    for i, fn in enumerate(fns):
        _check_fn(fn, f"fns[{i}]")
    if probs is not None:
        probs = [float(v) for v in probs]
        if (
            len(probs) != len(fns)
            or any(v < 0 or not np.isfinite(v) for v in probs)
            or sum(probs) <= 0
        ):
            raise ValueError(
                f"probs must hold {len(fns)} non-negative weights, not all zero; got {probs}."
            )
    n = len(fns)
    geos = [geometric.as_geometric(fn) for fn in fns]
    if all(g is not None for g in geos):

        def sample(key, hw):
            outs = {g.output_hw(hw) for g in geos}
            if len(outs) != 1:
                raise ValueError(f"one_of needs ops with one output size; got {sorted(outs)}.")
            k_pick, k_op = jax.random.split(key)
            ms = jnp.stack([g.matrix(k_op, hw) for g in geos])
            return ms[_choice(k_pick, probs, n)]

        first = next((g for g in geos if g.mode is not None), geos[0])
        return GeometricOp(
            "one_of(" + ", ".join(g.name for g in geos) + ")",
            sample,
            out_hw=geos[0].output_hw,
            exact=all(g.exact for g in geos),
            axis_aligned=all(g.axis_aligned for g in geos),
            mode=first.mode,
            fill=first.fill,
            channels=sorted({c for g in geos for c in g.channels}),
        )

    runs = [_guarded(f) for f in fns]

    def chosen(key: jax.Array, image: jax.Array) -> jax.Array:
        _core.check_key(key)
        _core.check_image(image)
        k_pick, k_op = jax.random.split(key)
        branches = [lambda x, f=f: f(k_op, x).astype(x.dtype) for f in runs]
        return lax.switch(_choice(k_pick, probs, n), branches, image)

    chosen.__name__ = "one_of"
    chosen.description = "one_of(" + ", ".join(map(_name, fns)) + ")"
    return chosen


def batch(fn: Augmentation) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Lifts a per-example augmentation to a batch: `batched(key, images) -> images`.

    `batch(fn)(key, xs)` is `jax.vmap(fn)(jax.random.split(key, B), xs)`: every example gets its
    own key, hence its own random parameters, and the batch runs the program `jax.vmap` gives,
    in which each of jaxreg's ops runs its batched form (see `jaxreg.augment._batching`): a
    geometric stage resamples the whole batch in one gather, and on the CPU each stage of a
    `compose` chain is computed behind a fusion fence (`jaxreg._cpu.fence`), so it is
    materialised once instead of being recomputed in every consumer that reads it. Functions
    that are not jaxreg's ops (dm-pix's, your own) run under JAX's default promotion rules and
    behind a fence of their own.

    Args:
      fn: `fn(key, image) -> image` for one (H, W, C) image.

    Returns:
      `batched(key, images)` for (B, H, W, C) images; works under `jit`, `grad` and `lax.scan`.
    """
    _check_fn(fn)
    run = jax.vmap(_guarded(fn))

    def batched(key: jax.Array, images: jax.Array) -> jax.Array:
        _core.check_key(key)
        b = _core.check_images(images)[0]
        return run(jax.random.split(key, b), images)

    batched.__name__ = "batch"
    batched.description = f"batch({_name(fn)})"
    return batched


# ---------------------------------------------------------------------------------------------
# Policies. Magnitudes run on timm's 0..10 scale; m below is magnitude / 10 in [0, 1] (traced).


def _enhance(adjust):
    return lambda x, m, s: adjust(x, 1.0 + 0.9 * m * s)


_COLOR_OPS: dict[str, Callable[[jax.Array, jax.Array, jax.Array], jax.Array]] = {
    "identity": lambda x, m, s: x,
    "autocontrast": lambda x, m, s: color.autocontrast(x),
    "equalize": lambda x, m, s: color.equalize(x),
    "posterize": lambda x, m, s: color.posterize(x, 8.0 - jnp.round(4.0 * m)),
    "solarize": lambda x, m, s: color.solarize(x, 1.0 - m),
    "color": _enhance(color.enhance_saturation),
    "contrast": _enhance(color.enhance_contrast),
    "brightness": _enhance(color.enhance_brightness),
    "sharpness": _enhance(color.adjust_sharpness),
}

_GEO_OPS: dict[str, Callable[[jax.Array, jax.Array, tuple[int, int]], jax.Array]] = {
    "rotate": lambda m, s, hw: geometric.rotation_matrix(jnp.deg2rad(30.0 * m * s), hw),
    "shear_x": lambda m, s, hw: geometric.shear_matrix(0.3 * m * s, 0.0, hw),
    "shear_y": lambda m, s, hw: geometric.shear_matrix(0.0, 0.3 * m * s, hw),
    "translate_x": lambda m, s, hw: geometric.translate_matrix(0.0, 0.45 * m * s * hw[1]),
    "translate_y": lambda m, s, hw: geometric.translate_matrix(0.45 * m * s * hw[0], 0.0),
}

_RAND_AUGMENT_OPS = (
    "identity",
    "autocontrast",
    "equalize",
    "rotate",
    "solarize",
    "color",
    "posterize",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
_AUGMIX_OPS = (
    "autocontrast",
    "equalize",
    "posterize",
    "rotate",
    "solarize",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)


def _layer(key, image, names, m, fill):
    """Applies one op of `names`, chosen uniformly, at magnitude m in [0, 1] with a random sign."""
    geo = [n for n in names if n in _GEO_OPS]
    col = [n for n in names if n in _COLOR_OPS]
    h, w, _ = image.shape
    u = _rng.uniform(key, (2,))
    idx = jnp.minimum(jnp.floor(u[0] * len(names)), len(names) - 1).astype(jnp.int32)
    sign = jnp.where(u[1] < 0.5, -1.0, 1.0)
    order = list(names)  # idx indexes `names`; map to the geometric / colour position
    is_geo = jnp.asarray([n in _GEO_OPS for n in order])[idx]
    geo_pos = jnp.asarray([geo.index(n) if n in _GEO_OPS else 0 for n in order], jnp.int32)[idx]
    col_pos = jnp.asarray([col.index(n) if n in _COLOR_OPS else 0 for n in order], jnp.int32)[idx]

    def geo_branch(x):
        ms = jnp.stack([_GEO_OPS[n](m, sign, (h, w)) for n in geo])
        return _warp.warp(x, ms[geo_pos], (h, w), fill=fill)

    def col_branch(x):
        fns = [lambda y, n=n: _COLOR_OPS[n](y, m, sign).astype(y.dtype) for n in col]
        return lax.switch(col_pos, fns, x)

    if not geo:
        return col_branch(image)
    if not col:
        return geo_branch(image)
    return lax.cond(is_geo, geo_branch, col_branch, image)


def _check_policy_image(image):
    return _core.check_image(image, channels=(1, 3))


def rand_augment(
    n: int = 2, magnitude: float = 9.0, *, magnitude_std: float = 0.0, fill: float = 0.0
) -> Augmentation:
    """RandAugment (Cubuk et al. 2020): `n` ops drawn uniformly, all at one magnitude.

    Ops: identity, autocontrast, equalize, rotate (30 deg at magnitude 10), solarize, colour,
    posterize, contrast, brightness, sharpness (factors 1 +- 0.9 at 10), shear x/y (0.3),
    translate x/y (0.45 of the size). Magnitude is on timm's 0..10 scale ("rand-m9-n2"); signed
    ops get a random sign. `magnitude_std` > 0 draws the magnitude per op from
    N(magnitude, std^2) clipped to [0, 10] (timm's "mstd").

    Args:
      n: number of ops per image (>= 0).
      magnitude: strength in [0, 10].
      magnitude_std: spread of the magnitude (>= 0).
      fill: value revealed by geometric ops.

    Returns:
      `fn(key, image) -> image` for (H, W, C) images with C in {1, 3}.
    """
    n = _core.check_int(n, "n")
    mag = _core.concrete(magnitude)
    if mag is None or not 0.0 <= mag <= 10.0:
        raise ValueError(f"magnitude must be a number in [0, 10]; got {magnitude!r}.")
    _core.check_positive(magnitude_std, "magnitude_std", allow_zero=True)
    _core.fill_value(fill, 1)

    def layers(key: jax.Array, image: jax.Array) -> jax.Array:
        def body(i, x):
            k = jax.random.fold_in(key, i)
            m = jnp.float32(mag / 10.0)
            if magnitude_std:
                m = jnp.clip(m + magnitude_std / 10.0 * _rng.normal(k, (), stream=2), 0.0, 1.0)
            return _layer(k, x, _RAND_AUGMENT_OPS, m, fill)

        # One compiled layer body, whatever n is.
        return lax.fori_loop(0, n, body, image)

    def fn(key: jax.Array, image: jax.Array) -> jax.Array:
        _core.check_key(key)
        _check_policy_image(image)
        if n == 0:
            return image
        return _batching.vmappable(layers, key, image)

    fn.__name__ = "rand_augment"
    fn.description = f"rand_augment(n={n}, magnitude={magnitude})"
    return fn


def trivial_augment(*, fill: float = 0.0) -> Augmentation:
    """TrivialAugment Wide (Müller & Hutter 2021): one op, magnitude uniform in [0, 10].

    Same op set as `rand_augment`.

    Returns:
      `fn(key, image) -> image` for (H, W, C) images with C in {1, 3}.
    """
    _core.fill_value(fill, 1)

    def fn(key: jax.Array, image: jax.Array) -> jax.Array:
        _core.check_key(key)
        _check_policy_image(image)
        return _batching.vmappable(
            lambda k, x: _layer(k, x, _RAND_AUGMENT_OPS, _rng.uniform(k, (), stream=2), fill),
            key,
            image,
        )

    fn.__name__ = "trivial_augment"
    return fn


def augmix(
    *, severity: int = 3, width: int = 3, depth: int = -1, alpha: float = 1.0, fill: float = 0.0
) -> Augmentation:
    """AugMix (Hendrycks et al. 2020) without the Jensen-Shannon loss term.

    `width` chains of `depth` ops (1-3 at random when depth <= 0) from autocontrast, equalize,
    posterize, rotate, solarize, shear and translate, each at a magnitude uniform in
    [0.1, severity] (of 10); the chains are mixed with Dirichlet(alpha) weights and the result is
    blended with the original by m ~ Beta(alpha, alpha).

    Args:
      severity: 1..10.
      width: number of chains >= 1.
      depth: ops per chain (<= 0: uniform in {1, 2, 3}).
      alpha: Dirichlet / Beta concentration > 0.
      fill: value revealed by geometric ops.

    Returns:
      `fn(key, image) -> image` for (H, W, C) images with C in {1, 3}.
    """
    severity = _core.check_int(severity, "severity", minimum=1)
    if severity > 10:
        raise ValueError(f"severity must lie in [1, 10]; got {severity}.")
    width = _core.check_int(width, "width", minimum=1)
    depth = _core.check_int(depth, "depth", minimum=-(2**31))
    _core.check_positive(alpha, "alpha")
    _core.fill_value(fill, 1)
    max_depth = depth if depth > 0 else 3

    def fn(key: jax.Array, image: jax.Array) -> jax.Array:
        _core.check_key(key)
        _check_policy_image(image)
        return _batching.vmappable(mixed_chains, key, image)

    def mixed_chains(key: jax.Array, image: jax.Array) -> jax.Array:
        k_w, k_m, k_chain = jax.random.split(key, 3)
        ws = _rng.dirichlet(k_w, float(alpha), width)
        mix_m = _rng.beta(k_m, float(alpha), float(alpha))
        depths = (
            jnp.full((width,), depth)
            if depth > 0
            else _rng.randint(k_chain, (width,), 1, 4, stream=1)
        )

        def body(t, carry):  # step t: chain t // max_depth, op t % max_depth (one compiled body)
            x, mixed = carry
            i, j = t // max_depth, t % max_depth
            x = jnp.where(j == 0, image, x)
            k = jax.random.fold_in(k_chain, t)
            m = (0.1 + _rng.uniform(k, (), stream=2) * (severity - 0.1)) / 10.0
            y = _layer(k, x, _AUGMIX_OPS, m, fill)
            x = jnp.where(j < depths[i], y, x)
            w_i = jnp.where(j == max_depth - 1, ws[i], 0.0).astype(image.dtype)
            return x, mixed + w_i * x

        _, mixed = lax.fori_loop(0, width * max_depth, body, (image, jnp.zeros_like(image)))
        mm = mix_m.astype(image.dtype)
        return (1.0 - mm) * image + mm * mixed

    fn.__name__ = "augmix"
    fn.description = f"augmix(severity={severity}, width={width}, depth={depth}, alpha={alpha})"
    return fn
