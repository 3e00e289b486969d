"""Weight penalties as Optax transformations: L1 (subgradient, proximal), L2 (coupled, decoupled), path masks."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

__all__ = [
    "LrCountState",
    "add_l1",
    "add_l2",
    "decay_mask",
    "decoupled_weight_decay",
    "param_paths",
    "path_mask",
    "path_to_str",
    "prox_l1",
]

PyTree = Any
Mask = None | bool | PyTree | Callable[[PyTree], PyTree]
LearningRate = float | Callable[[jax.Array], jax.Array]


# ----------------------------------------------------------------------------------------------
# Paths and masks
# ----------------------------------------------------------------------------------------------


# Flax < 0.11 stores `nnx.VariableState` in a State; later versions store `nnx.Variable` and
# serve `VariableState` as a deprecated alias through module `__getattr__`, hence `vars`.
_VARIABLE_TYPES: tuple[type, ...] = (nnx.Variable,)
_variable_state = vars(nnx).get("VariableState")
if isinstance(_variable_state, type) and _variable_state is not nnx.Variable:
    _VARIABLE_TYPES = (nnx.Variable, _variable_state)


def _is_variable(x: Any) -> bool:
    return isinstance(x, _VARIABLE_TYPES)


def path_to_str(path: Iterable[Any]) -> str:
    """Spells a JAX key path as a `/`-joined string.

    The rule: a dict key (`DictKey`) contributes `str(key)`, a sequence index
    (`SequenceKey`) its index, an attribute (`GetAttrKey`) its name and a flattened
    index (`FlattenedIndexKey`) its number; the parts are joined with `/`. Flax NNX
    variables (`nnx.Param`, `nnx.BatchStat`, ...) are treated as leaves, so the
    `value` attribute inside them never appears. Examples: `"Conv_0/kernel"` (Linen
    dict), `"conv/kernel"` and `"layers/0/kernel"` (`nnx.State`).

    Args:
      path: a key path as returned by `jax.tree_util.tree_flatten_with_path`.

    Returns:
      The path string (empty for the root).
    """
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(str(key.name))
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:  # unknown key type: fall back to its printed form without punctuation
            parts.append(str(key).strip(".[]'\""))
    return "/".join(parts)


def _map_with_path_str(fn: Callable[[str, Any], Any], tree: PyTree) -> PyTree:
    """Maps `fn(path_string, leaf_array)` over the leaves; NNX variables stay wrapped."""

    def visit(path, leaf):
        if _is_variable(leaf):
            out = fn(path_to_str(path), leaf.value)
            return jax.tree.map(lambda _: out, leaf)
        return fn(path_to_str(path), leaf)

    return jax.tree_util.tree_map_with_path(visit, tree, is_leaf=_is_variable)


def param_paths(params: PyTree) -> PyTree:
    """Returns a pytree like `params` whose leaves are their path strings.

    See `path_to_str` for the spelling. Useful to inspect which names a mask's
    regular expressions will see, e.g. `jax.tree.leaves(param_paths(state))`.

    Args:
      params: any parameter pytree (nested dicts, `nnx.State`, lists, ...).

    Returns:
      A pytree of `str` with the structure of `params`.
    """
    return _map_with_path_str(lambda p, _: p, params)


def decay_mask(params: PyTree) -> PyTree:
    """The default weight-decay mask: `True` for conv/dense kernels only.

    A leaf is decayed iff the last part of its path is `kernel` and it has at least two
    dimensions. Biases, BatchNorm/LayerNorm scales and biases, embeddings and everything
    else are left alone (the big_vision / "bag of tricks" convention; He et al., 2019,
    "Bag of Tricks for Image Classification with Convolutional Neural Networks").

    Args:
      params: parameter pytree (or updates with the same structure).

    Returns:
      A bool pytree with the structure of `params`.
    """

    def rule(path: str, leaf: Any) -> bool:
        return path.rsplit("/", 1)[-1] == "kernel" and jnp.ndim(leaf) >= 2

    return _map_with_path_str(rule, params)


def _patterns(value: Any, name: str) -> tuple[re.Pattern, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, re.Pattern)):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(
            f"{name} must be a regex string or a sequence of regex strings, got {value!r}"
        ) from None
    out = []
    for item in items:
        if isinstance(item, re.Pattern):
            out.append(item)
        elif isinstance(item, str):
            try:
                out.append(re.compile(item))
            except re.error as e:
                raise ValueError(
                    f"{name} has an invalid regular expression {item!r}: {e}"
                ) from None
        else:
            raise TypeError(f"{name} must contain regex strings, got {item!r}")
    return tuple(out)


def path_mask(
    params: PyTree,
    *,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
) -> PyTree:
    """Builds a bool mask from parameter path strings and regular expressions.

    A leaf is `True` iff its path (see `path_to_str`, e.g. `"layers/0/conv/kernel"`)
    matches at least one `include` pattern (every leaf when `include` is `None` or
    empty) and no `exclude` pattern. Matching uses `re.search`; anchor with `^`/`$`
    for whole-path matches. For a callable mask usable in `add_l2` and friends, use
    `functools.partial(path_mask, include=..., exclude=...)`.

    Args:
      params: parameter pytree (nested dicts, `nnx.State`, ...).
      include: regex or sequence of regexes selecting leaves.
      exclude: regex or sequence of regexes removing leaves.

    Returns:
      A bool pytree with the structure of `params`.

    Raises:
      TypeError / ValueError: if a pattern is not a string or does not compile.
    """
    inc = _patterns(include, "include")
    exc = _patterns(exclude, "exclude")

    def rule(path: str, _: Any) -> bool:
        selected = not inc or any(p.search(path) for p in inc)
        return bool(selected and not any(p.search(path) for p in exc))

    return _map_with_path_str(rule, params)


# ----------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------


def _check_rate(rate: Any, name: str = "rate") -> float:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f"{name} must be a non-negative float, got {type(rate).__name__} {rate!r}")
    rate = float(rate)
    if not math.isfinite(rate) or rate < 0.0:
        raise ValueError(f"{name} must be a non-negative finite float, got {rate!r}")
    return rate


def _check_learning_rate(learning_rate: Any) -> LearningRate:
    if callable(learning_rate):
        return learning_rate
    return _check_rate(learning_rate, "learning_rate")


def _with_mask(inner: optax.GradientTransformation, mask: Mask) -> optax.GradientTransformation:
    if mask is None:
        return optax.masked(inner, decay_mask)
    if mask is True:
        return inner
    if mask is False:
        return optax.identity()
    return optax.masked(inner, mask)


def _need_params(params: PyTree | None, name: str) -> None:
    if params is None:
        raise ValueError(f"{name} needs the current params: call update(updates, state, params)")


def _tree_map(fn: Callable[..., Any], *trees: PyTree) -> PyTree:
    # MaskedNode (from optax.masked) is an empty pytree node: it is skipped automatically.
    return jax.tree.map(fn, *trees)


# ----------------------------------------------------------------------------------------------
# Transformations
# ----------------------------------------------------------------------------------------------


class LrCountState(NamedTuple):
    """State of a transform with a learning-rate schedule: number of updates so far (int32)."""

    count: jax.Array


def _lr_transform(
    step: Callable[[Any, Any, Any], Any], learning_rate: LearningRate, name: str
) -> optax.GradientTransformation:
    """Builds a transform `u -> step(u, p, lr)` with a constant or scheduled `lr`."""
    if callable(learning_rate):

        def init_fn(params):
            del params
            return LrCountState(count=jnp.zeros([], jnp.int32))

        def update_fn(updates, state, params=None):
            _need_params(params, name)
            lr = learning_rate(state.count)
            new = _tree_map(lambda u, p: step(u, p, lr), updates, params)
            return new, LrCountState(count=optax.safe_int32_increment(state.count))

    else:

        def init_fn(params):
            del params
            return optax.EmptyState()

        def update_fn(updates, state, params=None):
            _need_params(params, name)
            new = _tree_map(lambda u, p: step(u, p, learning_rate), updates, params)
            return new, state

    return optax.GradientTransformation(init_fn, update_fn)


def _gradient_penalty(
    name: str, term: Callable[[Any, Any], Any], mask: Mask
) -> optax.GradientTransformation:
    """Stateless transform adding `term(grad, param)` to every (masked) gradient leaf."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        _need_params(params, name)
        return _tree_map(lambda g, p: g + term(g, p), updates, params), state

    return _with_mask(optax.GradientTransformation(init_fn, update_fn), mask)


def add_l1(rate: float, *, mask: Mask = None) -> optax.GradientTransformation:
    """Adds the L1 subgradient `rate * sign(p)` to the gradient.

    Equivalent to adding `rate * ||p||_1` to the loss (with `sign(0) = 0`). Place it
    *before* the optimizer in an `optax.chain`. The subgradient oscillates around zero
    instead of reaching it; use `prox_l1` for exact zeros.

    Args:
      rate: non-negative L1 coefficient.
      mask: `None` for `decay_mask` (kernels only), `True` for every leaf, a
        bool pytree like the params, or a callable `params -> bool pytree`.

    Returns:
      An `optax.GradientTransformation` (needs `params` in `update`).

    Raises:
      TypeError / ValueError: if `rate` is not a non-negative finite float.
    """
    rate = _check_rate(rate)
    return _gradient_penalty(
        "add_l1", lambda g, p: jnp.asarray(rate, g.dtype) * jnp.sign(p).astype(g.dtype), mask
    )


def prox_l1(
    rate: float, *, learning_rate: LearningRate, mask: Mask = None
) -> optax.GradientTransformation:
    """Proximal L1 step (soft-thresholding) applied after the optimizer's update.

    With `u` the incoming update (already scaled by `-learning_rate`) and
    `z = p + u`, the new parameter is `sign(z) * max(|z| - learning_rate * rate, 0)`
    and the returned update is `new_p - p`. This is ISTA / proximal gradient descent
    (Beck & Teboulle, 2009, "A Fast Iterative Shrinkage-Thresholding Algorithm") and
    produces exact zeros. Place it *last* in an `optax.chain`; `learning_rate` must
    be the same one the optimizer uses.

    Args:
      rate: non-negative L1 coefficient (of `rate * ||p||_1` in the loss).
      learning_rate: float, or an optax schedule `count -> lr` evaluated at the number of
        updates done so far (as `optax.scale_by_schedule` does).
      mask: see `add_l1`.

    Returns:
      An `optax.GradientTransformation` (needs `params` in `update`).

    Raises:
      TypeError / ValueError: if `rate` or `learning_rate` is invalid.
    """
    rate = _check_rate(rate)
    learning_rate = _check_learning_rate(learning_rate)

    def step(u, p, lr):
        z = p + u
        thresh = (jnp.asarray(lr) * rate).astype(z.dtype)
        new_p = jnp.sign(z) * jnp.maximum(jnp.abs(z) - thresh, jnp.zeros((), z.dtype))
        return (new_p - p).astype(u.dtype)

    return _with_mask(_lr_transform(step, learning_rate, "prox_l1"), mask)


def add_l2(rate: float, *, mask: Mask = None) -> optax.GradientTransformation:
    """Coupled L2: adds `rate * p` to the gradient.

    Equivalent to adding `rate / 2 * ||p||^2` to the loss, and identical to
    `optax.add_decayed_weights(rate, mask)` with the default mask resolved. Place it
    *before* an adaptive optimizer to get classic (coupled) L2 regularization; see
    Loshchilov & Hutter, 2019, "Decoupled Weight Decay Regularization" for why that
    differs from `decoupled_weight_decay` under Adam.

    Args:
      rate: non-negative L2 coefficient.
      mask: see `add_l1`.

    Returns:
      An `optax.GradientTransformation` (needs `params` in `update`).

    Raises:
      TypeError / ValueError: if `rate` is not a non-negative finite float.
    """
    rate = _check_rate(rate)
    return _gradient_penalty(
        "add_l2", lambda g, p: jnp.asarray(rate, g.dtype) * p.astype(g.dtype), mask
    )


def decoupled_weight_decay(
    rate: float, *, learning_rate: LearningRate, mask: Mask = None
) -> optax.GradientTransformation:
    """Decoupled (AdamW-style) weight decay applied after the optimizer.

    Subtracts `learning_rate * rate * p` from the incoming update, so
    `optax.chain(optax.adam(lr), decoupled_weight_decay(wd, learning_rate=lr))` equals
    `optax.adamw(lr, weight_decay=wd)` (Loshchilov & Hutter, 2019, "Decoupled Weight
    Decay Regularization"). Place it *last* in the chain.

    Args:
      rate: non-negative decay coefficient (`weight_decay` in `optax.adamw`).
      learning_rate: float or optax schedule `count -> lr` (see `prox_l1`).
      mask: see `add_l1`.

    Returns:
      An `optax.GradientTransformation` (needs `params` in `update`).

    Raises:
      TypeError / ValueError: if `rate` or `learning_rate` is invalid.
    """
    rate = _check_rate(rate)
    learning_rate = _check_learning_rate(learning_rate)

    def step(u, p, lr):
        scale = (jnp.asarray(lr) * rate).astype(u.dtype)
        return u - scale * p.astype(u.dtype)

    return _with_mask(_lr_transform(step, learning_rate, "decoupled_weight_decay"), mask)
