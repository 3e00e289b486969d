"""Test-wide settings: strict dtype promotion, raising rank promotion, a persistent XLA cache.

Rank promotion raises as DESIGN.md asks; the persistent XLA compilation cache lets repeated runs
of the same program compile once.
"""

import os

# Same seed -> same numbers, resume -> same parameters: bit-identical on GPU only with XLA's
# deterministic kernels (CPU runs are deterministic anyway). Read when the backend starts.
if "xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true"
    ).strip()

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

# Many tests train the same tiny programs again (determinism, resume, subprocesses): the
# persistent cache turns those recompilations into disk reads. Subprocesses get it via env.
# Both caches hold things that get loaded (compiled programs, the native kernel), so they live
# in this user's private cache folder (jaxreg._paths: 0700, owner checked), never under a
# predictable name in the shared temporary folder.
from jaxreg import _paths  # noqa: E402

_ROOT = _paths.cache_root() / "tests"
CACHE_DIR = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(_paths.private_dir(_ROOT / "xla"))
)
_paths.check_private_dir(CACHE_DIR)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The native CPU warp (jaxreg/_cpu/native.py) is built once into this folder.
os.environ.setdefault("JAXREG_CACHE_DIR", str(_paths.private_dir(_ROOT / "native")))
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@pytest.fixture(scope="session")
def digits_small():
    """120 training images (12 per class) of sklearn digits, 100 val, 100 test."""
    import numpy as np

    from jaxreg import data as data_lib

    s = data_lib.load_splits("digits")
    return {
        "train": data_lib.stratified_subset(s["train"], 12, seed=0),
        "val": s["val"].subset(np.arange(100)),
        "test": s["test"].subset(np.arange(100)),
    }
