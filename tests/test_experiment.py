"""jaxreg.experiment helpers (no training here: fast, mostly numpy).

Covers config parsing, step budgets, paired statistics, predictions, the compile cache and
read-back of finished runs.
"""

import json
import math

import jax
import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from jaxreg import experiment
from jaxreg.data import Dataset
from jaxreg.train.config import default_config


def _rows(values):
    """Variant -> per-seed values as run_variants rows."""
    return [
        {"variant": name, "seed": seed, "m": v}
        for name, vs in values.items()
        for seed, v in enumerate(vs)
    ]


# ----------------------------------------------------------------------------- config values


def test_int_tuple_and_parse_seeds():
    assert experiment.int_tuple(3) == (3,)
    assert experiment.int_tuple([0, np.int64(2)]) == (0, 2)
    assert all(type(s) is int for s in experiment.int_tuple((np.int32(1), 4)))
    assert experiment.int_tuple(()) == ()
    assert experiment.parse_seeds((0, 1, 2)) == (0, 1, 2)
    assert experiment.parse_seeds(7) == (7,)
    with pytest.raises(ValueError, match="seeds"):
        experiment.parse_seeds(())
    for bad in (1.5, "0", (0, None), True):
        with pytest.raises(TypeError, match="seeds"):
            experiment.parse_seeds(bad)
    with pytest.raises(TypeError, match="sizes"):
        experiment.int_tuple((10, 2.0), name="sizes")


def test_split_names_and_select_variants():
    assert experiment.split_names(" a, b ,,c ") == ("a", "b", "c")
    assert experiment.split_names("  ") == ()
    with pytest.raises(TypeError, match="spec"):
        experiment.split_names(("a",))
    allowed = ("none", "rotate", "mixup")
    kw = {"allowed": allowed, "default": ("none", "mixup"), "baseline": "none"}
    assert experiment.select_variants("", **kw) == ("none", "mixup")
    assert experiment.select_variants("rotate", **kw) == ("none", "rotate")
    assert experiment.select_variants("rotate, none", **kw) == ("rotate", "none")
    assert experiment.select_variants(
        "none,rotate", allowed={"none": 1, "rotate": 2}, default=(), baseline="none"
    ) == ("none", "rotate")
    with pytest.raises(ValueError, match=r"unknown variants \['bogus'\]; allowed: \['none'"):
        experiment.select_variants("none,bogus", **kw)
    with pytest.raises(ValueError, match="baseline"):
        experiment.select_variants("", allowed=allowed, default=(), baseline="plain")


@pytest.mark.parametrize(
    "n_train,batch_size,epochs,min_steps,want",
    [
        (200, 32, 12, 240, 40),  # 6 steps per epoch -> ceil(240 / 6)
        (100, 32, 12, 240, 80),  # 3 steps per epoch
        (1000, 32, 12, 240, 12),  # 31 steps per epoch: 12 epochs already give 372 steps
        (10, 32, 2, 5, 5),  # fewer images than a batch: one step per epoch
        (0, 32, 2, 5, 5),
        (500, 50, 20, 0, 20),  # no step budget
        (300, 32, 1, 500, 56),  # how_many's budget: ceil(500 / 9)
    ],
)
def test_epochs_for(n_train, batch_size, epochs, min_steps, want):
    got = experiment.epochs_for(n_train, batch_size, epochs, min_steps)
    assert got == want
    steps_per_epoch = max(1, n_train // batch_size)
    assert got * steps_per_epoch >= min_steps and got >= epochs
    assert (got - 1) * steps_per_epoch < min_steps or got == epochs  # the smallest such


@pytest.mark.parametrize(
    "arg,args",
    [
        ("n_train", (-1, 32, 1, 1)),
        ("batch_size", (10, 0, 1, 1)),
        ("epochs", (10, 2, -1, 1)),
        ("min_steps", (10, 2, 1, -5)),
    ],
)
def test_epochs_for_rejects_out_of_range(arg, args):
    with pytest.raises(ValueError, match=arg):
        experiment.epochs_for(*args)


def test_least_epochs_is_the_fewest_epochs_for_can_give():
    for epochs, min_steps in ((0, 240), (12, 240), (0, 0), (5, 0), (3, 1)):
        want = experiment.least_epochs(epochs, min_steps)
        assert want == min(
            experiment.epochs_for(n, 32, epochs, min_steps) for n in (0, 100, 10**6, 10**9)
        )
    assert experiment.least_epochs(-1, 240) == -1  # left for validation to reject
    assert experiment.least_epochs(2.5, 240) == 2.5


# ----------------------------------------------------------------------------- smoke and validation


def test_shrink_lowers_larger_values_and_keeps_smaller_and_invalid_ones():
    c = default_config()
    c.epochs, c.batch_size, c.learning_rate = 30, 4, float("nan")
    small = {
        "epochs": 2,
        "batch_size": 20,
        "learning_rate": 1e-3,
        "train_per_class": 10,
        "data": "digits",
        "model": "tiny",
        "progress": False,
        "checkpoint.enabled": False,
    }
    out = experiment.shrink(c, **small)
    assert out is not c and isinstance(out, type(c))
    assert out.epochs == 2  # larger: lowered to the smoke value
    assert out.batch_size == 4  # the user's smaller value is kept
    assert math.isnan(out.learning_rate)  # invalid: kept, for validation to reject
    assert out.train_per_class == 10  # None (the whole split) counts as unbounded
    assert (out.data, out.model, out.progress, out.checkpoint.enabled) == (
        "digits",
        "tiny",
        False,
        False,
    )
    c.epochs = -1
    assert experiment.shrink(c, epochs=2).epochs == -1
    # the argument is not changed
    assert (c.epochs, c.batch_size, c.data, c.train_per_class) == (-1, 4, "mnist5k", None)
    assert c.checkpoint.enabled is True and c.progress is True
    with pytest.raises(ValueError, match="'no_such'"):
        experiment.shrink(c, no_such=1)
    with pytest.raises(ValueError, match=r"'checkpoint\.nope'"):
        experiment.shrink(c, **{"checkpoint.nope": 1})


def test_validate_variants_names_the_bad_variant_and_key():
    base = default_config()
    experiment.validate_variants(base, {"none": {}, "rot": {"augment": "rotate"}}, seed=3)
    with pytest.raises(ValueError, match=r"variant 'bad': config key 'augment': .*nosuchop"):
        experiment.validate_variants(base, {"none": {}, "bad": {"augment": "nosuchop"}})
    with pytest.raises(ValueError, match=r"variant 'mixed': config key 'mix'"):
        experiment.validate_variants(base, {"mixed": {"mix": "mixup(alpha=-1)"}})
    with pytest.raises(ValueError, match=r"variant 'neg': config key 'early_stopping.patience'"):
        experiment.validate_variants(base, {"neg": {"early_stopping.patience": -1}})
    with pytest.raises(ValueError, match=r"variant 'x': unknown config key 'no.such'"):
        experiment.validate_variants(base, {"x": {"no.such": 1}})
    with pytest.raises(TypeError, match=r"variant 'typed'"):
        experiment.validate_variants(base, {"typed": {"dropout": "high"}})
    bad_base = default_config()
    bad_base.epochs = -1
    with pytest.raises(ValueError, match=r"variant 'none': config key 'epochs' must be >= 1"):
        experiment.validate_variants(bad_base, {"none": {}})


def test_check_spec_int_and_real_name_the_key():
    experiment.check_spec("policy", "digits+shear(max_degrees=8)")
    experiment.check_spec("mix_spec", "mixup(alpha=0.2)", mix=True)
    with pytest.raises(ValueError, match="config key 'policy': unknown augmentation 'nope'"):
        experiment.check_spec("policy", "nope")
    with pytest.raises(ValueError, match="config key 'mix_spec'"):
        experiment.check_spec("mix_spec", "rotate", mix=True)
    with pytest.raises(TypeError, match="config key 'policy' must be a spec string"):
        experiment.check_spec("policy", None)
    assert experiment.check_int(np.int64(3), name="steps", minimum=0) == 3
    assert experiment.check_int(-5, name="key") == -5
    with pytest.raises(ValueError, match="config key 'steps' must be >= 0, got -1"):
        experiment.check_int(-1, name="steps", minimum=0)
    with pytest.raises(TypeError, match="config key 'steps'"):
        experiment.check_int(True, name="steps", minimum=0)
    assert experiment.check_real(3, name="f", minimum=1.0) == 3.0
    for bad, kind in ((float("nan"), ValueError), (0.5, ValueError), ("2", TypeError)):
        with pytest.raises(kind, match="config key 'f'"):
            experiment.check_real(bad, name="f", minimum=1.0)
    with pytest.raises(ValueError, match="config key 'q' must be <= 100"):
        experiment.check_real(101, name="q", maximum=100.0)
    with pytest.raises(ValueError, match="config key 's' must be > 0"):
        experiment.check_real(0.0, name="s", minimum=0.0, strict=True)


# ----------------------------------------------------------------------------- paired statistics


def test_paired_ci_matches_hand_computation_and_scipy():
    base = [0.80, 0.82, 0.78, 0.81]
    var = [0.84, 0.83, 0.83, 0.80]
    rows = _rows({"none": base, "rot": var})
    mean, half, above, n = experiment.paired_ci(rows, "rot", "m", baseline="none")
    d = np.subtract(var, base)
    # by hand: t quantile * sample std / sqrt(n)
    assert mean == pytest.approx(d.mean())
    assert half == pytest.approx(stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2.0)
    assert (above, n) == (3, 4)
    # scipy's paired t-test gives the same interval
    ci = stats.ttest_rel(var, base).confidence_interval(0.95)
    assert (mean - half, mean + half) == pytest.approx((ci.low, ci.high))
    ci90 = stats.ttest_rel(var, base).confidence_interval(0.90)
    m90, h90, _, _ = experiment.paired_ci(rows, "rot", "m", baseline="none", confidence=0.9)
    assert (m90 - h90, m90 + h90) == pytest.approx((ci90.low, ci90.high))
    assert h90 < half


def test_paired_ci_pairs_by_seed_and_handles_few_seeds():
    rows = [
        {"variant": "none", "seed": 0, "m": 0.5},
        {"variant": "none", "seed": 2, "m": 0.4},
        {"variant": "a", "seed": 2, "m": 0.7},
        {"variant": "a", "seed": 0, "m": 0.5},
        {"variant": "a", "seed": 5, "m": 0.9},
    ]  # seed 5 has no baseline: left out
    np.testing.assert_allclose(
        experiment.paired_differences(rows, "a", "m", baseline="none"), [0.3, 0.0]
    )
    mean, half, above, n = experiment.paired_ci(rows, "a", "m", baseline="none")
    assert (mean, above, n) == (pytest.approx(0.15), 1, 2) and math.isfinite(half)
    one = experiment.paired_ci(rows[:1] + rows[3:4], "a", "m", baseline="none")
    assert one[0] == 0.0 and math.isnan(one[1]) and one[2:] == (0, 1)
    none = experiment.paired_ci(rows, "missing", "m", baseline="none")
    assert math.isnan(none[0]) and math.isnan(none[1]) and none[2:] == (0, 0)


def test_paired_differences_skip_missing_values_and_use_key():
    rows = [
        {"size": "b", "seed": 0, "m": 1.0},
        {"size": "b", "seed": 1, "m": None},
        {"size": "v", "seed": 0, "m": 3.0},
        {"size": "v", "seed": 1, "m": 2.0},
    ]
    d = experiment.paired_differences(rows, "v", "m", baseline="b", key="size")
    assert d.dtype == np.float64 and d.tolist() == [2.0]


def test_paired_ci_rejects_bad_arguments():
    rows = _rows({"none": [1, 2], "a": [2, 3]})
    for conf in (0.0, 1.0, 95):
        with pytest.raises(ValueError, match="confidence"):
            experiment.paired_ci(rows, "a", "m", baseline="none", confidence=conf)
    with pytest.raises(ValueError, match="baseline"):
        experiment.paired_ci(rows, "a", "m", baseline="")
    with pytest.raises(ValueError, match="name"):
        experiment.paired_differences(rows, None, "m", baseline="none")


def test_effect_words():
    assert experiment.effect(0.03, 0.01) == "helps"
    assert experiment.effect(-0.03, 0.01) == "hurts"
    assert experiment.effect(0.01, 0.03) == "within noise"
    assert experiment.effect(0.01, 0.01) == "within noise"  # touching 0 is not clear
    assert experiment.effect(0.5, math.nan) == "one seed"
    assert experiment.effect(np.float32(-1), 0.5, above="higher", below="lower") == "lower"
    with pytest.raises(TypeError, match="half"):
        experiment.effect(0.1, "0.2")


def test_format_pm_and_join_names():
    assert experiment.format_pm(0.0123, 0.0081) == "+1.2 ± 0.8"
    assert experiment.format_pm(-0.05, math.nan) == "-5.0"
    assert experiment.format_pm(-0.26, 0.5, scale=1.0) == "-0.3 ± 0.5"
    with pytest.raises(TypeError, match="mean"):
        experiment.format_pm(None, 0.1)
    assert experiment.join_names([]) == "no variant"
    assert experiment.join_names([], empty="none") == "none"
    assert experiment.join_names(["a"]) == "a"
    assert experiment.join_names(("a", "b")) == "a and b"
    assert experiment.join_names(iter(["a", "b", "c"])) == "a, b and c"
    with pytest.raises(TypeError, match="items"):
        experiment.join_names(["a", 3])


# ----------------------------------------------------------------------------- predictions


def test_confusion_matrix_and_recall_by_hand():
    labels = np.array([0, 0, 1, 1, 1, 2], np.int32)
    pred = np.array([0, 1, 1, 1, 0, 0], np.int16)
    m = experiment.confusion_matrix(pred, labels, 4)
    want = np.zeros((4, 4), np.int64)
    want[0, 0] = want[0, 1] = want[1, 0] = want[2, 0] = 1
    want[1, 1] = 2
    np.testing.assert_array_equal(m, want)
    assert m.dtype == np.int64 and m.sum(1).tolist() == [2, 3, 1, 0]
    rec = experiment.per_class_recall(pred, labels, 4)
    np.testing.assert_allclose(rec[:3], [0.5, 2 / 3, 0.0])
    assert np.isnan(rec[3])  # class 3 absent


def test_confusion_matrix_and_recall_match_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    pred = np.where(rng.random(500) < 0.7, labels, rng.integers(0, 10, 500))
    np.testing.assert_array_equal(
        experiment.confusion_matrix(pred, labels, 10),
        skm.confusion_matrix(labels, pred, labels=range(10)),
    )
    rec = experiment.per_class_recall(pred, labels, 10)
    np.testing.assert_allclose(rec, skm.recall_score(labels, pred, average=None))
    assert np.nanmean(rec) == pytest.approx(skm.balanced_accuracy_score(labels, pred))
    # the old per-class loop of the experiments, bit for bit
    loop = np.array([np.mean(pred[labels == c] == c) for c in range(10)])
    np.testing.assert_array_equal(rec, loop)


def test_confusion_matrix_rejects_bad_input():
    ok = np.array([0, 1])
    with pytest.raises(ValueError, match="same shape"):
        experiment.confusion_matrix(ok, np.array([0, 1, 1]), 2)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        experiment.confusion_matrix(ok, np.array([0, 2]), 2)
    with pytest.raises(ValueError, match="pred must be in"):
        experiment.per_class_recall(np.array([-1, 0]), ok, 2)
    with pytest.raises(ValueError, match="1-D"):
        experiment.confusion_matrix(np.zeros((2, 2), np.int32), ok, 2)
    with pytest.raises(TypeError, match="pred"):
        experiment.confusion_matrix(np.array([0.0, 1.0]), ok, 2)
    with pytest.raises(ValueError, match="num_classes"):
        experiment.confusion_matrix(ok, ok, 0)
    with pytest.raises(TypeError, match="num_classes"):
        experiment.per_class_recall(ok, ok, 2.0)
    assert experiment.confusion_matrix(np.array([], np.int64), np.array([], np.int64), 3).sum() == 0


def test_mean_curve_averages_over_the_runs_that_reached_an_epoch():
    h1 = [
        {"epoch": 1, "val_loss": 1.0},
        {"epoch": 2, "val_loss": 0.5},
        {"epoch": 3, "val_loss": 0.7},
    ]
    h2 = [{"epoch": 1, "val_loss": 3.0}, {"epoch": 2, "val_loss": 1.5}]  # stopped early
    epochs, mean = experiment.mean_curve([h1, h2, []], "val_loss")
    assert epochs.tolist() == [1, 2, 3]
    np.testing.assert_allclose(mean, [2.0, 1.0, 0.7])
    e, m = experiment.mean_curve([], "val_loss")
    assert e.size == 0 and m.size == 0
    with pytest.raises(ValueError, match="val_acc"):
        experiment.mean_curve([h1], "val_acc")


# ----------------------------------------------------------------------------- data and runs


def _dataset(n_per_class=6, k=3, name="toy"):
    labels = np.repeat(np.arange(k, dtype=np.int32), n_per_class)
    images = np.linspace(0, 1, labels.size * 4, dtype=np.float32).reshape(-1, 2, 2, 1)
    return Dataset(images, labels, k, tuple(str(c) for c in range(k)), name)


def _finished_run(folder, **results):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))


def _tiny_config():
    c = default_config()
    c.data, c.model, c.train_per_class, c.epochs, c.batch_size = "digits", "tiny", 5, 1, 25
    c.progress = False
    c.checkpoint.enabled = False
    return c


# ----------------------------------------------------------------------------- compile cache


def test_compile_cache_leaves_a_configured_cache_alone(tmp_path):
    before = jax.config.jax_compilation_cache_dir
    min_time = jax.config.jax_persistent_cache_min_compile_time_secs
    assert before  # tests/conftest.py configures one
    with experiment.compile_cache():
        assert jax.config.jax_compilation_cache_dir == before
        assert jax.config.jax_persistent_cache_min_compile_time_secs == min_time
    assert jax.config.jax_compilation_cache_dir == before


def test_compile_cache_sets_and_restores_settings(tmp_path, monkeypatch):
    from jax.experimental.compilation_cache import compilation_cache as cc

    monkeypatch.setenv("JAXREG_XLA_CACHE", str(tmp_path / "xla"))
    configured = jax.config.jax_compilation_cache_dir
    min_time = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.25)
    try:
        with experiment.compile_cache(enabled=False):
            assert jax.config.jax_compilation_cache_dir is None
        with experiment.compile_cache():
            assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")
            assert (tmp_path / "xla").stat().st_mode & 0o777 == 0o700
            assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.5
        assert jax.config.jax_compilation_cache_dir is None
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.25
        with pytest.raises(RuntimeError, match="boom"):
            with experiment.compile_cache():
                raise RuntimeError("boom")
        assert jax.config.jax_compilation_cache_dir is None
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.25
    finally:
        jax.config.update("jax_compilation_cache_dir", configured)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_time)
        cc.reset_cache()


def test_compile_cache_refuses_a_folder_other_users_can_write(tmp_path, monkeypatch):
    """JAX loads compiled programs from the cache: a shared, writable folder is never used."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("JAXREG_XLA_CACHE", str(shared))
    configured = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    try:
        with pytest.warns(RuntimeWarning, match="writable by group or others"):
            with experiment.compile_cache():
                assert jax.config.jax_compilation_cache_dir is None
    finally:
        jax.config.update("jax_compilation_cache_dir", configured)
        cc.reset_cache()
