"""Models: shapes, BatchNorm/Dropout behaviour, the conv layer's gradient rules, bad options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxreg import models
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
def test_conv_gradient_rules_agree(strides, padding, size, kernel):
    # the custom rule's weight gradient (patch matrix) and input gradient (a flipped-kernel
    # convolution with input dilation) against XLA's own transpose, incl. strides, odd sizes
    # and even kernels (asymmetric "SAME" padding)
    x = jax.random.normal(jax.random.key(0), (3, *size, 2))
    w = jax.random.normal(jax.random.key(1), (*kernel, 2, 4))

    def grads(rule):
        f = lambda a, b: jnp.sum(jnp.sin(conv2d(a, b, strides=strides, padding=padding, grad=rule)))
        # full float32 products: GPUs otherwise default to TF32 for convolutions and dots
        with jax.default_matmul_precision("float32"):
            return jax.jit(jax.grad(f, argnums=(0, 1)))(x, w)

    native, patches, auto = grads("native"), grads("patches"), grads("auto")
    for a, b in zip(native, patches):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    for a, b in zip(native, auto):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # forward is the same convolution whatever the gradient rule
    np.testing.assert_array_equal(conv2d(x, w, grad="native"), conv2d(x, w, grad="patches"))


def test_conv_rejects_bad_options():
    x, w = jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1))
    with pytest.raises(ValueError, match="grad"):
        conv2d(x, w, grad="fast")
    with pytest.raises(ValueError, match="padding"):
        conv2d(x, w, padding="same")


@pytest.mark.parametrize(
    "name,shape,kw",
    [
        ("cnn", (12, 12, 1), {"batch_norm": True, "dropout": 0.5}),
        ("cnn_small", (8, 8, 1), {}),
        ("tiny", (7, 7, 3), {"batch_norm": True}),
        ("resnet20", (16, 16, 3), {"blocks_per_stage": 1}),  # same code as depth 20, cheaper
    ],
)
def test_models_map_images_to_logits(name, shape, kw):
    m = models.create(name, num_classes=10, input_shape=shape, **kw)
    x = jax.random.uniform(jax.random.key(0), (2,) + shape)
    y = nnx.jit(lambda mod, a: mod(a, train=False))(m, x)
    assert y.shape == (2, 10) and y.dtype == jnp.float32
    rest = nnx.split(m, nnx.Param, nnx.BatchStat, ...)[3]
    assert not jax.tree.leaves(rest), "models hold no RNG state: keys are passed at call time"


def test_dropout_needs_a_key_and_is_random_only_in_training():
    m = models.create("cnn", num_classes=3, input_shape=(8, 8, 1), dropout=0.5)
    x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
    with pytest.raises(ValueError, match="dropout_key"):
        m(x, train=True)
    a = m(x, train=True, dropout_key=jax.random.key(1))
    b = m(x, train=True, dropout_key=jax.random.key(2))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(m(x), m(x))


def test_batchnorm_eval_uses_running_statistics():
    m = models.create("tiny", num_classes=3, input_shape=(6, 6, 1), batch_norm=True)
    x = jax.random.uniform(jax.random.key(0), (8, 6, 6, 1))
    with jax.default_matmul_precision("float32"):  # GPUs otherwise use TF32 convolutions
        before = m(x[:1])  # eval mode: the output of one example does not depend on the batch
        np.testing.assert_allclose(before, m(x)[:1], rtol=1e-5, atol=1e-6)
    m(x, train=True)  # updates running statistics
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
def test_max_pool_matches_reduce_window_in_value_and_gradient(shape):
    from jaxreg.models.layers import max_pool_2x2

    def ref(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")

    k1, k2 = jax.random.split(jax.random.key(0))
    x = jax.random.normal(k1, shape)
    # many exact ties (ReLU zeros, repeated values): the gradient goes to the first maximum
    tied = jnp.round(jax.nn.relu(x) * 2) / 2
    for inp in (x, tied):
        np.testing.assert_array_equal(max_pool_2x2(inp), ref(inp))
        g = jax.random.normal(k2, ref(inp).shape)
        for f in (max_pool_2x2, jax.jit(max_pool_2x2)):
            (got,) = jax.vjp(f, inp)[1](g)
            (want,) = jax.vjp(ref, inp)[1](g)
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("strides,padding", [((1, 1), "SAME"), ((2, 2), "SAME"), ((2, 1), "VALID")])
def test_conv_patch_matrix_matches_lax_patches(strides, padding):
    from jaxreg.models.layers import _patches

    x = jax.random.normal(jax.random.key(0), (2, 7, 6, 3))
    got = _patches(x, 3, 2, strides, padding)
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
