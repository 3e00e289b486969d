"""Models: shapes, BatchNorm/Dropout behaviour, the conv and pool layers, bad options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxreg import _cpu, models
from jaxreg._cpu import conv as cpu_conv
from jaxreg.models.layers import conv2d


@pytest.mark.parametrize(
    "strides,padding,size,kernel",
    [
        ((1, 1), "SAME", (9, 9), (3, 3)),
        ((2, 2), "SAME", (9, 9), (3, 3)),
        ((2, 2), "VALID", (9, 9), (3, 3)),
        ((2, 2), "SAME", (8, 7), (3, 3)),
        ((2, 1), "VALID", (8, 7), (2, 3)),
        ((2, 2), "SAME", (8, 8), (1, 1)),
        ((1, 1), "SAME", (6, 5), (4, 2)),
    ],
)
def test_conv_backward_rules_agree(strides, padding, size, kernel):
    # the CPU rule's weight gradient (patch matrix) and input gradient (a flipped-kernel
    # convolution with input dilation) against XLA's own transpose, incl. strides, odd sizes
    # and even kernels (asymmetric "SAME" padding); and the layer with the seam on and off
    x = jax.random.normal(jax.random.key(0), (3, *size, 2))
    w = jax.random.normal(jax.random.key(1), (*kernel, 2, 4))

    def grads(conv):
        f = lambda a, b: jnp.sum(jnp.sin(conv(a, b)))
        # full float32 products: GPUs otherwise default to TF32 for convolutions and dots
        with jax.default_matmul_precision("float32"):
            return jax.jit(jax.grad(f, argnums=(0, 1)))(x, w)

    xla = grads(lambda a, b: cpu_conv.conv(a, b, strides, padding))
    cpu_rule = grads(lambda a, b: cpu_conv.conv_cpu_backward(a, b, strides, padding))
    layer = grads(lambda a, b: conv2d(a, b, strides=strides, padding=padding))
    with _cpu.workarounds(False):
        layer_off = grads(lambda a, b: conv2d(a, b, strides=strides, padding=padding))
    for got in (cpu_rule, layer, layer_off):
        for a, b in zip(xla, got):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # forward is the same convolution whatever the backward rule
    np.testing.assert_array_equal(
        cpu_conv.conv(x, w, (1, 1), "SAME"), cpu_conv.conv_cpu_backward(x, w, (1, 1), "SAME")
    )


def test_conv_rejects_bad_options():
    x, w = jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1))
    with pytest.raises(TypeError):
        conv2d(x, w, grad="patches")  # the backward rule is not a model option any more
    with pytest.raises(ValueError, match="padding"):
        conv2d(x, w, padding="same")


@pytest.mark.parametrize(
    "name,shape,kw",
    [
        ("cnn", (12, 12, 1), {"batch_norm": True, "dropout": 0.5}),
        ("cnn_small", (8, 8, 1), {}),
        ("tiny", (7, 7, 3), {"batch_norm": True}),
        ("resnet20", (16, 16, 3), {"blocks_per_stage": 1}),  # same code as depth 20, cheaper
        ("cnn3", (12, 12, 3), {}),
        ("cnn3_mixstyle", (12, 12, 3), {"batch_norm": True}),
    ],
)
def test_models_map_images_to_logits(name, shape, kw):
    m = models.create(name, num_classes=10, input_shape=shape, **kw)
    x = jax.random.uniform(jax.random.key(0), (2,) + shape)
    m.eval()
    y = nnx.jit(lambda mod, a: mod(a))(m, x)
    assert y.shape == (2, 10) and y.dtype == jnp.float32
    # Stock NNX: only parameters, BatchNorm statistics and the dropout stream's RNG state.
    rest = nnx.split(m, nnx.Param, nnx.BatchStat, nnx.RngState, ...)[4]
    assert not jax.tree.leaves(rest)


def test_dropout_is_random_only_in_training_mode():
    m = models.create("cnn", num_classes=3, input_shape=(8, 8, 1), dropout=0.5)
    x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
    m.train()
    a, b = m(x), m(x)  # the stream advances between calls, as in any NNX model
    assert not np.allclose(a, b)
    m.eval()
    np.testing.assert_array_equal(m(x), m(x))


def test_cnn3_mixstyle_is_cnn3_in_eval_and_mixes_in_training():
    x = jax.random.uniform(jax.random.key(0), (6, 16, 16, 3))
    mixed = models.create("cnn3_mixstyle", num_classes=4, input_shape=(16, 16, 3), seed=3)
    plain = models.create("cnn3", num_classes=4, input_shape=(16, 16, 3), seed=3)
    assert [type(m).__name__ for m in mixed.mixstyles] == ["MixStyle", "MixStyle", "NoneType"]
    mixed.eval()
    plain.eval()
    np.testing.assert_array_equal(mixed(x), plain(x))  # same parameters; MixStyle is off
    mixed.train()
    plain.train()
    outs = [mixed(x) for _ in range(6)]  # mixes a batch with probability 0.5
    assert any(not np.allclose(o, plain(x), atol=1e-6) for o in outs)
    with pytest.raises(ValueError, match="mixstyle_after must index the 2 conv blocks"):
        models.CNN(3, (8, 8, 3), channels=(4, 8), mixstyle_after=(2,), rngs=nnx.Rngs(0))


def test_batchnorm_eval_uses_running_statistics():
    m = models.create("tiny", num_classes=3, input_shape=(6, 6, 1), batch_norm=True)
    x = jax.random.uniform(jax.random.key(0), (8, 6, 6, 1))
    m.eval()
    with jax.default_matmul_precision("float32"):  # GPUs otherwise use TF32 convolutions
        before = m(x[:1])  # eval mode: the output of one example does not depend on the batch
        np.testing.assert_allclose(before, m(x)[:1], rtol=1e-5, atol=1e-6)
    m.train()
    m(x)  # updates running statistics
    m.eval()
    assert not np.allclose(before, m(x[:1]))


def test_bad_model_options():
    with pytest.raises(ValueError, match="unknown model"):
        models.create("vgg99", num_classes=10, input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match="input_shape"):
        models.create("cnn", num_classes=10, input_shape=(8, 8))
    with pytest.raises(ValueError, match="dropout"):
        models.create("cnn", num_classes=10, input_shape=(8, 8, 1), dropout=1.5)
    with pytest.raises(ValueError, match="num_classes"):
        models.create("cnn", num_classes=1, input_shape=(8, 8, 1))
    with pytest.raises(TypeError, match="bad options"):
        models.create("cnn", num_classes=10, input_shape=(8, 8, 1), widht=3)


@pytest.mark.parametrize("shape", [(2, 6, 8, 3), (2, 7, 5, 2), (1, 1, 1, 1)])
@pytest.mark.parametrize("on", [True, False])
def test_max_pool_matches_reduce_window_in_value_and_gradient(shape, on):
    from jaxreg.models.layers import max_pool_2x2

    def ref(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")

    k1, k2 = jax.random.split(jax.random.key(0))
    x = jax.random.normal(k1, shape)
    # many exact ties (ReLU zeros, repeated values): the gradient goes to the first maximum
    tied = jnp.round(jax.nn.relu(x) * 2) / 2
    with _cpu.workarounds(on):
        for inp in (x, tied):
            np.testing.assert_array_equal(max_pool_2x2(inp), ref(inp))
            g = jax.random.normal(k2, ref(inp).shape)
            for f in (max_pool_2x2, jax.jit(lambda v: max_pool_2x2(v))):
                (got,) = jax.vjp(f, inp)[1](g)
                (want,) = jax.vjp(ref, inp)[1](g)
                np.testing.assert_array_equal(got, want)


def test_max_pool_with_indices_gives_the_first_maximum():
    from jaxreg.models.layers import max_pool_2x2, max_pool_2x2_with_indices

    x = jnp.asarray(
        [[1.0, 3.0, 2.0, 2.0, 5.0], [3.0, 0.0, 2.0, 9.0, 6.0], [0.0, 0.0, 7.0, 1.0, 4.0]]
    ).reshape(1, 3, 5, 1)
    pooled, pos = max_pool_2x2_with_indices(x)
    np.testing.assert_array_equal(pooled, max_pool_2x2(x))
    assert pos.dtype == jnp.int8 and pos.shape == pooled.shape
    # windows (row-major positions 0..3, odd sizes padded with -inf): [[1,3],[3,0]] -> 1 (the
    # first of the tied 3s), [[2,2],[2,9]] -> 3, [[5,-inf],[6,-inf]] -> 2, [[0,0],[-inf,-inf]]
    # -> 0 (tie), [[7,1],...] -> 0, [[4,-inf],...] -> 0
    np.testing.assert_array_equal(pos[0, :, :, 0], [[1, 3, 2], [0, 0, 0]])
    # the positions select the pooled values, on the platform-independent path as well
    with _cpu.workarounds(False):
        pooled_off, pos_off = jax.jit(max_pool_2x2_with_indices)(x)
    np.testing.assert_array_equal(pos_off, pos)
    np.testing.assert_array_equal(pooled_off, pooled)


@pytest.mark.parametrize("strides,padding", [((1, 1), "SAME"), ((2, 2), "SAME"), ((2, 1), "VALID")])
def test_conv_patch_matrix_matches_lax_patches(strides, padding):
    x = jax.random.normal(jax.random.key(0), (2, 7, 6, 3))
    got = cpu_conv.patches(x, 3, 2, strides, padding)
    want = jax.lax.conv_general_dilated_patches(
        x, (3, 2), strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    # lax orders the features (cin, kh, kw); ours are (kh, kw, cin)
    want = want.reshape(want.shape[:3] + (3, 3, 2)).transpose(0, 1, 2, 4, 5, 3).reshape(got.shape)
    np.testing.assert_array_equal(got, want)


def test_max_pool_rejects_bad_input():
    from jaxreg.models.layers import max_pool_2x2

    with pytest.raises(ValueError, match="4-D floating"):
        max_pool_2x2(jnp.zeros((4, 4, 1)))
    with pytest.raises(ValueError, match="4-D floating"):
        max_pool_2x2(jnp.zeros((1, 4, 4, 1), jnp.int32))
