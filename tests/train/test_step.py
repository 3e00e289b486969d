"""The pure train step and the scan epoch: same numbers as a Python loop, determinism, hooks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxreg import models
from jaxreg.optim import param_ema
from jaxreg.train import TrainState, make_train_epoch, make_train_step
from jaxreg.train.step import EmaStats, epoch_permutation
from jaxreg.train.tasks import Classification


def _state(batch_norm=True, ema=False, dropout=0.0):
    m = models.create(
        "tiny", num_classes=4, input_shape=(8, 8, 1), batch_norm=batch_norm, dropout=dropout
    )
    tx = optax.chain(optax.adam(1e-2), param_ema(0.9)) if ema else optax.adam(1e-2)
    return TrainState.create(m, tx, key=jax.random.key(3), ema_batch_stats=ema)


def _task(**kw):
    return Classification(num_classes=4, **kw)


def _data(n=40):
    x = jax.random.uniform(jax.random.key(0), (n, 8, 8, 1))
    y = jax.random.randint(jax.random.key(1), (n,), 0, 4)
    return x, y


def _flip(key, images):  # a batched augmentation hook
    return jnp.where(
        jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1)), images[:, :, ::-1], images
    )


def test_scan_epoch_equals_python_loop_of_the_same_step():
    x, y = _data()
    st0 = _state(ema=True, dropout=0.3)
    task = _task(augment=_flip, label_smoothing=0.1)
    ema = EmaStats(0.9)
    epoch = make_train_epoch(batch_size=8, task=task, ema=ema)
    step = make_train_step(task=task, ema=ema)
    st_scan, metrics = epoch(st0, x, y, jnp.int32(1))
    perm = epoch_permutation(st0.key, jnp.int32(1), 40, 5, 8)
    st_py = st0
    losses = []
    for idx in np.asarray(perm):
        st_py, m = step(st_py, x[idx], y[idx])
        losses.append(float(m["loss"]))
    assert int(st_scan.step) == int(st_py.step) == 5
    np.testing.assert_allclose(metrics["loss"], losses, rtol=2e-4, atol=1e-5)
    for a, b in zip(jax.tree.leaves(st_scan.params), jax.tree.leaves(st_py.params)):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5)
    for a, b in zip(jax.tree.leaves(st_scan.opt_state), jax.tree.leaves(st_py.opt_state)):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5)  # Adam moments and the EMA
    for a, b in zip(
        jax.tree.leaves(st_scan.ema_batch_stats), jax.tree.leaves(st_py.ema_batch_stats)
    ):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5)


def test_epoch_is_deterministic_and_learns():
    x, y = _data()
    epoch = make_train_epoch(batch_size=8, task=_task())
    a, ma = epoch(_state(), x, y, jnp.int32(0))
    b, _mb = epoch(_state(), x, y, jnp.int32(0))
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(u, v)
    st = a
    for e in range(1, 15):
        st, m = epoch(st, x, y, jnp.int32(e))
    assert float(np.mean(m["loss"])) < float(np.mean(ma["loss"]))
    # BatchNorm statistics moved away from their initial values
    assert not np.allclose(
        jax.tree.leaves(st.batch_stats)[0], jax.tree.leaves(_state().batch_stats)[0]
    )


def test_different_epochs_shuffle_differently_and_weights_sample_by_class():
    key = jax.random.key(0)
    p1 = epoch_permutation(key, jnp.int32(1), 50, 5, 10)
    p2 = epoch_permutation(key, jnp.int32(2), 50, 5, 10)
    assert not np.array_equal(p1, p2)
    assert len(np.unique(np.asarray(p1))) == 50
    w = jnp.zeros(50).at[:5].set(0.2)
    pw = np.asarray(epoch_permutation(key, jnp.int32(1), 50, 5, 10, w))
    assert set(pw.ravel()) <= set(range(5))


def test_mix_hook_receives_soft_labels():
    seen = {}

    def mix(key, images, soft):
        seen["shape"] = soft.shape
        seen["dtype"] = soft.dtype
        return images, 0.5 * soft + 0.5 / soft.shape[1]

    x, y = _data()
    epoch = make_train_epoch(batch_size=8, task=_task(mix=mix))
    epoch(_state(), x, y, jnp.int32(0))
    assert seen == {"shape": (8, 4), "dtype": jnp.float32}


def test_batch_larger_than_data_is_rejected():
    x, y = _data(6)
    with pytest.raises(ValueError, match="batch_size"):
        make_train_epoch(batch_size=8, task=_task())(_state(), x, y, jnp.int32(0))
