"""`jax.vmap` of every per-example op runs its batched form: same values, gradients both ways.

For each public per-example op of `jaxreg.augment` (and the policies, presets, and foreign
stages inside `compose`): `jax.vmap(op)` under `jit` equals the op applied to each example on
its own (eagerly); `jax.grad` of a loss of `jax.vmap(op)` and `jax.vmap(jax.grad(...))` equal
the per-example gradients; the per-example gradients agree with finite differences for ops
that are smooth in the image. `jax.vmap(compose(...))` is the program `batch(compose(...))`
runs: one gather per merged geometric chain and, on the CPU, one fence per stage.
"""

import functools

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreg.augment as A
from jaxreg import _cpu
from tests.augment._util import images, key

P = functools.partial

B, H, W, C = 3, 8, 8, 3
_NOISE = 0.1 * jax.random.normal(jax.random.key(9), (H, W, C))
_MATRIX = jnp.array([[0.9, 0.2, 0.5], [-0.1, 1.1, -0.3], [0.0, 0.0, 1.0]], jnp.float32)


def _det(op, *args, **kwargs):
    """A deterministic op as `fn(key, image)` (the key is unused)."""
    return lambda k, x: op(x, *args, **kwargs)


# name -> fn(key, image); every public per-example op of jaxreg.augment appears at least once
# under its own name (variants carry a suffix after ":").
OPS = {
    # colour, deterministic
    "adjust_brightness": _det(A.adjust_brightness, 0.1),
    "adjust_contrast": _det(A.adjust_contrast, 1.3),
    "adjust_gamma": _det(A.adjust_gamma, 0.8),
    "adjust_hue": _det(A.adjust_hue, 0.1),
    "adjust_saturation": _det(A.adjust_saturation, 1.4),
    "adjust_sharpness": _det(A.adjust_sharpness, 1.5),
    "autocontrast": _det(A.autocontrast),
    "enhance_brightness": _det(A.enhance_brightness, 1.2),
    "enhance_contrast": _det(A.enhance_contrast, 0.7),
    "enhance_saturation": _det(A.enhance_saturation, 1.3),
    "equalize": _det(A.equalize),
    "grayscale": _det(A.grayscale),
    "invert": _det(A.invert),
    "posterize": _det(A.posterize, 4),
    "solarize": _det(A.solarize, 0.5),
    # colour, random
    "random_brightness": P(A.random_brightness, max_delta=0.3),
    "random_contrast": P(A.random_contrast, lower=0.5, upper=1.5),
    "random_gamma": P(A.random_gamma, min_gamma=0.5, max_gamma=1.5),
    "random_grayscale": P(A.random_grayscale, p=0.5),
    "random_hue": P(A.random_hue, max_delta=0.2),
    "random_saturation": P(A.random_saturation, lower=0.5, upper=1.5),
    "color_jitter": P(A.color_jitter, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
    # degradation
    "add_noise": _det(A.add_noise, _NOISE),
    "downscale": _det(A.downscale, 2),
    "gaussian_blur": _det(A.gaussian_blur, 1.0, 3),
    "gaussian_noise": P(A.gaussian_noise, sigma=(0.05, 0.2), p=0.7),
    "jpeg_compress": _det(A.jpeg_compress, 50),
    "random_blur": P(A.random_blur, sigma=(0.5, 1.5)),
    "random_downscale": P(A.random_downscale, factors=(2, 4)),
    "random_jpeg": P(A.random_jpeg, quality=(10, 90)),
    # erasing
    "erase": _det(A.erase, 1, 2, 3, 4),
    "cutout": P(A.cutout, size=4),
    "cutout:noise": P(A.cutout, size=4, fill="noise"),
    "cutout:mean": P(A.cutout, size=(3, 5), fill="mean"),
    "random_erasing": P(A.random_erasing, p=1.0),
    "corner_patches": P(A.corner_patches, size=3, p=0.8),
    # geometric, deterministic
    "affine": _det(A.affine, degrees=20, scale=1.1, translate=(1.0, 0.5), shear=(5.0, 3.0)),
    "affine:reflect": _det(A.affine, degrees=-35, scale=0.8, mode="reflect"),
    "center_crop": _det(A.center_crop, 6, 5),
    "crop": _det(A.crop, 1, 2, size=(5, 6)),
    "flip_left_right": _det(A.flip_left_right),
    "flip_up_down": _det(A.flip_up_down),
    "resize": _det(A.resize, (5, 11)),
    "resized_crop": _det(A.resized_crop, 1.0, 2.0, 5.0, 4.0, size=(6, 6)),
    "rot90": _det(A.rot90, 1),
    "rotate": _det(A.rotate, 0.3),
    "rotate:constant": _det(A.rotate, -0.7, mode="constant", cval=0.25),
    "rotate:wrap": _det(A.rotate, 0.5, mode="wrap"),
    "rotate:order0": _det(A.rotate, 0.4, order=0, mode="mirror"),
    "scale": _det(A.scale, 1.3),
    "shear": _det(A.shear, 10.0, 5.0),
    "translate": _det(A.translate, 1.5, -0.5),
    "warp_affine": _det(A.warp_affine, _MATRIX, mode="symmetric"),
    "warp_affine:order0": _det(A.warp_affine, _MATRIX, size=(6, 9), order=0, mode="wrap"),
    # geometric, random
    "random_affine": P(
        A.random_affine, max_degrees=20, scale=(0.8, 1.2), max_translate=0.1, max_shear=10
    ),
    "random_crop": P(A.random_crop, crop_sizes=(6, 6, 3), padding=2),
    "random_flip": P(A.random_flip, horizontal=True, vertical=True),
    "random_flip_left_right": A.random_flip_left_right,
    "random_flip_up_down": P(A.random_flip_up_down, probability=0.7),
    "random_resized_crop": P(A.random_resized_crop, size=6),
    "random_rot90": A.random_rot90,
    "random_rotate": P(A.random_rotate, max_degrees=30),
    "random_rotate:edge": P(A.random_rotate, max_degrees=60, mode="edge"),
    "random_scale": P(A.random_scale, min_scale=0.7, max_scale=1.3),
    "random_shear": P(A.random_shear, max_degrees=20),
    "random_translate": P(A.random_translate, max_fraction=0.3),
    # composition and policies
    "identity": A.identity,
    "compose": A.compose(
        P(A.random_rotate, max_degrees=20),
        A.random_flip,
        P(A.color_jitter, brightness=0.3),
        P(A.cutout, size=3),
    ),
    "random_apply": A.random_apply(P(A.gaussian_noise, sigma=0.1), 0.5),
    "random_apply:geometric": A.random_apply(P(A.random_rotate, max_degrees=30), 0.5),
    "one_of": A.one_of(
        P(A.random_blur, sigma=(0.5, 1.0)), A.random_rotate.geometric_op(max_degrees=20)
    ),
    "one_of:geometric": A.one_of(A.random_rot90, P(A.random_flip, vertical=True)),
    "rand_augment": A.rand_augment(2, 9),
    "trivial_augment": A.trivial_augment(),
    "augmix": A.augmix(width=2, depth=2),
    # presets and specs
    "from_spec:digits": A.from_spec("digits"),
    "from_spec:cifar": A.from_spec("cifar"),
    "from_spec:imagenet": A.from_spec("imagenet"),
    "from_spec:degrade": A.from_spec("degrade"),
    "from_spec:chain": A.from_spec(
        "crop(padding=2)+flip+jitter+noise(sigma=0.05,p=0.5)+cutout(size=4,fill='noise')"
    ),
    # foreign stages (a user's function, a dm-pix op) between jaxreg's ops
    "compose:foreign": A.compose(
        P(A.random_rotate, max_degrees=20),
        lambda k, x: x * 0.9 + 0.05 * jax.random.uniform(k, ()),
        P(dm_pix.random_brightness, max_delta=0.1),
        P(A.gaussian_noise, sigma=0.05),
    ),
}

# Names of jaxreg.augment that are not per-example ops: batch-level ops and helpers.
NOT_PER_EXAMPLE = {
    "batch",  # lifts a per-example fn: jax.vmap on split keys (tested below)
    "compose",  # combinators: tested through the functions they return (OPS)
    "random_apply",
    "one_of",
    "rand_augment",
    "trivial_augment",
    "augmix",
    "mixup",  # batch-level mixing: (images, labels) -> (images, soft labels)
    "cutmix",
    "mixup_or_cutmix",
    "soft_labels",
    "from_spec",  # spec helpers (their presets are in OPS)
    "mix_from_spec",
    "parse_spec",
    "list_augmentations",
    "save_grid",  # writes a PNG
    "native_status",  # reports the native warp's path
}

# Ops that are smooth in the image for a fixed key, away from clipping (the finite-difference
# test keeps pixels inside [0.25, 0.75]): finite differences of a per-example loss match the
# gradient. Resampling is linear in the image.
SMOOTH = {
    name: OPS[name]
    for name in (
        "affine",
        "random_rotate",
        "rotate:constant",
        "warp_affine",
        "gaussian_noise",
        "cutout",
        "random_resized_crop",
        "gaussian_blur",
        "from_spec:digits",
        "compose:foreign",
    )
}
SMOOTH["color_jitter:bcs"] = P(A.color_jitter, brightness=0.2, contrast=0.2, saturation=0.2)


def test_every_public_name_is_covered():
    covered = {name.split(":")[0] for name in OPS} | NOT_PER_EXAMPLE
    assert set(A.__all__) <= covered, sorted(set(A.__all__) - covered)


def _data(seed=1):
    xs = images(B, H, W, C, seed=seed)
    keys = jax.random.split(key(5), B)
    return keys, xs


def _weights(fn, keys, xs):
    """Fixed random weights of the output's shape: the loss is sum(out * w)."""
    shape = jax.eval_shape(fn, keys[0], xs[0]).shape
    return jax.random.uniform(jax.random.key(11), (B, *shape), minval=-1.0, maxval=1.0)


def _per_example(fn, keys, xs, ws):
    """Eager per-example outputs and gradients of sum(fn(k, x) * w) (the reference)."""
    outs, grads = [], []
    for k, x, w in zip(keys, xs, ws):
        outs.append(fn(k, x))
        grads.append(jax.grad(lambda x, k=k, w=w: jnp.sum(fn(k, x) * w))(x))
    return np.stack(outs), np.stack(grads)


@functools.partial(jax.jit, static_argnums=0)
def _batched(fn, keys, xs, ws):
    """Under jit: vmap outputs, grad of a loss of vmap, and vmap of per-example grads."""
    out = jax.vmap(fn)(keys, xs)
    g_of_vmap = jax.grad(lambda xs: jnp.sum(jax.vmap(fn)(keys, xs) * ws))(xs)
    loss = lambda k, x, w: jnp.sum(fn(k, x) * w)
    vmap_of_g = jax.vmap(jax.grad(loss, argnums=1))(keys, xs, ws)
    return out, g_of_vmap, vmap_of_g


@pytest.mark.parametrize("name", sorted(OPS))
def test_vmap_values_and_gradients_equal_per_example(name):
    fn = OPS[name]
    keys, xs = _data()
    ws = _weights(fn, keys, xs)
    ref_out, ref_grad = _per_example(fn, keys, xs, ws)
    out, g_of_vmap, vmap_of_g = _batched(fn, keys, xs, ws)
    # Same arithmetic; the batched forms may contract multiply-adds differently (1e-6), and
    # the native CPU warp computes bilinear taps in C++ (1e-6).
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=2e-5)
    np.testing.assert_allclose(g_of_vmap, ref_grad, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(vmap_of_g, ref_grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(SMOOTH))
def test_per_example_gradient_matches_finite_differences(name):
    fn = SMOOTH[name]
    keys, xs = _data(seed=2)
    xs = 0.25 + 0.5 * xs
    k, x = keys[1], xs[1]
    w = _weights(fn, keys, xs)[1]
    v = jax.random.normal(jax.random.key(3), x.shape)
    loss = jax.jit(lambda x: jnp.sum(fn(k, x).astype(jnp.float32) * w))
    eps = 1e-3
    fd = (loss(x + eps * v) - loss(x - eps * v)) / (2 * eps)
    g = jax.grad(loss)(x)
    np.testing.assert_allclose(jnp.vdot(g, v), fd, rtol=2e-2, atol=2e-2)


def test_eager_vmap_equals_jit_vmap():
    keys, xs = _data()
    for name in ("compose", "random_rotate", "cutout", "rotate:constant", "from_spec:cifar"):
        fn = OPS[name]
        np.testing.assert_allclose(
            jax.vmap(fn)(keys, xs), jax.jit(jax.vmap(fn))(keys, xs), atol=1e-6
        )


def test_fill_batch_under_vmap_takes_the_previous_example_with_gradients():
    keys, xs = _data()
    op = P(A.cutout, size=4, fill="batch")
    by_hand = lambda xs: jax.vmap(lambda k, x, f: A.cutout(k, x, size=4, fill=f))(
        keys, xs, jnp.roll(xs, 1, axis=0)
    )
    ws = _weights(op, keys, xs)
    out = jax.jit(jax.vmap(op))(keys, xs)
    np.testing.assert_allclose(out, by_hand(xs), atol=1e-6)
    g = jax.jit(jax.grad(lambda xs: jnp.sum(jax.vmap(op)(keys, xs) * ws)))(xs)
    g_ref = jax.grad(lambda xs: jnp.sum(by_hand(xs) * ws))(xs)
    np.testing.assert_allclose(g, g_ref, atol=1e-6)


def test_batched_parameters_of_deterministic_ops():
    _, xs = _data()
    degrees = jnp.array([-20.0, 5.0, 33.0])
    for op in (
        lambda x, d: A.affine(x, degrees=d, mode="symmetric"),
        lambda x, d: A.rotate(x, jnp.deg2rad(d)),
        lambda x, d: A.adjust_brightness(x, d / 100.0),
        lambda x, d: A.translate(x, d / 10.0, 1.0),
    ):
        ref = np.stack([op(x, d) for x, d in zip(xs, degrees)])
        np.testing.assert_allclose(jax.jit(jax.vmap(op))(xs, degrees), ref, atol=2e-5)
        # gradients reach the parameter too, per example
        loss = lambda x, d, op=op: jnp.sum(op(x, d) ** 2)
        g = jax.jit(jax.vmap(jax.grad(loss, argnums=1)))(xs, degrees)
        g_ref = [jax.grad(loss, argnums=1)(x, d) for x, d in zip(xs, degrees)]
        np.testing.assert_allclose(g, np.stack(g_ref), rtol=1e-3, atol=1e-3)


def test_shared_key_nested_vmap_and_scan():
    fn = OPS["from_spec:chain"]
    keys, xs = _data()
    # one key for the whole batch: the same parameters for every example
    shared = jax.jit(jax.vmap(fn, in_axes=(None, 0)))(keys[0], xs)
    np.testing.assert_allclose(shared, np.stack([fn(keys[0], x) for x in xs]), atol=2e-5)
    g = jax.grad(lambda xs: jnp.sum(jax.vmap(fn, in_axes=(None, 0))(keys[0], xs) ** 2))(xs)
    g_ref = np.stack([jax.grad(lambda x: jnp.sum(fn(keys[0], x) ** 2))(x) for x in xs])
    np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-4)
    # nested vmap: a (2, 2) grid of examples
    k4 = jax.random.split(key(6), 4).reshape(2, 2)
    x4 = images(4, H, W, C, seed=3).reshape(2, 2, H, W, C)
    nested = jax.jit(jax.vmap(jax.vmap(fn)))(k4, x4)
    flat = jax.jit(jax.vmap(fn))(k4.reshape(4), x4.reshape(4, H, W, C))
    np.testing.assert_allclose(nested.reshape(flat.shape), flat, atol=2e-5)
    # lax.scan over steps of a batched augmentation, differentiated
    batched = A.batch(fn)

    def epoch(xs):
        def step(total, k):
            return total + jnp.sum(batched(k, xs) ** 2), None

        return jax.lax.scan(step, 0.0, jax.random.split(key(7), 3))[0]

    g = jax.jit(jax.grad(epoch))(xs)
    loss = lambda xs, k: jnp.sum(batched(k, xs) ** 2)
    g_ref = sum(jax.grad(loss)(xs, k) for k in jax.random.split(key(7), 3))
    np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-4)


def test_forward_mode_is_limited_to_ops_without_rules():
    _, xs = _data()
    x, t = xs[0], jnp.ones_like(xs[0])
    # deterministic colour ops rely on JAX's own batching and keep forward mode
    _, tangent = jax.jvp(lambda x: A.enhance_contrast(x, 0.5), (x,), (t,))
    assert tangent.shape == x.shape
    # ops with a batching rule are custom_vjp functions: reverse mode only
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda x: A.random_rotate(key(), x, max_degrees=10), (x,), (t,))


# --- jax.vmap(compose(...)) is batch(compose(...)) ---------------------------------------------


def _workload_a():
    return A.compose(
        A.from_spec("crop(size=32,padding=4,pad_mode='reflect')"),
        P(A.random_flip, horizontal=True, p=0.5),
        P(A.color_jitter, brightness=0.4, contrast=0.4, saturation=0.4),
        P(A.gaussian_noise, sigma=0.05, p=0.5),
        P(A.cutout, size=8),
    )


def _lowered(fn, *args):
    return jax.jit(fn).lower(*args).as_text()


def _hand_written(k, x):
    """Workload A's chain as a user writes it: jaxreg's ops one after another."""
    ks = jax.random.split(k, 5)
    x = A.random_crop(ks[0], x, (32, 32, 3), padding=4)
    x = A.random_flip(ks[1], x, horizontal=True, p=0.5)
    x = A.color_jitter(ks[2], x, brightness=0.4, contrast=0.4, saturation=0.4)
    x = A.gaussian_noise(ks[3], x, sigma=0.05, p=0.5)
    return A.cutout(ks[4], x, size=8)


def test_vmap_of_compose_lowers_to_the_program_of_batch():
    aug = _workload_a()
    xs = images(4, 32, 32, 3)
    via_batch = _lowered(A.batch(aug), key(), xs)
    via_vmap = _lowered(lambda k, xs: jax.vmap(aug)(jax.random.split(k, 4), xs), key(), xs)
    body = lambda text: text.split("\n", 1)[1]  # all but the module's name
    assert body(via_batch) == body(via_vmap)
    # crop + flip merge into one resampling: one gather for the batch
    assert via_vmap.count('"stablehlo.gather"(') == 1
    # the hand-written chain: crop and flip, one batch gather each
    assert (
        _lowered(jax.vmap(_hand_written), jax.random.split(key(), 4), xs).count(
            '"stablehlo.gather"('
        )
        == 2
    )
    # the same values as the per-example chain
    keys = jax.random.split(key(), 4)
    np.testing.assert_allclose(
        jax.jit(jax.vmap(aug))(keys, xs), np.stack([aug(k, x) for k, x in zip(keys, xs)]), atol=2e-5
    )


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the fences are CPU-only")
def test_each_stage_is_fenced_on_the_cpu_under_vmap():
    xs = images(4, 32, 32, 3)
    keys = jax.random.split(key(), 4)

    def conditionals(fn):
        return jax.jit(fn).lower(keys, xs).compile().as_text().count(" conditional(")

    # one fence per stage: the merged crop and flip, jitter, noise, cutout
    assert conditionals(jax.vmap(_workload_a())) == 4
    # crop, flip, jitter, noise, cutout
    assert conditionals(jax.vmap(_hand_written)) == 5
    with _cpu.workarounds(False):
        assert conditionals(jax.vmap(_hand_written)) == 0
