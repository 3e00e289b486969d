"""One of two processes of a `jax.distributed` run, started by tests/train/test_distributed.py.

Usage: python -m tests.train._multiprocess PROCESS_ID PORT WORKDIR OUT_JSON
Each process has 2 forced CPU devices (4 in all) and CPU collectives over gloo.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()

import jax
import numpy as np

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

from tests.train._multidevice import config, digits  # noqa: E402


class _Recorder:
    """A host array that records which rows were read."""

    def __init__(self, array):
        self.array, self.rows = array, []

    def __getitem__(self, idx):
        self.rows.extend(int(i) for i in np.asarray(idx))
        return self.array[idx]


def main():
    pid, port, workdir, out = sys.argv[1:5]
    from jaxreg.train import parallel
    from jaxreg.train.loop import train_and_evaluate

    def cfg(**kw):
        c = config(**kw)
        c.distributed.coordinator = f"localhost:{port}"
        c.distributed.num_processes = 2
        c.distributed.process_id = int(pid)
        return c

    data = digits()
    r = train_and_evaluate(cfg(), os.path.join(workdir, "scan"), data=data)
    host = train_and_evaluate(
        cfg(loop="python", epochs=1), os.path.join(workdir, "host"), data=data
    )
    streamed = train_and_evaluate(
        cfg(loop="stream", epochs=1), os.path.join(workdir, "stream"), data=data
    )
    # what one process reads of a host-fed batch of 32: its 16 rows, the batch is global
    mesh = parallel.make_mesh(0)
    images = _Recorder(np.arange(64, dtype=np.float32).reshape(64, 1) * 10)
    labels = np.arange(64, dtype=np.int32)
    idx = np.arange(32)[::-1] * 2
    x, y = parallel.batch_loader(mesh)(images, labels, idx)
    result = {
        "pid": os.getpid(),
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "devices": r["devices"],
        "history": [{k: v for k, v in h.items() if k != "time_s"} for h in r["history"]],
        "host_history": [{k: v for k, v in h.items() if k != "time_s"} for h in host["history"]],
        "stream_history": [
            {k: v for k, v in h.items() if k != "time_s"} for h in streamed["history"]
        ],
        "test": {k: r[k] for k in ("test_loss", "test_accuracy")},
        "rows_read": images.rows,
        "batch_shape": list(x.shape),
        "local_batch": sorted(int(v) for s in y.addressable_shards for v in np.asarray(s.data)),
    }
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
