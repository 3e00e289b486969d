"""The open loop: a stock NNX model and other tasks through train_and_evaluate.

Also: named checkpoints read with plain Orbax, restore for inference, resume after a real kill.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxreg.train.loop import train_and_evaluate
from jaxreg.train.restoring import restore
from tests.train.conftest import tiny_config

# A model written the stock NNX way, as a user would: its own Rngs for dropout, BatchNorm
# statistics, train()/eval() switching (no train= or key arguments).
USER_MODEL = textwrap.dedent(
    """
    from flax import nnx

    class UserNet(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(1, 8, (3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(8, momentum=0.9, rngs=rngs)
            self.drop = nnx.Dropout(0.3, rngs=rngs)
            self.head = nnx.Linear(8 * 64, 10, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.bn(self.conv(x)))
            return self.head(self.drop(x.reshape(x.shape[0], -1)))
    """
)
_ns: dict = {}
exec(USER_MODEL, _ns)
UserNet = _ns["UserNet"]


def _user_config(**kw):
    c = tiny_config(epochs=4, ema_decay=0.9, learning_rate=0.01, **kw)
    c.early_stopping.patience = 3
    return c


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_a_stock_nnx_model_trains_with_ema_early_stopping_and_checkpoints(tmp_path, digits_small):
    model = UserNet(nnx.Rngs(0))
    before = _leaves(nnx.state(model, nnx.Param))
    r = train_and_evaluate(_user_config(), tmp_path, model=model, data=digits_small)
    assert r["val_accuracy"] > 0.3 and r["evaluated_weights"] == "ema"
    assert r["history"][-1]["train_loss"] < r["history"][0]["train_loss"]
    for a, b in zip(before, _leaves(nnx.state(model, nnx.Param))):
        np.testing.assert_array_equal(a, b)  # the instance passed in is not trained in place
    assert isinstance(r["model"], UserNet)
    out = r["model"](jnp.asarray(digits_small["val"].images))  # eval mode: deterministic
    np.testing.assert_array_equal(out, r["model"](jnp.asarray(digits_small["val"].images)))
    acc = float(jnp.mean(jnp.argmax(out, -1) == digits_small["val"].labels))
    assert acc == pytest.approx(r["val_accuracy"], abs=1e-6)
    # Dropout really ran in training: with another seed the run differs.
    r2 = train_and_evaluate(_user_config(seed=1), tmp_path / "s1", model=UserNet, data=digits_small)
    assert r2["history"][0]["train_loss"] != r["history"][0]["train_loss"]


_KILLED_RUN = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[3])
    import numpy as np
    from ml_collections import ConfigDict
    from jaxreg import data as data_lib
    from jaxreg.train.loop import train_and_evaluate

    s = data_lib.load_splits("digits")
    d = {"train": data_lib.stratified_subset(s["train"], 12, seed=0),
         "val": s["val"].subset(np.arange(100)), "test": s["test"].subset(np.arange(100))}
    c = ConfigDict(__import__("json").loads(open(sys.argv[2]).read()))
    c.epochs = 1000  # killed long before; the fingerprint ignores epochs
    train_and_evaluate(c, sys.argv[1], model=UserNet, data=d)
    """
)


def test_resume_after_sigkill_is_bit_identical_for_a_user_model(tmp_path, digits_small):
    """Kill -9 a run of a stock NNX model mid-training; the resumed run equals an unbroken one."""
    epochs = 6
    c = _user_config()
    c.epochs = epochs
    c.early_stopping.patience = 100
    full = train_and_evaluate(c, tmp_path / "full", model=UserNet, data=digits_small)
    w = tmp_path / "killed"
    script, cfg = tmp_path / "run.py", tmp_path / "config.json"
    script.write_text(USER_MODEL + _KILLED_RUN)
    cfg.write_text(c.to_json())
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(w), str(cfg), root], start_new_session=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (w / "checkpoints" / "latest" / "2" / "commit_success.txt").exists():
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (w / "checkpoints" / "latest" / "2").exists(), "the run never reached epoch 2"
    resumed = train_and_evaluate(c, w, model=UserNet, data=digits_small)
    strip = lambda h: [{k: v for k, v in x.items() if k != "time_s"} for x in h]
    assert strip(resumed["history"]) == strip(full["history"])
    assert resumed["best_epoch"] == full["best_epoch"]
    for a, b in zip(_leaves(resumed["state"].params), _leaves(full["state"].params)):
        np.testing.assert_array_equal(a, b)
    assert resumed["test_accuracy"] == full["test_accuracy"]


class TinyAutoencoder(nnx.Module):
    """(8, 8, 1) -> code (4, 4, 4) -> (8, 8, 1) logits."""

    def __init__(self, rngs):
        self.enc = nnx.Conv(1, 4, (3, 3), strides=(2, 2), rngs=rngs)
        self.dec = nnx.ConvTranspose(4, 1, (3, 3), strides=(2, 2), rngs=rngs)

    def __call__(self, x):
        return self.dec(nnx.relu(self.enc(x)))


def test_reconstruction_task_through_the_same_loop(tmp_path, digits_small):
    c = tiny_config(
        epochs=8,
        task="reconstruction",
        reconstruction_loss="bce",
        learning_rate=0.01,
        corrupt="noise(sigma=0.2)",
        ema_decay=0.5,
    )
    r = train_and_evaluate(c, tmp_path, model=TinyAutoencoder, data=digits_small)
    h = r["history"]
    assert h[-1]["val_loss"] < h[0]["val_loss"]
    assert {"val_loss", "val_mse", "val_psnr", "val_ssim", "val_input_psnr"} <= set(h[0])
    assert h[-1]["val_psnr"] > h[0]["val_psnr"]  # reconstructions improve as it trains
    assert 0.0 < r["test_ssim"] <= 1.0
    rs = restore(tmp_path, model=TinyAutoencoder)
    assert rs.weights == "ema" and rs.epoch == r["best_epoch"]


def test_a_task_of_your_own(tmp_path, digits_small):
    """A user task: regress the mean brightness of each image (no labels used)."""

    class MeanBrightness:
        metrics = ("loss",)

        def loss(self, model, key, images, labels):
            pred = model(images)[:, 0]
            loss = jnp.mean((pred - jnp.mean(images, axis=(1, 2, 3))) ** 2)
            return loss, {"loss": loss}

        def evaluate(self, model, key, images, labels):
            pred = model(images)[:, 0]
            return {"loss": (pred - jnp.mean(images, axis=(1, 2, 3))) ** 2}

        def summarize(self, outputs, labels):
            return {"loss": float(np.mean(outputs["loss"]))}

    r = train_and_evaluate(
        tiny_config(epochs=5, learning_rate=0.01),
        tmp_path,
        model=lambda rngs: nnx.Linear(64, 1, rngs=rngs) if False else _Flat(rngs),
        task=MeanBrightness(),
        data=digits_small,
    )
    assert r["history"][-1]["val_loss"] < r["history"][0]["val_loss"]
    with pytest.raises(ValueError, match="'monitor' must be one of"):
        train_and_evaluate(
            tiny_config(monitor="val_accuracy", monitor_mode="max"),
            tmp_path / "x",
            model=_Flat,
            task=MeanBrightness(),
            data=digits_small,
        )


class _Flat(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(64, 1, rngs=rngs)

    def __call__(self, x):
        return self.lin(x.reshape(x.shape[0], -1))


_PLAIN_ORBAX = textwrap.dedent(
    """
    import json, sys
    import orbax.checkpoint as ocp
    path = sys.argv[1]
    tree = ocp.StandardCheckpointer().restore(path)
    kernel = tree["params"]["conv"]["kernel"]
    print(json.dumps({"shape": list(kernel.shape),
                      "jaxreg": any(m.startswith("jaxreg") for m in sys.modules),
                      "top": sorted(tree)}))
    """
)


def test_best_checkpoint_reads_by_name_with_plain_orbax(tmp_path, digits_small):
    r = train_and_evaluate(_user_config(), tmp_path, model=UserNet, data=digits_small)
    step = r["best_epoch"]
    path = tmp_path / "checkpoints" / "best" / str(step) / "state"
    out = subprocess.run(
        [sys.executable, "-c", _PLAIN_ORBAX, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(tmp_path),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["shape"] == [3, 3, 1, 8] and not info["jaxreg"]
    assert {"params", "batch_stats", "opt_state", "ema", "rngs", "step", "key"} <= set(info["top"])


def test_restore_returns_the_evaluated_model(tmp_path, digits_small):
    r = train_and_evaluate(_user_config(), tmp_path, model=UserNet, data=digits_small)
    fresh = UserNet(nnx.Rngs(7))
    rs = restore(tmp_path, model=fresh)
    assert rs.model is fresh and rs.weights == "ema" and rs.epoch == r["best_epoch"]
    x = jnp.asarray(digits_small["test"].images)
    acc = float(jnp.mean(jnp.argmax(rs.model(x), -1) == digits_small["test"].labels))
    assert acc == pytest.approx(r["test_accuracy"], abs=1e-6)
    assert rs.class_names == [str(i) for i in range(10)] and rs.image_shape == (8, 8, 1)
    latest = restore(tmp_path, which="latest", model=UserNet)
    assert latest.epoch == r["epochs_run"]
    with pytest.raises(ValueError, match="which must be one of"):
        restore(tmp_path, which="worst", model=UserNet)


def _read_events(folder):
    """Scalars from TensorBoard event files (TFRecord framing, Event protos), no TensorFlow."""
    import struct

    from tensorboardX.proto import event_pb2

    out = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            record = data[pos + 12 : pos + 12 + length]
            pos += 12 + length + 4
            event = event_pb2.Event.FromString(record)
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_runs_write_tensorboard_event_files(tmp_path, digits_small):
    r = train_and_evaluate(tiny_config(epochs=2), tmp_path, model=UserNet, data=digits_small)
    scalars = _read_events(tmp_path / "tensorboard")
    assert [s for s, _ in scalars["val/val_accuracy"]] == [1, 2]
    got = [v for _, v in scalars["val/val_loss"]]
    want = [h["val_loss"] for h in r["history"]]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert "train/train_loss" in scalars
