"""Data parallel training over a `jax.sharding.Mesh`: one code path on 1 device or many, 1 host or many.

The mesh has one axis, `"data"`, over `config.devices` devices (0: every device JAX sees, i.e.
all local devices on one host, all devices of all processes after `jax.distributed`). The
training state is replicated on every device; each batch is sharded along `"data"` (B / n
examples per device). Under `jax.jit`, XLA's SPMD partitioner runs the step on every device on
its slice of the batch and all-reduces whatever needs the whole batch:

- the gradient: the loss is the mean over the global batch, so its gradient is the mean of the
  per-device gradients (an all-reduce), and the replicated optimizer update stays replicated;
- BatchNorm: the batch mean and variance are reductions over the global batch axis, so they
  are all-reduced too: BatchNorm is synchronised across devices (SyncBN) with no code of its
  own, and its running statistics are the same on every device;
- augmentation keys: the task splits the step key into B per-example keys (`jax.random.split`,
  threefry partitionable) in the global program, so example i gets the same key on 1 device or
  n, and the examples of different devices get different keys.

Data. In-memory data (the `lax.scan` epoch) is replicated on every device (it is small, that is
why it is in memory); each step gathers its batch with the batch's indices sharded along
`"data"`, so each device gathers only its own examples. Host-fed batches (`loop="python"`):
every process computes the same permutation and loads only its slice of each batch
(`jax.make_array_from_process_local_data`).

What XLA cannot partition: the native CPU warp is a custom call; under a sharded program its
CPU lowering rule takes the XLA form instead (`jaxreg._cpu.warp`), vmapped per example so that
its gather has the batch as a batching dimension: each device warps its own examples, and the
batch is never all-gathered.

Several hosts: `initialize` wires `jax.distributed`; only process 0 writes the workdir's files
and holds its lock (`is_main_process`), while every process takes part in Orbax's checkpoint
saves (Orbax writes each array once). Recipes: README, "Many devices and hosts".
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "DATA",
    "batch_sharding",
    "check_batch_size",
    "describe",
    "initialize",
    "is_main_process",
    "local_copy",
    "local_rows",
    "main_process_lock",
    "make_mesh",
    "num_devices",
    "on_mesh",
    "replicate",
    "replicated",
]

DATA = "data"  # the mesh axis the batch is split along


def initialize(
    coordinator: str = "",
    *,
    num_processes: int = 0,
    process_id: int = -1,
) -> bool:
    """Starts `jax.distributed` once per process, before JAX touches a device.

    Args:
      coordinator: "" (single process, unless `JAX_COORDINATOR_ADDRESS` is set), "auto"
        (`jax.distributed.initialize()` detects the cluster: Cloud TPU slices, SLURM, Open
        MPI, Kubernetes), or "host:port" of process 0's coordinator service (process 0 starts
        it there; the others connect to it).
      num_processes: with an address, how many processes take part (0: `JAX_NUM_PROCESSES`).
      process_id: with an address, this process's index (-1: `JAX_PROCESS_ID`).

    With an address and neither count nor index (not in the config, not in the
    environment), JAX's cluster detection fills them in.

    Returns:
      Whether this call initialised the distributed system (False when there was nothing to
      do or it was already initialised).

    Raises:
      ValueError: an address with only one of the process count and index, or an index out
        of range.
      RuntimeError: JAX already ran computations in this process (from `jax.distributed`).
    """
    if not isinstance(coordinator, str):
        raise TypeError(f"config key 'distributed.coordinator' must be a str, got {coordinator!r}")
    address = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    if not address or _distributed_ready():
        return False
    if address == "auto":
        jax.distributed.initialize()
        return True
    n = int(num_processes or os.environ.get("JAX_NUM_PROCESSES", 0))
    pid = int(process_id if process_id >= 0 else os.environ.get("JAX_PROCESS_ID", -1))
    if n == 0 and pid < 0:  # the cluster environment says (SLURM, Open MPI, ...)
        jax.distributed.initialize(coordinator_address=address)
        return True
    if n < 1 or not 0 <= pid < n:
        raise ValueError(
            f"distributed coordinator {address!r} needs num_processes >= 1 and "
            "0 <= process_id < num_processes (config keys distributed.num_processes and "
            "distributed.process_id, or JAX_NUM_PROCESSES and JAX_PROCESS_ID), got "
            f"num_processes={n}, process_id={pid}"
        )
    jax.distributed.initialize(coordinator_address=address, num_processes=n, process_id=pid)
    return True


def _distributed_ready() -> bool:
    try:
        from jax._src import distributed as _dist  # the one public-less check of JAX's state

        return _dist.global_state.client is not None
    except (ImportError, AttributeError):  # pragma: no cover - other JAX versions
        return jax.process_count() > 1


def is_main_process() -> bool:
    """True in process 0: the one process that writes the workdir's files and holds its lock."""
    return jax.process_index() == 0


def num_devices(requested: int) -> int:
    """How many devices the mesh spans: `requested`, or every device when it is 0.

    Raises:
      ValueError: `requested` is negative, more than the devices there are, or (with several
        processes) not all of them.
    """
    have = jax.device_count()
    if isinstance(requested, bool) or not isinstance(requested, (int, np.integer)):
        raise TypeError(f"config key 'devices' must be an int (0: all), got {requested!r}")
    n = int(requested) or have
    if n < 0 or n > have:
        raise ValueError(
            f"config key 'devices' must be between 0 (all) and the {have} devices "
            f"({jax.default_backend()}) JAX sees, got {requested}"
        )
    if jax.process_count() > 1 and n != have:
        raise ValueError(
            f"config key 'devices' must be 0 (all {have} devices) with {jax.process_count()} "
            f"processes, got {requested}"
        )
    return n


def check_batch_size(batch_size: int, devices: int) -> None:
    """Raises a `ValueError` unless `batch_size` splits evenly over `devices` devices."""
    n = num_devices(devices)
    if int(batch_size) % n:
        lo, hi = (int(batch_size) // n) * n, (int(batch_size) // n + 1) * n
        raise ValueError(
            f"config key 'batch_size' ({batch_size}) must be a multiple of the number of "
            f"devices ({n}, config key 'devices'): each device gets batch_size / devices "
            f"examples. Use batch_size {hi}"
            + (f" or {lo}" if lo else "")
            + f", or devices that divide {batch_size}"
        )


def make_mesh(devices: int = 0) -> Mesh:
    """A one-axis mesh (`"data"`) over the first `num_devices(devices)` devices."""
    n = num_devices(devices)
    return Mesh(np.asarray(jax.devices()[:n]), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis split along `"data"`."""
    return NamedSharding(mesh, P(DATA))


def describe(mesh: Mesh, batch_size: int) -> dict[str, Any]:
    """What the run records about its devices (results.json, the log line)."""
    n = int(mesh.devices.size)
    return {
        "devices": n,
        "processes": jax.process_count(),
        "platform": mesh.devices.flat[0].platform,
        "per_device_batch": int(batch_size) // n,
    }


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _put_one(x: Any, sharding: NamedSharding) -> Any:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        return x
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    if _is_key(x):
        impl = jax.random.key_impl(x)
        return jax.random.wrap_key_data(_put_one(jax.random.key_data(x), sharding), impl=impl)
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    # Several processes: every process holds the same value (a replicated global array).
    return jax.make_array_from_process_local_data(sharding, np.asarray(x), x.shape)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """`tree`'s arrays replicated on every device of `mesh` (leaves already there are kept)."""
    return jax.tree.map(lambda x: _put_one(x, replicated(mesh)), tree)


def local_copy(tree: Any) -> Any:
    """Replicated arrays as single-device arrays on this process's first device of theirs.

    For host-side work that runs the same on every process (evaluation, BatchNorm statistic
    re-estimation): it needs no communication and takes host-local inputs.
    """

    def one(x):
        if not isinstance(x, jax.Array) or len(x.sharding.device_set) == 1:
            return x
        if not x.is_fully_replicated:
            raise ValueError(f"local_copy needs replicated arrays, got one sharded {x.sharding}")
        return x.addressable_shards[0].data

    return jax.tree.map(one, tree)


def local_rows(sharding: NamedSharding, batch: int) -> tuple[int, int]:
    """The rows of a (batch, ...) array this process's devices hold under `sharding`."""
    spans = sharding.addressable_devices_indices_map((batch,)).values()
    starts = [s[0].start or 0 for s in spans]
    stops = [batch if s[0].stop is None else s[0].stop for s in spans]
    return min(starts), max(stops)


def batch_loader(mesh: Mesh) -> Callable:
    """`load(images, labels, idx) -> (images, labels)`: a global batch of host data, sharded.

    `idx` (B,) are the batch's example indices, the same on every process; each process reads
    only the rows its devices hold (`images[idx[lo:hi]]`) and the batch is assembled with
    `jax.make_array_from_process_local_data`.
    """
    sharding = batch_sharding(mesh)

    def load(images, labels, idx):
        idx = np.asarray(idx)
        lo, hi = local_rows(sharding, idx.shape[0])
        part = idx[lo:hi]
        x, y = np.asarray(images[part]), np.asarray(labels[part])
        return (
            jax.make_array_from_process_local_data(sharding, x, (idx.shape[0], *x.shape[1:])),
            jax.make_array_from_process_local_data(sharding, y, (idx.shape[0], *y.shape[1:])),
        )

    return load


def on_mesh(epoch_fn: Callable, mesh: Mesh) -> Callable:
    """`epoch_fn` whose state argument is first replicated on `mesh` (a no-op once it is).

    A state restored from a checkpoint, or refreshed on one device between epochs, goes back
    onto every device before the epoch runs.
    """

    def run(state, *args, **kwargs):
        return epoch_fn(replicate(state, mesh), *args, **kwargs)

    return run


@contextlib.contextmanager
def main_process_lock(workdir: str | os.PathLike, lock: Callable) -> Iterator[Path]:
    """`lock(workdir)` held by process 0 only; every process leaves once process 0 holds it.

    The other processes write nothing but their part of Orbax's checkpoints, so they need
    the folder to exist (process 0 creates it) and no lock of their own.
    """
    from jax.experimental import multihost_utils

    if is_main_process():
        with lock(workdir) as path:
            multihost_utils.sync_global_devices("jaxreg: workdir locked by process 0")
            yield path
    else:
        multihost_utils.sync_global_devices("jaxreg: workdir locked by process 0")
        yield Path(workdir).absolute()
