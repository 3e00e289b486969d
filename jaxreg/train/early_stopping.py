"""Immutable early stopping on a validation metric (min or max mode, min_delta, patience, warm-up)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

__all__ = ["EarlyStopping"]

_MODES = ("min", "max")


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Early stopping as an immutable value: `update` returns a new object.

    An epoch *improves* when its metric beats the best so far by more than `min_delta`
    (`metric < best - min_delta` in `"min"` mode, `metric > best + min_delta` in
    `"max"` mode); the first finite metric always improves. A NaN metric never improves.
    Each non-improving epoch at or after `warmup_epochs` adds one to `patience_count`
    (an improvement resets it to 0); `should_stop` becomes `True` once
    `patience_count >= patience` and then stays `True`. During warm-up the best metric
    is still tracked, but the patience counter does not move. Use `has_improved` to decide
    when to save the "best" checkpoint. Patterned on `flax.training.early_stopping`.

    Example::

      es = EarlyStopping(patience=3, mode="max")
      for epoch in range(num_epochs):
          es = es.update(val_accuracy, epoch)
          if es.has_improved:
              save_best(...)
          if es.should_stop:
              break

    Attributes:
      patience: int >= 0, non-improving epochs tolerated before stopping.
      min_delta: float >= 0, the margin an improvement must exceed.
      mode: `"min"` (lower is better, e.g. loss) or `"max"` (e.g. accuracy).
      warmup_epochs: int >= 0, epochs (0-based `epoch < warmup_epochs`) that never count
        towards patience.
      best_metric: best metric so far (`inf` / `-inf` before any update).
      best_epoch: epoch of `best_metric` (-1 before any improvement).
      patience_count: consecutive non-improving epochs after warm-up.
      should_stop: whether training should stop.
      has_improved: whether the last `update` improved the best metric.
      last_epoch: epoch of the last update (-1 before any).
    """

    patience: int
    min_delta: float = 0.0
    mode: str = "min"
    warmup_epochs: int = 0
    best_metric: float | None = None
    best_epoch: int = -1
    patience_count: int = 0
    should_stop: bool = False
    has_improved: bool = False
    last_epoch: int = -1

    def __post_init__(self) -> None:
        if isinstance(self.patience, bool) or not isinstance(self.patience, numbers.Integral):
            raise TypeError(f"patience must be an int >= 0, got {self.patience!r}")
        if self.patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {self.patience!r}")
        if isinstance(self.min_delta, bool) or not isinstance(self.min_delta, numbers.Real):
            raise TypeError(f"min_delta must be a float >= 0, got {self.min_delta!r}")
        if not (math.isfinite(self.min_delta) and self.min_delta >= 0):
            raise ValueError(f"min_delta must be a finite float >= 0, got {self.min_delta!r}")
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {self.mode!r}")
        if isinstance(self.warmup_epochs, bool) or not isinstance(
            self.warmup_epochs, numbers.Integral
        ):
            raise TypeError(f"warmup_epochs must be an int >= 0, got {self.warmup_epochs!r}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an int >= 0, got {self.warmup_epochs!r}")
        if self.best_metric is None:
            object.__setattr__(self, "best_metric", math.inf if self.mode == "min" else -math.inf)

    def _improves(self, metric: float) -> bool:
        if math.isnan(metric):
            return False
        if self.mode == "min":
            return metric < self.best_metric - self.min_delta
        return metric > self.best_metric + self.min_delta

    def update(self, metric: Any, epoch: int | None = None) -> EarlyStopping:
        """Returns the state after observing `metric` at `epoch`.

        Args:
          metric: a Python or NumPy/JAX scalar (converted with `float`; this syncs with
            the device, so call it between epochs).
          epoch: 0-based epoch number; `None` means `last_epoch + 1`.

        Returns:
          A new `EarlyStopping`; `self` is unchanged.

        Raises:
          TypeError: if `metric` is not a scalar or `epoch` not an int.
        """
        try:
            value = float(metric)
        except (TypeError, ValueError):
            raise TypeError(f"metric must be a real scalar, got {metric!r}") from None
        if epoch is None:
            epoch = self.last_epoch + 1
        elif isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral):
            raise TypeError(f"epoch must be an int or None, got {epoch!r}")
        epoch = int(epoch)

        if self._improves(value):
            return dataclasses.replace(
                self,
                best_metric=value,
                best_epoch=epoch,
                patience_count=0,
                has_improved=True,
                last_epoch=epoch,
            )
        count = self.patience_count + (0 if epoch < self.warmup_epochs else 1)
        return dataclasses.replace(
            self,
            patience_count=count,
            should_stop=self.should_stop
            or (count >= self.patience and epoch >= self.warmup_epochs),
            has_improved=False,
            last_epoch=epoch,
        )

    def reset(self) -> EarlyStopping:
        """Returns a fresh object with the same settings and no history."""
        return EarlyStopping(
            patience=self.patience,
            min_delta=self.min_delta,
            mode=self.mode,
            warmup_epochs=self.warmup_epochs,
        )
