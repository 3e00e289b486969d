"""Transfer learning: load pretrained weights by path, freeze and fine-tune by path groups.

A network trained on a large task is reused on a small one (Yosinski et al., 2014, "How
transferable are features in deep neural networks?"): as a fixed feature extractor (a
linear probe on frozen features), by fine-tuning its last blocks, all of it, or all of it
with learning rates that shrink towards the input (layer-wise decay, Howard & Ruder, 2018,
ULMFiT's discriminative fine-tuning).

- `load(model, source)` copies matching parameter paths (`convs/0/kernel`, ...) from a jaxreg
  run's workdir, a `jaxreg.train.restore` result, an NNX module or a dict into `model`;
  a head of another size stays fresh; other mismatches are an error listing path and shapes.
- Paths group into *blocks*, ordered from input to output, the last being the head: built-in
  models declare theirs (`param_groups()`), a model of your own passes `groups=`.
- `head_features(model, images)` computes what the head sees (the frozen network's features,
  in inference mode) once, and `fit_linear_probe` trains a multinomial logistic regression on
  them: a linear probe costs one forward pass per image instead of one per step, and its
  kernel and bias load straight into the model's head (`load(model, probe.params)`).
- `strategy_tx(base_tx, params, groups, ...)` makes the Optax transform of a strategy:
  "full", "linear_probe" (only the head trains), "last" (the last N blocks, head included)
  and "layerwise" (every block trains, block d from the top at `decay ** d` times the rate).
  Frozen parameters go through `optax.set_to_zero` inside `optax.multi_transform`: no update
  and no optimizer state. `freeze_batch_norm` keeps BatchNorm layers of frozen blocks in
  inference mode while the rest trains.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxreg.optim.decay import path_to_str

__all__ = [
    "STRATEGIES",
    "LinearProbe",
    "fit_linear_probe",
    "freeze_batch_norm",
    "frozen_prefixes",
    "head_features",
    "load",
    "param_groups",
    "strategy_tx",
]

STRATEGIES = ("full", "linear_probe", "last", "layerwise")
# What `load` copies: the parameters and the BatchNorm statistics that go with them.
_LOADED = (nnx.Param, nnx.BatchStat)
Groups = Sequence[tuple[str, Sequence[str]]]


def _is_var(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def _flat(tree: Any) -> dict[str, Any]:
    """`{path string: array}` of a tree of arrays or NNX variables (their values)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_var)[0]
    return {path_to_str(p): (v.get_value() if _is_var(v) else v) for p, v in leaves}


def _source_params(source: Any) -> dict[str, Any]:
    """Flat `{path: array}` parameters of a load source (see `load`)."""
    if isinstance(source, (str, os.PathLike)):
        from jaxreg.train.restoring import read_named

        named, _ = read_named(Path(source))
        weights = named.get("ema", named)
        stats = weights.get("batch_stats", named.get("batch_stats", {}))
        return {**_flat(weights["params"]), **_flat(stats)}
    if isinstance(source, nnx.Module):
        return _flat(nnx.state(source, _LOADED))
    if hasattr(source, "model") and isinstance(source.model, nnx.Module):  # a Restored
        return _flat(nnx.state(source.model, _LOADED))
    if isinstance(source, Mapping):
        if all(isinstance(v, (np.ndarray, jax.Array)) for v in source.values()) and any(
            "/" in k for k in source
        ):
            return dict(source)
        return _flat(source)
    raise TypeError(
        "source must be a workdir path, an nnx.Module, a restore() result or a dict of "
        f"arrays, got {type(source).__name__}"
    )


def _matches(path: str, patterns: Sequence[str] | None) -> bool:
    return any(re.search(p, path) for p in patterns or ())


def param_groups(
    model: nnx.Module, groups: Groups | None = None
) -> list[tuple[str, tuple[str, ...]]]:
    """The model's parameter path groups from input to output (the last is the head).

    Args:
      model: an NNX model.
      groups: `[(name, (path prefix, ...)), ...]` for a model of your own; default: the
        model's `param_groups()` (every built-in model declares one).

    Returns:
      The groups, each a name and the path prefixes of its parameters.

    Raises:
      ValueError: no groups given and the model declares none, a parameter in no group, or a
        prefix that matches no parameter.
    """
    if groups is None:
        declared = getattr(model, "param_groups", None)
        if declared is None:
            raise ValueError(
                f"{type(model).__name__} declares no param_groups(); pass groups=[(name, "
                "(path prefix, ...)), ...] from input to output, the head last"
            )
        groups = declared()
    groups = [(str(n), tuple(p)) for n, p in groups]
    paths = list(_flat(nnx.state(model, nnx.Param)))
    for name, prefixes in groups:
        for prefix in prefixes:
            if not any(_under(p, prefix) for p in paths):
                raise ValueError(f"group {name!r}: prefix {prefix!r} matches no parameter")
    orphans = [p for p in paths if not any(_under(p, x) for _, ps in groups for x in ps)]
    if orphans:
        raise ValueError(f"parameters in no group: {orphans[:5]}")
    return groups


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def load(
    model: nnx.Module,
    source: Any,
    *,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    fresh_head: bool = True,
    new_head: bool = False,
    groups: Groups | None = None,
) -> dict[str, list[str]]:
    """Copies pretrained parameters (and BatchNorm statistics) into `model` in place, by path.

    Args:
      model: the NNX model to fill.
      source: a `train_and_evaluate` workdir (its best checkpoint; the EMA weights when the run
        kept them), a `jaxreg.train.restore` result, an NNX module, or a dict (nested, or flat
        `{"convs/0/kernel": array}`).
      include: regexes (`re.search` on the path); only matching paths load.
      exclude: regexes; matching paths stay as they are.
      fresh_head: parameters of the model's head group (see `param_groups`) whose shape
        differs from the source's stay freshly initialised instead of raising (a new task with
        another number of classes).
      new_head: the head group is never copied, even where its shapes fit: a new task with
        as many classes as the source's (digits 5-9 after 0-4) starts from a fresh head, since
        the source's class k means something else.
      groups: the model's path groups when it declares none (needed for `fresh_head` and
        `new_head`).

    Returns:
      `{"loaded": [...], "fresh": [...], "missing": [...], "unused": [...]}` path lists: copied,
      left fresh (head of another size, or not in the source), missing from the source,
      present in the source but not in the model.

    Raises:
      ValueError: parameters whose shapes differ (outside a fresh head), listed with both
        shapes; nothing matched at all; or `new_head` for a model without groups.
    """
    inc = [include] if isinstance(include, str) else include
    exc = [exclude] if isinstance(exclude, str) else exclude
    src = _source_params(source)
    state = nnx.state(model, _LOADED)
    mine = _flat(state)
    head: tuple[str, ...] = ()
    if new_head:
        head = param_groups(model, groups)[-1][1]  # raises for a model without groups
    elif fresh_head:
        try:
            head = param_groups(model, groups)[-1][1]
        except ValueError:
            head = ()
    report = {"loaded": [], "fresh": [], "missing": [], "unused": sorted(set(src) - set(mine))}
    mismatched, new = [], {}
    for path, value in mine.items():
        in_head = any(_under(path, h) for h in head)
        if (inc and not _matches(path, inc)) or _matches(path, exc) or (new_head and in_head):
            report["fresh"].append(path)
            continue
        if path not in src:
            report["missing"].append(path)
            continue
        theirs = np.asarray(src[path])
        if theirs.shape != tuple(value.shape):
            if in_head:
                report["fresh"].append(path)
                continue
            mismatched.append(f"{path}: model {tuple(value.shape)}, source {theirs.shape}")
            continue
        new[path] = jnp.asarray(theirs, value.dtype)
        report["loaded"].append(path)
    if mismatched:
        raise ValueError(
            "shapes differ between the model and the source: "
            + "; ".join(mismatched)
            + " (exclude these paths, or give the model the source's shapes)"
        )
    if not new:
        raise ValueError("no parameter of the model matched the source (check include/exclude)")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state, is_leaf=_is_var)
    filled = [v.replace(new[path_to_str(p)]) if path_to_str(p) in new else v for p, v in leaves]
    nnx.update(model, jax.tree_util.tree_unflatten(treedef, filled))
    return report


def _labels(params: Any, groups: Groups, label_of_group: Callable[[int, str], str]) -> Any:
    """A tree like `params` holding each parameter's label (from its group's index and name)."""
    flat_groups = [(i, name, p) for i, (name, ps) in enumerate(groups) for p in ps]

    def label(path, _):
        s = path_to_str(path)
        for i, name, prefix in flat_groups:
            if _under(s, prefix):
                return label_of_group(i, name)
        raise ValueError(f"parameter {s} is in no group")

    return jax.tree_util.tree_map_with_path(label, params, is_leaf=_is_var)


def frozen_prefixes(groups: Groups, strategy: str, *, last: int = 1) -> tuple[str, ...]:
    """The path prefixes a strategy freezes (empty for "full" and "layerwise")."""
    n = len(groups)
    if strategy == "linear_probe":
        keep = 1
    elif strategy == "last":
        keep = max(1, min(int(last), n))
    else:
        return ()
    return tuple(p for _, ps in groups[: n - keep] for p in ps)


def strategy_tx(
    base_tx: Callable[[], optax.GradientTransformation],
    params: Any,
    groups: Groups,
    strategy: str,
    *,
    last: int = 1,
    decay: float = 1.0,
    head_warmup_steps: int = 0,
) -> optax.GradientTransformation:
    """The Optax transform of a fine-tuning strategy over a model's path groups.

    Args:
      base_tx: makes the optimizer chain for the trained parameters (called once per label:
        each label gets its own state).
      params: the parameters (an `nnx.State`), for their structure and paths.
      groups: the path groups, input to output, the head last (`param_groups`).
      strategy: "full", "linear_probe", "last" or "layerwise".
      last: for "last": how many groups from the top train (the head counts as one).
      decay: for "layerwise": group d from the top (the head is d = 0) gets its updates
        scaled by `decay ** d` (for Adam-like optimizers: its learning rate).
      head_warmup_steps: for the first this many steps only the head moves; the other trained
        groups wait (their updates are zeroed; their optimizer state still sees gradients).

    Returns:
      An `optax.GradientTransformation`; frozen parameters get no update and no state.

    Raises:
      ValueError: an unknown strategy, or `last`/`decay` out of range.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if int(last) < 1:
        raise ValueError(f"last must be >= 1, got {last}")
    if not 0.0 < float(decay) <= 1.0:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    n = len(groups)
    frozen = set(frozen_prefixes(groups, strategy, last=last))

    def label_of(i: int, name: str) -> str:
        if any(p in frozen for p in groups[i][1]):
            return "frozen"
        depth = n - 1 - i
        head = "head" if depth == 0 else "body"
        return f"{head}{depth}" if strategy == "layerwise" else head

    labels = _labels(params, groups, label_of)
    used = set(jax.tree.leaves(labels))

    def gated(depth: int, is_head: bool) -> optax.GradientTransformation:
        parts = [base_tx()]
        if strategy == "layerwise" and depth > 0:
            parts.append(optax.scale(float(decay) ** depth))
        if head_warmup_steps > 0 and not is_head:
            warm = int(head_warmup_steps)
            parts.append(optax.scale_by_schedule(lambda s: (s >= warm).astype(jnp.float32)))
        return optax.chain(*parts)

    transforms: dict[str, optax.GradientTransformation] = {}
    for lab in used:
        if lab == "frozen":
            transforms[lab] = optax.set_to_zero()
        elif lab.startswith("head"):
            transforms[lab] = gated(0, True)
        else:
            depth = int(lab[4:]) if strategy == "layerwise" else 1
            transforms[lab] = gated(depth, False)
    return optax.multi_transform(transforms, labels)


def freeze_batch_norm(model: nnx.Module, prefixes: Sequence[str]) -> None:
    """Puts the BatchNorm layers under `prefixes` in inference mode (running statistics).

    Call it after `model.train()`: the rest of the model trains, frozen blocks keep the
    statistics they were trained with (their BatchNorm would otherwise renormalise with the
    new task's batches and change what the frozen weights compute).
    """
    if not prefixes:
        return
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.BatchNorm):
            p = "/".join(str(x) for x in path)
            if any(_under(p, prefix) for prefix in prefixes):
                node.use_running_average = True


def describe(report: Mapping[str, list[str]]) -> str:
    """One line for a `load` report: how many parameters were copied, left fresh or missing."""
    return json.dumps({k: len(v) for k, v in report.items()})


# ----------------------------------------------------------------------------- linear probe


class _Identity(nnx.Module):
    """Returns its input: stands in for the head when the features before it are wanted."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return x


def _head_attribute(model: nnx.Module, groups: Groups | None) -> str:
    prefixes = param_groups(model, groups)[-1][1]
    if len(prefixes) != 1 or "/" in prefixes[0] or not hasattr(model, prefixes[0]):
        raise ValueError(
            f"the head group must be one attribute of the model (such as 'head'), got {prefixes}"
        )
    return prefixes[0]


def head_features(
    model: nnx.Module, images: Any, *, batch_size: int = 256, groups: Groups | None = None
) -> np.ndarray:
    """What the model's head receives for `images`: the frozen network's features.

    The head (the last group of `param_groups`, one attribute such as `head`) is replaced by
    the identity in a copy of the model, which runs in inference mode (dropout off, BatchNorm
    on its running statistics): `head(head_features(model, x))` equals `model(x)` after
    `model.eval()`. Every batch has `min(batch_size, N)` rows (the last is padded), so one
    program is compiled.

    Args:
      model: an NNX model (not changed).
      images: (N, H, W, C) float32 images, as the model takes them.
      batch_size: images per forward pass (>= 1).
      groups: the model's path groups when it declares none.

    Returns:
      float32 numpy array (N, D): D is the head's input size.

    Raises:
      ValueError: the head group is not a single attribute, or `batch_size` < 1.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    name = _head_attribute(model, groups)
    body = nnx.clone(model)
    setattr(body, name, _Identity())
    body.eval()
    graphdef, state = nnx.split(body)

    @jax.jit
    def forward(state, x):
        return nnx.merge(graphdef, state)(x)

    images = np.asarray(images, np.float32)
    n, out = images.shape[0], []
    bs = min(int(batch_size), max(n, 1))
    for lo in range(0, n, bs):
        chunk = images[lo : lo + bs]
        pad = bs - chunk.shape[0]
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
        out.append(np.asarray(forward(state, jnp.asarray(chunk)))[: bs - pad])
    if not out:
        shape = jax.eval_shape(forward, state, jnp.zeros((1, *images.shape[1:]), jnp.float32))
        return np.zeros((0, *shape.shape[1:]), np.float32)
    return np.concatenate(out).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class LinearProbe:
    """A multinomial logistic regression on fixed features (see `fit_linear_probe`).

    Attributes:
      kernel: (D, K) float32, acting on the raw features (the standardisation is folded in).
      bias: (K,) float32.
      l2: the penalty chosen on validation.
      val_accuracy: validation accuracy at that penalty.
      val_loss: validation cross-entropy at that penalty.
      grid: `(l2, val_accuracy, val_loss)` of every penalty tried.
    """

    kernel: np.ndarray
    bias: np.ndarray
    l2: float
    val_accuracy: float
    val_loss: float
    grid: tuple[tuple[float, float, float], ...]

    def logits(self, features: Any) -> np.ndarray:
        """(N, K) logits of (N, D) features."""
        return np.asarray(features, np.float32) @ self.kernel + self.bias

    def params(self, head: str = "head") -> dict[str, np.ndarray]:
        """`{"<head>/kernel", "<head>/bias"}` for `load(model, ...)`: the probe as the model's head."""
        return {f"{head}/kernel": self.kernel, f"{head}/bias": self.bias}

    def evaluate(self, features: Any, labels: Any) -> dict[str, float]:
        """`accuracy`, `loss` (mean cross-entropy) and `ece` on labelled features."""
        from jaxreg import losses

        logits = jnp.asarray(self.logits(features))
        labels = jnp.asarray(np.asarray(labels, np.int32))
        return {
            "accuracy": float(losses.accuracy(logits, labels)),
            "loss": float(jnp.mean(losses.soft_cross_entropy(logits, labels))),
            "ece": float(losses.expected_calibration_error(jax.nn.softmax(logits), labels)),
        }


L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _fit_lbfgs(x, y, l2, *, num_classes: int, steps: int):
    """Weights minimising mean cross-entropy + l2/2 ||W||^2 by `steps` L-BFGS iterations."""
    from jaxreg import losses

    def objective(p):
        logits = x @ p["w"] + p["b"][None, :]
        return jnp.mean(losses.soft_cross_entropy(logits, y)) + 0.5 * l2 * jnp.sum(p["w"] ** 2)

    params = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry, _):
        p, st = carry
        value, grad = value_and_grad(p, state=st)
        updates, st = opt.update(grad, st, p, value=value, grad=grad, value_fn=objective)
        return (optax.apply_updates(p, updates), st), value

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return params


def fit_linear_probe(
    train_features: Any,
    train_labels: Any,
    val_features: Any,
    val_labels: Any,
    num_classes: int,
    *,
    l2: Sequence[float] = L2_GRID,
    steps: int = 200,
) -> LinearProbe:
    """A linear probe: multinomial logistic regression on fixed features, its L2 chosen on val.

    As Kornblith et al. (2019) probe ImageNet features: the features are standardised with the
    training set's per-dimension mean and standard deviation (a constant dimension keeps scale
    1), and for each penalty in `l2` the weights minimising mean cross-entropy + l2/2 ||W||^2
    (the bias is not penalised) are found by full-batch L-BFGS (`optax.lbfgs`, `steps`
    iterations from zero: the problem is convex, no seed is involved). The penalty with the
    best validation accuracy (ties: the lower validation loss) is kept, and the
    standardisation is folded into the returned kernel and bias, which act on raw features as
    the model's head does.

    Args:
      train_features: (N, D) features of the training images (`head_features`).
      train_labels: (N,) int class ids in [0, num_classes).
      val_features: (M, D) features of the validation images.
      val_labels: (M,) int class ids.
      num_classes: K >= 2.
      l2: penalties to try (each > 0).
      steps: L-BFGS iterations per penalty (>= 1).

    Returns:
      A `LinearProbe`.

    Raises:
      ValueError: shapes that do not match, an empty set, `num_classes` < 2, or a penalty or
        `steps` out of range.
    """
    xt, xv = (np.asarray(a, np.float32) for a in (train_features, val_features))
    yt, yv = (np.asarray(a, np.int32) for a in (train_labels, val_labels))
    if xt.ndim != 2 or xv.ndim != 2 or xt.shape[1] != xv.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D, got {xt.shape} and {xv.shape}")
    if yt.shape != (xt.shape[0],) or yv.shape != (xv.shape[0],):
        raise ValueError("labels must be (N,) class ids, one per feature row")
    if not len(yt) or not len(yv):
        raise ValueError("the training and validation features must not be empty")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if max(yt.max(), yv.max()) >= num_classes or min(yt.min(), yv.min()) < 0:
        raise ValueError(f"labels must lie in [0, {num_classes})")
    penalties = [float(p) for p in l2]
    if not penalties or any(not p > 0 for p in penalties):
        raise ValueError(f"l2 must be a non-empty sequence of penalties > 0, got {l2!r}")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    mean, std = xt.mean(0), xt.std(0)
    std = np.where(std > 1e-6 * max(float(std.max()), 1e-30), std, 1.0).astype(np.float32)
    zt = jnp.asarray((xt - mean) / std)
    best, grid = None, []
    for p in penalties:
        fit = _fit_lbfgs(zt, jnp.asarray(yt), p, num_classes=int(num_classes), steps=int(steps))
        kernel = np.asarray(fit["w"], np.float32) / std[:, None]
        bias = np.asarray(fit["b"], np.float32) - mean @ kernel
        probe = LinearProbe(kernel, bias.astype(np.float32), p, 0.0, 0.0, ())
        m = probe.evaluate(xv, yv)
        grid.append((p, m["accuracy"], m["loss"]))
        if best is None or (m["accuracy"], -m["loss"]) > (best[1]["accuracy"], -best[1]["loss"]):
            best = (probe, m)
    probe, m = best
    return dataclasses.replace(
        probe, val_accuracy=m["accuracy"], val_loss=m["loss"], grid=tuple(grid)
    )
