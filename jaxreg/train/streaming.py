"""The training epoch over a streamed data set: grain reads batches, the jitted step trains.

`make_stream_epoch` gives the same `epoch(state, images, labels, epoch, weights)` as
`jaxreg.train.step.make_train_epoch` (the `images`/`labels` arguments are ignored: the data
come from the source), with the same permutation and step keys, so a streamed run computes
the numbers of the in-memory run. Each process reads its part of each global batch
(`jaxreg.data.stream.EpochStream`), which becomes one global array sharded over the mesh;
augmentation runs on the devices inside the jitted step. Checkpoints are taken at epoch ends
(see `jaxreg.data.stream` for why that makes resume exact).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxreg.data.stream import EpochStream
from jaxreg.train import parallel
from jaxreg.train import step as step_lib

__all__ = ["make_stream_epoch"]


def make_stream_epoch(
    *,
    source: Any,
    batch_size: int,
    task: Any,
    mesh: Mesh,
    ema: step_lib.EmaStats | None = None,
    read_threads: int = 8,
    prefetch: int = 2,
) -> Callable:
    """`epoch(state, images, labels, epoch, weights) -> (state, step_metrics)` over `source`.

    Args:
      source: `len(source)`, `source[i] -> (image, label)` (`jaxreg.data.stream`).
      batch_size: the global batch; a multiple of the mesh's device count.
      task: a `jaxreg.train.tasks.Task`.
      mesh: the data parallel mesh (`jaxreg.train.parallel.make_mesh`).
      ema: as for `make_train_epoch`.
      read_threads: grain's reading threads per process.
      prefetch: batches read ahead per process.
    """
    step = step_lib.make_train_step(task=task, ema=ema)
    sharding = parallel.batch_sharding(mesh)
    columns = parallel.local_rows(sharding, batch_size)
    n = len(source)
    steps = n // batch_size
    if steps < 1:
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({n})")

    def epoch_fn(state, images=None, labels=None, epoch=0, weights=None, synthetic=None):
        del images, labels, synthetic  # the data come from the source (no pool: see loop)
        perm = step_lib.epoch_permutation(state.key, epoch, n, steps, batch_size, weights)
        stream = EpochStream(
            source,
            np.asarray(perm),
            columns=columns,
            read_threads=read_threads,
            prefetch=prefetch,
        )
        metrics = []
        for x, y in stream:
            gx = jax.make_array_from_process_local_data(sharding, x, (batch_size, *x.shape[1:]))
            gy = jax.make_array_from_process_local_data(sharding, y, (batch_size,))
            state, m = step(state, gx, gy)
            metrics.append(m)
        return state, jax.tree.map(lambda *xs: jnp.stack(xs), *metrics)

    return epoch_fn
