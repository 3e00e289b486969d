"""TrainState: the whole training state as one pytree (graphdef, params, BN stats, optimizer, EMA, key)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from jaxreg.optim.ema import Ema, EmaState


@struct.dataclass
class TrainState:
    """Immutable training state; every array field is a pytree leaf, the rest is static.

    Attributes:
      graphdef: static structure of the NNX model (`nnx.split`), merged back per step.
      tx: the Optax transformation (static).
      ema_fn: the EMA `(init, update)` pair, or `None` (static).
      params: `nnx.State` of `nnx.Param` leaves (float32).
      batch_stats: `nnx.State` of `nnx.BatchStat` leaves (empty without BatchNorm).
      opt_state: the Optax state.
      ema: `EmaState` or `None`.
      step: int32 scalar, optimizer steps taken.
      key: typed PRNG key of the run; per-step keys are `fold_in(key, step)`.
    """

    graphdef: nnx.GraphDef = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    ema_fn: Ema | None = struct.field(pytree_node=False)
    params: Any
    batch_stats: Any
    opt_state: Any
    ema: EmaState | None
    step: jax.Array
    key: jax.Array

    @classmethod
    def create(
        cls,
        model: nnx.Module,
        tx: optax.GradientTransformation,
        *,
        key: jax.Array,
        ema_fn: Ema | None = None,
    ) -> TrainState:
        """Splits `model` once into graphdef + pytrees and initialises optimizer and EMA.

        Args:
          model: an NNX module whose state is only `Param` and `BatchStat` variables.
          tx: Optax transformation.
          key: typed PRNG key (`jax.random.key`) of the run.
          ema_fn: optional `jaxreg.optim.ema(...)`.
        """
        graphdef, params, batch_stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
        if jax.tree.leaves(rest):
            raise ValueError(
                "the model holds state other than Param/BatchStat (e.g. nnx.Rngs); "
                "pass PRNG keys at call time instead"
            )
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 counts with floats
            opt_state = tx.init(params)
        has_bs = bool(jax.tree.leaves(batch_stats))
        ema = None
        if ema_fn is not None:
            ema = ema_fn.init(params, batch_stats if has_bs else None)
        return cls(
            graphdef=graphdef,
            tx=tx,
            ema_fn=ema_fn,
            params=params,
            batch_stats=batch_stats,
            opt_state=opt_state,
            ema=ema,
            step=jnp.zeros((), jnp.int32),
            key=key,
        )

    def eval_variables(self, *, use_ema: bool = False) -> tuple[Any, Any]:
        """`(params, batch_stats)` to evaluate with: the EMA ones when `use_ema`."""
        if use_ema:
            if self.ema is None:
                raise ValueError("use_ema=True but the state has no EMA (set ema_decay > 0)")
            bs = (
                self.ema.ema_batch_stats
                if self.ema.ema_batch_stats is not None
                else self.batch_stats
            )
            return self.ema.ema_params, bs
        return self.params, self.batch_stats

    def model(self, *, use_ema: bool = False) -> nnx.Module:
        """A fresh NNX module holding a copy of the (EMA) weights, e.g. for export."""
        params, bs = self.eval_variables(use_ema=use_ema)
        return nnx.merge(self.graphdef, params, bs)
