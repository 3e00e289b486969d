"""The functional training loop: state, pure steps, the epoch scan, early stopping, checkpoints."""

from jaxreg.train.config import apply_overrides, default_config
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

__all__ = [
    "EarlyStopping",
    "TrainState",
    "apply_overrides",
    "default_config",
    "evaluate",
    "make_train_epoch",
    "make_train_step",
    "predict",
    "step_key",
    "train_and_evaluate",
    "train_step",
]


def __getattr__(name):  # train_and_evaluate pulls in orbax; import it on first use
    if name == "train_and_evaluate":
        from jaxreg.train.loop import train_and_evaluate

        return train_and_evaluate
    raise AttributeError(name)
