"""A tiny real Flax NNX model (Conv, BatchNorm, Linear) for the optim tests."""

import jax.numpy as jnp
from flax import nnx


class TinyNet(nnx.Module):
    """Conv(3->4) -> BatchNorm -> ReLU -> global mean -> Linear(4->2); input (B, H, W, 3)."""

    def __init__(self, *, momentum: float = 0.9, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(4, momentum=momentum, rngs=rngs)
        self.head = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.bn(self.conv(x)))
        return self.head(jnp.mean(h, axis=(1, 2)))
