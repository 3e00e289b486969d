"""The functional training loop: state, pure steps, the epoch scan, early stopping, checkpoints."""

from jaxreg.train.config import apply_overrides, default_config, validate_config
from jaxreg.train.early_stopping import EarlyStopping
from jaxreg.train.state import TrainState
from jaxreg.train.step import (
    evaluate,
    make_train_epoch,
    make_train_step,
    predict,
    step_key,
    train_step,
)
from jaxreg.train.workdir import WorkdirBusyError

__all__ = [
    "EarlyStopping",
    "NonFiniteLossError",
    "TrainState",
    "WorkdirBusyError",
    "apply_overrides",
    "default_config",
    "evaluate",
    "make_train_epoch",
    "make_train_step",
    "predict",
    "step_key",
    "train_and_evaluate",
    "train_step",
    "validate_config",
]


def __getattr__(name):  # the loop pulls in orbax; import it on first use
    if name in ("train_and_evaluate", "NonFiniteLossError"):
        from jaxreg.train import loop

        return getattr(loop, name)
    raise AttributeError(name)
