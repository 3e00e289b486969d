"""TrainState: a Flax NNX model, its optimizer and the run's key as one immutable pytree.

Who owns randomness: the run key (`TrainState.key`). Step `s` uses
`step_key(key, s)`, split into the task's key (augmentation, mixing, corruption) and the
model's key; every RNG stream inside the model (the `nnx.Rngs` of `nnx.Dropout` and the
like) is reseeded from the model's key before the step (`reseed`), so a step's randomness
depends on the run key and the step number only: runs are reproducible, and a resumed run
continues exactly. The model's RNG state is still saved with the state, so a restored model
continues its streams as a stock NNX model would.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from jaxreg.optim.ema import ema_params

__all__ = ["EMA_BATCH_STATS", "TrainState", "reseed", "split_model"]

EMA_BATCH_STATS = ("average", "copy", "recompute")


def split_model(
    model: nnx.Module, train_mode: Callable[[nnx.Module], None] | None = None
) -> tuple[nnx.GraphDef, nnx.GraphDef, Any, Any, Any, Any]:
    """A model's train-mode and eval-mode structure and its four kinds of state.

    Args:
      model: any Flax NNX module. Its `train()` / `eval()` switches (Dropout's
        `deterministic`, BatchNorm's `use_running_average`) are set on a copy; the module
        passed in is not changed.
      train_mode: applied to the copy after `train()` (e.g. to keep the BatchNorm of frozen
        blocks in inference mode, `jaxreg.transfer.freeze_batch_norm`).

    Returns:
      `(train_graphdef, eval_graphdef, params, batch_stats, rngs, other)`: `nnx.Param`
      variables, `nnx.BatchStat` variables, RNG stream state (`nnx.RngState`), and any
      other variables (e.g. a user's counters), each an `nnx.State`.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    model = nnx.clone(model)
    model.train()
    if train_mode is not None:
        train_mode(model)
    train_def = nnx.graphdef(model)
    model.eval()
    eval_def, params, batch_stats, rngs, other = nnx.split(
        model, nnx.Param, nnx.BatchStat, nnx.RngState, ...
    )
    return train_def, eval_def, params, batch_stats, rngs, other


def _path_id(path) -> int:
    return zlib.crc32("/".join(str(p) for p in path).encode()) & 0x7FFFFFFF


def reseed(rngs: Any, key: jax.Array) -> Any:
    """Every RNG stream of a model's state reseeded from `key`, counts reset to zero.

    Args:
      rngs: the `nnx.RngState` part of a model (`split_model`).
      key: a typed PRNG key.

    Returns:
      A state like `rngs`: each stream's key is `fold_in(key, id)`, with `id` a stable hash of
      the stream's path in the model, and each count is 0.
    """

    def one(path, leaf):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.fold_in(key, _path_id(path))
        return jnp.zeros_like(leaf)

    return jax.tree_util.tree_map_with_path(one, rngs)


@struct.dataclass
class TrainState:
    """Immutable training state; every array field is a pytree leaf, the rest is static.

    Attributes:
      graphdef: the model's structure in training mode (static).
      eval_graphdef: the model's structure in evaluation mode (static).
      tx: the Optax transformation (static); may end with `jaxreg.param_ema`.
      params: `nnx.State` of the `nnx.Param` variables.
      batch_stats: `nnx.State` of the `nnx.BatchStat` variables (empty without BatchNorm).
      rngs: `nnx.State` of the model's RNG streams (empty without them).
      other: `nnx.State` of any other variables.
      opt_state: the Optax state.
      ema_batch_stats: BatchNorm statistics for the EMA weights (averaged or copied per step),
        or None.
      step: int32 scalar, optimizer steps taken.
      key: typed PRNG key of the run; step keys are `jaxreg.train.step_key(key, step)`.
    """

    graphdef: nnx.GraphDef = struct.field(pytree_node=False)
    eval_graphdef: nnx.GraphDef = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    params: Any
    batch_stats: Any
    rngs: Any
    other: Any
    opt_state: Any
    ema_batch_stats: Any
    step: jax.Array
    key: jax.Array

    @classmethod
    def create(
        cls,
        model: nnx.Module,
        tx: optax.GradientTransformation,
        *,
        key: jax.Array,
        ema_batch_stats: bool = False,
        train_mode: Callable[[nnx.Module], None] | None = None,
    ) -> TrainState:
        """Splits `model` and initialises the optimizer.

        Args:
          model: any NNX module (left unchanged).
          tx: the Optax transformation of the parameters.
          key: typed PRNG key of the run (`jax.random.key(seed)`).
          ema_batch_stats: keep BatchNorm statistics for the EMA weights (when `tx` holds a
            `param_ema` and the model has BatchNorm).
          train_mode: see `split_model`.
        """
        train_def, eval_def, params, batch_stats, rngs, other = split_model(model, train_mode)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 counts with floats
            opt_state = tx.init(params)
        has_bs = bool(jax.tree.leaves(batch_stats))
        return cls(
            graphdef=train_def,
            eval_graphdef=eval_def,
            tx=tx,
            params=params,
            batch_stats=batch_stats,
            rngs=rngs,
            other=other,
            opt_state=opt_state,
            ema_batch_stats=jax.tree.map(jnp.asarray, batch_stats)
            if ema_batch_stats and has_bs
            else None,
            step=jnp.zeros((), jnp.int32),
            key=key,
        )

    def variables(self, *, use_ema: bool = False) -> tuple[Any, Any]:
        """`(params, batch_stats)` to evaluate with: the EMA ones when `use_ema`."""
        if not use_ema:
            return self.params, self.batch_stats
        params = ema_params(self.opt_state, self.params)
        bs = self.ema_batch_stats if self.ema_batch_stats is not None else self.batch_stats
        return params, bs

    def model(self, *, use_ema: bool = False, train: bool = False) -> nnx.Module:
        """A new NNX module holding a copy of the (EMA) weights, in eval (or train) mode."""
        params, bs = self.variables(use_ema=use_ema)
        graphdef = self.graphdef if train else self.eval_graphdef
        return nnx.merge(graphdef, params, bs, self.rngs, self.other, copy=True)
