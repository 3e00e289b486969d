"""Optax gradient transformations for regularization: L1/L2 decay with path masks, parameter EMA."""

from jaxreg.optim.decay import (
    LrCountState,
    add_l1,
    add_l2,
    decay_mask,
    decoupled_weight_decay,
    param_paths,
    path_mask,
    path_to_str,
    prox_l1,
)
from jaxreg.optim.ema import (
    Ema,
    EmaState,
    ParamEmaState,
    ema,
    ema_decay,
    ema_params,
    param_ema,
    recompute_batch_stats,
)

__all__ = [
    "Ema",
    "EmaState",
    "LrCountState",
    "ParamEmaState",
    "add_l1",
    "add_l2",
    "decay_mask",
    "decoupled_weight_decay",
    "ema",
    "ema_decay",
    "ema_params",
    "param_ema",
    "param_paths",
    "path_mask",
    "path_to_str",
    "prox_l1",
    "recompute_batch_stats",
]
