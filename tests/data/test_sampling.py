"""Sampling helpers: properties over random label sets (hypothesis) and bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxreg.data import (
    Dataset,
    class_balanced_weights,
    imbalance,
    long_tail_ratios,
    stratified_split_indices,
    stratified_subset,
)

FAST = settings(max_examples=40, deadline=None)
label_lists = st.lists(st.integers(0, 5), min_size=1, max_size=60)


def _dataset(labels, num_classes=6):
    labels = np.asarray(labels, np.int32)
    # Each image stores its own position, so subsets can be traced back.
    images = (np.arange(len(labels), dtype=np.float32) / 1000)[:, None, None, None]
    return Dataset(images, labels, num_classes, tuple(map(str, range(num_classes))), "toy")


def _positions(ds):
    return np.round(ds.images[:, 0, 0, 0] * 1000).astype(int)


@FAST
@given(label_lists, st.integers(0, 2**31))
def test_split_is_a_stratified_partition(labels, seed):
    y = np.asarray(labels)
    parts = stratified_split_indices(y, (0.6, 0.2, 0.2), seed=seed)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(y)))
    for c in np.unique(y):
        n = (y == c).sum()
        sizes = [(y[p] == c).sum() for p in parts]
        assert all(abs(s - f * n) < 1 for s, f in zip(sizes, (0.6, 0.2, 0.2)))
    again = stratified_split_indices(y, (0.6, 0.2, 0.2), seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


@FAST
@given(st.integers(1, 4), st.integers(0, 2**31), st.lists(st.integers(0, 3), max_size=30))
def test_stratified_subset_has_exactly_n_per_class(n, seed, extra):
    labels = [c for c in range(6) for _ in range(4)] + extra  # every class has >= 4
    ds = _dataset(labels)
    sub = stratified_subset(ds, n, seed=seed)
    assert sub.class_counts().tolist() == [n] * 6
    pos = _positions(sub)
    assert np.all(np.diff(pos) > 0)  # original order, no repeats
    assert np.array_equal(ds.labels[pos], sub.labels)
    assert np.array_equal(_positions(stratified_subset(ds, n, seed=seed)), pos)


def test_stratified_subset_too_few():
    ds = _dataset([0, 0, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5])
    with pytest.raises(ValueError, match=r"n_per_class=2.*'1': 1"):
        stratified_subset(ds, 2, seed=0)
    with pytest.raises(TypeError, match="Dataset"):
        stratified_subset(np.zeros(3), 1, seed=0)
    with pytest.raises(TypeError, match="n_per_class"):
        stratified_subset(ds, 1.5, seed=0)


@FAST
@given(st.integers(1, 12), st.floats(1.0, 500.0))
def test_long_tail_profile(k, factor):
    r = long_tail_ratios(k, factor)
    assert r.shape == (k,) and r[0] == 1.0
    assert np.all(np.diff(r) <= 0)
    if k > 1:
        np.testing.assert_allclose(r[-1], 1 / factor)


@FAST
@given(st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6), st.integers(0, 2**31))
def test_imbalance_keeps_the_ratio(ratios, seed):
    ds = _dataset([c for c in range(6) for _ in range(20)])
    out = imbalance(ds, ratios, seed=seed)
    for c, r in enumerate(ratios):
        expected = max(round(r * 20), 1) if r > 0 else 0
        assert out.class_counts()[c] == expected
    pos = _positions(out)
    assert np.all(np.diff(pos) > 0) and np.array_equal(ds.labels[pos], out.labels)


def test_imbalance_long_tail_on_real_data():
    from jaxreg.data import load

    ds = load("digits", split="train")
    out = imbalance(ds, long_tail_ratios(10, 10.0), seed=0)
    counts = out.class_counts()
    assert counts[0] == ds.class_counts()[0] and counts[9] == round(ds.class_counts()[9] / 10)
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        imbalance(ds, [1.0, 0.5], seed=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        imbalance(ds, np.full(10, 1.5), seed=0)


@FAST
@given(label_lists)
def test_class_balanced_weights_give_equal_class_mass(labels):
    y = np.asarray(labels)
    w = class_balanced_weights(y, 6)
    assert w.shape == y.shape and np.all(w > 0)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-12)
    present = np.unique(y)
    mass = np.bincount(y, weights=w, minlength=6)
    np.testing.assert_allclose(mass[present], 1 / len(present), rtol=1e-9)


def test_class_balanced_weights_sample_balanced_and_errors():
    y = np.array([0] * 90 + [1] * 9 + [2])
    draws = np.random.default_rng(0).choice(len(y), 30000, p=class_balanced_weights(y, 3))
    np.testing.assert_allclose(np.bincount(y[draws]) / 30000, [1 / 3] * 3, atol=0.02)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        class_balanced_weights([0, 3], 3)
    with pytest.raises(ValueError, match="empty"):
        class_balanced_weights(np.zeros(0, int), 3)
    with pytest.raises(TypeError, match="integer"):
        class_balanced_weights([0.5], 3)


def test_bad_split_arguments():
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split_indices([0, 1], (0.5, 0.6), seed=0)
    with pytest.raises(TypeError, match="seed"):
        stratified_split_indices([0, 1], seed=None)
    with pytest.raises(ValueError, match=">= 1"):
        long_tail_ratios(3, 0.5)
