"""Images/s of the on-device scan epoch vs a per-batch Python loop calling the same jitted step.

Run: `.venv/bin/python benchmarks/train_loop.py [--batch-size 128] [--repeats 3]`

Both loops train the default CNN (`jaxreg.models.CNN`, BatchNorm on) on the 3,000 mnist5k
training images with Adam, the same `train_step`, the same per-step keys. The Python loop
is the textbook Flax pattern: a jitted step fed one host batch at a time. Each loop runs
with jaxreg's XLA:CPU workarounds on and off (`jaxreg._cpu`, as `JAXREG_CPU_WORKAROUNDS` would
set them, here with `jaxreg._cpu.workarounds`); off a CPU both rows run the same program.
Timings are the best of `--repeats` epochs after the first (compile) epoch; compare the
ratios, not absolute numbers (the machine is shared). "1st epoch s" is compile plus one epoch;
"XLA compile s" is the compile alone (`jitted.lower(...).compile()`, which the first call reuses).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxreg import _cpu, data, models
from jaxreg.train import TrainState, make_train_epoch, make_train_step
from jaxreg.train.step import epoch_permutation


def _state() -> TrainState:
    m = models.create("cnn", num_classes=10, input_shape=(28, 28, 1), batch_norm=True)
    return TrainState.create(m, optax.adam(1e-3), key=jax.random.key(0))


def bench_scan(x, y, batch_size, seam, repeats):
    """Times the on-device `lax.scan` epoch (`make_train_epoch`) on device arrays `x`, `y`.

    Args:
        x: Training images, already on the device.
        y: Integer labels for `x`, on the device.
        batch_size: Examples per step; a trailing partial batch is dropped.
        seam: Trace with jaxreg's XLA:CPU workarounds on (True) or off (False).
        repeats: Timed epochs after the first (compile) epoch; the best one counts.

    Returns:
        `(images per second of the best epoch, seconds for compile plus the first epoch,
        seconds for the XLA compile alone)`.
    """
    epoch = make_train_epoch(batch_size=batch_size, num_classes=10)  # a new jit: a new trace
    st = _state()
    t0 = time.perf_counter()
    with _cpu.workarounds(seam):  # read while the epoch is traced and lowered
        epoch.lower(st, x, y, jnp.int32(0)).compile()  # XLA compile only; reused below
        xla_s = time.perf_counter() - t0
        st, m = epoch(st, x, y, jnp.int32(0))
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    best = float("inf")
    for e in range(1, repeats + 1):
        t0 = time.perf_counter()
        st, m = epoch(st, x, y, jnp.int32(e))
        jax.block_until_ready(m)
        best = min(best, time.perf_counter() - t0)
    n = (x.shape[0] // batch_size) * batch_size
    return n / best, compile_s, xla_s


def bench_python(x_host, y_host, batch_size, seam, repeats):
    """Times a Python loop feeding one host batch at a time to the jitted `train_step`.

    Args:
        x_host: Training images as a host (numpy) array.
        y_host: Integer labels for `x_host`, a host array.
        batch_size: Examples per step; a trailing partial batch is dropped.
        seam: Trace with jaxreg's XLA:CPU workarounds on (True) or off (False).
        repeats: Timed epochs after the first (compile) epoch; the best one counts.

    Returns:
        `(images per second of the best epoch, seconds for compile plus the first epoch,
        seconds for the XLA compile alone)`.
    """
    step = make_train_step(num_classes=10)  # a new jit: a new trace
    st = _state()
    steps = x_host.shape[0] // batch_size

    def one_epoch(st, e):
        perm = np.asarray(
            epoch_permutation(st.key, jnp.int32(e), x_host.shape[0], steps, batch_size)
        )
        for idx in perm:  # host batches, as a typical Flax loop feeds them
            st, m = step(st, x_host[idx], y_host[idx])
        jax.block_until_ready(m)
        return st

    t0 = time.perf_counter()
    with _cpu.workarounds(seam):  # read while the step is traced and lowered
        step.lower(st, x_host[:batch_size], y_host[:batch_size]).compile()
        xla_s = time.perf_counter() - t0
        st = one_epoch(st, 0)
    compile_s = time.perf_counter() - t0
    best = float("inf")
    for e in range(1, repeats + 1):
        t0 = time.perf_counter()
        st = one_epoch(st, e)
        best = min(best, time.perf_counter() - t0)
    return steps * batch_size / best, compile_s, xla_s


def main() -> None:
    """Benchmarks both loops on mnist5k with the XLA:CPU workarounds on and off; prints a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ds = data.load("mnist5k", split="train")
    x_host, y_host = ds.images, ds.labels.astype(np.int32)
    x, y = jnp.asarray(x_host), jnp.asarray(y_host)
    print(
        f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}, "
        f"{x.shape[0]} images, batch {args.batch_size}"
    )
    rows = []
    for seam in (True, False):
        ips, *comp = bench_python(x_host, y_host, args.batch_size, seam, args.repeats)
        rows.append((f"python loop, jitted step (cpu seam {'on' if seam else 'off'})", ips, *comp))
    best_py = max(rows[0][1], rows[1][1])
    for seam in (True, False):
        ips, *comp = bench_scan(x, y, args.batch_size, seam, args.repeats)
        rows.append((f"lax.scan epoch (cpu seam {'on' if seam else 'off'})", ips, *comp))
    print(
        f"{'loop':48s} {'img/s':>9s} {'vs best python':>15s} {'1st epoch s':>12s} {'XLA compile s':>14s}"
    )
    for name, ips, first, xla in rows:
        print(f"{name:48s} {ips:9.0f} {ips / best_py:14.2f}x {first:12.2f} {xla:14.2f}")


if __name__ == "__main__":
    main()
