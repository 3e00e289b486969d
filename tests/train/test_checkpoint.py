"""Tests for jaxreg.train.checkpoint: latest + best retention, bitwise restore, corruption."""

import glob
import os
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreg.train.checkpoint import Checkpointer, CheckpointWarning, data_to_keys, keys_to_data

# Orbax leaves an un-awaited coroutine / a closed-event-loop callback behind when a read fails
# inside tensorstore; that noise comes from the deliberately corrupted files, not from us.
pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
]


def make_tree(seed: int):
    """A small TrainState-like dict: several dtypes, nesting, typed keys, a Python scalar."""
    rng = np.random.default_rng(seed)
    return {
        "params": {
            "dense": {
                "kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
                "bias": jnp.asarray(rng.normal(size=(4,)), jnp.bfloat16),
            },
            "scale": np.asarray(rng.normal(size=(2,)), np.float16),
        },
        "batch_stats": {"mean": jnp.asarray(rng.normal(size=(4,)), jnp.float32)},
        "opt_state": [jnp.asarray(rng.integers(-5, 5, size=(3,)), jnp.int8), {}, (jnp.ones(1),)],
        "mask": jnp.asarray(rng.integers(0, 2, size=(3,)), jnp.bool_),
        "step": jnp.asarray(seed, jnp.int32),
        "key_data": jnp.asarray(rng.integers(0, 2**31, size=(2,)), jnp.uint32),
        "key": jax.random.key(seed),
        "rbg_keys": jax.random.split(jax.random.key(seed, impl="rbg"), 2),
        "count": seed,
    }


def meta_for(step: int, acc: float):
    return {"epoch": step, "metrics": {"val_accuracy": acc, "val_loss": 1.0 - acc}}


def assert_bitwise_equal(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        if isinstance(w, int):
            assert g == w and type(g) is int
            continue
        assert g.dtype == w.dtype and g.shape == w.shape
        if jnp.issubdtype(w.dtype, jax.dtypes.prng_key):
            assert jax.random.key_impl(g) == jax.random.key_impl(w)
            g, w = jax.random.key_data(g), jax.random.key_data(w)
        as_bytes = lambda a: np.asarray(a).reshape(-1).view(np.uint8)
        np.testing.assert_array_equal(as_bytes(g), as_bytes(w))


def save_steps(ckpt, accs, start=0):
    for i, acc in enumerate(accs):
        ckpt.save(start + i, make_tree(start + i), meta_for(start + i, acc))
    ckpt.wait_until_finished()


def step_dir(root, step, which="latest"):
    return os.path.join(str(root), which, str(step))


def data_files(path):
    return [
        f
        for f in glob.glob(os.path.join(path, "state", "**", "*"), recursive=True)
        if os.path.isfile(f) and f"{os.sep}d{os.sep}" in f
    ]


# -- retention -----------------------------------------------------------------------------------


def test_keeps_latest_n_and_an_older_best(tmp_path):
    with Checkpointer(tmp_path, keep_latest=2, async_save=False) as ckpt:
        save_steps(ckpt, [0.1, 0.9, 0.3, 0.4, 0.5])
        assert ckpt.all_steps() == [3, 4]
        assert ckpt.latest_step() == 4
        assert ckpt.best_step() == 1  # older than the latest two: the Orbax best_fn pitfall
        assert sorted(os.listdir(tmp_path / "best")) == ["0", "1"]  # the previous best too

        tree, meta, step = ckpt.restore_latest(make_tree(0))
        assert step == 4 and meta == meta_for(4, 0.5)
        assert_bitwise_equal(tree, make_tree(4))

        tree, meta, step = ckpt.restore_best(make_tree(0))
        assert step == 1 and meta["metrics"]["val_accuracy"] == 0.9
        assert_bitwise_equal(tree, make_tree(1))


def test_min_mode_ties_and_nan_do_not_improve(tmp_path):
    with Checkpointer(tmp_path, best_metric="val_loss", best_mode="min", async_save=False) as c:
        assert c.save(0, make_tree(0), {"val_loss": 0.5})
        assert not c.save(1, make_tree(1), {"val_loss": 0.5})  # tie: the earlier stays best
        assert not c.save(2, make_tree(2), {"val_loss": float("nan")})
        assert c.save(3, make_tree(3), {"val_loss": np.float32(0.25)})
        assert c.best_step() == 3


def test_explicit_is_best_overrides_the_metric(tmp_path):
    with Checkpointer(tmp_path, best_metric=None, async_save=False) as ckpt:
        ckpt.save(0, make_tree(0), {"epoch": 0}, is_best=True)
        ckpt.save(1, make_tree(1), {"epoch": 1})  # no metric, not marked: not best
        ckpt.save(2, make_tree(2), {"epoch": 2}, is_best=False)
        assert ckpt.best_step() == 0
        ckpt.save(3, make_tree(3), {"epoch": 3}, is_best=True)
        assert ckpt.best_step() == 3
        assert ckpt.restore_best(make_tree(0))[2] == 3


# -- round trip ----------------------------------------------------------------------------------


def test_restore_is_bitwise_with_abstract_target_and_keys(tmp_path):
    tree = make_tree(7)
    meta = {"epoch": np.int64(7), "hist": [np.float32(0.5), float("nan")], "es": {"best": None}}
    with Checkpointer(tmp_path, best_metric=None) as ckpt:
        ckpt.save(7, tree, meta)
        abstract = jax.eval_shape(lambda: {k: v for k, v in make_tree(0).items() if k != "count"})
        abstract["count"] = 0
        got, got_meta, step = ckpt.restore_latest(abstract)
    assert step == 7
    assert_bitwise_equal(got, tree)
    assert got["key"].dtype == tree["key"].dtype and str(got["rbg_keys"].dtype) == "key<rbg>"
    assert got_meta["epoch"] == 7 and got_meta["hist"][0] == 0.5
    assert np.isnan(got_meta["hist"][1]) and got_meta["es"] == {"best": None}
    # The restored key draws the same numbers as the saved one.
    np.testing.assert_array_equal(
        jax.random.uniform(got["key"], (3,)), jax.random.uniform(tree["key"], (3,))
    )


def test_key_helpers_round_trip():
    tree = {"k": jax.random.split(jax.random.key(1), 3), "x": jnp.ones(2)}
    data = keys_to_data(tree)
    assert data["k"].dtype == jnp.uint32 and data["k"].shape == (3, 2)
    back = data_to_keys(data, tree)
    np.testing.assert_array_equal(jax.random.key_data(back["k"]), data["k"])
    abstract = keys_to_data(jax.eval_shape(lambda: tree))
    assert abstract["k"] == jax.ShapeDtypeStruct((3, 2), jnp.uint32)
    assert data_to_keys(data, jax.eval_shape(lambda: tree))["k"].dtype == tree["k"].dtype


# -- corruption ----------------------------------------------------------------------------------


def _delete_data(path):
    for f in data_files(path):
        os.remove(f)


def _truncate_data(path):
    for f in data_files(path):
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 2)


def _garbage_data(path):
    for f in data_files(path):
        size = os.path.getsize(f)
        with open(f, "wb") as fh:
            fh.write(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())


def _garbage_meta(path):
    with open(os.path.join(path, "meta", "metadata"), "wb") as fh:
        fh.write(b"{\x00 not json")


def _no_commit_marker(path):
    os.remove(os.path.join(path, "commit_success.txt"))


def _empty_dir(path):
    shutil.rmtree(path)
    os.makedirs(path)


def _no_state_item(path):
    shutil.rmtree(os.path.join(path, "state"))


CORRUPTIONS = [
    _delete_data,
    _truncate_data,
    _garbage_data,
    _garbage_meta,
    _no_commit_marker,
    _empty_dir,
    _no_state_item,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_corrupt_newest_falls_back_with_a_warning(tmp_path, corrupt):
    with Checkpointer(tmp_path, keep_latest=3, async_save=False) as ckpt:
        save_steps(ckpt, [0.1, 0.2, 0.3])
    corrupt(step_dir(tmp_path, 2))
    with Checkpointer(tmp_path, keep_latest=3, async_save=False) as ckpt:  # a resumed run
        with pytest.warns(CheckpointWarning, match=r"step 2 .*unreadable") as record:
            tree, meta, step = ckpt.restore_latest(make_tree(0))
        assert step == 1 and meta["epoch"] == 1
        assert_bitwise_equal(tree, make_tree(1))
        assert not any("step 1 " in str(w.message) for w in record)
        # Re-saving epoch 2 replaces the bad step (with a warning) and becomes the newest.
        with pytest.warns(CheckpointWarning, match=r"deletes the newer checkpoint step\(s\) \[2\]"):
            ckpt.save(2, make_tree(20), meta_for(2, 0.3))
        for restore in (ckpt.restore_latest, ckpt.restore_best):
            tree, _, step = restore(make_tree(0))
            assert step == 2
            assert_bitwise_equal(tree, make_tree(20))


def test_all_corrupt_returns_none_with_a_warning(tmp_path):
    with Checkpointer(tmp_path, keep_latest=2, async_save=False) as ckpt:
        save_steps(ckpt, [0.5, 0.4])
        _garbage_data(step_dir(tmp_path, 0))
        _no_commit_marker(step_dir(tmp_path, 1))
        _delete_data(step_dir(tmp_path, 0, "best"))
        with pytest.warns(CheckpointWarning) as record:
            assert ckpt.restore_latest(make_tree(0)) is None
        messages = " | ".join(str(w.message) for w in record)
        assert "step 1 " in messages and "step 0 " in messages
        assert "no readable checkpoint" in messages
        with pytest.warns(CheckpointWarning) as record:
            assert ckpt.restore_best(make_tree(0)) is None
        messages = " | ".join(str(w.message) for w in record)
        assert "step 0 " in messages and "no readable checkpoint" in messages


@pytest.mark.parametrize("change", ["missing_leaf", "extra_leaf", "shape", "dtype"])
def test_target_mismatch_raises_instead_of_starting_over(tmp_path, change):
    target = make_tree(0)
    if change == "missing_leaf":
        del target["params"]["scale"]
    elif change == "extra_leaf":
        target["params"]["new"] = jnp.zeros(2)
    elif change == "shape":
        target["batch_stats"]["mean"] = jnp.zeros(5)
    else:  # Orbax alone would silently cast the saved float32 to int32
        target["batch_stats"]["mean"] = jnp.zeros(4, jnp.int32)
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        save_steps(ckpt, [0.5])
        match = r"does not match checkpoint step 0 .*(mean|scale|new)"
        with pytest.raises(ValueError, match=match):
            ckpt.restore_latest(target)
        assert ckpt.all_steps() == [0]


def test_uncommitted_tmp_step_dir_is_ignored(tmp_path):
    with Checkpointer(tmp_path, keep_latest=2, async_save=False) as ckpt:
        save_steps(ckpt, [0.1, 0.2])
    # What a SIGKILL during the save of step 5 leaves behind: a temporary directory.
    tmp = tmp_path / "latest" / "5.orbax-checkpoint-tmp-1700000000000000"
    (tmp / "state").mkdir(parents=True)
    (tmp / "state" / "_METADATA").write_bytes(b"partial")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: the tmp dir is not a step at all
        with Checkpointer(tmp_path, keep_latest=2, async_save=False) as ckpt:
            assert ckpt.latest_step() == 1
            assert ckpt.restore_latest(make_tree(0))[2] == 1
            ckpt.save(2, make_tree(2), meta_for(2, 0.3))  # the loop goes on
            assert ckpt.all_steps() == [1, 2]
    assert not tmp.exists()  # Orbax cleaned it up when the directory was reopened


def test_empty_directory_restores_none_silently(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Checkpointer(tmp_path / "new") as ckpt:
            assert ckpt.latest_step() is None and ckpt.best_step() is None
            assert ckpt.restore_latest(make_tree(0)) is None
            assert ckpt.restore_best(make_tree(0)) is None


# -- lifecycle and resume ------------------------------------------------------------------------


def test_close_waits_for_async_saves_and_is_idempotent(tmp_path):
    ckpt = Checkpointer(tmp_path, keep_latest=2, async_save=True)
    ckpt.save(0, make_tree(0), meta_for(0, 0.5))
    ckpt.save(1, make_tree(1), meta_for(1, 0.6))
    ckpt.close()
    ckpt.close()
    for which, step in [("latest", 0), ("latest", 1), ("best", 1)]:
        assert os.path.exists(os.path.join(step_dir(tmp_path, step, which), "commit_success.txt"))
    assert not glob.glob(str(tmp_path / "*" / "*tmp*"))
    with pytest.raises(RuntimeError, match="closed"):
        ckpt.save(2, make_tree(2), meta_for(2, 0.7))
    with pytest.raises(RuntimeError, match="closed"):
        ckpt.restore_latest(make_tree(0))


def test_reopen_resumes_steps_retention_and_best(tmp_path):
    with Checkpointer(tmp_path, keep_latest=2) as ckpt:
        save_steps(ckpt, [0.2, 0.8, 0.3])
    with Checkpointer(tmp_path, keep_latest=2) as ckpt:
        assert ckpt.latest_step() == 2 and ckpt.best_step() == 1
        tree, meta, step = ckpt.restore_latest(make_tree(0))
        assert step == 2 and meta == meta_for(2, 0.3)
        assert_bitwise_equal(tree, make_tree(2))
        assert not ckpt.save(3, make_tree(3), meta_for(3, 0.7))  # best value read from disk
        assert ckpt.save(4, make_tree(4), meta_for(4, 0.85))
        ckpt.wait_until_finished()
        assert ckpt.all_steps() == [3, 4] and ckpt.best_step() == 4


# -- arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc, name",
    [
        ({"keep_latest": 0}, ValueError, "keep_latest"),
        ({"keep_latest": -2}, ValueError, "keep_latest"),
        ({"keep_latest": 1.5}, TypeError, "keep_latest"),
        ({"best_mode": "avg"}, ValueError, "best_mode"),
        ({"best_metric": 3}, TypeError, "best_metric"),
    ],
)
def test_bad_constructor_arguments_raise(tmp_path, kwargs, exc, name):
    with pytest.raises(exc, match=name):
        Checkpointer(tmp_path, **kwargs)


def test_bad_save_arguments_raise(tmp_path):
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        tree = make_tree(0)
        with pytest.raises(ValueError, match="step"):
            ckpt.save(-1, tree, meta_for(0, 0.5))
        with pytest.raises(TypeError, match="metadata"):
            ckpt.save(0, tree, [("epoch", 0)])
        with pytest.raises(TypeError, match="metadata"):
            ckpt.save(0, tree, {"obj": object()})
        with pytest.raises(ValueError, match="val_accuracy"):
            ckpt.save(0, tree, {"epoch": 0})
        assert ckpt.latest_step() is None


def test_relative_directory_is_accepted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Checkpointer("rel/ckpt", keep_latest=1, async_save=False) as ck:
        ck.save(1, {"a": np.arange(3, dtype=np.float32)}, {"metrics": {"val_accuracy": 0.5}})
    assert (tmp_path / "rel" / "ckpt").is_dir()
