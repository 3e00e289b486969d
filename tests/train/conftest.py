"""Shared tiny configs for training-loop tests (8x8 digits, the tiny model; data: tests/conftest.py)."""

from jaxreg.train.config import default_config


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
