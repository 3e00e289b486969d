"""train_and_evaluate end to end on tiny data: files, determinism, resume, NaN stop, best model."""

import json
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreg.train.checkpoint import Checkpointer, CheckpointError
from jaxreg.train.loop import NonFiniteLossError, train_and_evaluate
from tests.train.conftest import tiny_config


def _params(results):
    return [np.asarray(a) for a in jax.tree.leaves(results["state"].params)]


def test_writes_metrics_report_and_curves(tmp_path, digits_small):
    r = train_and_evaluate(tiny_config(), tmp_path, data=digits_small)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert [x["epoch"] for x in recs] == [1, 2, 3]
    for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_ece"):
        assert all(np.isfinite(x[k]) for x in recs)
    report = (tmp_path / "report.md").read_text()
    assert "curves.png" in report and "test_accuracy" in report
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["test_accuracy"] == pytest.approx(r["test_accuracy"])
    assert 0.0 <= r["test_accuracy"] <= 1.0 and r["epochs_run"] == 3
    # which XLA:CPU paths ran: recorded in results.json and as one line of the report
    paths = saved["cpu_paths"]
    assert paths["platform"] == jax.default_backend() and paths["switch"] in ("on", "off")
    cpu_on = jax.default_backend() == "cpu" and paths["switch"] == "on"
    assert paths["workarounds"] == "used" if cpu_on else paths["workarounds"].startswith("not used")
    assert paths["native_warp"]  # "native", "xla (...)" or "not used"
    assert (
        f"- XLA:CPU workarounds (jaxreg._cpu, JAXREG_CPU_WORKAROUNDS): {paths['workarounds']}"
        in report
    )
    assert "cpu_paths" not in report.split("## Overfitting")[0]  # not a row of the results table


def test_same_seed_same_numbers(tmp_path, digits_small):
    a = train_and_evaluate(tiny_config(), tmp_path / "a", data=digits_small)
    b = train_and_evaluate(tiny_config(), tmp_path / "b", data=digits_small)
    strip = lambda h: [{k: v for k, v in x.items() if k != "time_s"} for x in h]
    assert strip(a["history"]) == strip(b["history"])
    c = train_and_evaluate(tiny_config(seed=1), tmp_path / "c", data=digits_small)
    assert strip(a["history"]) != strip(c["history"])


def test_resume_continues_to_the_same_parameters(tmp_path, digits_small):
    cfg = {"batch_norm": True, "ema_decay": 0.9, "dropout": 0.2}
    full = train_and_evaluate(tiny_config(epochs=4, **cfg), tmp_path / "full", data=digits_small)
    train_and_evaluate(tiny_config(epochs=2, **cfg), tmp_path / "part", data=digits_small)
    resumed = train_and_evaluate(tiny_config(epochs=4, **cfg), tmp_path / "part", data=digits_small)
    assert resumed["epochs_run"] == 4
    for a, b in zip(_params(full), _params(resumed)):
        np.testing.assert_array_equal(a, b)
    h = [
        json.loads(line)["epoch"]
        for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    ]
    assert h == [1, 2, 3, 4]


def test_resume_refuses_a_different_config_naming_what_changed(tmp_path, digits_small):
    train_and_evaluate(tiny_config(epochs=1), tmp_path, data=digits_small)
    with pytest.raises(
        ValueError, match=r"different config \(changed: learning_rate: 0.003 -> 0.1\)"
    ):
        train_and_evaluate(tiny_config(epochs=2, learning_rate=0.1), tmp_path, data=digits_small)
    with pytest.raises(ValueError, match=r"augment: \"\" -> \"flip\"; seed: 0 -> 1"):
        train_and_evaluate(
            tiny_config(epochs=2, augment="flip", seed=1), tmp_path, data=digits_small
        )
    # Settings that do not change training may change on resume.
    train_and_evaluate(tiny_config(epochs=2, restore_best=False), tmp_path, data=digits_small)


def test_a_workdir_of_the_older_checkpoint_format_is_refused_clearly(tmp_path, digits_small):
    # jaxreg 0.1 saved the whole train state as leaves "0000", "0001", ... without a version.
    with Checkpointer(tmp_path / "checkpoints") as ck:
        ck.save(1, {"0000": np.zeros(3, np.float32)}, {"epoch": 1}, is_best=False)
    with pytest.raises(
        ValueError, match="format 1 \\(an older jaxreg\\); this jaxreg reads format 2"
    ):
        train_and_evaluate(tiny_config(epochs=2), tmp_path, data=digits_small)


# ----------------------------------------------------------------------------- resume and "best"

# A high constant learning rate makes validation loss bounce, so the best epoch comes early.
_BOUNCY = {"learning_rate": 0.3, "monitor": "val_loss", "monitor_mode": "min"}


def _bouncy_reference(tmp_path, digits_small, epochs=8):
    ref = train_and_evaluate(
        tiny_config(epochs=epochs, **_BOUNCY), tmp_path / "ref", data=digits_small
    )
    assert ref["best_epoch"] < epochs - 1, "the scenario needs a best epoch before the kill"
    return ref


def _same_final_model(a, b):
    assert a["best_epoch"] == b["best_epoch"]
    for k in ("val_loss", "val_accuracy", "test_loss", "test_accuracy"):
        assert a[k] == b[k], k
    for x, y in zip(_params(a), _params(b)):
        np.testing.assert_array_equal(x, y)


def test_resume_after_the_best_epoch_restores_that_epoch(tmp_path, digits_small):
    """A run killed after its best epoch evaluates that epoch's weights, as an unbroken run does."""
    ref = _bouncy_reference(tmp_path, digits_small)
    cut = ref["best_epoch"] + 1  # killed one epoch after the best
    w = tmp_path / "w"
    train_and_evaluate(tiny_config(epochs=cut, **_BOUNCY), w, data=digits_small)
    resumed = train_and_evaluate(tiny_config(epochs=8, **_BOUNCY), w, data=digits_small)
    _same_final_model(ref, resumed)
    best = ref["history"][ref["best_epoch"] - 1]
    assert resumed["val_loss"] == pytest.approx(best["val_loss"], rel=1e-5)


def test_kill_between_the_latest_and_the_best_save_is_repaired(tmp_path, digits_small):
    """`latest/` has the new best epoch, `best/` still the previous best: resume uses the new one."""
    ref = _bouncy_reference(tmp_path, digits_small)
    cut = ref["best_epoch"]  # no later epoch improves on it
    w = tmp_path / "w"
    train_and_evaluate(tiny_config(epochs=cut, **_BOUNCY), w, data=digits_small)
    shutil.rmtree(w / "checkpoints" / "best" / str(cut))  # killed before best/cut was written
    resumed = train_and_evaluate(tiny_config(epochs=8, **_BOUNCY), w, data=digits_small)
    _same_final_model(ref, resumed)
    with Checkpointer(w / "checkpoints") as ck:  # best/ was repaired on resume
        assert ck.best_step() == cut


def test_best_save_committed_before_the_latest_save_is_not_taken_as_best(tmp_path, digits_small):
    """Background saves may commit `best/n` before `latest/n`; a resume from n-1 must not use n."""
    ref = _bouncy_reference(tmp_path, digits_small)
    losses = [h["val_loss"] for h in ref["history"]]
    n = next(e for e in range(2, 9) if losses[e - 1] < min(losses[: e - 1]))  # an improving epoch
    w = tmp_path / "w"
    train_and_evaluate(tiny_config(epochs=n, **_BOUNCY), w, data=digits_small)
    shutil.rmtree(w / "checkpoints" / "latest" / str(n))  # killed before latest/n committed
    # Resumed at epoch n - 1 and asked to stop there: it must evaluate the best of n - 1 epochs.
    resumed = train_and_evaluate(tiny_config(epochs=n - 1, **_BOUNCY), w, data=digits_small)
    short = train_and_evaluate(
        tiny_config(epochs=n - 1, **_BOUNCY), tmp_path / "s", data=digits_small
    )
    _same_final_model(short, resumed)


def test_a_lost_best_checkpoint_fails_loudly_instead_of_evaluating_other_weights(
    tmp_path, digits_small
):
    ref = _bouncy_reference(tmp_path, digits_small)
    w = tmp_path / "w"
    c = tiny_config(epochs=ref["best_epoch"] + 2, **_BOUNCY)
    c.checkpoint.keep = 1
    train_and_evaluate(c, w, data=digits_small)
    shutil.rmtree(w / "checkpoints" / "best")  # e.g. a disk error took it
    c.epochs = 8
    with pytest.raises(CheckpointError, match=f"recorded epoch {ref['best_epoch']} as the best"):
        train_and_evaluate(c, w, data=digits_small)
    c.restore_best = False  # the way forward the message names
    r = train_and_evaluate(c, w, data=digits_small)
    assert r["epochs_run"] == 8


def _poison(key, images, soft):  # every batch becomes NaN
    return images * jnp.float32(jnp.nan), soft


def test_non_finite_loss_raises_and_keeps_the_last_good_checkpoint(tmp_path, digits_small):
    train_and_evaluate(tiny_config(epochs=2), tmp_path, data=digits_small)
    before = (tmp_path / "results.json").read_text()
    with pytest.raises(NonFiniteLossError, match="checkpoint of epoch 2 is kept") as err:
        train_and_evaluate(tiny_config(epochs=4), tmp_path, data=digits_small, mix_fn=_poison)
    steps_per_epoch = 120 // 30
    e = err.value
    assert (e.epoch, e.step, e.last_good_epoch) == (3, 2 * steps_per_epoch + 1, 2)
    assert not np.isfinite(e.value)
    assert (tmp_path / "results.json").read_text() == before  # nothing evaluated or reported
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Checkpointer(tmp_path / "checkpoints") as ck:
            assert ck.latest_step() == 2


def test_non_finite_loss_in_the_first_epoch_names_no_checkpoint(tmp_path, digits_small):
    with pytest.raises(NonFiniteLossError, match="no checkpoint was saved") as err:
        train_and_evaluate(tiny_config(epochs=2), tmp_path, data=digits_small, mix_fn=_poison)
    assert err.value.last_good_epoch is None and err.value.epoch == 1
    assert "epoch 0" not in str(err.value)


def test_early_stopping_restores_the_best_epoch(tmp_path, digits_small):
    # A learning rate this high makes validation loss bounce; patience 1 stops soon after.
    c = tiny_config(epochs=12, learning_rate=0.05, monitor="val_loss", monitor_mode="min")
    c.early_stopping.patience = 1
    r = train_and_evaluate(c, tmp_path, data=digits_small)
    h = r["history"]
    best = min(h, key=lambda x: x["val_loss"])
    assert r["best_epoch"] == best["epoch"]
    if r["stopped_early"]:
        assert r["epochs_run"] == r["best_epoch"] + 1
    assert r["val_loss"] == pytest.approx(best["val_loss"], rel=1e-4)


def test_bad_config_is_rejected_before_training(tmp_path, digits_small):
    with pytest.raises(ValueError, match="monitor"):
        train_and_evaluate(tiny_config(monitor="test_accuracy"), tmp_path, data=digits_small)
    with pytest.raises(ValueError, match="batch_size"):
        train_and_evaluate(tiny_config(batch_size=1000), tmp_path, data=digits_small)
    with pytest.raises(ValueError, match="'model' must be one of"):
        train_and_evaluate(tiny_config(model="nope"), tmp_path, data=digits_small)


def test_corrupt_latest_checkpoint_falls_back_and_retrains_to_the_same_result(
    tmp_path, digits_small
):
    ref = train_and_evaluate(tiny_config(epochs=3), tmp_path / "ref", data=digits_small)
    w = tmp_path / "w"
    train_and_evaluate(tiny_config(epochs=3), w, data=digits_small)
    newest = w / "checkpoints" / "latest" / "3"
    for f in newest.rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "commit" not in f.name:
            f.write_bytes(b"garbage")  # every data file of the newest checkpoint
    (w / "results.json").unlink()
    with pytest.warns(Warning, match="3"):
        again = train_and_evaluate(tiny_config(epochs=3), w, data=digits_small)
    assert again["epochs_run"] == 3
    for a, b in zip(_params(ref), _params(again)):
        np.testing.assert_array_equal(a, b)


def test_host_fed_loop_gives_the_same_run_as_the_scan(tmp_path, digits_small):
    scan = train_and_evaluate(tiny_config(epochs=2, loop="scan"), tmp_path / "s", data=digits_small)
    host = train_and_evaluate(
        tiny_config(epochs=2, loop="python"), tmp_path / "p", data=digits_small
    )
    for a, b in zip(_params(scan), _params(host)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="loop"):
        train_and_evaluate(tiny_config(loop="fast"), tmp_path / "x", data=digits_small)


def test_the_results_say_which_loop_ran_and_auto_follows_the_data_size(tmp_path, digits_small):
    # digits_small's 120 training images take 30 KiB: under the default limit, over 0.01 MiB.
    runs = {
        "scan": tiny_config(epochs=1),
        "python": tiny_config(epochs=1, device_data_limit_mb=0.01),
        "stream": tiny_config(epochs=1, loop="stream"),
    }
    for expected, c in runs.items():
        r = train_and_evaluate(c, tmp_path / expected, data=digits_small)
        assert r["loop"] == expected
    r = train_and_evaluate(tiny_config(epochs=1, loop="python"), tmp_path / "p", data=digits_small)
    assert r["loop"] == "python"


def test_the_logged_learning_rate_is_the_schedule_at_the_epochs_last_step(tmp_path, digits_small):
    from jaxreg.optim.factory import learning_rate_schedule

    c = tiny_config(epochs=3, schedule="cosine")
    r = train_and_evaluate(c, tmp_path, data=digits_small)
    steps = 120 // 30
    sched = learning_rate_schedule(
        learning_rate=c.learning_rate, schedule="cosine", total_steps=3 * steps
    )
    logged = [h["lr"] for h in r["history"]]
    np.testing.assert_allclose(logged, [float(sched(steps * e - 1)) for e in (1, 2, 3)], rtol=1e-6)
