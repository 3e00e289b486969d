"""Builds the Optax chain of a training config: clip -> L1/L2 -> optimizer -> decoupled decay -> prox."""

from __future__ import annotations

from typing import Any

import optax

from jaxreg.optim import decay as decay_lib

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")
DECAY_MASKS = ("kernels", "all")


def learning_rate_schedule(
    *, learning_rate: float, schedule: str, total_steps: int, warmup_steps: int = 0
) -> optax.Schedule:
    """The learning rate as a function of the step.

    Args:
      learning_rate: peak learning rate (> 0).
      schedule: "constant", "cosine" (to 0 at `total_steps`) or "step" (x0.1 at 50 % and 75 %).
      total_steps: total optimizer steps (>= 1).
      warmup_steps: linear warm-up from 0 over this many steps (>= 0).

    Returns:
      An `optax.Schedule` mapping an int step to a float32 learning rate.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if total_steps < 1 or warmup_steps < 0:
        raise ValueError(
            f"need total_steps >= 1 and warmup_steps >= 0, got {total_steps}, {warmup_steps}"
        )
    lr = float(learning_rate)
    decay_steps = max(total_steps - warmup_steps, 1)
    if schedule == "constant":
        main = optax.constant_schedule(lr)
    elif schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps)
    else:
        main = optax.piecewise_constant_schedule(
            lr, {int(decay_steps * 0.5): 0.1, int(decay_steps * 0.75): 0.1}
        )
    if warmup_steps == 0:
        return main
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup_steps), main], [warmup_steps]
    )


def _mask(name: str) -> Any:
    if name == "kernels":
        return None  # jaxreg.optim.decay_mask: conv/dense kernels only
    if name == "all":
        return True
    raise ValueError(f"decay_mask must be one of {DECAY_MASKS}, got {name!r}")


def build_optimizer(
    config: Any, *, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Optax chain from a training config (see `jaxreg.train.default_config`).

    Order: `clip_by_global_norm` (if `grad_clip > 0`) -> `add_l1` (`l1`) -> `add_l2`
    (`l2`, coupled) -> optimizer with the schedule -> `decoupled_weight_decay`
    (`weight_decay`) -> `prox_l1` (`l1_prox`). Decay masks follow `decay_mask`.

    Returns:
      `(tx, schedule)`.
    """
    opt = config.optimizer
    if opt not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {opt!r}")
    steps_warm = round(config.warmup_epochs * total_steps / max(config.epochs, 1))
    sched = learning_rate_schedule(
        learning_rate=config.learning_rate,
        schedule=config.schedule,
        total_steps=total_steps,
        warmup_steps=steps_warm,
    )
    mask = _mask(config.decay_mask)
    parts = []
    if config.grad_clip and config.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(float(config.grad_clip)))
    if config.l1 > 0:
        parts.append(decay_lib.add_l1(float(config.l1), mask=mask))
    if config.l2 > 0:
        parts.append(decay_lib.add_l2(float(config.l2), mask=mask))
    if opt == "sgd":
        parts.append(optax.sgd(sched))
    elif opt in ("momentum", "nesterov"):
        parts.append(optax.sgd(sched, momentum=float(config.momentum), nesterov=opt == "nesterov"))
    else:  # adam, adamw: AdamW is Adam + decoupled decay below
        parts.append(optax.adam(sched))
    wd = float(config.weight_decay)
    if opt == "adamw" and wd == 0.0:
        wd = 1e-4
    if wd > 0:
        parts.append(decay_lib.decoupled_weight_decay(wd, learning_rate=sched, mask=mask))
    if config.l1_prox > 0:
        parts.append(decay_lib.prox_l1(float(config.l1_prox), learning_rate=sched, mask=mask))
    return optax.chain(*parts), sched
