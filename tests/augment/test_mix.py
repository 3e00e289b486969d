"""Mixup / CutMix: label mass 1, lambda in [0, 1], CutMix weight = pasted area, any batch size."""

import functools
import inspect

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


_cutmix_elem = {
    c: jax.jit(functools.partial(A.cutmix, alpha=1.0, num_classes=16, mode="elem", correct_lam=c))
    for c in (False, True)
}


def test_cutmix_box_side_is_sqrt_of_one_minus_lambda():
    # With correct_lam=False the label keeps the Beta draw lambda, so the box can be checked
    # against it: side ratio sqrt(1 - lambda) (area 1 - lambda), clipped at the border. A box
    # that touches no edge was not clipped: its sides are 2 * (floor(n sqrt(1 - lambda)) // 2).
    # With correct_lam=True (same key, same boxes) the label weight is the pasted area. Three
    # rows: a side of 0 pastes nothing, and the centre reaches the first row.
    b = 16
    labels = jnp.arange(b, dtype=jnp.int32)
    unclipped = first_row_only = 0
    for h, w in ((20, 24), (3, 40)):
        x = np.asarray(_distinct(b, h, w))
        for seed in range(4):
            y, soft = map(np.asarray, _cutmix_elem[False](key(seed), jnp.asarray(x), labels))
            y_area, soft_area = map(
                np.asarray, _cutmix_elem[True](key(seed), jnp.asarray(x), labels)
            )
            np.testing.assert_array_equal(y_area, y)
            for i in range(b):
                j = b - 1 - i
                lam = soft[i, i]
                np.testing.assert_allclose(soft[i, j], 1.0 - lam, atol=1e-6)
                cut = np.sqrt(1.0 - lam)
                side_h = 2 * (int(np.floor(h * cut)) // 2)
                side_w = 2 * (int(np.floor(w * cut)) // 2)
                pasted = y[i, ..., 0] == x[j, 0, 0, 0]
                np.testing.assert_allclose(soft_area[i, j], pasted.mean(), atol=1e-6)
                rows, cols = np.nonzero(pasted)
                if rows.size == 0:
                    assert side_h == 0 or side_w == 0  # a box of side >= 2 keeps its centre
                    continue
                bh, bw = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
                assert rows.size == bh * bw  # one box
                assert bh <= side_h and bw <= side_w
                assert rows.size / (h * w) <= (1.0 - lam) + 1e-6
                first_row_only += rows.max() == 0
                if rows.min() > 0 and rows.max() < h - 1:
                    assert bh == side_h
                if cols.min() > 0 and cols.max() < w - 1:
                    assert bw == side_w
                if 0 < rows.min() and rows.max() < h - 1 and 0 < cols.min() and cols.max() < w - 1:
                    unclipped += 1
                    # The whole box: its area is 1 - lambda up to the rounding of both sides.
                    assert abs(rows.size / (h * w) - (1.0 - lam)) <= 2 / h + 2 / w
    assert unclipped >= 8  # enough boxes checked in full (128 draws)
    assert first_row_only > 0  # a centre on row 0 with half-side 1 pastes row 0 alone


@pytest.mark.parametrize("op", [A.mixup, A.cutmix, A.mixup_or_cutmix])
def test_a_bad_key_is_rejected(op):
    kw = {"num_classes": 4} | ({} if op is A.mixup_or_cutmix else {"alpha": 1.0})
    for bad in (0, jnp.zeros((2,), jnp.float32)):
        with pytest.raises(TypeError, match="PRNG key"):
            op(bad, images(4), jnp.arange(4), **kw)


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


def test_soft_labels_one_hot_smoothing_and_checks():
    y = A.soft_labels(jnp.array([2, 0]), num_classes=3)
    assert y.dtype == jnp.float32
    np.testing.assert_array_equal(y, [[0, 0, 1], [1, 0, 0]])  # no smoothing by default
    y = A.soft_labels(jnp.array([2, 0]), num_classes=4, label_smoothing=0.2)
    np.testing.assert_allclose(y, [[0.05, 0.05, 0.85, 0.05], [0.85, 0.05, 0.05, 0.05]], atol=1e-7)
    soft = jnp.array([[0.25, 0.75]], jnp.float16)
    for out in (A.soft_labels(soft), A.soft_labels(soft, num_classes=2)):
        assert out.dtype == jnp.float32
        np.testing.assert_array_equal(out, [[0.25, 0.75]])
    assert A.soft_labels(jnp.zeros((0,), jnp.int32), num_classes=3).shape == (0, 3)
    for labels, kw, err, match in [
        ([0, 1], {"num_classes": 2}, TypeError, "must be an array"),
        (jnp.array([True, False]), {"num_classes": 2}, TypeError, "integer"),
        (jnp.zeros((2, 1), jnp.int32), {"num_classes": 2}, ValueError, r"shape \(B,\)"),
        (jnp.zeros((2,), jnp.int32), {}, ValueError, "num_classes is required"),
        (jnp.zeros((2,), jnp.int32), {"num_classes": 0}, ValueError, "num_classes must be >= 1"),
        (jnp.zeros((2,)), {}, ValueError, r"shape \(B, K\)"),
        (jnp.zeros((2, 3)), {"num_classes": 4}, ValueError, "does not match"),
        (jnp.zeros((2, 3)), {"label_smoothing": -0.1}, ValueError, "label_smoothing"),
        (jnp.zeros((2, 3)), {"label_smoothing": 1.0}, ValueError, "label_smoothing"),
    ]:
        with pytest.raises(err, match=match):
            A.soft_labels(labels, **kw)


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


def test_mixup_or_cutmix_blends_or_pastes_each_example_as_its_label_says():
    b = 16
    x, labels = _distinct(b), jnp.arange(b, dtype=jnp.int32)
    xs = np.asarray(x)
    kinds = set()
    for p in (0.0, 1.0, 0.5):
        y, soft = map(
            np.asarray,
            A.mixup_or_cutmix(key(3), x, labels, switch_prob=p, num_classes=b, mode="elem"),
        )
        for i in range(b):
            j = b - 1 - i
            lam, w = soft[i, i], soft[i, j]
            np.testing.assert_allclose(lam + w, 1.0, atol=1e-6)
            blended = np.allclose(y[i], lam * xs[i] + (1 - lam) * xs[j], atol=1e-6)
            from_partner = y[i] == xs[j]
            pasted = np.all(from_partner | (y[i] == xs[i])) and np.isclose(
                from_partner.mean(), w, atol=1e-6
            )
            assert blended if p == 0.0 else pasted if p == 1.0 else blended or pasted
            if p == 0.5:
                kinds.add("blend" if blended and not pasted else "paste" if pasted else "")
    assert {"blend", "paste"} <= kinds  # per example, some of each


def test_mixup_or_cutmix_defaults_are_timm_s():
    params = inspect.signature(A.mixup_or_cutmix).parameters
    defaults = {k: v.default for k, v in params.items() if v.default is not inspect.Parameter.empty}
    assert defaults == {
        "mixup_alpha": 0.8,
        "cutmix_alpha": 1.0,
        "switch_prob": 0.5,
        "num_classes": None,
        "label_smoothing": 0.0,
        "mode": "batch",
        "correct_lam": True,
    }
    with pytest.raises(ValueError, match="mixup_alpha"):
        A.mixup_or_cutmix(key(), images(4), jnp.arange(4), mixup_alpha=0.0, num_classes=4)


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
