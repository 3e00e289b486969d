"""Tests for jaxreg.train.early_stopping.EarlyStopping."""

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxreg.train.early_stopping import EarlyStopping


def _run(es, metrics):
    history = []
    for m in metrics:
        es = es.update(m)
        history.append(es)
    return es, history


def test_min_mode_patience():
    es, hist = _run(EarlyStopping(patience=2), [1.0, 0.8, 0.9, 0.85, 0.7])
    assert [h.has_improved for h in hist] == [True, True, False, False, True]
    assert [h.patience_count for h in hist] == [0, 0, 1, 2, 0]
    assert [h.should_stop for h in hist] == [False, False, False, True, True]  # stays stopped
    assert es.best_metric == 0.7 and es.best_epoch == 4 and es.last_epoch == 4


def test_max_mode():
    es, hist = _run(EarlyStopping(patience=1, mode="max"), [0.5, 0.6, 0.55])
    assert [h.has_improved for h in hist] == [True, True, False]
    assert es.should_stop and es.best_metric == 0.6 and es.best_epoch == 1
    assert EarlyStopping(patience=1, mode="max").best_metric == -math.inf
    assert EarlyStopping(patience=1).best_metric == math.inf


def test_max_mode_tie_is_not_an_improvement():
    # Accuracy on a small validation set often repeats: an equal value must not count as an
    # improvement (it would move the best epoch and reset patience).
    es, hist = _run(EarlyStopping(patience=2, mode="max"), [0.5, 0.75, 0.75, 0.75])
    assert [h.has_improved for h in hist] == [True, True, False, False]
    assert [h.patience_count for h in hist] == [0, 0, 1, 2]
    assert es.should_stop and es.best_metric == 0.75 and es.best_epoch == 1
    # With min_delta, a value exactly best + min_delta is a tie too (0.25 is exact in binary).
    es, hist = _run(EarlyStopping(patience=2, min_delta=0.25, mode="max"), [0.5, 0.75, 1.0])
    assert [h.has_improved for h in hist] == [True, False, True]
    assert es.best_metric == 1.0 and es.best_epoch == 2 and es.patience_count == 0


def test_min_delta():
    es, hist = _run(EarlyStopping(patience=3, min_delta=0.1), [1.0, 0.95, 0.85, 0.89])
    assert [h.has_improved for h in hist] == [True, False, True, False]
    assert es.best_metric == 0.85 and es.patience_count == 1
    es, _ = _run(EarlyStopping(patience=3, min_delta=0.1, mode="max"), [1.0, 1.05, 1.2])
    assert es.best_metric == 1.2 and es.best_epoch == 2


def test_patience_zero_stops_at_first_non_improvement():
    _es, hist = _run(EarlyStopping(patience=0), [1.0, 0.9, 0.9])
    assert [h.should_stop for h in hist] == [False, False, True]


def test_warmup_epochs_do_not_count():
    es, hist = _run(EarlyStopping(patience=1, warmup_epochs=3), [1.0, 2.0, 3.0, 4.0])
    assert [h.patience_count for h in hist] == [0, 0, 0, 1]
    assert [h.should_stop for h in hist] == [False, False, False, True]
    assert es.best_metric == 1.0 and es.best_epoch == 0  # best still tracked during warm-up


def test_explicit_epochs():
    es = EarlyStopping(patience=2).update(1.0, epoch=10).update(2.0, epoch=12)
    assert es.best_epoch == 10 and es.last_epoch == 12 and es.patience_count == 1
    assert es.update(0.5).last_epoch == 13


def test_nan_never_improves():
    es, hist = _run(EarlyStopping(patience=2), [float("nan"), 1.0, float("nan"), float("nan")])
    assert [h.has_improved for h in hist] == [False, True, False, False]
    assert es.best_metric == 1.0 and es.should_stop
    es, _ = _run(EarlyStopping(patience=5, mode="max"), [np.float32(np.nan), jnp.asarray(0.5)])
    assert es.best_metric == 0.5 and es.best_epoch == 1


def test_immutable_and_reset():
    es = EarlyStopping(patience=2)
    new = es.update(1.0)
    assert es.best_metric == math.inf and es.last_epoch == -1 and new is not es
    with pytest.raises(dataclasses.FrozenInstanceError):
        es.patience = 3
    fresh = new.update(2.0).update(3.0).reset()
    assert fresh == EarlyStopping(patience=2)
    assert hash(fresh) == hash(EarlyStopping(patience=2))


def test_defaults_and_the_state_before_any_update():
    es = EarlyStopping(patience=3)
    assert (es.min_delta, es.mode, es.warmup_epochs) == (0.0, "min", 0)
    assert es.best_epoch == -1 and es.last_epoch == -1 and es.patience_count == 0
    assert not es.should_stop and not es.has_improved
    # No warm-up by default: a first epoch that does not improve (NaN) already counts.
    assert EarlyStopping(patience=1).update(float("nan")).should_stop


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(patience=1, mode="lower")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=-1)
    with pytest.raises(TypeError, match="patience"):
        EarlyStopping(patience=1.5)
    with pytest.raises(ValueError, match="min_delta"):
        EarlyStopping(patience=1, min_delta=-0.1)
    with pytest.raises(ValueError, match="warmup_epochs"):
        EarlyStopping(patience=1, warmup_epochs=-2)
    with pytest.raises(TypeError, match="metric"):
        EarlyStopping(patience=1).update("low")
    with pytest.raises(TypeError, match="metric"):
        EarlyStopping(patience=1).update(jnp.ones(3))
    with pytest.raises(TypeError, match="epoch"):
        EarlyStopping(patience=1).update(1.0, epoch=1.5)
    with pytest.raises(TypeError, match="epoch"):
        EarlyStopping(patience=1).update(1.0, epoch=True)
    # Booleans and strings are not numbers here, even where Python would accept them.
    for kw, name in [
        ({"patience": True}, "patience"),
        ({"min_delta": True}, "min_delta"),
        ({"min_delta": "0.1"}, "min_delta"),
        ({"warmup_epochs": False}, "warmup_epochs"),
        ({"warmup_epochs": 1.5}, "warmup_epochs"),
    ]:
        with pytest.raises(TypeError, match=name):
            EarlyStopping(**({"patience": 1} | kw))
    with pytest.raises(ValueError, match="min_delta"):
        EarlyStopping(patience=1, min_delta=float("inf"))
    # The smallest valid values are accepted.
    EarlyStopping(patience=0, min_delta=0.0, warmup_epochs=0)
