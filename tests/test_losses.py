"""Tests for jaxreg.losses: agreement with optax, stability, ECE by hand, validation."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxreg.losses import (
    accuracy,
    expected_calibration_error,
    reconstruction_loss,
    smooth_labels,
    soft_cross_entropy,
)

RNG = np.random.default_rng(0)
LOGITS = jnp.asarray(RNG.normal(size=(6, 5)) * 3, jnp.float32)
INT_LABELS = jnp.asarray([0, 4, 2, 2, 1, 3], jnp.int32)
SOFT = jax.nn.softmax(jnp.asarray(RNG.normal(size=(6, 5)), jnp.float32))


def test_smooth_labels_matches_optax():
    one_hot = jax.nn.one_hot(INT_LABELS, 5)
    np.testing.assert_allclose(
        smooth_labels(INT_LABELS, 5, 0.1), optax.smooth_labels(one_hot, 0.1), rtol=1e-6
    )
    np.testing.assert_allclose(
        smooth_labels(SOFT, 5, 0.2), optax.smooth_labels(SOFT, 0.2), rtol=1e-6
    )
    out = smooth_labels(INT_LABELS, 5, 0.0)
    assert out.dtype == jnp.float32 and out.shape == (6, 5)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-6)


def test_soft_cross_entropy_matches_optax():
    loss = soft_cross_entropy(LOGITS, SOFT)
    assert loss.shape == (6,) and loss.dtype == jnp.float32
    np.testing.assert_allclose(loss, optax.softmax_cross_entropy(LOGITS, SOFT), rtol=1e-5)
    np.testing.assert_allclose(
        soft_cross_entropy(LOGITS, INT_LABELS),
        optax.softmax_cross_entropy_with_integer_labels(LOGITS, INT_LABELS),
        rtol=1e-5,
    )
    smoothed = optax.smooth_labels(SOFT, 0.1)
    np.testing.assert_allclose(
        soft_cross_entropy(LOGITS, SOFT, label_smoothing=0.1),
        optax.softmax_cross_entropy(LOGITS, smoothed),
        rtol=1e-5,
    )
    jitted = jax.jit(lambda lg, y: soft_cross_entropy(lg, y, label_smoothing=0.1))(LOGITS, SOFT)
    np.testing.assert_allclose(
        jitted, soft_cross_entropy(LOGITS, SOFT, label_smoothing=0.1), rtol=1e-6
    )


def test_soft_cross_entropy_is_stable_and_float32():
    logits = jnp.asarray([[1e4, -1e4, 0.0], [-3e4, 3e4, 3e4]], jnp.bfloat16)
    labels = jnp.asarray([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]], jnp.float32)
    loss = soft_cross_entropy(logits, labels)
    assert loss.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(loss)))
    np.testing.assert_allclose(loss, [0.0, np.log(2.0)], atol=1e-5)
    # Gradient is softmax - labels.
    g = jax.grad(lambda lg: soft_cross_entropy(lg, SOFT).sum())(LOGITS)
    np.testing.assert_allclose(g, jax.nn.softmax(LOGITS) - SOFT, atol=1e-6)


def test_accuracy_int_and_soft():
    logits = jnp.asarray([[2.0, 1.0], [0.0, 1.0], [3.0, -1.0], [0.0, 5.0]])
    labels = jnp.asarray([0, 0, 0, 1], jnp.int32)
    assert float(accuracy(logits, labels)) == pytest.approx(0.75)
    soft = jnp.asarray([[0.7, 0.3], [0.6, 0.4], [0.9, 0.1], [0.2, 0.8]])
    assert float(accuracy(logits, soft)) == pytest.approx(0.75)


def test_ece_by_hand():
    probs = jnp.asarray([[0.85, 0.15], [0.25, 0.75], [0.35, 0.65], [0.55, 0.45]])
    labels = jnp.asarray([0, 0, 1, 0], jnp.int32)
    # 5 bins of width 0.2: {0.85: right} in (0.8, 1]; {0.75: wrong, 0.65: right} in (0.6, 0.8];
    # {0.55: right} in (0.4, 0.6].  ECE = 1/4*0.15 + 2/4*|0.5-0.7| + 1/4*0.45 = 0.25.
    assert float(expected_calibration_error(probs, labels, num_bins=5)) == pytest.approx(
        0.25, abs=1e-6
    )
    # Soft labels use their argmax.
    soft = jax.nn.one_hot(labels, 2)
    assert float(expected_calibration_error(probs, soft, num_bins=5)) == pytest.approx(
        0.25, abs=1e-6
    )


def _ece_reference(probs, labels, num_bins):
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(
                (pred[in_bin] == labels[in_bin]).mean() - conf[in_bin].mean()
            )
    return total


def test_ece_matches_loop_reference_and_jits():
    probs = np.asarray(jax.nn.softmax(jnp.asarray(RNG.normal(size=(200, 7)) * 2, jnp.float32)))
    labels = RNG.integers(0, 7, size=200).astype(np.int32)
    ours = jax.jit(expected_calibration_error, static_argnames="num_bins")(
        probs, labels, num_bins=15
    )
    assert float(ours) == pytest.approx(_ece_reference(probs, labels, 15), abs=1e-5)
    perfect = jnp.asarray([[1.0, 0.0], [0.0, 1.0]])
    assert float(expected_calibration_error(perfect, jnp.asarray([0, 1], jnp.int32))) == 0.0


def test_reconstruction_loss():
    x = jnp.asarray(RNG.normal(size=(3, 4, 4, 1)), jnp.float32)
    y = jnp.asarray(RNG.uniform(size=(3, 4, 4, 1)), jnp.float32)
    mse = reconstruction_loss(x, y)
    assert mse.shape == (3,)
    np.testing.assert_allclose(
        mse, np.mean((np.asarray(x) - np.asarray(y)) ** 2, axis=(1, 2, 3)), rtol=1e-6
    )
    bce = reconstruction_loss(x, y, kind="bce")
    ref = optax.sigmoid_binary_cross_entropy(x, y).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(bce, ref, rtol=1e-5)
    bce_p = reconstruction_loss(jax.nn.sigmoid(x), y, kind="bce", from_logits=False)
    np.testing.assert_allclose(bce_p, ref, rtol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="smoothing"):
        smooth_labels(INT_LABELS, 5, 1.0)
    with pytest.raises(TypeError, match="smoothing"):
        smooth_labels(INT_LABELS, 5, "0.1")
    with pytest.raises(ValueError, match="num_classes"):
        smooth_labels(INT_LABELS, 0, 0.1)
    with pytest.raises(ValueError, match="labels"):
        smooth_labels(SOFT, 4, 0.1)
    with pytest.raises(TypeError, match="labels"):
        smooth_labels(jnp.zeros(6), 5, 0.1)
    with pytest.raises(ValueError, match="label_smoothing"):
        soft_cross_entropy(LOGITS, SOFT, label_smoothing=-0.1)
    with pytest.raises(ValueError, match="logits"):
        soft_cross_entropy(LOGITS[0], SOFT)
    with pytest.raises(ValueError, match="soft_labels"):
        soft_cross_entropy(LOGITS, SOFT[:3])
    with pytest.raises(ValueError, match="soft_labels"):
        soft_cross_entropy(LOGITS, SOFT[None])
    with pytest.raises(ValueError, match="labels"):
        accuracy(LOGITS, INT_LABELS[:2])
    with pytest.raises(ValueError, match="num_bins"):
        expected_calibration_error(SOFT, INT_LABELS, num_bins=0)
    with pytest.raises(ValueError, match="probs"):
        expected_calibration_error(SOFT[0], INT_LABELS)
    with pytest.raises(ValueError, match="kind"):
        reconstruction_loss(LOGITS, LOGITS, kind="l1")
    with pytest.raises(ValueError, match="targets"):
        reconstruction_loss(LOGITS, LOGITS[:2])


def test_wrong_classes_smoothing_spreads_the_mass_over_the_other_classes():
    from jaxreg.losses import smooth_labels

    y = smooth_labels(jnp.array([2, 0]), 4, 0.3, kind="wrong_classes")
    np.testing.assert_allclose(y[0], [0.1, 0.1, 0.7, 0.1], rtol=1e-6)
    np.testing.assert_allclose(jnp.sum(y, axis=1), 1.0, rtol=1e-6)
    soft = jnp.array([[0.5, 0.5, 0.0, 0.0]])
    y = smooth_labels(soft, 4, 0.3, kind="wrong_classes")
    np.testing.assert_allclose(y[0], [0.35 + 0.05, 0.35 + 0.05, 0.1, 0.1], rtol=1e-6)
    uniform = smooth_labels(jnp.array([2]), 4, 0.3)
    np.testing.assert_allclose(uniform[0], [0.075, 0.075, 0.775, 0.075], rtol=1e-6)
    with pytest.raises(ValueError, match="kind must be one of"):
        smooth_labels(jnp.array([1]), 4, 0.1, kind="other")
    loss = soft_cross_entropy(LOGITS, SOFT, label_smoothing=0.2, smoothing_kind="wrong_classes")
    assert loss.shape == (LOGITS.shape[0],) and bool(jnp.all(jnp.isfinite(loss)))


def test_wrong_classes_smoothing_needs_two_classes_and_works_with_two():
    np.testing.assert_allclose(
        smooth_labels(jnp.array([1]), 2, 0.1, kind="wrong_classes"), [[0.1, 0.9]], rtol=1e-6
    )
    with pytest.raises(ValueError, match="num_classes >= 2"):
        smooth_labels(jnp.array([0]), 1, 0.1, kind="wrong_classes")


def test_ece_bins_follow_the_documented_edges():
    # Bins of width 0.2 are ((m - 1) / 5, m / 5]: 0.7 and 0.8 share (0.6, 0.8].
    probs = jnp.asarray([[0.7, 0.3], [0.8, 0.2]])
    labels = jnp.asarray([0, 1], jnp.int32)
    assert float(expected_calibration_error(probs, labels, num_bins=5)) == pytest.approx(
        abs(1.0 - 1.5) / 2, abs=1e-6
    )
    # The first bin is (0, 0.2] plus a confidence of exactly 0, which is not dropped.
    probs = jnp.asarray([[0.1] * 10, [0.3] + [0.7 / 9] * 9, [0.0] * 10])
    labels = jnp.asarray([0, 1, 0], jnp.int32)  # right, wrong, right (argmax 0)
    want = (abs(1.0 + 1.0 - 0.1 - 0.0) + abs(0.0 - 0.3)) / 3  # 0.1 and 0.0 share the first bin
    assert float(expected_calibration_error(probs, labels, num_bins=5)) == pytest.approx(
        want, abs=1e-6
    )
    # One bin: |accuracy - mean confidence|.
    probs = jnp.asarray([[0.9, 0.1], [0.6, 0.4]])
    assert float(
        expected_calibration_error(probs, jnp.asarray([0, 1], jnp.int32), num_bins=1)
    ) == pytest.approx(abs(0.5 - 0.75), abs=1e-6)


def test_ece_default_bins_and_checks():
    probs = np.asarray(jax.nn.softmax(jnp.asarray(RNG.normal(size=(300, 7)) * 2, jnp.float32)))
    # Right 60 % of the time at any confidence: low bins under-confident, high ones over.
    right = RNG.uniform(size=300) < 0.6
    labels = np.where(right, probs.argmax(1), (probs.argmax(1) + 1) % 7).astype(np.int32)
    want = _ece_reference(probs, labels, 15)
    assert abs(want - _ece_reference(probs, labels, 16)) > 1e-4  # the data tell 15 from 16
    assert float(expected_calibration_error(probs, labels)) == pytest.approx(want, abs=1e-5)
    with pytest.raises(ValueError, match="batch size"):
        expected_calibration_error(probs, labels[:10])
    for bad in (2.0, True):
        with pytest.raises(TypeError, match="num_bins"):
            expected_calibration_error(probs, labels, num_bins=bad)


def test_reconstruction_loss_edges():
    # A batch of scalars is fine; a scalar has no batch axis.
    np.testing.assert_allclose(reconstruction_loss(jnp.ones(3), jnp.zeros(3)), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="batch axis"):
        reconstruction_loss(jnp.ones(()), jnp.zeros(()))
    # Probabilities of exactly 0 and 1 are clipped: finite, and near 0 where they are right.
    p = jnp.asarray([[0.0, 1.0, 0.0, 1.0]])
    y = jnp.asarray([[0.0, 1.0, 1.0, 0.0]])
    loss = reconstruction_loss(p, y, kind="bce", from_logits=False)
    lo, hi = np.float32(1e-7), np.float32(1.0 - 1e-7)  # the clip bounds in float32
    np.testing.assert_allclose(loss, [-(np.log(lo) + np.log1p(-hi)) / 4], rtol=1e-4)
    with pytest.raises(TypeError, match="from_logits"):
        reconstruction_loss(p, y, kind="bce", from_logits=1)
