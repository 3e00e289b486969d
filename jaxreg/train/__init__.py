"""The training loop: tasks, state, pure steps, the scan epoch, checkpoints, restore.

`train_and_evaluate(config, workdir, model=..., task=...)` trains any Flax NNX model on a task
(`Classification`, `Reconstruction`, or your own object with the same four members; see
`jaxreg.train.tasks`); `restore(workdir)` gives the trained model back. The pieces underneath
(`TrainState`, `train_step`, `make_train_epoch`, `evaluate`) are pure functions you can call
from your own loop. Names that pull in Orbax load on first use.
"""

import importlib

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
from jaxreg.train.tasks import Classification, Reconstruction, Task
from jaxreg.train.workdir import WorkdirBusyError

# name -> module, imported on first use (Orbax is slow to import)
_LAZY = {
    "train_and_evaluate": "jaxreg.train.loop",
    "NonFiniteLossError": "jaxreg.train.loop",
    "restore": "jaxreg.train.restoring",
    "Restored": "jaxreg.train.restoring",
    "Checkpointer": "jaxreg.train.checkpoint",
    "CheckpointError": "jaxreg.train.checkpoint",
}

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "Classification",
    "EarlyStopping",
    "NonFiniteLossError",
    "Reconstruction",
    "Restored",
    "Task",
    "TrainState",
    "WorkdirBusyError",
    "apply_overrides",
    "default_config",
    "evaluate",
    "make_train_epoch",
    "make_train_step",
    "predict",
    "restore",
    "step_key",
    "train_and_evaluate",
    "train_step",
    "validate_config",
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jaxreg.train' has no attribute {name!r}")
