"""Checks that `batch(compose(...))` and `jax.vmap(compose(...))` on split keys are one program.

    .venv/bin/python benchmarks/same_program.py

Lowers Workload A's augmentation chain (benchmarks/augment.py) both ways, compares the
StableHLO text, then times the two runners in alternating order (a shared machine slows both
alike). Used to read the "jax.vmap(compose) / batch(compose)" ratio of benchmarks/augment.py:
when the programs are identical, a ratio away from 1 is timing noise.
"""

import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import augment as B

x = np.random.default_rng(0).random((512, 32, 32, 3), np.float32)
y = np.eye(10, dtype=np.float32)[np.arange(512) % 10]
ra, rv = B.jaxreg_a(x, y), B.jaxreg_vmap_a(x, y)
k = jax.random.key(0)
ha = jax.jit(lambda k, x: B.A.batch(B._chain_a())(k, x)).lower(k, jnp.asarray(x)).as_text()
hv = jax.jit(lambda k, x: B._vmapped(B._chain_a())(k, x)).lower(k, jnp.asarray(x)).as_text()
print("same stablehlo:", ha == hv, len(ha), len(hv))
for r in (ra, rv):
    jax.block_until_ready(r())
ts = {"batch": [], "vmap": []}
for i in range(12):
    for name, r in (("batch", ra), ("vmap", rv)) if i % 2 else (("vmap", rv), ("batch", ra)):
        t = time.perf_counter()
        jax.block_until_ready(r())
        ts[name].append(time.perf_counter() - t)
for n, v in ts.items():
    print(n, "median ms", 1e3 * np.median(v))
