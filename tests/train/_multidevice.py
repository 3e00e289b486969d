"""Run by tests/train/test_parallel.py in a subprocess with 8 forced host devices.

`XLA_FLAGS=--xla_force_host_platform_device_count=8` must be set before JAX starts, hence a
process of its own. Prints one JSON line of findings; the test asserts on them.
"""

import json
import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

from jaxreg import _cpu  # noqa: E402
from jaxreg import augment as aug  # noqa: E402
from jaxreg import data as data_lib  # noqa: E402
from jaxreg.train import parallel  # noqa: E402
from jaxreg.train import step as step_lib  # noqa: E402
from jaxreg.train.config import default_config  # noqa: E402
from jaxreg.train.loop import train_and_evaluate  # noqa: E402
from jaxreg.train.tasks import Classification  # noqa: E402

AUGMENT = "rotate(max_degrees=20)+flip"  # rotate: the batched bilinear warp (native on CPU)


def digits():
    s = data_lib.load_splits("digits")
    return {
        "train": data_lib.stratified_subset(s["train"], 16, seed=0),  # 160 images: 5 steps of 32
        "val": s["val"].subset(np.arange(100)),
        "test": s["test"].subset(np.arange(100)),
    }


def config(**kw):
    c = default_config()
    c.data, c.model, c.epochs, c.batch_size, c.learning_rate = "digits", "tiny", 2, 32, 3e-3
    c.batch_norm, c.augment, c.progress = True, AUGMENT, False
    for k, v in kw.items():
        c[k] = v
    return c


def runs(out, work):
    data = digits()
    res = {}
    for n in (1, 8):  # 1 device: 3 epochs (the resume below is compared with it); 8: 2
        cfg = config(devices=n, epochs=3 if n == 1 else 2)
        r = train_and_evaluate(cfg, os.path.join(work, f"d{n}"), data=data)
        res[n] = r
        out[f"history_{n}"] = [{k: v for k, v in h.items() if k != "time_s"} for h in r["history"]]
        out[f"test_{n}"] = {k: r[k] for k in ("test_loss", "test_accuracy")}
        out[f"devices_{n}"] = r["devices"]
        bs = jax.tree.leaves(r["state"].batch_stats)
        out[f"bn_sharding_{n}"] = str(bs[0].sharding.spec) + f" on {len(bs[0].devices())}"
    out["cpu_paths"] = _cpu.status()
    # the host-fed loop over 8 devices too
    r = train_and_evaluate(config(devices=8, loop="python"), os.path.join(work, "host8"), data=data)
    out["history_host8"] = [{k: v for k, v in h.items() if k != "time_s"} for h in r["history"]]
    # a checkpoint written on 8 devices resumes on 1 (Orbax reshards): epochs 1-2 on 8, 3 on 1
    r = train_and_evaluate(config(devices=1, epochs=3), os.path.join(work, "d8"), data=data)
    out["resumed_history"] = [{k: v for k, v in h.items() if k != "time_s"} for h in r["history"]]
    out["resumed_test"] = {k: r[k] for k in ("test_loss", "test_accuracy")}
    diffs = [
        np.max(np.abs(np.asarray(a) - np.asarray(b)))
        for a, b in zip(jax.tree.leaves(res[1]["state"].params), jax.tree.leaves(r["state"].params))
    ]
    out["max_param_diff"] = float(max(diffs))  # 3 epochs on 1 device vs 2 on 8 + 1 on 1
    # a batch that does not split over the devices: ValueError before anything is written
    try:
        train_and_evaluate(config(devices=8, batch_size=30), os.path.join(work, "bad"), data=data)
        out["indivisible"] = "no error"
    except ValueError as e:
        out["indivisible"] = str(e)
        out["indivisible_wrote"] = os.path.exists(os.path.join(work, "bad"))


def custom_call(out):
    """Whether the native warp's custom call is in the compiled epoch on 1 and on 8 devices."""
    data = digits()["train"]
    task = Classification(num_classes=10, augment=aug.batch(aug.from_spec(AUGMENT)))
    from jaxreg.models import create

    net = create("tiny", num_classes=10, input_shape=data.images.shape[1:], seed=0)
    import optax

    from jaxreg.train.state import TrainState

    for n in (1, 8):
        mesh = parallel.make_mesh(n)
        st = parallel.replicate(TrainState.create(net, optax.sgd(0.1), key=jax.random.key(0)), mesh)
        epoch = step_lib.make_train_epoch(
            batch_size=32, task=task, batch_sharding=parallel.batch_sharding(mesh)
        )
        x, y = parallel.replicate((data.images, data.labels.astype(np.int32)), mesh)
        hlo = epoch.lower(st, x, y, jnp.int32(1)).compile().as_text()
        out[f"custom_call_{n}"] = "jaxreg_warp_bilinear" in hlo
        # an all-gather of the images would mean the batch is not split
        out[f"all_gather_{n}"] = hlo.count("all-gather")
        out[f"all_reduce_{n}"] = hlo.count("all-reduce")
    out["native_status"] = _cpu.native_status()["warp"]


def keys_and_batchnorm(out):
    """Per-example augmentation keys across devices; BatchNorm's statistics on a split batch."""
    mesh = parallel.make_mesh(8)
    fn = aug.batch(aug.from_spec("rotate(max_degrees=30)"))
    images = jnp.broadcast_to(jnp.linspace(0, 1, 64).reshape(8, 8, 1), (32, 8, 8, 1))
    key = jax.random.key(3)
    one = jax.jit(fn)(key, images)
    sharded_in = jax.device_put(images, parallel.batch_sharding(mesh))
    many = jax.jit(fn, out_shardings=parallel.batch_sharding(mesh))(key, sharded_in)
    out["aug_sharded_equals_single"] = float(jnp.max(jnp.abs(one - many)))
    # the 4 examples of device 0 against those of device 1: identical inputs, other keys
    shards = [np.asarray(s.data) for s in many.addressable_shards]
    out["aug_shards_differ"] = bool(not np.allclose(shards[0], shards[1]))
    out["aug_distinct_examples"] = len({np.asarray(e).tobytes() for e in many})

    # BatchNorm in train mode: device d gets examples of mean d; the running mean must be the
    # global mean (3.5 * (1 - momentum)), not any one device's
    bn = nnx.BatchNorm(1, momentum=0.0, rngs=nnx.Rngs(0))
    x = jnp.repeat(jnp.arange(8, dtype=jnp.float32), 4).reshape(32, 1)
    graphdef, state = nnx.split(bn)

    @jax.jit
    def apply(state, x):
        m = nnx.merge(graphdef, state)
        y = m(x)
        return y, nnx.state(m)

    xs = jax.device_put(x, parallel.batch_sharding(mesh))
    y, new = apply(parallel.replicate(state, mesh), xs)
    out["bn_running_mean"] = float(np.asarray(new["mean"].get_value())[0])
    out["bn_output_mean"] = float(jnp.mean(y))
    out["bn_y_sharding"] = str(y.sharding.spec)


if __name__ == "__main__":
    assert "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")
    out = {"device_count": jax.device_count()}
    what = sys.argv[1:] or ["runs", "custom_call", "keys"]
    with tempfile.TemporaryDirectory() as work:
        if "keys" in what:
            keys_and_batchnorm(out)
        if "custom_call" in what:
            custom_call(out)
        if "runs" in what:
            runs(out, work)
    print("RESULT " + json.dumps(out))
