"""Mixup / CutMix: label mass 1, lambda in [0, 1], CutMix weight = pasted area, any batch size."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxreg.augment as A
from tests.augment._util import images, key

FAST = settings(max_examples=6, deadline=None)
MODES = ["batch", "pair", "elem"]


def _distinct(b, h=6, w=7):
    """Example i is the constant (i + 1) / (b + 1): a pixel tells whose it is."""
    vals = (jnp.arange(b, dtype=jnp.float32) + 1.0) / (b + 1.0)
    return jnp.broadcast_to(vals.reshape(b, 1, 1, 1), (b, h, w, 1))


_mixup = {m: jax.jit(functools.partial(A.mixup, alpha=0.4, num_classes=7, mode=m)) for m in MODES}
_cutmix = {m: jax.jit(functools.partial(A.cutmix, alpha=1.0, num_classes=7, mode=m)) for m in MODES}


@FAST
@given(st.sampled_from([5]), st.sampled_from(MODES), st.integers(0, 2**30))
def test_mixup_label_mass_and_lambda(b, mode, seed):
    labels = jnp.arange(b, dtype=jnp.int32)  # distinct classes, b <= 7
    x = _distinct(b)
    y, soft = _mixup[mode](key(seed), x, labels)
    soft = np.asarray(soft)
    np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-6)
    lam = soft[np.arange(b), np.arange(b)]
    partner = lam.copy()
    for i in range(b):
        j = b - 1 - i
        if i != j:
            partner[i] = soft[i, j]
            np.testing.assert_allclose(lam[i] + partner[i], 1.0, atol=1e-6)
    assert np.all((lam >= 0) & (lam <= 1))
    vals = np.asarray(x[:, 0, 0, 0])
    np.testing.assert_allclose(
        np.asarray(y)[:, 0, 0, 0],
        np.where(np.arange(b) == b - 1 - np.arange(b), vals, lam * vals + (1 - lam) * vals[::-1]),
        atol=1e-5,
    )
    if mode == "batch" and b > 2:
        assert np.allclose(lam[0], lam[[i for i in range(b) if i != b // 2 or b % 2 == 0]])
    if mode == "pair":
        np.testing.assert_allclose(lam, lam[::-1], atol=1e-6)


@FAST
@given(st.sampled_from([3]), st.sampled_from(MODES), st.integers(0, 2**30))
def test_cutmix_label_weight_equals_pasted_area(b, mode, seed):
    labels = jnp.arange(b, dtype=jnp.int32)
    x = _distinct(b)
    y, soft = _cutmix[mode](key(seed), x, labels)
    soft, y, x = np.asarray(soft), np.asarray(y), np.asarray(x)
    np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-6)
    for i in range(b):
        j = b - 1 - i
        if i == j:
            continue
        pasted = np.mean(y[i, ..., 0] == x[j, 0, 0, 0])
        np.testing.assert_allclose(soft[i, j], pasted, atol=1e-6)
        assert np.all((y[i] == x[i, 0, 0, 0]) | (y[i] == x[j, 0, 0, 0]))


def test_label_smoothing_like_timm_and_soft_labels_in():
    b, k, s = 4, 5, 0.1
    labels = jnp.array([0, 1, 2, 3])
    _, soft = A.mixup(key(), images(b), labels, alpha=1.0, num_classes=k, label_smoothing=s)
    off, on = s / k, 1 - s + s / k
    lam = (np.asarray(soft)[0, 0] - off) / (on - off)
    expect = np.full((k,), off)
    expect[0] += lam * (on - off)
    expect[3] += (1 - lam) * (on - off)
    np.testing.assert_allclose(soft[0], expect, atol=1e-6)
    onehot = jax.nn.one_hot(labels, k)
    _, soft2 = A.mixup(key(), images(b), onehot, alpha=1.0, label_smoothing=s)
    np.testing.assert_allclose(soft, soft2, atol=1e-6)


def test_partial_fits_the_training_loop_hook():
    mix = functools.partial(A.mixup, alpha=0.2)
    x, y = jax.jit(mix)(key(), images(3), jax.nn.one_hot(jnp.array([0, 1, 2]), 3))
    assert x.shape == (3, 8, 8, 3) and y.shape == (3, 3) and y.dtype == jnp.float32
    for spec in (
        "mixup(alpha=0.2)",
        "cutmix(alpha=1.0)",
        "mixup_or_cutmix(switch_prob=0.5,mode='elem')",
    ):
        x, y = jax.jit(A.mix_from_spec(spec))(key(), images(5), jax.nn.one_hot(jnp.arange(5), 5))
        np.testing.assert_allclose(y.sum(1), 1.0, atol=1e-6)


def test_amplitude_mix_spec_keeps_labels_and_checks_its_options():
    from jaxreg import style

    mix = A.mix_from_spec("amplitude_mix(alpha=0.5,low_freq=0.5)")
    soft = jax.nn.one_hot(jnp.arange(4), 4)
    x, y = jax.jit(mix)(key(), images(4), soft)
    np.testing.assert_array_equal(y, soft)  # the content, and so the label, stays
    want = style.amplitude_mix(key(), images(4), alpha=0.5, low_freq=0.5)
    np.testing.assert_allclose(x, want, atol=1e-6)
    with pytest.raises(ValueError, match="alpha must be in"):
        A.mix_from_spec("amplitude_mix(alpha=2.0)")
    with pytest.raises(ValueError, match="bad options"):
        A.mix_from_spec("amplitude_mix(beta=1.0)")
    assert "amplitude_mix" in A.list_augmentations()


def test_mixup_or_cutmix_extremes():
    x, labels = _distinct(4), jnp.arange(4)
    y_cut, s_cut = A.mixup_or_cutmix(key(1), x, labels, switch_prob=1.0, num_classes=4)
    _y_ref, _s_ref = A.cutmix(jax.random.split(key(1), 3)[2], x, labels, alpha=1.0, num_classes=4)
    vals = set(np.unique(np.asarray(y_cut)).round(6))
    assert vals <= set(np.asarray(x[:, 0, 0, 0]).round(6))  # only pasted, never blended
    np.testing.assert_allclose(s_cut.sum(1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "call, err",
    [
        (lambda: A.mixup(key(), images(), jnp.arange(4), alpha=0.0, num_classes=4), ValueError),
        (lambda: A.mixup(key(), images(), jnp.arange(4), alpha=-1.0, num_classes=4), ValueError),
        (lambda: A.mixup(key(), images(), jnp.arange(4), alpha=0.2), ValueError),
        (lambda: A.cutmix(key(), images(), jnp.arange(3), alpha=1.0, num_classes=4), ValueError),
        (
            lambda: A.cutmix(key(), images(), jnp.arange(4), alpha=1.0, num_classes=4, mode="x"),
            ValueError,
        ),
        (lambda: A.mixup(key(), images()[0], jnp.arange(4), alpha=1.0, num_classes=4), ValueError),
        (
            lambda: A.mixup_or_cutmix(
                key(), images(), jnp.arange(4), switch_prob=1.5, num_classes=4
            ),
            ValueError,
        ),
        (
            lambda: A.mixup(
                key(), images(), jnp.arange(4), alpha=0.2, num_classes=4, label_smoothing=1.0
            ),
            ValueError,
        ),
        (
            lambda: A.mixup(
                key(), images().astype(jnp.int32), jnp.arange(4), alpha=0.2, num_classes=4
            ),
            TypeError,
        ),
    ],
)
def test_bad_arguments(call, err):
    with pytest.raises(err):
        call()


@pytest.mark.parametrize("op", [A.mixup, A.cutmix, A.mixup_or_cutmix])
def test_labels_outside_the_classes_are_rejected_when_concrete(op):
    xs = images(4, 8, 8, 3)
    kw = {"num_classes": 3} | ({} if op is A.mixup_or_cutmix else {"alpha": 1.0})
    with pytest.raises(
        ValueError, match=r"class ids in \[0, num_classes=3\); got values in \[0, 3\]"
    ):
        op(key(0), xs, jnp.array([0, 1, 2, 3]), **kw)
    with pytest.raises(ValueError, match=r"got values in \[-1, 2\]"):
        op(key(0), xs, jnp.array([0, 1, 2, -1]), **kw)
    # Inside jit the labels are traced and cannot be checked; that is documented.
    out = jax.jit(functools.partial(op, **kw))(key(0), xs, jnp.array([0, 1, 2, 2]))
    assert out[1].shape == (4, 3)


@pytest.mark.parametrize("op", [A.mixup, A.cutmix, A.mixup_or_cutmix])
def test_a_batch_of_one_is_an_error_not_a_silent_identity(op):
    kw = {"num_classes": 3} | ({} if op is A.mixup_or_cutmix else {"alpha": 1.0})
    with pytest.raises(ValueError, match="at least 2 examples"):
        op(key(0), images(1, 8, 8, 3), jnp.array([1]), **kw)
