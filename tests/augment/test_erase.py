"""Erasing ops change only the erased region; fills: constant, noise, mean, another image."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxreg.augment as A
from jaxreg.augment.erase import check_fill_option
from tests.augment._util import image, images, key

FAST = settings(max_examples=10, deadline=None)


def _changed(x, y):
    return np.any(np.asarray(x) != np.asarray(y), axis=-1)


def _is_box(mask):
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return True, (0, 0)
    h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    return rows.size == h * w, (h, w)


_cutout = jax.jit(
    lambda k, x, o: (
        A.cutout(k, x, size=(3, 4), fill=-1.0),
        A.cutout(k, x, size=3, fill="noise"),
        A.cutout(k, x, size=3, fill=o),
    )
)
_erasing = jax.jit(lambda k, x: A.random_erasing(k, x, p=1.0, scale=(0.1, 0.3), fill=-1.0))


@FAST
@given(st.integers(0, 2**30))
def test_cutout_changes_one_clipped_box(seed):
    x = image(9, 10, 3, seed=seed % 7)
    other = image(9, 10, 3, seed=99)
    a, b, c = _cutout(key(seed), x, other)
    box, (h, w) = _is_box(_changed(x, a))
    assert box and h <= 3 and w <= 4
    assert np.all(np.asarray(a)[_changed(x, a)] == -1.0)
    assert _is_box(_changed(x, b))[0]
    m = _changed(x, c)
    np.testing.assert_array_equal(np.asarray(c)[m], np.asarray(other)[m])


@FAST
@given(st.integers(0, 2**30))
def test_random_erasing_changes_only_a_box_of_the_requested_area(seed):
    x = image(10, 10, 1, seed=seed % 5)
    y = _erasing(key(seed), x)
    mask = _changed(x, y)
    box, (h, w) = _is_box(mask)
    assert box
    if mask.any():
        assert 0.05 <= h * w / 100 <= 0.4  # area fraction in scale, up to rounding
    assert np.all(np.asarray(y)[mask] == -1.0)


_cutout5 = jax.jit(jax.vmap(lambda k, x: A.cutout(k, x, size=5, fill=-1.0), in_axes=(0, None)))


def test_cutout_square_is_centred_on_a_uniform_pixel():
    # A 5 x 5 square centred on any pixel (the first and last included), clipped at the
    # border: at least its centre row and the two on each side that fit, so 3 to 5 rows.
    h, w = 9, 11
    x = jnp.zeros((h, w, 1))
    seen = set()
    for y in np.asarray(_cutout5(jax.random.split(key(8), 256), x)):
        rows, cols = np.nonzero(y[..., 0] == -1.0)
        bh, bw = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert rows.size == bh * bw and 3 <= bh <= 5 and 3 <= bw <= 5
        seen.add(("top", bh) if rows.min() == 0 else ("bottom", bh) if rows.max() == h - 1 else bh)
        seen.add(("left", bw) if cols.min() == 0 else ("right", bw) if cols.max() == w - 1 else bw)
    # Centres on the first and last rows and columns happen; so do whole squares.
    assert {("top", 3), ("bottom", 3), ("left", 3), ("right", 3), 5} <= seen


def test_defaults_of_the_random_erasing_ops():
    x = image(8, 8, 3)
    params = inspect.signature(A.random_erasing).parameters
    assert params["p"].default == 0.5 and params["fill"].default == 0.0
    assert params["scale"].default == (0.02, 1 / 3) and params["ratio"].default == (0.3, 3.3)
    assert inspect.signature(A.corner_patches).parameters["p"].default == 0.5
    assert inspect.signature(A.corner_patches).parameters["fill"].default == "noise"
    y = A.cutout(key(2), x, size=3)  # fill 0 by default
    assert np.all(np.asarray(y)[_changed(x, y)] == 0.0)


@pytest.mark.parametrize(
    "op",
    [
        lambda k: A.cutout(k, image(), size=3),
        lambda k: A.random_erasing(k, image()),
        lambda k: A.corner_patches(k, image(), size=3),
    ],
)
def test_a_bad_key_is_rejected(op):
    for bad in (0, jnp.zeros((2,), jnp.float32)):
        with pytest.raises(TypeError, match="PRNG key"):
            op(bad)


_erasing_many = jax.jit(
    jax.vmap(
        lambda k, x, p: A.random_erasing(
            k, x, p=p, scale=(0.05, 0.25), ratio=(0.5, 3.0), fill=-1.0
        ),
        in_axes=(0, None, None),
    )
)


def test_random_erasing_samples_area_aspect_and_position_as_torchvision():
    # Area fraction uniform in scale, aspect log-uniform in ratio, independent of each other,
    # the box at a uniform position strictly inside; erased with probability p. Every box fits
    # here (sides at most sqrt(0.25 * 1600 * 3) < 40), so the first try is the one drawn.
    h = w = 40
    x = jnp.zeros((h, w, 1))
    boxes = []
    for m in np.asarray(_erasing_many(jax.random.split(key(11), 512), x, 1.0))[..., 0] == -1:
        assert _is_box(m)[0]
        r, c = np.nonzero(m)
        boxes.append((r.min(), c.min(), r.max() - r.min() + 1, c.max() - c.min() + 1))
    top, left, eh, ew = np.asarray(boxes).T
    assert np.all((eh < h) & (ew < w))
    frac, log_aspect = eh * ew / (h * w), np.log(eh / ew)
    rounding = (0.5 * (eh + ew) + 0.25) / (h * w)  # sides are rounded to whole pixels
    assert np.all((frac > 0.05 - rounding) & (frac < 0.25 + rounding))
    slack = 1.0 / np.minimum(eh, ew)
    assert np.all((log_aspect > np.log(0.5) - slack) & (log_aspect < np.log(3.0) + slack))
    assert abs(frac.mean() - 0.15) < 0.008
    assert abs(log_aspect.mean() - (np.log(0.5) + np.log(3.0)) / 2) < 0.08
    assert abs(np.corrcoef(frac, log_aspect)[0, 1]) < 0.3
    assert abs(np.corrcoef(top / (h - eh), left / (w - ew))[0, 1]) < 0.3
    # Every position of a box is possible: some touch each side of the image.
    assert (
        (top == 0).any() and (top + eh == h).any() and (left == 0).any() and (left + ew == w).any()
    )
    erased = np.asarray(_erasing_many(jax.random.split(key(12), 512), x, 0.5)).min(axis=(1, 2, 3))
    assert 0.38 < (erased == -1.0).mean() < 0.62


@pytest.mark.parametrize(
    "op",
    [
        lambda **kw: A.cutout(key(), image(), size=3, **kw),
        lambda **kw: A.random_erasing(key(), image(), **kw),
        lambda **kw: A.corner_patches(key(), image(), size=3, **kw),
        lambda **kw: A.erase(image(), 1, 1, 2, 2, **kw),
    ],
)
def test_every_op_checks_its_fill(op):
    with pytest.raises(ValueError, match="fill must be"):
        op(fill="blue")
    with pytest.raises(ValueError, match="another example of the batch"):
        op(fill="batch")


def test_random_erasing_ranges_must_be_positive():
    for kw, match in (
        ({"scale": (0.0, 0.3)}, "scale must be > 0"),
        ({"ratio": (0.0, 2.0)}, "ratio must be > 0"),
        ({"scale": (0.1, 1.5)}, r"scale must lie in \[0.0, 1.0\]"),
    ):
        with pytest.raises(ValueError, match=match):
            A.random_erasing(key(), image(), **kw)
    A.random_erasing(key(), image(), scale=(0.1, 1.0), ratio=(1.0, 1.0))  # bounds included


def test_random_erasing_p_zero_and_mean_fill():
    x = image(8, 8, 3)
    np.testing.assert_array_equal(A.random_erasing(key(), x, p=0.0), x)
    y = A.random_erasing(key(1), x, p=1.0, fill="mean")
    m = _changed(x, y)
    np.testing.assert_allclose(np.asarray(y)[m][0], np.asarray(x).mean(axis=(0, 1)), atol=1e-6)


def test_corner_patches_touch_only_corners():
    x = image(12, 12, 3)
    ys = jax.jit(jax.vmap(lambda k: A.corner_patches(k, x, size=3, p=0.7)))(
        jax.random.split(key(), 8)
    )
    any_change = False
    for y in ys:
        m = _changed(x, y)
        any_change |= m.any()
        r, c = np.nonzero(m)
        assert np.all(((r < 3) | (r >= 9)) & ((c < 3) | (c >= 9)))
    assert any_change


def _corner_boxes(y, h, w, sh, sw):
    """Erased (value -1) box per corner of y: (height, width), (0, 0) for none; checks anchors."""
    m = np.asarray(y)[..., 0] == -1.0
    r, c = np.nonzero(m)
    # Every erased pixel lies in one of the four (sh x sw) corner regions.
    assert np.all(((r < sh) | (r >= h - sh)) & ((c < sw) | (c >= w - sw)))
    sides = []
    for top in (True, False):
        for left in (True, False):
            rows = slice(0, sh) if top else slice(h - sh, h)
            cols = slice(0, sw) if left else slice(w - sw, w)
            region = m[rows, cols]
            box, (bh, bw) = _is_box(region)
            assert box
            if region.any():  # anchored at the image corner
                rr, cc = np.nonzero(region)
                assert (rr.min() == 0) if top else (rr.max() == sh - 1)
                assert (cc.min() == 0) if left else (cc.max() == sw - 1)
            sides.append((int(bh), int(bw)))
    return sides


_corners = jax.jit(
    jax.vmap(
        lambda k, x, p: A.corner_patches(k, x, size=(3, 4), p=p, fill=-1.0), in_axes=(0, None, None)
    )
)


def test_corner_patches_reach_every_corner_with_sides_in_bounds():
    # Top-left, top-right, bottom-left, bottom-right: each corner independently with p, a box
    # anchored there with height in [1, 3] and width in [1, 4] (size=(3, 4); H != W catches swaps).
    h, w = 10, 13
    x = image(h, w, 1)
    keys = jax.random.split(key(5), 64)
    for p in (1.0, 0.5):
        sides = np.array([_corner_boxes(y, h, w, 3, 4) for y in _corners(keys, x, p)])
        hit = sides[..., 0] > 0  # (64, 4)
        assert np.all(hit == (sides[..., 1] > 0))
        if p == 1.0:
            assert hit.all()  # every corner, every time
        else:
            assert np.all((hit.mean(0) > 0.25) & (hit.mean(0) < 0.75))  # each corner ~ half
        hs, ws = sides[..., 0][hit], sides[..., 1][hit]
        assert set(hs.tolist()) == {1, 2, 3} and set(ws.tolist()) == {1, 2, 3, 4}


def test_erase_twin():
    x = image(6, 6, 1)
    y = A.erase(x, 1, 2, 2, 3, fill=0.5)
    np.testing.assert_array_equal(np.asarray(y)[1:3, 2:5], 0.5)
    assert _changed(x, y).sum() == 6
    y = A.erase(x, 4, 4, 5, 5)  # fill 0 by default; the part outside the image is ignored
    np.testing.assert_array_equal(np.asarray(y)[4:, 4:], 0.0)
    assert _changed(x, y).sum() == 4
    # Its fill is checked like the random ops' fills.
    with pytest.raises(ValueError, match="fill must be"):
        A.erase(x, 1, 2, 2, 3, fill="blue")
    with pytest.raises(ValueError, match="another example of the batch"):
        A.erase(x, 1, 2, 2, 3, fill="batch")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: A.cutout(key(), image(), size=0), "size must be positive"),
        (lambda: A.cutout(key(), image(), size=9), "must not exceed the image size"),
        (lambda: A.cutout(key(), image(), size=3, fill="blue"), "fill must be a number"),
        (lambda: A.random_erasing(key(), image(), p=2.0), "p must be a probability"),
        (lambda: A.random_erasing(key(), image(), scale=(0.5, 0.1)), "low <= high"),
        (lambda: A.corner_patches(key(), image(), size=-1), "size must be positive"),
        (
            lambda: A.cutout(key(), image(), size=3, fill=jnp.zeros((4, 4, 3))),
            "fill image must have the image's shape",
        ),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# fill="batch": pixels of another example of the batch (example i - 1), resolved under vmap.


def _box_masks(spec_fill_batch, spec_fill_const, k, xs):
    """Batched outputs with fill='batch' and the boxes (same keys, constant -1 fill)."""
    out = A.batch(A.from_spec(spec_fill_batch))(k, xs)
    boxes = np.asarray(A.batch(A.from_spec(spec_fill_const))(k, xs))[..., 0] == -1.0
    return np.asarray(out), boxes


@pytest.mark.parametrize(
    "op", ["cutout(size=3, {})", "erasing(p=1.0, {})", "corner_patches(size=3, p=1.0, {})"]
)
def test_fill_batch_takes_the_previous_example_of_the_batch(op):
    xs = images(5, 9, 10, 3, seed=1)
    k = key(3)
    out, boxes = _box_masks(op.format("fill='batch'"), op.format("fill=-1.0"), k, xs)
    x = np.asarray(xs)
    assert boxes.any(axis=(1, 2)).all()  # every example has a box
    for i in range(5):
        m = boxes[i]
        np.testing.assert_array_equal(out[i][m], x[i - 1][m])  # the partner's pixels, same place
        assert np.all(out[i][m] != x[i][m])  # not its own
        np.testing.assert_array_equal(out[i][~m], x[i][~m])  # the rest unchanged
    jitted = jax.jit(A.batch(A.from_spec(op.format("fill='batch'"))))(k, xs)
    np.testing.assert_array_equal(jitted, out)


def test_fill_batch_inside_a_chain_equals_vmap_and_runs_in_scan():
    # Jitted throughout (eager == jit is tested op by op elsewhere): op-by-op dispatch of these
    # chains costs seconds of compilation per call.
    spec = "flip+cutout(size=4,fill='batch',p=0.5)+noise(sigma=0.05)"
    fn = A.from_spec(spec)
    xs = images(6, 8, 8, 3, seed=2)
    k = key(7)
    run = lambda s: jax.jit(A.batch(A.from_spec(s)))(k, xs)
    ours = run(spec)
    # (noise: the sum may be fused differently, within 1 ulp)
    np.testing.assert_allclose(ours, jax.jit(jax.vmap(fn))(jax.random.split(k, 6), xs), atol=1e-6)
    # The partner is the flipped example i - 1 (the box is filled after the flip).
    # Same number of stages, so the same stage keys: the boxes, and each example after its flip.
    flipped = run("flip+cutout(size=4,fill=-1.0,p=0.5)")
    m = np.asarray(flipped)[..., 0] == -1.0
    assert 0 < m.any(axis=(1, 2)).sum() < 6  # p=0.5: some examples erased, some not
    pre = np.asarray(run("flip+cutout(size=4,fill=0.0,p=0.0)"))
    assert np.any(pre != np.asarray(xs))  # some flips happened
    no_noise = np.asarray(run("flip+cutout(size=4,fill='batch',p=0.5)"))
    for i in range(6):
        np.testing.assert_array_equal(no_noise[i][m[i]], pre[i - 1][m[i]])
        np.testing.assert_array_equal(no_noise[i][~m[i]], pre[i][~m[i]])
    # Inside a scan over steps, as the training loop runs it.
    step = lambda c, t: (c, A.batch(fn)(jax.random.fold_in(k, t), xs))
    _, ys = jax.jit(lambda: jax.lax.scan(step, 0, jnp.arange(2)))()
    want = jax.jit(lambda: A.batch(fn)(jax.random.fold_in(k, 0), xs))()
    np.testing.assert_allclose(ys[0], want, atol=1e-6)


def test_fill_batch_partner_edge_cases():
    x = image(8, 8, 3)
    k = key(1)
    fn = lambda kk, v: A.cutout(kk, v, size=4, fill="batch")
    # One example, or one image shared by many keys: the partner is the image itself.
    np.testing.assert_array_equal(jax.vmap(fn)(k[None], x[None]), x[None])
    shared = jax.vmap(fn, in_axes=(0, None))
    np.testing.assert_array_equal(jax.jit(shared)(jax.random.split(k, 3), x), jnp.stack([x, x, x]))
    # A concrete image that is not batched has no other example: a clear error.
    with pytest.raises(ValueError, match="another example of the batch"):
        A.cutout(k, x, size=3, fill="batch")
    with pytest.raises(ValueError, match="another example of the batch"):
        shared(jax.random.split(k, 3), x)
    # The deterministic twin takes it too.
    xs = images(3, 6, 6, 1, seed=4)
    ys = np.asarray(jax.vmap(lambda v: A.erase(v, 1, 2, 2, 3, fill="batch"))(xs))
    np.testing.assert_array_equal(ys[:, 1:3, 2:5], np.roll(np.asarray(xs), 1, axis=0)[:, 1:3, 2:5])
    assert (ys != np.asarray(xs)).sum() == 3 * 6


@pytest.mark.parametrize(
    "spec",
    [
        "cutout(fill='other')",
        "erasing(fill='blue')",
        "corner_patches(fill=None)",
        "cutout(fill=(0.1, 'a'))",
        "erasing(fill=())",
    ],
)
def test_bad_fill_in_specs_fails_when_built_and_names_allowed_values(spec):
    with pytest.raises(ValueError, match="'noise', 'mean', 'batch'"):
        A.from_spec(spec)


def test_patch_size_up_to_the_image_size_on_each_side():
    x = image(6, 9, 1)
    for op in (
        lambda size: A.cutout(key(), x, size=size),
        lambda size: A.corner_patches(key(), x, size=size),
    ):
        op((6, 9))  # the whole image is allowed
        for size in ((7, 9), (6, 10), (9, 6)):
            with pytest.raises(ValueError, match="must not exceed the image size"):
                op(size)


def test_check_fill_option_accepts_and_rejects():
    # What a spec may say (checked before any image is seen), and an (H, W, C) image.
    for ok in (0.5, 1, (0.1, 0.2, 0.3), [0, 1], "noise", "mean", "batch", jnp.zeros((4, 4, 3))):
        check_fill_option(ok)
    for bad in (
        True,
        (0.1, True),
        (),
        (0.1, "a"),
        (0.1, float("inf")),
        float("nan"),
        jnp.zeros((4, 4)),  # not an image
        None,
    ):
        with pytest.raises(ValueError, match="fill must"):
            check_fill_option(bad)
    A.from_spec("cutout(size=2, fill=(0.1, 0.2, 0.3))")


def test_per_channel_fill_of_every_op():
    x = image(6, 9, 3)  # width 9 and height 6 differ from the 3 channels
    fill = (0.25, 0.5, 0.75)
    outs = [
        A.cutout(key(1), x, size=3, fill=fill),
        A.random_erasing(key(1), x, p=1.0, fill=fill),
        A.corner_patches(key(1), x, size=2, p=1.0, fill=fill),
        A.erase(x, 1, 2, 2, 3, fill=fill),
    ]
    for y in outs:
        m = _changed(x, y)
        assert m.any()
        np.testing.assert_array_equal(np.asarray(y)[m], np.broadcast_to(fill, (m.sum(), 3)))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        A.cutout(key(1), x, size=3, fill=(0.25, 0.5))


def test_noise_fill_is_independent_of_the_box():
    # The noise uses a stream of its own: its first value does not give away where the box is.
    x = jnp.zeros((8, 8, 1))
    same = seen = 0
    ys = jax.jit(jax.vmap(lambda k: A.cutout(k, x, size=8, fill="noise")))(
        jax.random.split(key(4), 64)
    )
    for y in np.asarray(ys):
        rows = np.nonzero(y[:, 0, 0] != 0)[0]
        if rows.size and rows.min() == 0 and rows.max() < 7:  # box clipped at the top only
            cy = rows.max() + 1 - 4  # bottom = cy + 4
            seen += 1
            same += int(np.floor(y[0, 0, 0] * 8)) == cy
    assert seen >= 16 and same <= seen // 2  # about 1 in 8 by chance


def test_spec_lists_fill_batch():
    assert "'batch'" in A.list_augmentations()["cutout"]
    assert "'batch'" in A.list_augmentations()["erasing"]


def test_random_erasing_box_fits_strictly_inside_the_image():
    # torchvision keeps the first draw with h < H and w < W: with large areas and extreme aspect
    # ratios many draws do not fit, and the box taken never spans a whole row or column.
    x = jnp.ones((12, 12, 1))
    ys = jax.jit(
        jax.vmap(lambda k: A.random_erasing(k, x, p=1.0, scale=(0.4, 0.9), ratio=(0.2, 5.0)))
    )(jax.random.split(key(8), 200))
    erased = np.asarray(ys)[..., 0] == 0.0  # (200, 12, 12)
    assert erased.any(axis=(1, 2)).mean() > 0.5  # most images found a box
    assert not erased.all(axis=1).any() and not erased.all(axis=2).any()
