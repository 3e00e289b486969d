"""Shared fixtures for the optim tests."""

import pytest
from flax import nnx

from tests.optim.tiny_net import TinyNet


@pytest.fixture(scope="module")
def tiny_net():
    """A TinyNet with fixed weights; tests must not mutate it."""
    return TinyNet(rngs=nnx.Rngs(0))
