"""Shared tiny data and configs for training-loop tests (8x8 digits, the tiny model)."""

import numpy as np
import pytest

from jaxreg import data as data_lib
from jaxreg.train.config import default_config


@pytest.fixture(scope="session")
def digits_small():
    """120 training images (12 per class) of sklearn digits, 100 val, 100 test."""
    s = data_lib.load_splits("digits")
    return {
        "train": data_lib.stratified_subset(s["train"], 12, seed=0),
        "val": s["val"].subset(np.arange(100)),
        "test": s["test"].subset(np.arange(100)),
    }


def tiny_config(**overrides):
    c = default_config()
    c.data = "digits"
    c.model = "tiny"
    c.epochs = 3
    c.batch_size = 30
    c.learning_rate = 3e-3
    c.progress = False
    for k, v in overrides.items():
        c[k] = v
    return c
