"""A synthetic pool mixed into training batches: exact fraction, order, checks, the loop end to end."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxreg import data as data_lib
from jaxreg.train import step as step_lib
from jaxreg.train.loop import load_pool, synthetic_count, train_and_evaluate
from jaxreg.train.state import TrainState
from tests.train.conftest import tiny_config


class _One(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.zeros(()))


@dataclasses.dataclass(frozen=True)
class _Probe:
    """Reports what each batch holds: real images are 0, pooled ones 1 (labels 100 + index)."""

    def loss(self, model, key, images, labels):
        del key
        synthetic = jnp.mean(images, axis=(1, 2, 3))
        return jnp.sum(model.w) * 0.0, {
            "fraction": jnp.mean(synthetic),
            "tail_only": jnp.all(
                synthetic == (jnp.arange(images.shape[0]) >= 6).astype(jnp.float32)
            ),
            "batch": images.shape[0] * jnp.ones(()),
            "labels": labels,
        }


def _epoch(make, *, real=24, pool=10, batch=8, synthetic=2):
    state = TrainState.create(_One(), optax.sgd(0.1), key=jax.random.key(0))
    fn = make(batch_size=batch, task=_Probe(), synthetic_batch=synthetic)
    x, y = np.zeros((real, 2, 2, 1), np.float32), np.arange(real, dtype=np.int32)
    sx, sy = np.ones((pool, 2, 2, 1), np.float32), 100 + np.arange(pool, dtype=np.int32)
    if make is step_lib.make_train_epoch:
        x, y, sx, sy = map(jnp.asarray, (x, y, sx, sy))
    _, m = fn(state, x, y, jnp.int32(0), None, (sx, sy))
    return jax.device_get(m)


@pytest.mark.parametrize("make", [step_lib.make_train_epoch, step_lib.make_host_epoch])
def test_every_batch_holds_exactly_the_synthetic_count_after_the_real_examples(make):
    m = _epoch(make)
    assert m["batch"].tolist() == [8.0] * 4  # 24 real / 6 real per batch = 4 steps
    np.testing.assert_array_equal(m["fraction"], 0.25)
    assert m["tail_only"].all()
    real, pooled = m["labels"][:, :6], m["labels"][:, 6:]
    assert sorted(real.ravel().tolist()) == list(range(24))  # one pass over the real set
    assert pooled.min() >= 100


def test_scan_and_host_epochs_draw_the_same_batches():
    a, b = _epoch(step_lib.make_train_epoch), _epoch(step_lib.make_host_epoch)
    np.testing.assert_array_equal(a["labels"], b["labels"])


def test_the_pool_is_used_once_before_any_example_is_used_twice():
    idx = np.asarray(step_lib.synthetic_indices(jax.random.key(3), jnp.int32(1), 7, 5, 3))
    assert idx.shape == (5, 3)
    flat = idx.ravel()
    assert sorted(flat[:7].tolist()) == list(range(7))
    assert sorted(flat[7:14].tolist()) == list(range(7))
    other = np.asarray(step_lib.synthetic_indices(jax.random.key(3), jnp.int32(2), 7, 5, 3))
    assert not np.array_equal(idx, other)  # a new order each epoch


def test_synthetic_count_rounds_half_up():
    assert [synthetic_count(r, 32) for r in (0.25, 0.5, 1 / 64, 0.01)] == [8, 16, 1, 0]
    assert synthetic_count(0.25, 30) == 8  # 7.5 -> 8


def test_a_bad_split_of_the_batch_is_refused():
    with pytest.raises(ValueError, match="synthetic_batch"):
        _epoch(step_lib.make_train_epoch, synthetic=8)
    with pytest.raises(ValueError, match="real examples per batch"):
        _epoch(step_lib.make_host_epoch, real=5, batch=8, synthetic=2)


def _pool(train, n=40, shape=None):
    rng = np.random.default_rng(0)
    shape = shape or train.images.shape[1:]
    return data_lib.Dataset(
        rng.uniform(size=(n, *shape)).astype(np.float32),
        rng.integers(0, train.num_classes, n).astype(np.int32),
        train.num_classes,
        train.class_names,
        "pool",
    )


def test_the_loop_trains_with_a_pool_and_reports_its_share(tmp_path, digits_small):
    pool = _pool(digits_small["train"])
    c = tiny_config(epochs=1, synthetic_ratio=0.25, batch_size=32)
    r = train_and_evaluate(c, tmp_path / "a", data={**digits_small, "synthetic": pool})
    assert r["synthetic_per_batch"] == 8 and r["synthetic_size"] == 40
    assert int(r["state"].step) == 120 // 24  # an epoch is one pass over the real images
    np.savez(tmp_path / "pool.npz", images=pool.images, labels=pool.labels)
    c.synthetic = str(tmp_path / "pool.npz")
    r2 = train_and_evaluate(c, tmp_path / "b", data=digits_small)  # the pool read from the path
    assert r2["test_accuracy"] == r["test_accuracy"] and r2["synthetic_size"] == 40


def test_pool_and_ratio_errors_name_the_problem(tmp_path, digits_small):
    pool = _pool(digits_small["train"])
    with_pool = {**digits_small, "synthetic": pool}
    with pytest.raises(ValueError, match="needs a synthetic pool"):
        train_and_evaluate(tiny_config(synthetic_ratio=0.25), tmp_path / "a", data=digits_small)
    with pytest.raises(ValueError, match="synthetic_ratio is 0"):
        train_and_evaluate(tiny_config(), tmp_path / "b", data=with_pool)
    for ratio in (0.01, 0.99):  # 0 or all of a batch of 30
        with pytest.raises(ValueError, match="synthetic_ratio"):
            train_and_evaluate(tiny_config(synthetic_ratio=ratio), tmp_path / "c", data=with_pool)
    with pytest.raises(ValueError, match="synthetic_ratio"):
        train_and_evaluate(tiny_config(synthetic_ratio=1.0), tmp_path / "d", data=with_pool)
    with pytest.raises(ValueError, match="is not a file"):
        train_and_evaluate(
            tiny_config(synthetic=str(tmp_path / "no.npz"), synthetic_ratio=0.25),
            tmp_path / "e",
            data=digits_small,
        )
    bad = {**digits_small, "synthetic": _pool(digits_small["train"], shape=(4, 4, 1))}
    with pytest.raises(ValueError, match="synthetic pool's images"):
        train_and_evaluate(tiny_config(synthetic_ratio=0.25), tmp_path / "f", data=bad)
    with pytest.raises(ValueError, match="streamed epoch"):
        train_and_evaluate(
            tiny_config(synthetic_ratio=0.25, loop="stream"), tmp_path / "g", data=with_pool
        )
    assert not (tmp_path / "g").exists()  # refused before the workdir is made
    np.savez(tmp_path / "x.npz", pictures=pool.images)
    with pytest.raises(ValueError, match="'images' and 'labels'"):
        load_pool(tmp_path / "x.npz", digits_small["train"])
    with pytest.raises(FileNotFoundError):
        load_pool(tmp_path / "none.npz", digits_small["train"])


def test_pool_labels_outside_the_classes_are_refused(tmp_path, digits_small):
    train = digits_small["train"]
    pool = _pool(train)
    np.savez(tmp_path / "p.npz", images=pool.images, labels=pool.labels + 10)
    with pytest.raises(ValueError, match="labels"):
        load_pool(tmp_path / "p.npz", train)
